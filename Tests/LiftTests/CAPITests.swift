import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// The C entry points, called as a C program would: every misuse is a status, never a trap.
final class CAPITests: XCTestCase {
  var lastError: String { String(cString: cLiftLastError()) }

  func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> T) -> T {
    let copies = strings.map { UnsafePointer(strdup($0)!) }
    defer { copies.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    let array: [UnsafePointer<CChar>?] = copies
    return array.withUnsafeBufferPointer { body($0.baseAddress!) }
  }

  func makeStore(_ dir: TempDir, rows: Int64 = 4, dim: Int64 = 3) -> OpaquePointer? {
    let path = dir.file("s.h5")
    var writer: OpaquePointer?
    XCTAssertEqual(cLiftStoreWriterCreate(path, nil, dim, LIFT_DTYPE_FLOAT32, LIFT_WRITER_KEYS, &writer), LIFT_OK)
    let data = (0..<Int(rows * dim)).map { Float($0 + 1) }
    let st = withCStrings((0..<Int(rows)).map { "k\($0)" }) { keys in
      cLiftStoreWriterAppend(writer, data, rows, keys, nil)
    }
    XCTAssertEqual(st, LIFT_OK, lastError)
    XCTAssertEqual(cLiftStoreWriterFinish(writer), LIFT_OK, lastError)
    cLiftStoreWriterFree(writer)
    var store: OpaquePointer?
    let status = withCStrings([path]) { cLiftStoreOpen($0, 1, nil, 0, &store) }
    XCTAssertEqual(status, LIFT_OK, lastError)
    return store
  }

  func testVersionAndStatusNames() {
    XCTAssertEqual(String(cString: cLiftVersion()), liftVersion)
    XCTAssertEqual(String(cString: cLiftStatusName(LIFT_ERR_VALUE)), "LIFT_ERR_VALUE")
    XCTAssertEqual(String(cString: cLiftStatusName(lift_status(rawValue: 12345))), "LIFT_ERR_UNKNOWN")
  }

  func testNullArgumentsAreErrors() {
    var store: OpaquePointer?
    XCTAssertEqual(cLiftStoreOpen(nil, 1, nil, 0, &store), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("paths is NULL"), lastError)
    let status = withCStrings(["x.h5"]) { cLiftStoreOpen($0, 1, nil, 0, nil) }
    XCTAssertEqual(status, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("out is NULL"), lastError)
    let nullEntry: [UnsafePointer<CChar>?] = [nil]
    XCTAssertEqual(nullEntry.withUnsafeBufferPointer { cLiftStoreOpen($0.baseAddress, 1, nil, 0, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("paths[0] is NULL"), lastError)
    XCTAssertEqual(withCStrings(["x.h5"]) { cLiftStoreOpen($0, 0, nil, 0, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertEqual(withCStrings(["x.h5"]) { cLiftStoreOpen($0, 1, nil, 0x80, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("unknown store flags"), lastError)
    XCTAssertNil(store)
    XCTAssertEqual(cLiftStoreShape(nil, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRange(nil, 0, 1, nil, 0), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreWriterAppend(nil, nil, 1, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftCosineSimilarity(nil, 1, nil, 1, 1, nil, 1), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTopK(nil, 1, 1, 1, nil, nil), LIFT_ERR_ARGUMENT)
    cLiftStoreFree(nil)
    cLiftStoreWriterFree(nil)
  }

  func testReadsThroughTheCInterface() {
    let dir = TempDir()
    let store = makeStore(dir)
    defer { cLiftStoreFree(store) }
    var rows: Int64 = 0, dim: Int64 = 0
    XCTAssertEqual(cLiftStoreShape(store, &rows, &dim), LIFT_OK)
    XCTAssertEqual([rows, dim], [4, 3])
    var out = [Float](repeating: 0, count: 6)
    XCTAssertEqual(cLiftStoreReadRows(store, [3, 0], 2, &out, 6), LIFT_OK, lastError)
    XCTAssertEqual(out, [10, 11, 12, 1, 2, 3])
    XCTAssertEqual(cLiftStoreReadRange(store, 1, 2, &out, 5), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftStoreReadRange(store, 1, 2, nil, 6), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRows(store, [0], -1, &out, 6), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRange(store, 0, 0, nil, 0), LIFT_OK, "an empty read needs no buffer")
    // Strings: size query, then the copy.
    var length = 0
    XCTAssertEqual(cLiftStoreReadString(store, "keys", 2, nil, 0, &length), LIFT_ERR_BUFFER)
    XCTAssertEqual(length, 2)
    var buffer = [CChar](repeating: 1, count: 3)
    XCTAssertEqual(cLiftStoreReadString(store, "keys", 2, &buffer, 3, &length), LIFT_OK)
    XCTAssertEqual(String(cString: buffer), "k2")
    var present: Int32 = -1
    XCTAssertEqual(cLiftStoreHasStrings(store, "captions", &present), LIFT_OK)
    XCTAssertEqual(present, 0)
    XCTAssertEqual(cLiftStoreReadString(store, "captions", 0, &buffer, 3, &length), LIFT_ERR_NOT_FOUND)
    var dtype = LIFT_DTYPE_FLOAT64
    XCTAssertEqual(cLiftStoreShardDtype(store, 0, &dtype), LIFT_OK)
    XCTAssertEqual(dtype, LIFT_DTYPE_FLOAT32)
    XCTAssertEqual(cLiftStoreShardDtype(store, 1, &dtype), LIFT_ERR_ARGUMENT)
    var idx = [Int64](repeating: -1, count: 2)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11, 12], 1, 3, 2, &idx, nil), LIFT_OK, lastError)
    XCTAssertEqual(idx[0], 3)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11], 1, 2, 2, &idx, nil), LIFT_ERR_SHAPE)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11, 12], 1, 3, 5, &idx, nil), LIFT_ERR_ARGUMENT)
  }

  func testWrongHandleKindIsRejected() {
    let dir = TempDir()
    var writer: OpaquePointer?
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("w.h5"), nil, 2, LIFT_DTYPE_FLOAT16, 0, &writer), LIFT_OK)
    defer { cLiftStoreWriterFree(writer) }
    var rows: Int64 = 0
    XCTAssertEqual(cLiftStoreShape(writer, &rows, nil), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("different kind"), lastError)
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("x.h5"), nil, 2, lift_dtype(rawValue: 9), 0, &writer), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("x.h5"), nil, 2, LIFT_DTYPE_FLOAT32, 0x100, &writer), LIFT_ERR_ARGUMENT)
  }

  func testOverflowingSizesAreErrors() {
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 4)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 1, count: 4)
    XCTAssertEqual(cLiftCosineSimilarity(buffer, Int64.max / 2, buffer, 1, 4, buffer, 1), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("overflows"), lastError)
    XCTAssertEqual(cLiftTopK(buffer, 1 << 40, 1 << 40, 1, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftCosineSimilarity(buffer, 1, buffer, 1, 1, buffer, -1), LIFT_ERR_ARGUMENT)
    var writer: OpaquePointer?
    let dir = TempDir()
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("w.h5"), nil, 1 << 20, LIFT_DTYPE_FLOAT32, 0, &writer), LIFT_OK)
    XCTAssertEqual(cLiftStoreWriterAppend(writer, buffer, Int64.max / 4, nil, nil), LIFT_ERR_ARGUMENT)
    cLiftStoreWriterFree(writer)
  }

  func testLastErrorIsPerThread() {
    var store: OpaquePointer?
    XCTAssertEqual(withCStrings(["/no/such/file.h5"]) { cLiftStoreOpen($0, 1, nil, 0, &store) }, LIFT_ERR_IO)
    let mine = lastError
    XCTAssertTrue(mine.contains("/no/such/file.h5"))
    var other = "unset"
    var thread = pthread_t()
    let box = UnsafeMutablePointer<String>.allocate(capacity: 1)
    box.initialize(to: "")
    pthread_create(&thread, nil, { arg in
      let box = arg!.assumingMemoryBound(to: String.self)
      box.pointee = String(cString: cLiftLastError())
      _ = cLiftTopK(nil, 1, 1, 1, nil, nil)
      return nil
    }, box)
    pthread_join(thread, nil)
    other = box.pointee
    box.deinitialize(count: 1); box.deallocate()
    XCTAssertEqual(other, "", "a new thread starts with no error")
    XCTAssertEqual(lastError, mine, "another thread's error does not replace this thread's")
  }
}
