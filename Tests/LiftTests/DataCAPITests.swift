import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// The C entry points of images, sources and loaders, called as a C program would: every misuse
/// is a status naming the problem, never a trap.
final class DataCAPITests: XCTestCase {
  var lastError: String { String(cString: cLiftLastError()) }

  func options(size: Int32 = 4, channels: Int32 = 3) -> lift_preprocess_options {
    var o = lift_preprocess_options()
    o.struct_size = MemoryLayout<lift_preprocess_options>.stride
    XCTAssertEqual(cLiftPreprocessOptionsDefault(&o), LIFT_OK)
    o.size = size
    o.channels = channels
    return o
  }

  func testImageCallsRefuseBadArguments() {
    var info = lift_image_info()
    info.struct_size = MemoryLayout<lift_image_info>.stride
    XCTAssertEqual(cLiftImageProbe(nil, 0, &info), LIFT_ERR_FORMAT)  // no bytes: an empty image
    XCTAssertTrue(lastError.contains("0 bytes"), lastError)
    XCTAssertEqual(cLiftImageProbe(nil, 10, &info), LIFT_ERR_ARGUMENT)
    let junk: [UInt8] = Array("not an image at all".utf8)
    XCTAssertEqual(cLiftImageProbe(junk, junk.count, &info), LIFT_ERR_UNSUPPORTED)
    XCTAssertEqual(cLiftImageDecode(junk, junk.count, 2, 0, nil, 0), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("channels must be 1 or 3"), lastError)
    XCTAssertEqual(cLiftImageDecode(junk, junk.count, 3, -1, nil, 0), LIFT_ERR_UNSUPPORTED)
    var o = options()
    var dst = [UInt8](repeating: 0, count: 48)
    XCTAssertEqual(cLiftImagePreprocess(junk, junk.count, &o, &dst, 47), LIFT_ERR_BUFFER)
    o.view = 7
    XCTAssertEqual(cLiftImagePreprocess(junk, junk.count, &o, &dst, 48), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("view must be"), lastError)
    o = options()
    o.view = Int32(LIFT_VIEW_CROP.rawValue)
    o.rect = (0, 0, .nan, 2)
    XCTAssertEqual(cLiftImagePreprocess(junk, junk.count, &o, &dst, 48), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("whole pixels"), lastError)
    // Pixels: the source length is checked against the declared size before anything is read.
    let pixels = [UInt8](repeating: 9, count: 6 * 5 * 3)
    o = options()
    XCTAssertEqual(cLiftPixelsPreprocess(pixels, pixels.count - 1, 6, 5, 3, &o, &dst, 48), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftPixelsPreprocess(pixels, pixels.count, Int32.max, Int32.max, 3, &o, &dst, 48), LIFT_ERR_ARGUMENT)  // overflows
    XCTAssertEqual(cLiftPixelsPreprocess(pixels, pixels.count, 6, 5, 3, &o, &dst, 48), LIFT_OK, lastError)
    XCTAssertEqual(dst, [UInt8](repeating: 9, count: 48))
    o.view = Int32(LIFT_VIEW_CROP.rawValue)
    o.rect = (4, 0, 2, 2)  // past the 5-pixel width
    XCTAssertEqual(cLiftPixelsPreprocess(pixels, pixels.count, 6, 5, 3, &o, &dst, 48), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("not inside the 5x6 image"), lastError)
  }

  func testSourcesAndLoadersRefuseBadArguments() {
    var source: OpaquePointer?
    XCTAssertEqual(cLiftSourceOpen(nil, 0, nil, 0, nil, &source), LIFT_ERR_ARGUMENT)
    let dir = TempDir()
    let missing = strdup(dir.file("nothing.tar"))!
    defer { free(missing) }
    var paths: [UnsafePointer<CChar>?] = [UnsafePointer(missing)]
    XCTAssertEqual(cLiftSourceOpen(&paths, 1, nil, 0, nil, &source), LIFT_ERR_IO)
    XCTAssertTrue(lastError.contains("nothing.tar"), lastError)
    XCTAssertEqual(cLiftSourceOpen(&paths, 1, nil, 2, nil, &source), LIFT_ERR_ARGUMENT)  // 2 stores, NULL list
    var info = lift_source_info()
    info.struct_size = MemoryLayout<lift_source_info>.stride
    XCTAssertEqual(cLiftSourceGetInfo(nil, &info), LIFT_ERR_ARGUMENT)
    cLiftSourceFree(nil)
    var seen: Int64 = 0
    XCTAssertEqual(cLiftLoaderBadSamples(nil, &seen, nil, 0), LIFT_ERR_ARGUMENT)
  }
}
