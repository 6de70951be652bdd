import CHDF5
import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// A fresh temporary directory removed at the end of the test.
final class TempDir {
  let path: String

  init() {
    var template = Array("/tmp/lift-test-XXXXXX".utf8CString)
    path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
  }

  deinit { _ = system("rm -rf '\(path)'") }

  func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// Deterministic pseudo-random floats (xorshift), so tests need no Foundation.
struct TestRNG {
  var state: UInt64
  init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
  mutating func next() -> UInt64 {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17
    return state
  }
  /// Uniform in [-1, 1).
  mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
  mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in float() } }
  mutating func int(_ below: Int) -> Int { Int(next() % UInt64(below)) }
}

/// Writes HDF5 files with the raw C API, to produce layouts liblift's writer never makes.
enum RawHDF5 {
  enum Layout { case contiguous, chunked(rows: Int), deflate(rows: Int) }

  /// Creates `path` holding dataset `name` with `dims`, file type `fileType`, written from
  /// `data` (interpreted as `memType`). `userBlock` > 0 reserves a user block (multiple of 512).
  static func write(_ path: String, name: String = "embeddings", dims: [Int], fileType: hid_t,
                    memType: hid_t, data: UnsafeRawPointer?, layout: Layout = .contiguous,
                    userBlock: Int = 0, writeRows: Range<Int>? = nil) {
    HDF5.prepareThread()
    let fcpl = H5Pcreate(lift_h5p_file_create())
    if userBlock > 0 { H5Pset_userblock(fcpl, hsize_t(userBlock)) }
    let file = H5Fcreate(path, lift_h5f_acc_trunc(), fcpl, lift_h5p_default())
    precondition(file >= 0, "cannot create \(path)")
    var d = dims.map { hsize_t($0) }
    let space = H5Screate_simple(Int32(dims.count), &d, nil)
    let dcpl = H5Pcreate(lift_h5p_dataset_create())
    switch layout {
    case .contiguous: break
    case .chunked(let rows), .deflate(let rows):
      var chunk = d
      chunk[0] = hsize_t(rows)
      H5Pset_chunk(dcpl, Int32(dims.count), &chunk)
      if case .deflate = layout { H5Pset_deflate(dcpl, 4) }
    }
    let ds = H5Dcreate2(file, name, fileType, space, lift_h5p_default(), dcpl, lift_h5p_default())
    precondition(ds >= 0, "cannot create dataset")
    if let data {
      if let rows = writeRows {
        // Only rows in `rows`: the rest of the chunks stay unallocated.
        let columns = dims.count > 1 ? dims[1] : 1
        var off: [hsize_t] = [hsize_t(rows.lowerBound), 0]
        var cnt: [hsize_t] = [hsize_t(rows.count), hsize_t(columns)]
        H5Sselect_hyperslab(space, H5S_SELECT_SET, &off, nil, &cnt, nil)
        let mem = H5Screate_simple(2, &cnt, nil)
        let size = H5Tget_size(memType)
        H5Dwrite(ds, memType, mem, space, lift_h5p_default(), data + rows.lowerBound * columns * size)
        H5Sclose(mem)
      } else {
        H5Dwrite(ds, memType, lift_h5s_all(), lift_h5s_all(), lift_h5p_default(), data)
      }
    }
    H5Dclose(ds); H5Pclose(dcpl); H5Sclose(space); H5Fclose(file); H5Pclose(fcpl)
  }

  static func writeFloats(_ path: String, _ values: [Float], rows: Int, cols: Int, fileType: hid_t,
                          layout: Layout = .contiguous, userBlock: Int = 0, name: String = "embeddings",
                          writeRows: Range<Int>? = nil) {
    // Half files get values rounded by Swift (round-to-nearest-even): HDF5's own float->half
    // conversion rounds some values differently.
    if H5Tequal(fileType, HDF5.halfLE) > 0 {
      values.map { Float16($0) }.withUnsafeBytes {
        write(path, name: name, dims: [rows, cols], fileType: fileType, memType: HDF5.halfLE,
              data: $0.baseAddress, layout: layout, userBlock: userBlock, writeRows: writeRows)
      }
      return
    }
    values.withUnsafeBytes {
      write(path, name: name, dims: [rows, cols], fileType: fileType, memType: lift_h5t_native_float(),
            data: $0.baseAddress, layout: layout, userBlock: userBlock, writeRows: writeRows)
    }
  }
}

