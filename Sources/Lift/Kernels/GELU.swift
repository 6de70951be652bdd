import LiftKernelsC

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
/// The MLP kernels below (`forward`, and `backward` with a pre-activation) apply the model's
/// activation, GELU or QuickGELU; the elementwise `backward` is GELU's own (the LIFT head's).
/// On CPUs with AVX512-BF16 the MLP passes run on LiftKernelsC's 512-bit kernels (same
/// approximations), elsewhere on the generic loops here.
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

  /// y[i] = activation(x[i]) for i in 0..<count (parallel); x is the saved pre-activation
  /// (float32, or bfloat16 in bf16 precision), y a product input. `vectorKernels` false runs
  /// the portable loops where the AVX-512 ones would run (for tests).
  static func forward(_ x: MatrixElements, _ y: MatrixElements, count: Int, activation: ModelConfig.Activation = .gelu,
                      vectorKernels: Bool = BF16.hasVectorKernels) {
    switch activation {
    case .gelu: forward(GELU.self, x, y, count: count, vectorKernels)
    case .quickGELU: forward(QuickGELU.self, x, y, count: count, vectorKernels)
    }
  }

  private static func forward<A: ActivationKernel>(_ a: A.Type, _ x: MatrixElements, _ y: MatrixElements, count: Int,
                                                   _ vectorKernels: Bool) {
    let kind = A.self == QuickGELU.self ? LK_QUICK_GELU : LK_GELU
    switch (x, y) {
    case (.bf16(let s), .bf16(let d)) where vectorKernels:
      Parallel.forRanges(count, grain: 1 << 14) { r in lk_activation_forward(kind, s + r.lowerBound, d + r.lowerBound, r.count) }
    case (.f32(let s), .f32(let d)) where vectorKernels:
      Parallel.forRanges(count, grain: 1 << 14) { r in
        lk_activation_forward_f32(kind, s + r.lowerBound, d + r.lowerBound, r.count)
      }
    case (.f32(let s), .f32(let d)): forward(A.self, Float32Reader(pointer: s), Float32Writer(pointer: d), count: count)
    case (.f32(let s), .bf16(let d)): forward(A.self, Float32Reader(pointer: s), BFloat16Writer(pointer: d), count: count)
    case (.bf16(let s), .f32(let d)): forward(A.self, BFloat16Reader(pointer: s), Float32Writer(pointer: d), count: count)
    case (.bf16(let s), .bf16(let d)): forward(A.self, BFloat16Reader(pointer: s), BFloat16Writer(pointer: d), count: count)
    }
  }

  private static func forward<A: ActivationKernel, R: ProductInputReader, W: ProductInputWriter>(
    _ a: A.Type, _ x: R, _ y: W, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        y.store(A.value(x.load(i)), at: i)
        i += 16
      }
      let n = r.upperBound - i
      if n > 0 { y.store(A.value(x.load(i, count: n)), at: i, count: n) }
    }
  }

  /// Backward through the MLP activation, rows x cols, one pass over the saved pre-activation x
  /// (float32, or bfloat16 in bf16): y = activation(x) again into `value` (the next weight
  /// gradient's input), dx = dy * activation'(x) sharing the transcendentals, dBias += column
  /// sums of dx (float32, before any rounding), and dx written where the product that consumes
  /// it reads it: over dy in float32, or rounded into `rounded` in bf16. Returns that operand.
  /// `partials` holds workers * cols floats. `vectorKernels` as in `forward`.
  static func backward(_ dy: UnsafeMutablePointer<Float>, preActivation x: MatrixElements, value: MatrixElements,
                       rows: Int, cols: Int, activation: ModelConfig.Activation, dBias: UnsafeMutablePointer<Float>,
                       partials: UnsafeMutablePointer<Float>, rounded: UnsafeMutablePointer<BFloat16>?,
                       vectorKernels: Bool = BF16.hasVectorKernels) -> Matrix {
    let out: MatrixElements = rounded.map { .bf16($0) } ?? .f32(dy)
    let kind = activation == .quickGELU ? LK_QUICK_GELU : LK_GELU
    switch (activation, x, value, out) {
    case (_, .bf16(let s), .bf16(let y), .bf16(let d)) where vectorKernels:
      overRows(rows, cols, dBias, partials) { first, count, sums in
        lk_activation_backward(kind, dy + first, s + first, y + first, d + first, count, cols, sums)
      }
    case (_, .f32(let s), .f32(let y), .f32) where vectorKernels:
      overRows(rows, cols, dBias, partials) { first, count, sums in
        lk_activation_backward_f32(kind, dy + first, s + first, y + first, count, cols, sums)
      }
    case (.gelu, .f32(let s), .f32(let y), .f32(let d)):
      backward(GELU.self, dy, Float32Reader(pointer: s), Float32Writer(pointer: y), Float32Writer(pointer: d), rows, cols,
               dBias, partials)
    case (.quickGELU, .f32(let s), .f32(let y), .f32(let d)):
      backward(QuickGELU.self, dy, Float32Reader(pointer: s), Float32Writer(pointer: y), Float32Writer(pointer: d), rows,
               cols, dBias, partials)
    case (.gelu, .bf16(let s), .bf16(let y), .bf16(let d)):
      backward(GELU.self, dy, BFloat16Reader(pointer: s), BFloat16Writer(pointer: y), BFloat16Writer(pointer: d), rows,
               cols, dBias, partials)
    case (.quickGELU, .bf16(let s), .bf16(let y), .bf16(let d)):
      backward(QuickGELU.self, dy, BFloat16Reader(pointer: s), BFloat16Writer(pointer: y), BFloat16Writer(pointer: d),
               rows, cols, dBias, partials)
    default:
      preconditionFailure("the MLP's saved activations, its value and its gradient operand share one precision")
    }
    return rounded.map { Matrix($0, ld: cols) } ?? Matrix(dy, ld: cols)
  }

  /// Runs `body(first element, row count, column sums)` on each worker's share of the rows x cols
  /// elements, with zeroed column sums (cols floats of `partials`) per worker, then adds the
  /// workers' column sums into `sums` in worker order.
  private static func overRows(_ rows: Int, _ cols: Int, _ sums: UnsafeMutablePointer<Float>,
                               _ partials: UnsafeMutablePointer<Float>,
                               _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
    let parts = Parallel.forWorkers(rows, grain: max(1, (1 << 14) / cols)) { w, r in
      let acc = partials + w * cols
      acc.initialize(repeating: 0, count: cols)
      body(r.lowerBound * cols, r.count, acc)
    }
    for w in 0..<parts {
      let acc = partials + w * cols
      for j in 0..<cols { sums[j] += acc[j] }
    }
  }

  private static func backward<A: ActivationKernel, R: ProductInputReader, W: ProductInputWriter>(
    _ a: A.Type, _ dy: UnsafeMutablePointer<Float>, _ x: R, _ value: W, _ out: W, _ rows: Int, _ cols: Int,
    _ dBias: UnsafeMutablePointer<Float>, _ partials: UnsafeMutablePointer<Float>) {
    overRows(rows, cols, dBias, partials) { start, count, acc in
      for row in 0..<count {
        let first = start + row * cols
        var j = 0
        while j + 16 <= cols {
          let (y, slope) = A.valueAndDerivative(x.load(first + j))
          let v = dy.vload(first + j) * slope
          value.store(y, at: first + j)
          out.store(v, at: first + j)
          acc.vstore(acc.vload(j) + v, j)
          j += 16
        }
        let n = cols - j
        if n > 0 {
          let (y, slope) = A.valueAndDerivative(x.load(first + j, count: n))
          let v = loadTail(dy + first + j, n) * slope
          value.store(y, at: first + j, count: n)
          out.store(v, at: first + j, count: n)
          storeTail(loadTail(acc + j, n) + v, acc + j, n)
        }
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
