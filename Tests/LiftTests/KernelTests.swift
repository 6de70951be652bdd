import Glibc
import XCTest
@testable import Lift

/// Every hand-written kernel against an independent reference: libm for the approximations,
/// central finite differences (in double, over the float kernels) for every backward.
final class KernelTests: XCTestCase {
  func testExpApproximationMatchesLibm() {
    var worst = 0.0
    var x: Float = -87
    while x < 88 {
      let v = MathApprox.exp(Vec16((0..<16).map { x + Float($0) * 0.0137 }))
      for i in 0..<16 {
        let arg = Double(x + Float(i) * 0.0137)
        worst = max(worst, abs(Double(v[i]) - Glibc.exp(arg)) / Glibc.exp(arg))
      }
      x += 0.219
    }
    XCTAssertLessThan(worst, 4e-7)
  }

  func testErfApproximationMatchesLibm() {
    var worst = 0.0
    for k in -2000...2000 {
      let x = Float(k) * 0.003
      let v = MathApprox.erf(Vec16(repeating: x))[0]
      worst = max(worst, abs(Double(v) - Glibc.erf(Double(x))))
    }
    XCTAssertLessThan(worst, 5e-7)  // A&S 7.1.26 (1.5e-7) plus float32 rounding near |erf| = 1
  }

  func testGELUValueAndDerivative() {
    for k in -800...800 {
      let x = Double(k) * 0.01
      let phi = 0.5 * (1 + Glibc.erf(x / 2.0.squareRoot()))
      let value = x * phi
      let slope = phi + x * Glibc.exp(-x * x / 2) / (2 * Double.pi).squareRoot()
      XCTAssertEqual(Double(GELU.value(Vec16(repeating: Float(x)))[3]), value, accuracy: 3e-6)
      XCTAssertEqual(Double(GELU.derivative(Vec16(repeating: Float(x)))[7]), slope, accuracy: 3e-6)
    }
  }

  /// d/dp of sum(r * f(p)) by central differences, element by element.
  func numericGradient(_ p: inout [Float], eps: Float = 1e-2, _ f: ([Float]) -> Double) -> [Double] {
    var out = [Double](repeating: 0, count: p.count)
    for i in 0..<p.count {
      let keep = p[i]
      p[i] = keep + eps; let up = f(p)
      p[i] = keep - eps; let down = f(p)
      p[i] = keep
      out[i] = (up - down) / (2 * Double(eps))
    }
    return out
  }

  func assertClose(_ a: [Float], _ b: [Double], tol: Double = 2e-3, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    let scale = max(1, b.map(abs).max() ?? 0)
    for (i, (x, y)) in zip(a, b).enumerated() where abs(Double(x) - y) > tol * scale {
      XCTFail("\(what)[\(i)]: analytic \(x) vs numeric \(y)", file: file, line: line)
      return
    }
  }

  func testLayerNormBackwardMatchesFiniteDifferences() {
    var rng = TestRNG(1)
    let rows = 5, cols = 37
    var x = rng.floats(rows * cols).map { $0 * 3 }
    var gamma = rng.floats(cols).map { 1 + $0 * 0.5 }
    var beta = rng.floats(cols)
    let r = rng.floats(rows * cols)
    func loss(_ x: [Float], _ gamma: [Float], _ beta: [Float]) -> Double {
      var y = [Float](repeating: 0, count: rows * cols)
      LayerNorm.forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, y: &y, xhat: nil, rstd: nil)
      return zip(y, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    var y = [Float](repeating: 0, count: rows * cols)
    var xhat = y, rstd = [Float](repeating: 0, count: rows)
    LayerNorm.forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, y: &y, xhat: &xhat, rstd: &rstd)
    var dx = [Float](repeating: 0, count: rows * cols)
    var dgamma = [Float](repeating: 0, count: cols), dbeta = dgamma
    var partials = [Float](repeating: 0, count: 2 * Parallel.workers * cols)
    LayerNorm.backward(r, xhat: xhat, rstd: rstd, gamma: gamma, rows: rows, cols: cols, dx: &dx, accumulate: false,
                       dgamma: &dgamma, dbeta: &dbeta, partials: &partials)
    let (g0, b0) = (gamma, beta)
    assertClose(dx, numericGradient(&x) { loss($0, g0, b0) }, "dx")
    let x0 = x
    assertClose(dgamma, numericGradient(&gamma) { loss(x0, $0, b0) }, "dgamma")
    assertClose(dbeta, numericGradient(&beta) { loss(x0, g0, $0) }, "dbeta")
    // affine() reproduces the forward output from xhat.
    var again = [Float](repeating: 0, count: rows * cols)
    LayerNorm.affine(xhat, rows: rows, cols: cols, gamma: gamma, beta: beta, y: &again)
    assertSameFloats(again, y, "affine")
  }

