import CLiftABI
import XCTest
@testable import Lift

final class MetricsTests: XCTestCase {
  func testClassEmbeddingsAverageNormalisedPrompts() throws {
    // Class 0 prompts: (2, 0) and (0, 5) -> normalised (1,0), (0,1) -> mean (0.5, 0.5) -> unit.
    let prompts: [Float] = [2, 0, 0, 5, -3, 0]
    let c = try Metrics.classEmbeddings(prompts: prompts, d: 2, classes: [[0, 1], [2]])
    XCTAssertEqual(c[0], 1 / Float(2).squareRoot(), accuracy: 1e-6)
    XCTAssertEqual(c[1], 1 / Float(2).squareRoot(), accuracy: 1e-6)
    XCTAssertEqual(Array(c[2...]), [-1, 0])
    assertLiftError(LIFT_ERR_ARGUMENT, ["class 1 has no prompts"]) { _ = try Metrics.classEmbeddings(prompts: prompts, d: 2, classes: [[0], []]) }
  }

  func testZeroShotCountsTop1AndTop5() throws {
    // 6 classes on the unit circle at 0, 60, ..., 300 degrees; images at known angles.
    let classes: [Float] = (0..<6).flatMap { k -> [Float] in
      let a = Float(k) * .pi / 3
      return [cos(a), sin(a)]
    }
    let angles: [Float] = [0.1, 1.1, 3.0, 4.3]       // nearest classes 0, 1, 3, 4
    let images = angles.flatMap { [cos($0), sin($0)] }
    let labels: [Int64] = [0, 2, 3, 1]                 // right, 2nd-best, right, worst
    let r = try Metrics.zeroShot(images: images, n: 4, classes: classes, classCount: 6, d: 2, labels: labels)
    XCTAssertEqual(r.top1, 0.5)
    XCTAssertEqual(r.top5, 0.75)  // image 3's label (class 1) is its 6th choice
    assertLiftError(LIFT_ERR_ARGUMENT, ["label of image 0 is 6"]) {
      _ = try Metrics.zeroShot(images: images, n: 1, classes: classes, classCount: 6, d: 2, labels: [6])
    }
  }

  func testRetrievalRecallWithSeveralCaptionsPerImage() throws {
    // Images along axes; captions: image 0 owns captions 0 and 1, image 1 owns 2, image 2 owns 3.
    let images: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    let texts: [Float] = [0, 1, 0.1,   // caption 0 (image 0's) looks like image 1
                          1, 0, 0,     // caption 1 (image 0's) matches image 0
                          0, 0, 1,     // caption 2 (image 1's) looks like image 2
                          0, 1, 0]     // caption 3 (image 2's) looks like image 1
    let r = try Metrics.retrieval(images: images, n: 3, texts: texts, m: 4, d: 3, captionOffsets: [0, 2, 3, 4], captionRows: [0, 1, 2, 3])
    // Image->text R@1: image 0 -> caption 1 (own) yes; image 1 -> caption 0 or 3 (not own) no;
    // image 2 -> caption 2 (not own) no.
    XCTAssertEqual(r.imageToText[0], 1.0 / 3, accuracy: 1e-12)
    XCTAssertEqual(r.imageToText[1], 1)
    // Text->image R@1: c0 -> image 1 (no), c1 -> image 0 (yes), c2 -> image 2 (no), c3 -> image 1 (no).
    XCTAssertEqual(r.textToImage[0], 0.25)
    XCTAssertEqual(r.textToImage[2], 1)
    XCTAssertEqual(r.texts, 4)
  }

  func testPairwiseCompositional() throws {
    let images: [Float] = [1, 0, 0, 1]
    let pos: [Float] = [1, 0.1, 1, 0]
    let neg: [Float] = [0.5, 1, 0, 2]
    XCTAssertEqual(try Metrics.pairwise(images: images, positives: pos, negatives: neg, n: 2, d: 2), [true, false])
    assertLiftError(LIFT_ERR_VALUE, ["pair 0"]) {
      _ = try Metrics.pairwise(images: [0, 0], positives: [1, 0], negatives: [0, 1], n: 1, d: 2)
    }
  }
}
