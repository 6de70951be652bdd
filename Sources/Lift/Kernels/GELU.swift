/// An elementwise activation as the MLP kernels apply it, 16 lanes at a time.
protocol ActivationKernel {
  static func value(_ x: Vec16) -> Vec16
  /// (f(x), f'(x)), sharing the transcendental parts.
  static func valueAndDerivative(_ x: Vec16) -> (Vec16, Vec16)
}

/// QuickGELU, OpenAI CLIP's activation: y = x * sigmoid(1.702 x).
enum QuickGELU: ActivationKernel {
  static let alpha: Float = 1.702

  @inline(__always)
  static func sigmoid(_ x: Vec16) -> Vec16 {
    let one = Vec16(repeating: 1)
    return one / (one + MathApprox.exp(-(x * Vec16(repeating: alpha))))
  }

  @inline(__always)
  static func value(_ x: Vec16) -> Vec16 { x * sigmoid(x) }

  /// d/dx x s(ax) = s + a x s (1 - s).
  @inline(__always)
  static func valueAndDerivative(_ x: Vec16) -> (Vec16, Vec16) {
    let s = sigmoid(x)
    let one = Vec16(repeating: 1)
    return (x * s, s + Vec16(repeating: alpha) * x * s * (one - s))
  }
}

/// Exact (erf) GELU: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as nn.GELU() computes it.
/// The block MLP kernels below (`forwardAddingBias`, `valueAndDerivativeInPlace`) apply the
/// model's activation, GELU or QuickGELU; the others are GELU's own (the LIFT head's).
enum GELU: ActivationKernel {
  static let invSqrt2: Float = 0.707_106_781_186_547_5
  static let invSqrt2Pi: Float = 0.398_942_280_401_432_7

  @inline(__always)
  static func value(_ x: Vec16) -> Vec16 {
    let u = x * Vec16(repeating: invSqrt2)
    return Vec16(repeating: 0.5) * x * (Vec16(repeating: 1) + MathApprox.erf(u))
  }

  /// d/dx GELU(x) = Phi(x) + x phi(x).
  @inline(__always)
  static func derivative(_ x: Vec16) -> Vec16 {
    let u = x * Vec16(repeating: invSqrt2)
    let e = MathApprox.exp(-u * u)
    let cdf = Vec16(repeating: 0.5) * (Vec16(repeating: 1) + MathApprox.erf(u, expNegSquare: e))
    return cdf + x * Vec16(repeating: invSqrt2Pi) * e
  }

  /// y[i] = GELU(x[i]) for i in 0..<count (parallel).
  static func forward(_ x: UnsafePointer<Float>, _ y: MatrixElements, count: Int) {
    switch y {
    case .f32(let p): forward(x, into: Float32Writer(pointer: p), count: count)
    case .bf16(let p): forward(x, into: BFloat16Writer(pointer: p), count: count)
    }
  }

