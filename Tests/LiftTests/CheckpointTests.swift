import CLiftABI
import Glibc
import XCTest
@testable import Lift

final class CheckpointTests: XCTestCase {
  func tiny(_ objective: ModelConfig.Objective = .sigmoid) -> ModelConfig { ModelGradientTests.tinyConfig(objective) }

  func trainer(_ c: ModelConfig) throws -> Trainer {
    var tc = TrainConfig()
    tc.batchCapacity = 4
    tc.warmupSteps = 2
    tc.totalSteps = 10
    return try Trainer(model: try Model(config: c, seed: 3), config: tc, seed: 99)
  }

  func buffer(_ p: UnsafePointer<Float>, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }

  func run(_ t: Trainer, steps: Int, seed: UInt64) throws -> [StepStats] {
    var rng = TestRNG(seed)
    var out: [StepStats] = []
    for _ in 0..<steps {
      let images = rng.floats(4 * 3 * 64), texts = rng.floats(4 * 6)
      out.append(try images.withUnsafeBufferPointer { try t.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: 4) })
    }
    return out
  }

  func testModelRoundTrip() throws {
    let dir = TempDir()
    let model = try Model(config: tiny(.contrastive), seed: 5)
    try model.save(path: dir.file("m.safetensors"))
    let back = try Model.load(path: dir.file("m.safetensors"))
    XCTAssertEqual(back.config, model.config)
    XCTAssertEqual(buffer(back.parameters, back.layout.totalCount), buffer(model.parameters, model.layout.totalCount))
    let reader = try SafeTensors.Reader(path: dir.file("m.safetensors"))
    XCTAssertEqual(reader.names.first, "visual.conv1.weight")
    XCTAssertEqual(reader.tensors["logit_scale"]?.shape, [])
    XCTAssertEqual(reader.tensors["visual.transformer.resblocks.1.attn.in_proj_weight"]?.shape, [24, 8])
    XCTAssertEqual(reader.metadata["format"], "pt")
  }

  /// N steps, save, load, N steps == 2N steps, bit for bit (in both precisions).
  func testResumeReproducesTheUninterruptedRun() throws {
    let dir = TempDir()
    let precisions: [ModelConfig.Precision] = OneDNN.hasBFloat16 ? [.fp32, .bf16] : [.fp32]
    for (objective, precision) in [ModelConfig.Objective.contrastive, .sigmoid].flatMap({ o in precisions.map { (o, $0) } }) {
      var config = tiny(objective)
      config.precision = precision
      let straight = try trainer(config)
      let full = try run(straight, steps: 3, seed: 1) + run(straight, steps: 3, seed: 2)
      let first = try trainer(config)
      _ = try run(first, steps: 3, seed: 1)
      try first.save(path: dir.file("t.safetensors"), userMetadata: [("epoch", "1"), ("position", "12")])
      let (resumed, user) = try Trainer.load(path: dir.file("t.safetensors"))
      XCTAssertEqual(user, ["epoch": "1", "position": "12"])
      XCTAssertEqual(resumed.step, 3)
      XCTAssertEqual(resumed.rng, first.rng)
      XCTAssertEqual(resumed.config, first.config)
      XCTAssertEqual(resumed.model.config.precision, precision)
      let second = try run(resumed, steps: 3, seed: 2)
      XCTAssertEqual(second, Array(full[3...]), "\(objective) \(precision)")
      let n = straight.model.layout.totalCount
      XCTAssertEqual(buffer(resumed.model.parameters, n), buffer(straight.model.parameters, n))
      XCTAssertEqual(buffer(resumed.firstMoment, n), buffer(straight.firstMoment, n))
      XCTAssertEqual(buffer(resumed.secondMoment, n), buffer(straight.secondMoment, n))
    }
  }

  func testFailedSaveLeavesThePreviousCheckpoint() throws {
    let dir = TempDir()
    let path = dir.file("t.safetensors")
    let t = try trainer(tiny())
    try t.save(path: path)
    let before = try Data.read(path)
    // A leftover temporary file from a crash does not matter.
    let stray = fopen(path + ".tmp-1-dead", "w"); fputs("half a checkpoint", stray); fclose(stray)
    _ = try run(t, steps: 1, seed: 4)
    // Saving into a missing folder fails cleanly.
    assertLiftError(LIFT_ERR_IO, ["no/such/dir"]) { try t.save(path: dir.file("no/such/dir/t.safetensors")) }
    // A folder is never replaced (refused before any temporary file is made).
    mkdir(dir.file("blocked"), 0o755)
    mkdir(dir.file("blocked/inside"), 0o755)
    assertLiftError(LIFT_ERR_IO, ["is a folder"]) { try t.save(path: dir.file("blocked")) }
    XCTAssertEqual(try Data.read(path), before)
    let (loaded, _) = try Trainer.load(path: path)
    XCTAssertEqual(loaded.step, 0)
    let names = try Data.list(dir.path)
    XCTAssertEqual(names, ["blocked", "t.safetensors", "t.safetensors.tmp-1-dead"])
  }

  func testCorruptFilesAreRejected() throws {
    let dir = TempDir()
    let path = dir.file("m.safetensors")
    let model = try Model(config: tiny(), seed: 1)
    try model.save(path: path)
    let good = try Data.read(path)
    func variant(_ name: String, _ bytes: [UInt8]) -> String {
      let p = dir.file(name)
      let f = fopen(p, "w")!
      _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, bytes.count, f) }
      fclose(f)
      return p
    }
    assertLiftError(LIFT_ERR_FORMAT, ["truncated"]) { _ = try Model.load(path: variant("cut", Array(good.prefix(good.count - 100)))) }
    assertLiftError(LIFT_ERR_FORMAT, ["not a safetensors file"]) { _ = try Model.load(path: variant("tiny", [1, 2, 3])) }
    assertLiftError(LIFT_ERR_FORMAT, ["header length"]) { _ = try Model.load(path: variant("huge", [255, 255, 255, 255, 0, 0, 0, 0] + good)) }
    var badJSON = good
    badJSON[8] = UInt8(ascii: "#")  // the header's opening brace
    assertLiftError(LIFT_ERR_FORMAT, ["invalid JSON"]) { _ = try Model.load(path: variant("json", badJSON)) }
    // Edits of the header text that keep its length.
    let headerLength = Int(good[0]) | Int(good[1]) << 8 | Int(good[2]) << 16
    func editedHeader(_ target: String, _ replacement: String) -> [UInt8] {
      let header = String(decoding: good[8..<(8 + headerLength)], as: UTF8.self)
      let edited = Array(header.replacingFirst(target, with: replacement).utf8)
      XCTAssertEqual(edited.count, headerLength)
      XCTAssertNotEqual(edited, Array(good[8..<(8 + headerLength)]), "the edit must apply")
      return Array(good[0..<8]) + edited + Array(good[(8 + headerLength)...])
    }
    // A tensor whose recorded shape disagrees with the config.
    let shape = editedHeader("\"shape\":[24,8]", "\"shape\":[8,24]")
    assertLiftError(LIFT_ERR_SHAPE, ["in_proj_weight", "[8, 24]"]) { _ = try Model.load(path: variant("shape", shape)) }
    // Config metadata that makes no sense.
    let cfg = editedHeader("\\\"heads\\\":2", "\\\"heads\\\":3")
    assertLiftError(LIFT_ERR_FORMAT, ["lift.model_config", "divisible"]) { _ = try Model.load(path: variant("cfg", cfg)) }
    assertLiftError(LIFT_ERR_FORMAT, ["not a training checkpoint"]) { _ = try Trainer.load(path: path) }
    assertLiftError(LIFT_ERR_IO, ["missing"]) { _ = try Model.load(path: dir.file("missing")) }
    // NaN weights are refused.
    model.parameters[3] = .nan
    try model.save(path: dir.file("nan.safetensors"))
    assertLiftError(LIFT_ERR_VALUE, ["visual.conv1.weight", "element 3"]) { _ = try Model.load(path: dir.file("nan.safetensors")) }
  }

  func testJSONRoundTripAndErrors() throws {
    let value = JSON.object([("a", .array([.number(1), .number(-2.5e-7), .string("x\"\n\u{1}é")])), ("b", .bool(true)), ("c", .null)])
    XCTAssertEqual(try JSON.parse(Array(value.serialized.utf8), what: "t"), value)
    XCTAssertEqual(try JSON.parse(Array("\"\\ud83d\\ude00\"".utf8), what: "t"), .string("😀"))
    for bad in ["{", "[1,]", "{\"a\" 1}", "\"abc", "01x", "{}x", "tru"] {
      assertLiftError(LIFT_ERR_FORMAT, ["invalid JSON"]) { _ = try JSON.parse(Array(bad.utf8), what: "t") }
    }
  }
}

/// Whole-file bytes and folder listings for the tests.
enum Data {
  static func read(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "r") else { throw LiftError.io("cannot open \(path)") }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = fread(&buf, 1, buf.count, f)
      if n == 0 { break }
      out += buf[0..<n]
    }
    return out
  }
  static func list(_ dir: String) throws -> [String] {
    guard let d = opendir(dir) else { return [] }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
      let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }
}

extension String {
  func replacingFirst(_ target: String, with replacement: String) -> String {
    guard let r = range(of: target) else { return self }
    return replacingCharacters(in: r, with: replacement)
  }
}
