import CLiftABI
import Glibc
import XCTest
@testable import Lift

final class EmbeddingStoreWriterTests: XCTestCase {
  func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  func entries(_ dir: String) -> [String] { (try? Data.list(dir)) ?? [] }

  func testFileAppearsOnlyOnFinish() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    let writer = try EmbeddingStoreWriter(path: path, dim: 2, dtype: LIFT_DTYPE_FLOAT32)
    try [Float](repeating: 1, count: 4).withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: 2) }
    XCTAssertFalse(exists(path))
    XCTAssertTrue(exists(writer.temporaryPath))
    try writer.finish()
    XCTAssertTrue(exists(path))
    XCTAssertEqual(entries(dir.path), ["s.h5"])
    assertLiftError(LIFT_ERR_STATE, ["finished"]) { try [Float](repeating: 1, count: 2).withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: 1) } }
    assertLiftError(LIFT_ERR_STATE) { try writer.finish() }
  }

  func testUnfinishedWriterLeavesPreviousFileIntact() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    let first = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32)
    try [Float(7)].withUnsafeBufferPointer { try first.append($0.baseAddress!, rows: 1) }
    try first.finish()
    assertLiftError(LIFT_ERR_IO, ["already exists"]) { _ = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32) }
    do {
      let second = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32, overwrite: true)
      try [Float(8), 9].withUnsafeBufferPointer { try second.append($0.baseAddress!, rows: 2) }
      // Dropped without finish: the temporary file goes, the old store stays.
    }
    XCTAssertEqual(entries(dir.path), ["s.h5"])
    let store = try EmbeddingStore(paths: [path])
    XCTAssertEqual(store.rows, 1)
    let third = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32, overwrite: true)
    try [Float(8), 9].withUnsafeBufferPointer { try third.append($0.baseAddress!, rows: 2) }
    try third.finish()
    XCTAssertEqual(try EmbeddingStore(paths: [path]).rows, 2)
  }

  func testFinishRefusesToReplaceAFileThatAppeared() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    let writer = try EmbeddingStoreWriter(path: path, dim: 1, dtype: LIFT_DTYPE_FLOAT32)
    try [Float(1)].withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: 1) }
    let f = fopen(path, "w"); fputs("someone else's", f); fclose(f)
    assertLiftError(LIFT_ERR_IO, ["already exists", writer.temporaryPath]) { try writer.finish() }
    XCTAssertTrue(exists(writer.temporaryPath), "the data is kept")
    XCTAssertEqual(try EmbeddingStore(paths: [writer.temporaryPath]).rows, 1)
  }

  func testBadRowsAreRejectedWholeAndNothingIsWritten() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    let writer = try EmbeddingStoreWriter(path: path, dim: 3, dtype: LIFT_DTYPE_FLOAT16, captions: true)
    let good: [Float] = [1, 2, 3]
    try good.withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: 1, captions: [Array("first".utf8)]) }
    let nan: [Float] = [1, 2, 3, 4, .nan, 6]
    nan.withUnsafeBufferPointer { p in
      assertLiftError(LIFT_ERR_VALUE, ["append row 1", "store row 2", "column 1"]) {
        try writer.append(p.baseAddress!, rows: 2, captions: [[65], [66]])
      }
    }
    let huge: [Float] = [1, 70000, 3]
    huge.withUnsafeBufferPointer { p in
      assertLiftError(LIFT_ERR_VALUE, ["overflows float16"]) { try writer.append(p.baseAddress!, rows: 1, captions: [[65]]) }
      assertLiftError(LIFT_ERR_ARGUMENT, ["captions"]) { try writer.append(p.baseAddress!, rows: 1) }
      assertLiftError(LIFT_ERR_ARGUMENT, ["2 captions given for 1 rows"]) { try writer.append(p.baseAddress!, rows: 1, captions: [[65], [66]]) }
      assertLiftError(LIFT_ERR_ARGUMENT, ["keys given"]) { try writer.append(p.baseAddress!, rows: 1, keys: [[65]], captions: [[65]]) }
      assertLiftError(LIFT_ERR_ARGUMENT, ["NUL"]) { try writer.append(p.baseAddress!, rows: 1, captions: [[65, 0, 66]]) }
    }
    XCTAssertEqual(writer.rows, 1)
    try writer.finish()
    let store = try EmbeddingStore(paths: [path])
    XCTAssertEqual(store.rows, 1)
    XCTAssertEqual(try store.string("captions", row: 0), "first")
  }

  func testCreateArgumentErrors() {
    let dir = TempDir()
    assertLiftError(LIFT_ERR_ARGUMENT, ["dim"]) { _ = try EmbeddingStoreWriter(path: dir.file("a.h5"), dim: 0, dtype: LIFT_DTYPE_FLOAT32) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["float32 or float16"]) { _ = try EmbeddingStoreWriter(path: dir.file("a.h5"), dim: 2, dtype: LIFT_DTYPE_FLOAT64) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["clashes"]) { _ = try EmbeddingStoreWriter(path: dir.file("a.h5"), dataset: "keys", dim: 2, dtype: LIFT_DTYPE_FLOAT32, keys: true) }
    assertLiftError(LIFT_ERR_IO, ["is a folder: liblift replaces only regular files"]) { _ = try EmbeddingStoreWriter(path: dir.path, dim: 2, dtype: LIFT_DTYPE_FLOAT32) }
    assertLiftError(LIFT_ERR_IO, ["no/such/dir"]) { _ = try EmbeddingStoreWriter(path: dir.file("no/such/dir/a.h5"), dim: 2, dtype: LIFT_DTYPE_FLOAT32) }
    XCTAssertEqual(entries(dir.path), [])
  }
}