  private static func forward<W: ProductInputWriter>(_ x: UnsafePointer<Float>, into y: W, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        y.store(value(x.vload(i)), at: i)
        i += 16
      }
      if i < r.upperBound { y.store(value(loadTail(x + i, r.upperBound - i)), at: i, count: r.upperBound - i) }
    }
  }

  /// For each row of x (rows x cols): x += bias (in place; x keeps the pre-activation), then
  /// y = activation(x). Fuses a Linear layer's bias into the activation pass.
  static func forwardAddingBias(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                                _ y: MatrixElements, rows: Int, cols: Int, activation: ModelConfig.Activation) {
    switch (y, activation) {
    case (.f32(let p), .gelu):
      forwardAddingBias(GELU.self, x, bias: bias, into: Float32Writer(pointer: p), rows: rows, cols: cols)
    case (.bf16(let p), .gelu):
      forwardAddingBias(GELU.self, x, bias: bias, into: BFloat16Writer(pointer: p), rows: rows, cols: cols)
    case (.f32(let p), .quickGELU):
      forwardAddingBias(QuickGELU.self, x, bias: bias, into: Float32Writer(pointer: p), rows: rows, cols: cols)
    case (.bf16(let p), .quickGELU):
      forwardAddingBias(QuickGELU.self, x, bias: bias, into: BFloat16Writer(pointer: p), rows: rows, cols: cols)
    }
  }

  private static func forwardAddingBias<A: ActivationKernel, W: ProductInputWriter>(
    _ a: A.Type, _ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, into y: W, rows: Int, cols: Int) {
    Parallel.forRanges(rows, grain: max(1, (1 << 14) / cols)) { r in
      for row in r {
        let xr = x + row * cols, yr = y.advanced(by: row * cols)
        var j = 0
        while j + 16 <= cols {
          let v = xr.vload(j) + bias.vload(j)
          xr.vstore(v, j)
          yr.store(A.value(v), at: j)
          j += 16
        }
        let n = cols - j
        if n > 0 {
          let v = loadTail(xr + j, n) + loadTail(bias + j, n)
          storeTail(v, xr + j, n)
          yr.store(A.value(v), at: j, count: n)
        }
      }
    }
  }

  /// Backward helper, first half: y = activation(x) and x <- activation'(x) in place (x is the
  /// saved pre-activation, not needed afterwards). Shares the transcendentals between the two.
  static func valueAndDerivativeInPlace(_ x: UnsafeMutablePointer<Float>, _ y: MatrixElements, count: Int,
                                        activation: ModelConfig.Activation) {
    switch (y, activation) {
    case (.f32(let p), .gelu): valueAndDerivativeInPlace(GELU.self, x, into: Float32Writer(pointer: p), count: count)
    case (.bf16(let p), .gelu): valueAndDerivativeInPlace(GELU.self, x, into: BFloat16Writer(pointer: p), count: count)
    case (.f32(let p), .quickGELU):
      valueAndDerivativeInPlace(QuickGELU.self, x, into: Float32Writer(pointer: p), count: count)
    case (.bf16(let p), .quickGELU):
      valueAndDerivativeInPlace(QuickGELU.self, x, into: BFloat16Writer(pointer: p), count: count)
    }
  }

  private static func valueAndDerivativeInPlace<A: ActivationKernel, W: ProductInputWriter>(
    _ a: A.Type, _ x: UnsafeMutablePointer<Float>, into y: W, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        let (v, d) = A.valueAndDerivative(x.vload(i))
        y.store(v, at: i)
        x.vstore(d, i)
        i += 16
      }
      let n = r.upperBound - i
      if n > 0 {
        let (v, d) = A.valueAndDerivative(loadTail(x + i, n))
        y.store(v, at: i, count: n)
        storeTail(d, x + i, n)
      }
    }
  }

  @inline(__always)
  static func valueAndDerivative(_ x: Vec16) -> (Vec16, Vec16) {
    let u = x * Vec16(repeating: invSqrt2)
    let e = MathApprox.exp(-u * u)
    let cdf = Vec16(repeating: 0.5) * (Vec16(repeating: 1) + MathApprox.erf(u, expNegSquare: e))
    return (x * cdf, cdf + x * Vec16(repeating: invSqrt2Pi) * e)
  }

  /// Backward helper, second half: dy *= slope (rows x cols) in place, and dBias += column
  /// sums of the result. `partials` holds workers * cols floats.
  static func scaleAndSumColumns(_ dy: UnsafeMutablePointer<Float>, slope: UnsafePointer<Float>, rows: Int, cols: Int,
                                 dBias: UnsafeMutablePointer<Float>, partials: UnsafeMutablePointer<Float>) {
    let parts = Parallel.forWorkers(rows, grain: max(1, (1 << 14) / cols)) { w, r in
      let acc = partials + w * cols
      acc.initialize(repeating: 0, count: cols)
      for row in r {
        let dr = dy + row * cols, sr = slope + row * cols
        var j = 0
        while j + 16 <= cols {
          let v = dr.vload(j) * sr.vload(j)
          dr.vstore(v, j)
          acc.vstore(acc.vload(j) + v, j)
          j += 16
        }
        while j < cols {
          let v = dr[j] * sr[j]
          dr[j] = v
          acc[j] += v
          j += 1
        }
      }
    }
    for w in 0..<parts {
      let acc = partials + w * cols
      for j in 0..<cols { dBias[j] += acc[j] }
    }
  }

  /// dx[i] = dy[i] * GELU'(x[i]) (dx may alias dy).
  static func backward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        dx.vstore(dy.vload(i) * derivative(x.vload(i)), i)
        i += 16
      }
      let n = r.upperBound - i
      if n > 0 { storeTail(loadTail(dy + i, n) * derivative(loadTail(x + i, n)), dx + i, n) }
    }
  }
}
