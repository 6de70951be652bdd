import CLiftABI
import Glibc
import XCTest
@testable import Lift

final class KeyIndexTests: XCTestCase {
  func testKeysCompareWithoutImageExtensions() {
    XCTAssertEqual(SampleKey.hash(Array("000001.jpg".utf8)), SampleKey.hash(Array("000001".utf8)))
    XCTAssertEqual(SampleKey.hash(Array("a/b.JPEG".utf8)), SampleKey.hash(Array("a/b".utf8)))
    XCTAssertEqual(SampleKey.hash(Array("x.webp".utf8)), SampleKey.hash(Array("x.png".utf8)))
    XCTAssertNotEqual(SampleKey.hash(Array("x.txt".utf8)), SampleKey.hash(Array("x".utf8)))
    XCTAssertNotEqual(SampleKey.hash(Array("000001".utf8)), SampleKey.hash(Array("000002".utf8)))
    XCTAssertEqual(Array(SampleKey.normalized(Array(".jpg".utf8))), Array(".jpg".utf8))  // a name, not an extension
  }

  /// Rows found by key through an index merged from many spilled runs equal a brute-force
  /// search, for keys with one row, several rows (alternative captions) and none.
  func testIndexMergedFromRunsFindsEveryRow() throws {
    let dir = TempDir()
    let path = dir.file("keyed.h5")
    let n = 1000
    let writer = try EmbeddingStoreWriter(path: path, dim: 2, dtype: LIFT_DTYPE_FLOAT32, keys: true, keyRunLimit: 37)
    var keyOf: [String] = []
    var rng = Xoshiro256(seed: 5)
    for start in stride(from: 0, to: n, by: 91) {
      let count = min(91, n - start)
      var keys: [[UInt8]] = []
      for i in start..<(start + count) {
        // Every 7th row repeats an earlier key (with another extension): several rows per key.
        let key = i % 7 == 6 ? keyOf[Int(rng.next() % UInt64(i))] : "img\(i)"
        keyOf.append(key)
        keys.append(Array((key + (i % 2 == 0 ? ".jpg" : "")).utf8))
      }
      let rows = [Float](repeating: 1, count: count * 2)
      try rows.withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: Int64(count), keys: keys) }
    }
    try writer.finish()
    XCTAssertEqual(try Data.list(dir.path), ["keyed.h5"], "the spilled runs are removed")
    let store = try EmbeddingStore(paths: [path, path])  // two shards: rows of the second are offset by n
    for key in Set(keyOf) {
      let expected = keyOf.indices.filter { keyOf[$0] == key }.map(Int64.init)
      XCTAssertEqual(try store.rows(forKey: Array((key + ".png").utf8)), expected + expected.map { $0 + Int64(n) }, key)
    }
    XCTAssertEqual(try store.rows(forKey: Array("img100000".utf8)), [])
  }

  func testAStoreWithoutKeysSaysSo() throws {
    let dir = TempDir()
    let path = dir.file("plain.h5")
    let writer = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32)
    try [Float(1)].withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: 1) }
    try writer.finish()
    let store = try EmbeddingStore(paths: [path])
    assertLiftError(LIFT_ERR_NOT_FOUND, ["plain.h5", "no 'keys'"]) { _ = try store.rows(forKey: Array("a".utf8)) }
  }
}
