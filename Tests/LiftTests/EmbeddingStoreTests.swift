import CHDF5
import CLiftABI
import XCTest
@testable import Lift

final class EmbeddingStoreTests: XCTestCase {
  /// Writes `rows` x `dim` random rows with liblift's writer and returns them (as stored).
  @discardableResult
  func writeStore(_ path: String, rows: Int, dim: Int, dtype: lift_dtype, seed: UInt64 = 1,
                  keys: Bool = false) throws -> [Float] {
    var rng = TestRNG(seed)
    let values = rng.floats(rows * dim)
    let writer = try EmbeddingStoreWriter(path: path, dim: Int64(dim), dtype: dtype, keys: keys)
    // Several appends, to exercise extension of the chunked dataset.
    var start = 0
    while start < rows {
      let n = min(37, rows - start)
      try values.withUnsafeBufferPointer { buf in
        try writer.append(buf.baseAddress! + start * dim, rows: Int64(n),
                          keys: keys ? (start..<start + n).map { Array("key-\($0)".utf8) } : nil)
      }
      start += n
    }
    try writer.finish()
    return dtype == LIFT_DTYPE_FLOAT16 ? halfRounded(values) : values
  }

  func readAll(_ store: EmbeddingStore) throws -> [Float] {
    var out = [Float](repeating: .nan, count: Int(store.rows * store.dim))
    try out.withUnsafeMutableBufferPointer { try store.read(range: 0, count: store.rows, into: $0.baseAddress!, capacity: $0.count) }
    return out
  }

  func readRows(_ store: EmbeddingStore, _ rows: [Int64]) throws -> [Float] {
    var out = [Float](repeating: .nan, count: rows.count * Int(store.dim))
    try rows.withUnsafeBufferPointer { list in
      try out.withUnsafeMutableBufferPointer { try store.read(rows: list, into: $0.baseAddress!, capacity: $0.count) }
    }
    return out
  }

  func expectedRows(_ all: [Float], dim: Int, _ rows: [Int64]) -> [Float] {
    rows.flatMap { all[Int($0) * dim..<(Int($0) + 1) * dim] }
  }

  func testWriterRoundTripFloat32AndFloat16() throws {
    let dir = TempDir()
    for dtype in [LIFT_DTYPE_FLOAT32, LIFT_DTYPE_FLOAT16] {
      let path = dir.file("s\(dtype.rawValue).h5")
      let expected = try writeStore(path, rows: 300, dim: 40, dtype: dtype)
      let store = try EmbeddingStore(paths: [path])
      XCTAssertEqual(store.rows, 300)
      XCTAssertEqual(store.dim, 40)
      XCTAssertEqual(store.shards[0].dtype, dtype)
      XCTAssertNotNil(store.shards[0].direct, "writer output should allow direct row reads")
      assertSameFloats(try readAll(store), expected)
      let rows: [Int64] = [299, 0, 17, 17, 150, 151, 152, 3]
      assertSameFloats(try readRows(store, rows), expectedRows(expected, dim: 40, rows))
    }
  }

