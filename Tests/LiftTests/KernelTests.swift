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
    // The AVX-512 kernels (where the CPU has them) and the portable loops, each on its own; 37
    // columns exercise the masked tail of the vector loops.
    for vk in Set([false, BF16.hasVectorKernels]).sorted(by: { !$0 && $1 }) {
      var rng = TestRNG(1)
      let rows = 5, cols = 37
      var x = rng.floats(rows * cols).map { $0 * 3 }
      var gamma = rng.floats(cols).map { 1 + $0 * 0.5 }
      var beta = rng.floats(cols)
      let r = rng.floats(rows * cols)
      func loss(_ x: [Float], _ gamma: [Float], _ beta: [Float]) -> Double {
        var y = [Float](repeating: 0, count: rows * cols)
        elements(&y) {
          LayerNorm.forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: 1e-5, y: $0, xhat: nil, rstd: nil,
                            vectorKernels: vk)
        }
        return zip(y, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
      }
      var y = [Float](repeating: 0, count: rows * cols)
      var xhat = y, rstd = [Float](repeating: 0, count: rows)
      elements(&y) {
        LayerNorm.forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: 1e-5, y: $0, xhat: &xhat, rstd: &rstd,
                          vectorKernels: vk)
      }
      var dx = [Float](repeating: 0, count: rows * cols)
      var dgamma = [Float](repeating: 0, count: cols), dbeta = dgamma
      var partials = [Float](repeating: 0, count: 2 * Parallel.workers * cols)
      LayerNorm.backward(r, xhat: xhat, rstd: rstd, gamma: gamma, rows: rows, cols: cols, dx: &dx, accumulate: false,
                         dgamma: &dgamma, dbeta: &dbeta, partials: &partials, vectorKernels: vk)
      let (g0, b0) = (gamma, beta)
      assertClose(dx, numericGradient(&x) { loss($0, g0, b0) }, "dx (vector kernels \(vk))")
      let x0 = x
      assertClose(dgamma, numericGradient(&gamma) { loss(x0, $0, b0) }, "dgamma (vector kernels \(vk))")
      assertClose(dbeta, numericGradient(&beta) { loss(x0, g0, $0) }, "dbeta (vector kernels \(vk))")
      // accumulate adds the same gradient to what dx holds.
      var twice = dx
      LayerNorm.backward(r, xhat: xhat, rstd: rstd, gamma: gamma, rows: rows, cols: cols, dx: &twice, accumulate: true,
                         dgamma: &dgamma, dbeta: &dbeta, partials: &partials, vectorKernels: vk)
      assertSameFloats(twice, dx.map { $0 + $0 }, "accumulated dx")
      // affine() reproduces the forward output from xhat; in place (y = x) gives the same.
      var again = [Float](repeating: 0, count: rows * cols)
      elements(&again) { LayerNorm.affine(xhat, rows: rows, cols: cols, gamma: gamma, beta: beta, y: $0, vectorKernels: vk) }
      assertSameFloats(again, y, "affine")
      var inPlace = x
      inPlace.withUnsafeMutableBufferPointer { p in
        LayerNorm.forward(p.baseAddress!, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: 1e-5,
                          y: .f32(p.baseAddress!), xhat: nil, rstd: nil, vectorKernels: vk)
      }
      assertSameFloats(inPlace, y, "in place")
      // A bfloat16 output is the float32 output rounded.
      var y16 = [BFloat16](repeating: 0, count: rows * cols)
      y16.withUnsafeMutableBufferPointer { p in
        LayerNorm.forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: 1e-5, y: .bf16(p.baseAddress!),
                          xhat: nil, rstd: nil, vectorKernels: vk)
      }
      XCTAssertEqual(y16, y.map { BF16.round($0) }, "bf16 output (vector kernels \(vk))")
    }
  }

  func testAttentionBackwardMatchesFiniteDifferences() {
    // Each shape on the fused fp32 kernel (where the CPU runs it) and on the product path: head
    // dim 4 (oneDNN), 16 with 9 tokens (the small kernels) and 16 with 37 tokens (oneDNN);
    // token counts off multiples of 16 exercise the masked padding of the score rows.
    for fused in [false, true] {
      for (batch, tokens, width, heads) in [(2, 5, 8, 2), (2, 9, 32, 2), (1, 37, 32, 2)] {
        var shape = Attention.Shape(batch: batch, tokens: tokens, width: width, heads: heads)
        shape.fusedKernelAllowed = fused
        checkAttention(shape)
      }
    }
    XCTAssertTrue(Attention.Shape(batch: 2, tokens: 9, width: 32, heads: 2).usesSmallKernels)
    XCTAssertFalse(Attention.Shape(batch: 1, tokens: 37, width: 32, heads: 2).usesSmallKernels)
  }

  func checkAttention(_ shape: Attention.Shape) {
    var rng = TestRNG(2)
    let n = shape.batch * shape.tokens, w = shape.width
    var qkv = rng.floats(n * 3 * w).map { $0 * 2 }
    let r = rng.floats(n * w)
    var scratch = [Float](repeating: 0, count: Parallel.workers * shape.scratchPerWorker)
    let products = MatMul()
    func loss(_ qkv: [Float]) -> Double {
      var qkv = qkv
      var out = [Float](repeating: 0, count: n * w)
      elements(&qkv, &out) { q, o in
        try! Attention.forward(qkv: q, shape: shape, out: o, lse: nil, scratch: &scratch, products: products)
      }
      return zip(out, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    var out = [Float](repeating: 0, count: n * w)
    var lse = [Float](repeating: 0, count: shape.tasks * shape.tokens)
    elements(&qkv, &out) { q, o in
      try! Attention.forward(qkv: q, shape: shape, out: o, lse: &lse, scratch: &scratch, products: products)
    }
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
    var dOut = r
    elements(&qkv, &out, &dOut) { q, o, d in
      try! Attention.backward(qkv: q, out: o, lse: lse, dOut: d, shape: shape, dqkv: &dqkv, rounded: nil,
                              dBias: &dBias, partials: &partials, scratch: &scratch, products: products)
    }
    assertClose(dqkv, numericGradient(&qkv, loss), "dqkv")
    // dBias accumulated the column sums of dqkv on top of its previous contents (1).
    for j in 0..<(3 * w) {
      var sum: Float = 1
      for row in 0..<n { sum += dqkv[row * 3 * w + j] }
      XCTAssertEqual(dBias[j], sum, accuracy: 1e-5)
    }
  }

  /// C = op(A) op(B) [+ bias] [+ C] in double from float values (bf16 operands are passed as
  /// their rounded values).
  func naiveProduct(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: [Float], lda: Int, b: [Float], ldb: Int,
                    c: [Float], ldc: Int, bias: [Float]?, accumulate: Bool) -> [Double] {
    var out = c.map(Double.init)
    for i in 0..<m {
      for j in 0..<n {
        var sum = accumulate ? Double(c[i * ldc + j]) : 0
        if let bias { sum += Double(bias[j]) }
        for kk in 0..<k {
          sum += Double(transA ? a[kk * lda + i] : a[i * lda + kk]) * Double(transB ? b[j * ldb + kk] : b[kk * ldb + j])
        }
        out[i * ldc + j] = sum
      }
    }
    return out
  }

  func testMatMulMatchesNaiveProducts() throws {
    var rng = TestRNG(12)
    // Small shapes run as one part; 300 x 130 x 120 (4.7e6 multiply-adds) is split by rows and
    // 20 x 400 x 600 by columns over the workers.
    for (m, n, k) in [(1, 1, 1), (6, 32, 7), (13, 48, 20), (197, 64, 5), (300, 130, 120), (20, 400, 600)] {
      for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
        for type in [ElementType.f32, .bf16] {
          let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 5, ldc = n + 2
          var a = rng.floats((transA ? k : m) * lda), b = rng.floats((transB ? n : k) * ldb)
          if type == .bf16 { a = a.map { BF16.widen(BF16.round($0)) }; b = b.map { BF16.widen(BF16.round($0)) } }
          var a16 = a.map { BF16.round($0) }, b16 = b.map { BF16.round($0) }
          for (useBias, accumulate) in [(false, false), (true, false), (false, true), (true, true)] {
            let bias = useBias ? rng.floats(n) : nil
            var c = rng.floats(m * ldc)
            let expected = naiveProduct(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                        c: c, ldc: ldc, bias: bias, accumulate: accumulate)
            let products = MatMul()
            func run() throws {
              try withMatrices(&a, &a16, &b, &b16, &c, type: type) { am, bm, cp in
                try bias.withOptionalPointer { biasPointer in
                  try products.product(transA: transA, transB: transB, m: m, n: n, k: k, Matrix(am, ld: lda),
                                       Matrix(bm, ld: ldb), Matrix(cp, ld: ldc), bias: biasPointer, accumulate: accumulate)
                }
              }
            }
            try run()
            let tag = "\(m)x\(n)x\(k) tA=\(transA) tB=\(transB) \(type) bias=\(useBias) acc=\(accumulate)"
            for i in 0..<m {
              for j in 0..<ldc {
                // Columns beyond n are untouched.
                XCTAssertEqual(Double(c[i * ldc + j]), expected[i * ldc + j], accuracy: 1e-4 * Double(k + 1), tag)
              }
            }
            // A second run of the same shape reuses its plans.
            let plans = products.planCount
            c = rng.floats(m * ldc)
            try run()
            XCTAssertEqual(products.planCount, plans, tag)
          }
        }
      }
    }
  }

  /// Runs body with A and B as float32 or bfloat16 operands (element pointers and type) and C.
  func withMatrices(_ a: inout [Float], _ a16: inout [BFloat16], _ b: inout [Float], _ b16: inout [BFloat16],
                    _ c: inout [Float], type: ElementType,
                    _ body: (MatrixElements, MatrixElements, UnsafeMutablePointer<Float>) throws -> Void) throws {
    try a.withUnsafeMutableBufferPointer { ap in
      try a16.withUnsafeMutableBufferPointer { a16p in
        try b.withUnsafeMutableBufferPointer { bp in
          try b16.withUnsafeMutableBufferPointer { b16p in
            try c.withUnsafeMutableBufferPointer { cp in
              let am: MatrixElements = type == .f32 ? .f32(ap.baseAddress!) : .bf16(a16p.baseAddress!)
              let bm: MatrixElements = type == .f32 ? .f32(bp.baseAddress!) : .bf16(b16p.baseAddress!)
              try body(am, bm, cp.baseAddress!)
            }
          }
        }
      }
    }
  }

  func testMatMulBFloat16OutputIsTheRoundedProduct() throws {
    // bfloat16 operands into a bfloat16 result: the float32 result, rounded once.
    var rng = TestRNG(13)
    let m = 7, n = 33, k = 19
    var a = rng.floats(m * k).map { BF16.round($0) }, b = rng.floats(k * n).map { BF16.round($0) }
    var c32 = [Float](repeating: 0, count: m * n), c16 = [BFloat16](repeating: 0, count: m * n)
    let products = MatMul()
    try a.withUnsafeMutableBufferPointer { ap in
      try b.withUnsafeMutableBufferPointer { bp in
        let am = Matrix(ap.baseAddress!, ld: k), bm = Matrix(bp.baseAddress!, ld: n)
        try c32.withUnsafeMutableBufferPointer { cp in
          try products.product(transA: false, transB: false, m: m, n: n, k: k, am, bm, Matrix(cp.baseAddress!, ld: n))
        }
        try c16.withUnsafeMutableBufferPointer { cp in
          try products.product(transA: false, transB: false, m: m, n: n, k: k, am, bm, Matrix(cp.baseAddress!, ld: n))
        }
      }
    }
    for i in 0..<(m * n) { XCTAssertEqual(c16[i], BF16.round(c32[i]), "element \(i)") }
  }

  func testSplitKWeightGradientMatchesNaiveProduct() throws {
    // dW (m x n) += A^T B over k = 2000 rows, split over the workers with per-worker partials.
    var rng = TestRNG(14)
    let m = 24, n = 40, k = 2000
    var a = rng.floats(k * m), b = rng.floats(k * n)
    var c = rng.floats(m * n)
    let expected = naiveProduct(transA: true, transB: false, m: m, n: n, k: k, a: a, lda: m, b: b, ldb: n, c: c, ldc: n,
                                bias: nil, accumulate: true)
    var scratch = [Float](repeating: 0, count: max(Parallel.workers - 1, 1) * m * n)
    try scratch.withUnsafeMutableBufferPointer { sp in
      try a.withUnsafeMutableBufferPointer { ap in
        try b.withUnsafeMutableBufferPointer { bp in
          try c.withUnsafeMutableBufferPointer { cp in
            let products = MatMul(scratch: sp.baseAddress!, scratchCapacity: sp.count)
            try products.accumulateTransposed(m: m, n: n, k: k, Matrix(ap.baseAddress!, ld: m),
                                              Matrix(bp.baseAddress!, ld: n), into: cp.baseAddress!)
          }
        }
      }
    }
    for i in 0..<(m * n) { XCTAssertEqual(Double(c[i]), expected[i], accuracy: 1e-3) }
  }

  func testBFloat16RoundsToNearestEven() {
    // Exactly representable values, ties to even (both directions), NaN stays NaN, overflow to inf.
    let cases: [(Float, UInt16)] = [
      (1, 0x3F80), (-2, 0xC000), (0, 0), (Float(bitPattern: 0x3F80_8000), 0x3F80), (Float(bitPattern: 0x3F81_8000), 0x3F82),
      (Float(bitPattern: 0x3F80_8001), 0x3F81), (.infinity, 0x7F80), (-.infinity, 0xFF80),
      (Float(bitPattern: 0x7F7F_FFFF), 0x7F80), (Float(bitPattern: 0x0000_8000), 0x0000),
    ]
    for (x, bits) in cases {
      XCTAssertEqual(BF16.round(x), bits, "\(x)")
      XCTAssertEqual(BF16.round(Vec16(repeating: x))[5], bits, "\(x) (vector)")
    }
    XCTAssertTrue(BF16.widen(BF16.round(Float.nan)).isNaN)
    XCTAssertTrue(BF16.widen(BF16.round(Vec16(repeating: .nan)))[0].isNaN)
    // Against an independent rule: the nearer of the two neighbouring bfloat16 values.
    var rng = TestRNG(15)
    var src = rng.floats(1000).map { $0 * 1000 }
    src[0] = 3.0e38
    var dst = [BFloat16](repeating: 0, count: src.count)
    BF16.convertParallel(src, &dst, count: src.count)
    for (x, h) in zip(src, dst) {
      let down = Float(bitPattern: x.bitPattern & 0xFFFF_0000), up = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
      let expected = abs(x - down) < abs(up - x) ? down : (abs(x - down) > abs(up - x) ? up
        : ((x.bitPattern >> 16) & 1 == 0 ? down : up))
      XCTAssertEqual(BF16.widen(h), expected, "\(x)")
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
      activate(x, into: &y, .gelu)
      return zip(y, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    var dx = [Float](repeating: 0, count: 45)
    GELU.backward(x, r, &dx, count: 45)
    assertClose(dx, numericGradient(&x, loss), "dx")
  }

  /// The MLP's activation backward (GELU and QuickGELU; 3 rows of 19 columns, so vector tails):
  /// dx against finite differences of sum(r * activation(x)), the bias gradient as dx's column
  /// sums added to what it held, and the bf16 form (saved bfloat16 pre-activation, rounded dx)
  /// against the float32 form on the same rounded input.
  func testMLPActivationBackward() {
    let rows = 3, cols = 19
    // The AVX-512 kernels (where the CPU has them) and the portable loops, each on its own.
    let vector: Bool = BF16.hasVectorKernels
    let cases: [(ModelConfig.Activation, Bool)] = [(.gelu, false), (.quickGELU, false), (.gelu, vector), (.quickGELU, vector)]
    for (activation, vk) in cases {
      var rng = TestRNG(4)
      var x: [Float] = rng.floats(rows * cols).map { (v: Float) -> Float in v * 4 }
      let r: [Float] = rng.floats(rows * cols)
      func loss(_ input: [Float]) -> Double {
        var y = [Float](repeating: 0, count: input.count)
        activate(input, into: &y, activation, vectorKernels: vk)
        var sum = 0.0
        for i in 0..<y.count { sum += Double(y[i]) * Double(r[i]) }
        return sum
      }
      var dx = r
      var bias = [Float](repeating: 1, count: cols)
      mlpBackward(&dx, x, rows: rows, cols: cols, activation, bias: &bias, rounded: nil, vectorKernels: vk)
      assertClose(dx, numericGradient(&x, loss), "\(activation) dx")
      for j in 0..<cols {
        var sum: Float = 1
        for row in 0..<rows { sum += dx[row * cols + j] }
        XCTAssertEqual(bias[j], sum, accuracy: 1e-5)
      }
      // bf16: the same on the rounded input, dx rounded once at the end.
      let xr: [Float] = x.map { (v: Float) -> Float in BF16.widen(BF16.round(v)) }
      var reference = r, dx16 = r
      mlpBackward(&reference, xr, rows: rows, cols: cols, activation, bias: &bias, rounded: nil, vectorKernels: vk)
      var rounded = [BFloat16](repeating: 0, count: rows * cols)
      let biasBefore = bias
      mlpBackward(&dx16, xr, rows: rows, cols: cols, activation, bias: &bias, rounded: &rounded, vectorKernels: vk)
      let expected: [BFloat16] = reference.map { (v: Float) -> BFloat16 in BF16.round(v) }
      XCTAssertEqual(rounded, expected)
      // The bias gradient sums the float32 gradient, before rounding.
      for j in 0..<cols {
        var sum: Float = biasBefore[j]
        for row in 0..<rows { sum += reference[row * cols + j] }
        XCTAssertEqual(bias[j], sum, accuracy: 1e-5, "\(activation) bf16 bias \(j)")
      }
      // The forward in bf16 (bfloat16 in and out) is the float32 forward on the same input, rounded.
      var x16: [BFloat16] = xr.map { (v: Float) -> BFloat16 in BF16.round(v) }
      var y16 = [BFloat16](repeating: 0, count: x16.count)
      var y32 = [Float](repeating: 0, count: x16.count)
      activate(xr, into: &y32, activation, vectorKernels: vk)
      let count = x16.count
      x16.withUnsafeMutableBufferPointer { (xp: inout UnsafeMutableBufferPointer<BFloat16>) -> Void in
        y16.withUnsafeMutableBufferPointer { (yp: inout UnsafeMutableBufferPointer<BFloat16>) -> Void in
          GELU.forward(.bf16(xp.baseAddress!), .bf16(yp.baseAddress!), count: count, activation: activation,
                       vectorKernels: vk)
        }
      }
      XCTAssertEqual(y16, y32.map { (v: Float) -> BFloat16 in BF16.round(v) }, "\(activation) bf16 forward")
    }
  }

  /// y = activation(x) through the MLP kernel (float32).
  func activate(_ x: [Float], into y: inout [Float], _ activation: ModelConfig.Activation,
                vectorKernels: Bool = BF16.hasVectorKernels) {
    var input = x
    let count = x.count
    input.withUnsafeMutableBufferPointer { (xp: inout UnsafeMutableBufferPointer<Float>) -> Void in
      y.withUnsafeMutableBufferPointer { (yp: inout UnsafeMutableBufferPointer<Float>) -> Void in
        GELU.forward(.f32(xp.baseAddress!), .f32(yp.baseAddress!), count: count, activation: activation,
                     vectorKernels: vectorKernels)
      }
    }
  }

  /// GELU.backward on dy in place (rounded nil) or into `rounded`, with the pre-activation x saved
  /// as bfloat16 exactly when `rounded` is given.
  func mlpBackward(_ dy: inout [Float], _ x: [Float], rows: Int, cols: Int, _ activation: ModelConfig.Activation,
                   bias: inout [Float], rounded: UnsafeMutablePointer<BFloat16>?,
                   vectorKernels: Bool = BF16.hasVectorKernels) {
    var x32 = x
    var x16: [BFloat16] = x.map { (v: Float) -> BFloat16 in BF16.round(v) }
    let xs: [Float] = rounded == nil ? x : x16.map { (h: BFloat16) -> Float in BF16.widen(h) }
    var partials = [Float](repeating: 0, count: Parallel.workers * cols)
    dy.withUnsafeMutableBufferPointer { (d: inout UnsafeMutableBufferPointer<Float>) -> Void in
      x32.withUnsafeMutableBufferPointer { (a: inout UnsafeMutableBufferPointer<Float>) -> Void in
        x16.withUnsafeMutableBufferPointer { (h: inout UnsafeMutableBufferPointer<BFloat16>) -> Void in
          let saved: MatrixElements = rounded == nil ? .f32(a.baseAddress!) : .bf16(h.baseAddress!)
          let value32 = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
          let value16 = UnsafeMutablePointer<BFloat16>.allocate(capacity: rows * cols)
          defer { value32.deallocate(); value16.deallocate() }
          let value: MatrixElements = rounded == nil ? .f32(value32) : .bf16(value16)
          let operand: Matrix = GELU.backward(d.baseAddress!, preActivation: saved, value: value, rows: rows, cols: cols,
                                              activation: activation, dBias: &bias, partials: &partials,
                                              rounded: rounded, vectorKernels: vectorKernels)
          XCTAssertEqual(operand.type, rounded == nil ? ElementType.f32 : ElementType.bf16)
          // The value pass: activation(x) as the forward computes it.
          var expected = [Float](repeating: 0, count: rows * cols)
          activate(xs, into: &expected, activation, vectorKernels: vectorKernels)
          for i in 0..<(rows * cols) {
            let got: Float = rounded == nil ? value32[i] : BF16.widen(value16[i])
            let want: Float = rounded == nil ? expected[i] : BF16.widen(BF16.round(expected[i]))
            XCTAssertEqual(got, want, "value \(i)")
          }
        }
      }
    }
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
    elements(&a) { out in u8.withUnsafeBufferPointer { Patchify.run(.uint8NHWC($0.baseAddress!), config: c, batch: 2, into: out) } }
    elements(&b) { out in f32.withUnsafeBufferPointer { Patchify.run(.float32NCHW($0.baseAddress!), config: c, batch: 2, into: out) } }
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5) }
    // Patch (py=0, px=1) of image 1, channel 2, pixel (1, 0) sits at column (2*2 + 1)*2 + 0.
    let patchIndex: Int = (1 * 4 + 1) * 12 + (2 * 2 + 1) * 2
    let pixelIndex: Int = ((1 * 3 + 2) * 4 + 1) * 4 + 2
    XCTAssertEqual(b[patchIndex], f32[pixelIndex])
  }
}
