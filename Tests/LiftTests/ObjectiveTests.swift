import Glibc
import XCTest
@testable import Lift

/// Losses against closed forms on small hand-made cases, and their gradients against finite
/// differences.
final class ObjectiveTests: XCTestCase {
  func run(_ objective: ModelConfig.Objective, images: [Float], texts: [Float], n: Int, d: Int, s: Float, b: Float = 0,
           localStart: Int = 0, localCount: Int? = nil, scale: Float = 1) -> (Objectives.Result, [Float]) {
    let count = localCount ?? n
    var dI = [Float](repeating: .nan, count: count * d)
    let scratch = try! Objectives.Scratch(capacity: 1)
    try! scratch.reserve(n)
    let r = try! Objectives.compute(objective, images: images, texts: texts, n: n, d: d, logitScale: s, logitBias: b,
                               localStart: localStart, localCount: count, featureGradScale: scale, dImages: &dI,
                               scratch: scratch)
    return (r, dI)
  }

  func testCosineLossClosedForm() {
    // Pair 0 identical (cos 1), pair 1 orthogonal (cos 0): loss = (0 + 1) / 2.
    let images: [Float] = [1, 0, 0, 1]
    let texts: [Float] = [1, 0, 1, 0]
    let (r, dI) = run(.cosine, images: images, texts: texts, n: 2, d: 2, s: 0)
    XCTAssertEqual(r.loss, 0.5, accuracy: 1e-12)
    XCTAssertEqual(dI, [-0.5, 0, -0.5, 0])
    XCTAssertEqual(r.dLogitScale, 0)
  }

  func testContrastiveLossClosedForm() {
    // Two pairs; I = T = identity rows: logits = e^s I. Each row/column CE = log(1 + e^{-e^s}).
    let s: Float = 1.5
    let e = Glibc.exp(Double(s))
    let (r, dI) = run(.contrastive, images: [1, 0, 0, 1], texts: [1, 0, 0, 1], n: 2, d: 2, s: s)
    XCTAssertEqual(r.loss, log(1 + Glibc.exp(-e)), accuracy: 1e-6)
    // dlogits = (2 softmax - 2 Id) / 4 with softmax of [e, 0] = [p, 1-p]: diagonal (p-1)/2, off (1-p)/2.
    let p = 1 / (1 + Glibc.exp(-e))
    let dDiag = (p - 1) / 2, dOff = (1 - p) / 2
    // dI = e^s dlogits T, T = identity.
    XCTAssertEqual(Double(dI[0]), e * dDiag, accuracy: 1e-6)
    XCTAssertEqual(Double(dI[1]), e * dOff, accuracy: 1e-6)
    // ds = sum dlogits * logits = 2 * dDiag * e.
    XCTAssertEqual(r.dLogitScale, 2 * dDiag * e, accuracy: 1e-6)
  }

  func testSigmoidLossClosedForm() {
    let s: Float = 0.5, b: Float = -1
    let e = Glibc.exp(Double(s))
    // n = 2, I = T = identity: logits diag e^s + b, off-diagonal b.
    let (r, _) = run(.sigmoid, images: [1, 0, 0, 1], texts: [1, 0, 0, 1], n: 2, d: 2, s: s, b: b)
    func softplus(_ x: Double) -> Double { log(1 + Glibc.exp(x)) }
    let expected = (2 * softplus(-(e + Double(b))) + 2 * softplus(Double(b))) / 2
    XCTAssertEqual(r.loss, expected, accuracy: 1e-6)
    // db = sum of dlogits = (2 * -sigmoid(-(e+b)) + 2 * sigmoid(b)) / 2
    func sigmoid(_ x: Double) -> Double { 1 / (1 + Glibc.exp(-x)) }
    XCTAssertEqual(r.dLogitBias, -sigmoid(-(e + Double(b))) + sigmoid(Double(b)), accuracy: 1e-6)
  }