/// Asserts that `body` throws a LiftError with `status` whose message contains every fragment.
func assertLiftError(_ status: lift_status, _ fragments: [String] = [], file: StaticString = #filePath,
                     line: UInt = #line, _ body: () throws -> Void) {
  do {
    try body()
    XCTFail("expected \(statusName(status)), nothing was thrown", file: file, line: line)
  } catch let error as LiftError {
    XCTAssertEqual(statusName(error.status), statusName(status), error.message, file: file, line: line)
    for f in fragments {
      XCTAssertTrue(error.message.contains(f), "message '\(error.message)' lacks '\(f)'", file: file, line: line)
    }
  } catch {
    XCTFail("expected LiftError, got \(error)", file: file, line: line)
  }
}

/// Float values as they survive a float16 round trip.
func halfRounded(_ x: [Float]) -> [Float] { x.map { Float(Float16($0)) } }

/// Asserts two float arrays are identical (bitwise-equal values; NaN equals NaN), reporting the
/// first difference instead of both arrays.
func assertSameFloats(_ a: [Float], _ b: [Float], _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
  guard a.count == b.count else {
    XCTFail("\(message): lengths differ (\(a.count) vs \(b.count))", file: file, line: line)
    return
  }
  var mismatches = 0
  var first = -1
  for i in 0..<a.count where !(a[i] == b[i] || (a[i].isNaN && b[i].isNaN)) {
    mismatches += 1
    if first < 0 { first = i }
  }
  if mismatches > 0 {
    XCTFail("\(message): \(mismatches) of \(a.count) values differ; first at \(first): \(a[first]) vs \(b[first])", file: file, line: line)
  }
}

extension Optional where Wrapped == [Float] {
  /// Calls body with a pointer to the array's elements, or nil.
  func withOptionalPointer<R>(_ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    guard let array = self else { return try body(nil) }
    return try array.withUnsafeBufferPointer { try body($0.baseAddress!) }
  }
}

/// Calls body with float arrays' storage as float32 kernel operands.
func elements<R>(_ a: inout [Float], _ body: (MatrixElements) throws -> R) rethrows -> R {
  try a.withUnsafeMutableBufferPointer { try body(.f32($0.baseAddress!)) }
}

func elements<R>(_ a: inout [Float], _ b: inout [Float], _ body: (MatrixElements, MatrixElements) throws -> R) rethrows -> R {
  try elements(&a) { x in try elements(&b) { y in try body(x, y) } }
}

func elements<R>(_ a: inout [Float], _ b: inout [Float], _ c: inout [Float],
                 _ body: (MatrixElements, MatrixElements, MatrixElements) throws -> R) rethrows -> R {
  try elements(&a, &b) { x, y in try elements(&c) { z in try body(x, y, z) } }
}

/// One forward, loss and (when `withGradient`) backward of a trainer through its split form, on
/// float32 NCHW images; returns the loss. Without the gradient, the gradient buffer is zeroed.
func lossAndGradient(_ trainer: Trainer, images: [Float], texts: [Float], batch: Int, withGradient: Bool) throws -> Double {
  let d = trainer.model.config.textDim
  var dLocal = [Float](repeating: 0, count: batch * d)
  let emb = try images.withUnsafeBufferPointer { try trainer.forward(.float32NCHW($0.baseAddress!), batch: batch) }
  let features = Array(UnsafeBufferPointer(start: emb, count: batch * d))
  let loss = try trainer.loss(images: features, texts: texts, count: batch, localStart: 0, localCount: batch,
                              workerCount: 1, dLocal: &dLocal)
  if withGradient {
    try trainer.backward(dLocal, batch: batch)
  } else {
    trainer.zeroGradients()
  }
  return loss
}