  /// Direct (pread) and HDF5-hyperslab row reads agree on every layout, including user blocks,
  /// partial edge chunks and never-written chunks (fill value zero).
  func testDirectReadsMatchHyperslabReads() throws {
    let dir = TempDir()
    let rows = 203, cols = 24
    var rng = TestRNG(7)
    let values = rng.floats(rows * cols)
    let cases: [(String, RawHDF5.Layout, Int, Range<Int>?, Bool)] = [
      ("contiguous", .contiguous, 0, nil, true),
      ("contiguous-userblock", .contiguous, 1024, nil, true),
      ("chunked", .chunked(rows: 16), 0, nil, true),
      ("chunked-userblock", .chunked(rows: 10), 512, nil, true),
      ("chunked-sparse", .chunked(rows: 16), 0, 40..<90, true),
      ("deflate", .deflate(rows: 16), 0, nil, false),
    ]
    var order: [Int64] = (0..<Int64(rows)).map { $0 }
    for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.int(i + 1)) }
    order += [5, 5, 202, 0]
    for (name, layout, userBlock, written, expectDirect) in cases {
      for half in [false, true] {
        let path = dir.file("\(name)-\(half).h5")
        RawHDF5.writeFloats(path, values, rows: rows, cols: cols,
                            fileType: half ? HDF5.halfLE : lift_h5t_ieee_f32le(),
                            layout: layout, userBlock: userBlock, writeRows: written)
        var stored = half ? halfRounded(values) : values
        if let written {
          for r in 0..<rows where !written.contains(r) {
            for c in 0..<cols { stored[r * cols + c] = 0 }
          }
        }
        let store = try EmbeddingStore(paths: [path])
        XCTAssertEqual(store.shards[0].direct != nil, expectDirect, name)
        let direct = try readRows(store, order)
        store.directReads = false
        let viaHDF5 = try readRows(store, order)
        assertSameFloats(direct, viaHDF5, "\(name) half=\(half)")
        assertSameFloats(direct, expectedRows(stored, dim: cols, order), "\(name) half=\(half)")
        assertSameFloats(try readAll(store), stored, "\(name) half=\(half)")
      }
    }
  }

  func testBigEndianAndFloat64AreConverted() throws {
    let dir = TempDir()
    var rng = TestRNG(3)
    let values = rng.floats(50 * 8)
    let be = dir.file("be.h5")
    RawHDF5.writeFloats(be, values, rows: 50, cols: 8, fileType: lift_h5t_ieee_f32be())
    let f64 = dir.file("f64.h5")
    RawHDF5.writeFloats(f64, values, rows: 50, cols: 8, fileType: lift_h5t_ieee_f64le())
    for path in [be, f64] {
      let store = try EmbeddingStore(paths: [path])
      XCTAssertNil(store.shards[0].direct)
      assertSameFloats(try readAll(store), values)
      assertSameFloats(try readRows(store, [49, 1, 1]), expectedRows(values, dim: 8, [49, 1, 1]))
    }
    XCTAssertEqual(try EmbeddingStore(paths: [f64]).shards[0].dtype, LIFT_DTYPE_FLOAT64)
  }

  func testShardsReadAsOneMatrix() throws {
    let dir = TempDir()
    let a = try writeStore(dir.file("a.h5"), rows: 10, dim: 6, dtype: LIFT_DTYPE_FLOAT16, seed: 1)
    let b = try writeStore(dir.file("b.h5"), rows: 0, dim: 6, dtype: LIFT_DTYPE_FLOAT32, seed: 2)
    let c = try writeStore(dir.file("c.h5"), rows: 25, dim: 6, dtype: LIFT_DTYPE_FLOAT32, seed: 3)
    let all = a + b + c
    let store = try EmbeddingStore(paths: ["a.h5", "b.h5", "c.h5"].map(dir.file))
    XCTAssertEqual(store.rows, 35)
    assertSameFloats(try readAll(store), all)
    let rows: [Int64] = [34, 9, 10, 0, 11, 9, 20]
    assertSameFloats(try readRows(store, rows), expectedRows(all, dim: 6, rows))
    var part = [Float](repeating: 0, count: 4 * 6)
    try part.withUnsafeMutableBufferPointer { try store.read(range: 8, count: 4, into: $0.baseAddress!, capacity: $0.count) }
    assertSameFloats(part, Array(all[48..<72]))
  }

  func testShardDimensionMismatchNamesFiles() throws {
    let dir = TempDir()
    try writeStore(dir.file("a.h5"), rows: 3, dim: 6, dtype: LIFT_DTYPE_FLOAT32)
    try writeStore(dir.file("b.h5"), rows: 3, dim: 7, dtype: LIFT_DTYPE_FLOAT32)
    assertLiftError(LIFT_ERR_SHAPE, ["b.h5", "7 columns", "a.h5", "6"]) {
      _ = try EmbeddingStore(paths: [dir.file("a.h5"), dir.file("b.h5")])
    }
  }

  /// A store much larger than the staging budget reads correctly in every access pattern.
  func testSmallStagingBudgetStreams() throws {
    let dir = TempDir()
    let path = dir.file("big.h5")
    let expected = try writeStore(path, rows: 2000, dim: 33, dtype: LIFT_DTYPE_FLOAT16)
    let store = try EmbeddingStore(paths: [path])
    try store.setBufferBytes(500)  // fewer bytes than 8 rows
    assertSameFloats(try readAll(store), expected)
    var rng = TestRNG(9)
    let rows = (0..<700).map { _ in Int64(rng.int(2000)) }
    assertSameFloats(try readRows(store, rows), expectedRows(expected, dim: 33, rows))
    store.directReads = false
    assertSameFloats(try readRows(store, rows), expectedRows(expected, dim: 33, rows))
    try store.validate()
  }

  func testNormalizeOnRead() throws {
    let dir = TempDir()
    let path = dir.file("n.h5")
    let values: [Float] = [3, 4, 0, 0, 0, 0, 1, 1, 1]
    RawHDF5.writeFloats(path, values, rows: 3, cols: 3, fileType: lift_h5t_ieee_f32le())
    var options = EmbeddingStore.Options()
    options.normalize = true
    let store = try EmbeddingStore(paths: [path], options: options)
    let first = try readRows(store, [0])
    XCTAssertEqual(first, [0.6, 0.8, 0], "row 0 normalised")
    assertLiftError(LIFT_ERR_VALUE, ["row 1", "zero"]) { _ = try readRows(store, [2, 1]) }
    let last = try readRows(store, [2])
    for v in last { XCTAssertEqual(v, 1 / Float(3).squareRoot(), accuracy: 1e-6) }
  }

  func testNonFiniteRowsAreReportedUnlessSkipped() throws {
    let dir = TempDir()
    let path = dir.file("nan.h5")
    var values = [Float](repeating: 1, count: 40 * 4)
    values[37 * 4 + 2] = .nan
    values[12 * 4 + 0] = .infinity
    RawHDF5.writeFloats(path, values, rows: 40, cols: 4, fileType: lift_h5t_ieee_f32le())
    let store = try EmbeddingStore(paths: [path])
    assertLiftError(LIFT_ERR_VALUE, ["row 37", "nan.h5", "column 2"]) { _ = try readRows(store, [1, 37]) }
    assertLiftError(LIFT_ERR_VALUE, ["row 12", "column 0"]) { _ = try readAll(store) }
    assertLiftError(LIFT_ERR_VALUE, ["row 12"]) { try store.validate() }
    assertSameFloats(try readRows(store, [0, 39]), [Float](repeating: 1, count: 8))
    var options = EmbeddingStore.Options()
    options.checkFinite = false
    let unchecked = try EmbeddingStore(paths: [path], options: options)
    XCTAssertTrue(try readRows(unchecked, [37])[2].isNaN)
    assertLiftError(LIFT_ERR_VALUE, ["row 12"]) { try unchecked.validate() }
  }

  func testOpenErrorsNameTheProblem() throws {
    let dir = TempDir()
    assertLiftError(LIFT_ERR_IO, ["missing.h5", "No such file"]) { _ = try EmbeddingStore(paths: [dir.file("missing.h5")]) }
    assertLiftError(LIFT_ERR_IO, ["is a directory"]) { _ = try EmbeddingStore(paths: [dir.path]) }
    let text = dir.file("text.h5")
    let f = fopen(text, "w"); fputs("hello, not hdf5\n", f); fclose(f)
    assertLiftError(LIFT_ERR_IO, ["text.h5", "not an HDF5 file"]) { _ = try EmbeddingStore(paths: [text]) }
    let good = dir.file("good.h5")
    try writeStore(good, rows: 2, dim: 3, dtype: LIFT_DTYPE_FLOAT32)
    var options = EmbeddingStore.Options()
    options.dataset = "nope/deeper"
    assertLiftError(LIFT_ERR_NOT_FOUND, ["good.h5", "nope/deeper"]) { _ = try EmbeddingStore(paths: [good], options: options) }
    let rank3 = dir.file("rank3.h5")
    RawHDF5.write(rank3, dims: [2, 3, 4], fileType: lift_h5t_ieee_f32le(), memType: lift_h5t_native_float(), data: nil)
    assertLiftError(LIFT_ERR_FORMAT, ["rank3.h5", "rank 3", "(2, 3, 4)"]) { _ = try EmbeddingStore(paths: [rank3]) }
    let ints = dir.file("ints.h5")
    RawHDF5.write(ints, dims: [2, 3], fileType: lift_h5t_std_i32le(), memType: lift_h5t_std_i32le(), data: nil)
    assertLiftError(LIFT_ERR_FORMAT, ["ints.h5", "int32"]) { _ = try EmbeddingStore(paths: [ints]) }
    // A 16-bit float that is not IEEE binary16 (bfloat16's layout).
    let bf16 = H5Tcopy(lift_h5t_ieee_f32le())
    H5Tset_fields(bf16, 15, 7, 8, 0, 7); H5Tset_size(bf16, 2); H5Tset_ebias(bf16, 127)
    let bfPath = dir.file("bf16.h5")
    RawHDF5.write(bfPath, dims: [2, 3], fileType: bf16, memType: lift_h5t_native_float(), data: nil)
    H5Tclose(bf16)
    assertLiftError(LIFT_ERR_FORMAT, ["bf16.h5", "not IEEE binary16"]) { _ = try EmbeddingStore(paths: [bfPath]) }
    assertLiftError(LIFT_ERR_ARGUMENT) { _ = try EmbeddingStore(paths: []) }
    // A truncated file: the header survives, the data does not.
    let cut = dir.file("cut.h5")
    try writeStore(cut, rows: 400, dim: 64, dtype: LIFT_DTYPE_FLOAT32)
    truncate(cut, 40_000)
    do {
      let store = try EmbeddingStore(paths: [cut])
      assertLiftError(LIFT_ERR_IO, ["cut.h5"]) { _ = try readAll(store) }
      assertLiftError(LIFT_ERR_IO, ["cut.h5"]) { _ = try readRows(store, [399]) }
    } catch {
      XCTAssertTrue([LIFT_ERR_IO, LIFT_ERR_FORMAT].contains(error.status), error.message)
    }
  }

  func testReadArgumentErrors() throws {
    let dir = TempDir()
    let path = dir.file("a.h5")
    try writeStore(path, rows: 5, dim: 2, dtype: LIFT_DTYPE_FLOAT32)
    let store = try EmbeddingStore(paths: [path])
    var out = [Float](repeating: 0, count: 10)
    out.withUnsafeMutableBufferPointer { buf in
      assertLiftError(LIFT_ERR_ARGUMENT, ["out of range", "5 rows"]) { try store.read(range: 4, count: 2, into: buf.baseAddress!, capacity: 10) }
      assertLiftError(LIFT_ERR_ARGUMENT, [">= 0"]) { try store.read(range: -1, count: 1, into: buf.baseAddress!, capacity: 10) }
      assertLiftError(LIFT_ERR_BUFFER, ["holds 3 floats"]) { try store.read(range: 0, count: 2, into: buf.baseAddress!, capacity: 3) }
      let bad: [Int64] = [0, 5]
      bad.withUnsafeBufferPointer { list in
        assertLiftError(LIFT_ERR_ARGUMENT, ["rows[1] = 5"]) { try store.read(rows: list, into: buf.baseAddress!, capacity: 10) }
      }
    }
    assertLiftError(LIFT_ERR_ARGUMENT) { try store.setBufferBytes(0) }
  }

  func testStringsVariableAndFixedLength() throws {
    let dir = TempDir()
    let path = dir.file("k.h5")
    try writeStore(path, rows: 50, dim: 3, dtype: LIFT_DTYPE_FLOAT16, keys: true)
    let store = try EmbeddingStore(paths: [path])
    XCTAssertTrue(try store.hasStrings("keys"))
    XCTAssertFalse(try store.hasStrings("captions"))
    XCTAssertEqual(try store.string("keys", row: 0), "key-0")
    XCTAssertEqual(try store.string("keys", row: 49), "key-49")
    assertLiftError(LIFT_ERR_NOT_FOUND, ["captions"]) { _ = try store.string("captions", row: 0) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["row 50"]) { _ = try store.string("keys", row: 50) }
    // Fixed-length, NUL-padded strings as numpy 'S' arrays produce.
    let fixed = dir.file("fixed.h5")
    RawHDF5.writeFloats(fixed, [1, 2, 3, 4], rows: 2, cols: 2, fileType: lift_h5t_ieee_f32le())
    let t = H5Tcopy(lift_h5t_c_s1()); H5Tset_size(t, 6); H5Tset_strpad(t, H5T_STR_NULLPAD)
    let file = H5Fopen(fixed, lift_h5f_acc_rdwr(), lift_h5p_default())
    var dims: [hsize_t] = [2]
    let space = H5Screate_simple(1, &dims, nil)
    let ds = H5Dcreate2(file, "captions", t, space, lift_h5p_default(), lift_h5p_default(), lift_h5p_default())
    let bytes: [UInt8] = Array("ab\0\0\0\0sixsix".utf8)
    H5Dwrite(ds, t, lift_h5s_all(), lift_h5s_all(), lift_h5p_default(), bytes)
    H5Dclose(ds); H5Sclose(space); H5Fclose(file); H5Tclose(t)
    let fixedStore = try EmbeddingStore(paths: [fixed])
    XCTAssertEqual(try fixedStore.string("captions", row: 0), "ab")
    XCTAssertEqual(try fixedStore.string("captions", row: 1), "sixsix")
    assertLiftError(LIFT_ERR_FORMAT, ["embeddings", "expected strings"]) { _ = try fixedStore.string("embeddings", row: 0) }
  }
}