  /// Gradients w.r.t. images, logit scale and bias against central differences, and the local
  /// slice / worker scale contract.
  func testGradientsMatchFiniteDifferences() {
    var rng = TestRNG(9)
    let n = 5, d = 4
    let texts = rng.floats(n * d)
    var images = rng.floats(n * d)
    for objective in [ModelConfig.Objective.contrastive, .cosine, .sigmoid] {
      let s: Float = 1.2, b: Float = -0.7
      let (r, dI) = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b)
      let eps: Float = 1e-2
      for i in 0..<(n * d) {
        let keep = images[i]
        images[i] = keep + eps
        let up = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b).0.loss
        images[i] = keep - eps
        let down = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b).0.loss
        images[i] = keep
        XCTAssertEqual(Double(dI[i]), (up - down) / (2 * Double(eps)), accuracy: 1e-4, "\(objective) dI[\(i)]")
      }
      let sUp = run(objective, images: images, texts: texts, n: n, d: d, s: s + eps, b: b).0.loss
      let sDown = run(objective, images: images, texts: texts, n: n, d: d, s: s - eps, b: b).0.loss
      XCTAssertEqual(r.dLogitScale, (sUp - sDown) / (2 * Double(eps)), accuracy: 2e-4, "\(objective) ds")
      let bUp = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b + eps).0.loss
      let bDown = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b - eps).0.loss
      let expectedDb = objective == .sigmoid ? (bUp - bDown) / (2 * Double(eps)) : 0
      XCTAssertEqual(r.dLogitBias, expectedDb, accuracy: 2e-4, "\(objective) db")
      // A worker's slice, scaled by the worker count, is the matching rows of the full gradient times it.
      let (_, part) = run(objective, images: images, texts: texts, n: n, d: d, s: s, b: b, localStart: 2, localCount: 2, scale: 3)
      for j in 0..<(2 * d) { XCTAssertEqual(part[j], 3 * dI[2 * d + j], accuracy: 1e-6) }
    }
  }

  /// A batch large enough for the rows and columns to be split between workers, against the
  /// CLIP loss computed in double here: loss, every dI and ds.
  func testContrastiveLossOfALargeBatchMatchesDouble() {
    var rng = TestRNG(12)
    let n = 300, d = 8, s: Float = 2.3
    func unit(_ v: [Float]) -> [Float] {
      (0..<n).flatMap { i -> [Float] in
        let row = v[(i * d)..<((i + 1) * d)]
        let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return row.map { $0 / norm }
      }
    }
    let images = unit(rng.floats(n * d)), texts = unit(rng.floats(n * d))
    let (r, dI) = run(.contrastive, images: images, texts: texts, n: n, d: d, s: s)
    let e = Glibc.exp(Double(s))
    var z = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
      for j in 0..<n { z[i * n + j] = e * (0..<d).reduce(0.0) { $0 + Double(images[i * d + $1]) * Double(texts[j * d + $1]) } }
    }
    func lse(_ values: [Double]) -> Double { let m = values.max()!; return m + log(values.reduce(0) { $0 + Glibc.exp($1 - m) }) }
    let rowLse = (0..<n).map { i in lse((0..<n).map { z[i * n + $0] }) }
    let colLse = (0..<n).map { j in lse((0..<n).map { z[$0 * n + j] }) }
    let loss = (0..<n).reduce(0.0) { $0 + rowLse[$1] + colLse[$1] - 2 * z[$1 * n + $1] } / (2 * Double(n))
    XCTAssertEqual(r.loss, loss, accuracy: 1e-5)
    var ds = 0.0
    var expected = [Double](repeating: 0, count: n * d)
    for i in 0..<n {
      for j in 0..<n {
        let g = (Glibc.exp(z[i * n + j] - rowLse[i]) + Glibc.exp(z[i * n + j] - colLse[j]) - (i == j ? 2 : 0)) / (2 * Double(n))
        ds += g * z[i * n + j]
        for k in 0..<d { expected[i * d + k] += e * g * Double(texts[j * d + k]) }
      }
    }
    XCTAssertEqual(r.dLogitScale, ds, accuracy: 1e-5)
    for i in 0..<(n * d) { XCTAssertEqual(Double(dI[i]), expected[i], accuracy: 1e-6, "dI[\(i)]") }
  }
}