  func testAttentionBackwardMatchesFiniteDifferences() {
    // head dim 4 takes the OpenBLAS path, 16 the SmallGemm path; 9 tokens exercise the
    // 6-row remainder and the 16-column padding.
    checkAttention(Attention.Shape(batch: 2, tokens: 5, width: 8, heads: 2))
    checkAttention(Attention.Shape(batch: 2, tokens: 9, width: 32, heads: 2))
  }

  func checkAttention(_ shape: Attention.Shape) {
    var rng = TestRNG(2)
    let n = shape.batch * shape.tokens, w = shape.width
    var qkv = rng.floats(n * 3 * w).map { $0 * 2 }
    let r = rng.floats(n * w)
    var scratch = [Float](repeating: 0, count: Parallel.workers * Attention.scratchPerWorker(tokens: shape.tokens, headDim: shape.headDim))
    func loss(_ qkv: [Float]) -> Double {
      var out = [Float](repeating: 0, count: n * w)
      Attention.forward(qkv: qkv, shape: shape, out: &out, lse: nil, scratch: &scratch)
      return zip(out, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    var out = [Float](repeating: 0, count: n * w)
    var lse = [Float](repeating: 0, count: shape.tasks * shape.tokens)
    Attention.forward(qkv: qkv, shape: shape, out: &out, lse: &lse, scratch: &scratch)
    // Reference forward in double: softmax(q k^T / sqrt(hd)) v per (image, head).
    let hd = shape.headDim
    for b in 0..<shape.batch {
      for h in 0..<shape.heads {
        for i in 0..<shape.tokens {
          var s = [Double](repeating: 0, count: shape.tokens)
          for j in 0..<shape.tokens {
            for k in 0..<hd {
              s[j] += Double(qkv[(b * shape.tokens + i) * 3 * w + h * hd + k]) * Double(qkv[(b * shape.tokens + j) * 3 * w + w + h * hd + k])
            }
            s[j] /= Double(hd).squareRoot()
          }
          let m = s.max()!
          let e = s.map { Glibc.exp($0 - m) }
          let z = e.reduce(0, +)
          for k in 0..<hd {
            var o = 0.0
            for j in 0..<shape.tokens { o += e[j] / z * Double(qkv[(b * shape.tokens + j) * 3 * w + 2 * w + h * hd + k]) }
            XCTAssertEqual(Double(out[(b * shape.tokens + i) * w + h * hd + k]), o, accuracy: 1e-5)
          }
        }
      }
    }
    var dqkv = [Float](repeating: 0, count: n * 3 * w)
    var dBias = [Float](repeating: 1, count: 3 * w)
    var partials = [Float](repeating: 0, count: Parallel.workers * 3 * w)
    Attention.backward(qkv: qkv, out: out, lse: lse, dOut: r, shape: shape, dqkv: &dqkv, dBias: &dBias,
                       partials: &partials, scratch: &scratch)
    assertClose(dqkv, numericGradient(&qkv, loss), "dqkv")
    // dBias accumulated the column sums of dqkv on top of its previous contents (1).
    for j in 0..<(3 * w) {
      var sum: Float = 1
      for row in 0..<n { sum += dqkv[row * 3 * w + j] }
      XCTAssertEqual(dBias[j], sum, accuracy: 1e-5)
    }
  }

  func testSmallGemmMatchesNaiveProducts() {
    var rng = TestRNG(12)
    for (m, n, k) in [(1, 16, 1), (6, 32, 7), (13, 48, 20), (197, 64, 5)] {
      let lda = k + 3, ldb = n + 5, ldc = n + 2
      let a = rng.floats(m * lda), at = rng.floats(k * (m + 1)), b = rng.floats(k * ldb)
      for transposed in [false, true] {
        for accumulate in [false, true] {
          var c = rng.floats(m * ldc)
          let before = c
          if transposed {
            SmallGemm.product(m: m, n: n, k: k, at, aRow: 1, aCol: m + 1, b, ldb: ldb, &c, ldc: ldc, accumulate: accumulate)
          } else {
            SmallGemm.product(m: m, n: n, k: k, a, aRow: lda, aCol: 1, b, ldb: ldb, &c, ldc: ldc, accumulate: accumulate)
          }
          for i in 0..<m {
            for j in 0..<n {
              var expected = accumulate ? Double(before[i * ldc + j]) : 0
              for kk in 0..<k {
                let av = transposed ? at[kk * (m + 1) + i] : a[i * lda + kk]
                expected += Double(av) * Double(b[kk * ldb + j])
              }
              XCTAssertEqual(Double(c[i * ldc + j]), expected, accuracy: 1e-4, "\(m)x\(n)x\(k) t=\(transposed)")
            }
            // Columns beyond n are untouched.
            for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], before[i * ldc + j]) }
          }
        }
      }
    }
  }

  func testGELUBackwardMatchesFiniteDifferences() {
    var rng = TestRNG(3)
    var x = rng.floats(45).map { $0 * 4 }
    let r = rng.floats(45)
    func loss(_ x: [Float]) -> Double {
      var y = [Float](repeating: 0, count: x.count)
      GELU.forward(x, &y, count: x.count)
      return zip(y, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    var dx = [Float](repeating: 0, count: 45)
    GELU.backward(x, r, &dx, count: 45)
    assertClose(dx, numericGradient(&x, loss), "dx")
  }

  func testPatchifyLayoutsAgree() {
    // The same pixels as float NCHW and as uint8 NHWC give the same patch matrix.
    let c = ModelConfig(imageSize: 4, channels: 3, patch: 2, width: 4, depth: 0, heads: 1, textDim: 2,
                        imageMean: [0.1, 0.2, 0.3], imageStd: [0.5, 0.25, 2])
    var rng = TestRNG(4)
    let u8: [UInt8] = (0..<(2 * 4 * 4 * 3)).map { _ in UInt8(rng.int(256)) }
    var f32 = [Float](repeating: 0, count: u8.count)
    for b in 0..<2 { for y in 0..<4 { for x in 0..<4 { for ch in 0..<3 {
      let pixel: Float = Float(u8[((b * 4 + y) * 4 + x) * 3 + ch]) / 255
      let dst: Int = ((b * 3 + ch) * 4 + y) * 4 + x
      f32[dst] = (pixel - c.imageMean[ch]) / c.imageStd[ch]
    } } } }
    var a = [Float](repeating: 0, count: 2 * 4 * 12), b = a
    u8.withUnsafeBufferPointer { Patchify.run(.uint8NHWC($0.baseAddress!), config: c, batch: 2, into: &a) }
    f32.withUnsafeBufferPointer { Patchify.run(.float32NCHW($0.baseAddress!), config: c, batch: 2, into: &b) }
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5) }
    // Patch (py=0, px=1) of image 1, channel 2, pixel (1, 0) sits at column (2*2 + 1)*2 + 0.
    let patchIndex: Int = (1 * 4 + 1) * 12 + (2 * 2 + 1) * 2
    let pixelIndex: Int = ((1 * 3 + 2) * 4 + 1) * 4 + 2
    XCTAssertEqual(b[patchIndex], f32[pixelIndex])
  }
}
