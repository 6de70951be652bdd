import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// The parts of benchmark suites below the file layouts (which the Python tests cover with files
/// written by Pillow and the benchmarks' schemas): templates, class tables, text lookup, bulk
/// string reads, the resize-then-crop view.
final class SuiteTests: XCTestCase {
  func testTemplatesFormatAsPythonStrFormat() throws {
    XCTAssertEqual(PromptTemplates.format("a photo of a {}.", "cat"), "a photo of a cat.")
    XCTAssertEqual(PromptTemplates.format("{{literal}} {}", "x"), "{literal} x")
    XCTAssertEqual(PromptTemplates.placeholders("{} and {}"), 2)
    XCTAssertEqual(PromptTemplates.placeholders("{{}}"), 0)
    XCTAssertEqual(PromptTemplates.openai.count, 80)
    XCTAssertEqual(PromptTemplates.simple.count, 7)
    XCTAssertTrue(PromptTemplates.openai.allSatisfy { PromptTemplates.placeholders($0) == 1 })
    XCTAssertEqual(try PromptTemplates.load(nil), ["It is a photo of a {}"])
    let dir = TempDir()
    let file = dir.file("t.txt")
    try writeText(file, "a {}\r\n\n  \nthe {} here\n")
    XCTAssertEqual(try PromptTemplates.load(file), ["a {}", "the {} here"])
    try writeText(file, "a {}\nnone\n")
    XCTAssertThrowsError(try PromptTemplates.load(file)) { XCTAssertTrue("\($0)".contains("line 2")) }
  }

  func testClassTablesInTheirThreeShapes() throws {
    let dir = TempDir()
    let json = dir.file("index.json")
    try writeText(json, #"{"1": ["n2", "great_white_shark"], "0": ["n1", "tench"]}"#)
    let t = try ClassTable.read(json)
    XCTAssertEqual(t.ids, ["n1", "n2"])
    XCTAssertEqual(t.names, ["tench", "great white shark"])
    XCTAssertEqual(t.index["n2"], 1)
    let tsv = dir.file("names.tsv")
    try writeText(tsv, "a\tApple pie\nb\tBanana\n")
    XCTAssertEqual(try ClassTable.read(tsv).index["b"], 1)
    let list = dir.file("names.txt")
    try writeText(list, "apple\nbanana\n")
    XCTAssertTrue(try ClassTable.read(list).positional)
    try writeText(json, #"{"0": ["n1", "a"], "2": ["n3", "c"]}"#)
    XCTAssertThrowsError(try ClassTable.read(json)) { XCTAssertTrue("\($0)".contains("index 1 is missing")) }
  }

  /// Bulk string reads across shards equal row-by-row reads; text lookup finds each text's row.
  func testTextLookupAcrossShards() throws {
    let dir = TempDir()
    var paths: [String] = []
    var all: [String] = []
    for s in 0..<3 {
      let path = dir.file("t\(s).h5")
      let texts = (0..<(5 + s)).map { "shard \(s) text \($0)" }
      let rows = texts.indices.flatMap { i in (0..<4).map { Float(s * 100 + i * 4 + $0) } }
      let w = try EmbeddingStoreWriter(path: path, dim: 4, dtype: LIFT_DTYPE_FLOAT32, captions: true)
      try rows.withUnsafeBufferPointer { try w.append($0.baseAddress!, rows: Int64(texts.count), captions: texts.map { Array($0.utf8) }) }
      try w.finish()
      paths.append(path)
      all += texts
    }
    let store = try EmbeddingStore(paths: paths)
    let bulk = try store.stringBytes("captions", from: 3, count: 12).map { String(decoding: $0, as: UTF8.self) }
    XCTAssertEqual(bulk, Array(all[3..<15]))
    let wanted = ["shard 2 text 6", "shard 0 text 1", "shard 1 text 0"]
    let m = try TextEmbeddings.lookup(wanted, in: store, dim: 4)
    XCTAssertEqual(Array(UnsafeBufferPointer(start: m.row(0), count: 4)), [224, 225, 226, 227])
    XCTAssertEqual(m.row(1)[0], 4)
    XCTAssertEqual(m.row(2)[0], 100)
    XCTAssertThrowsError(try TextEmbeddings.lookup(["nowhere"], in: store, dim: 4)) { XCTAssertTrue("\($0)".contains("\"nowhere\"")) }
    XCTAssertThrowsError(try TextEmbeddings.lookup(wanted, in: store, dim: 5)) { XCTAssertTrue("\($0)".contains("4-d")) }
  }

  /// `.resizedCentre(R)` with R = S is the centre view; the reduction it allows shrinks with R.
  func testResizedCentreView() throws {
    var rng = Xoshiro256(seed: 3)
    let (w, h) = (53, 37)
    let src = (0..<(w * h * 3)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    var a = [UInt8](repeating: 0, count: 16 * 16 * 3), b = a
    try src.withUnsafeBufferPointer { s in
      try Preprocess.image(s.baseAddress!, width: w, height: h, channels: 3, view: .centre, size: 16, filter: .bicubic,
                           outChannels: 3, flip: false, into: &a, dstCount: a.count)
      try Preprocess.image(s.baseAddress!, width: w, height: h, channels: 3, view: .resizedCentre(resize: 16), size: 16,
                           filter: .bicubic, outChannels: 3, flip: false, into: &b, dstCount: b.count)
      XCTAssertThrowsError(try Preprocess.image(s.baseAddress!, width: w, height: h, channels: 3, view: .resizedCentre(resize: 15),
                                                size: 16, filter: .bicubic, outChannels: 3, flip: false, into: &b, dstCount: b.count))
    }
    XCTAssertEqual(a, b)
    XCTAssertEqual(Preprocess.reduction(for: .resizedCentre(resize: 256), width: 3000, height: 2000, size: 224), 2)
    XCTAssertEqual(Preprocess.reduction(for: .centre, width: 3000, height: 2000, size: 224), 1)
  }
}

private func writeText(_ path: String, _ text: String) throws {
  guard let f = fopen(path, "w") else { throw LiftError.io("cannot write \(path)") }
  fputs(text, f)
  fclose(f)
}
