import Glibc

/// Multi-head self-attention core over a fused qkv buffer, no mask (as OpenCLIP's ViT).
///
/// Layout: qkv is (B*T) x 3W row-major with q, k, v in column blocks [0,W), [W,2W), [2W,3W);
/// head h uses columns h*hd ..< (h+1)*hd of each block. The output O is (B*T) x W with head h in
/// columns h*hd ..< (h+1)*hd. Each (image, head) pair is an independent task; tasks are split
/// over liblift's workers, each running its own single-threaded product plans (`MatMul`) on
/// the strided per-head blocks in place (no packing).
///
/// Forward keeps only the per-row log-sum-exp of the scaled scores (B*H*T floats); backward
/// recomputes the probabilities from q, k and it instead of storing B*H*T*T of them.
enum Attention {
  struct Shape {
    let batch, tokens, width, heads: Int
    var headDim: Int { width / heads }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    var tasks: Int { batch * heads }
    /// Row stride of the T x T score buffers: tokens rounded up to 16, so softmax rows load
    /// whole vectors (the padding lanes are masked, never used by the products).
    var paddedTokens: Int { (tokens + 15) / 16 * 16 }
  }

  /// Scratch floats each worker needs: two T x Tpad score buffers and one T vector.
  static func scratchPerWorker(tokens t: Int, headDim: Int) -> Int {
    let tp = (t + 15) / 16 * 16
    return 2 * t * tp + t
  }

  /// The per-head products, as plan keys (the part is set per worker).
  private enum Product: Int, CaseIterable {
    /// S = Q K^T (T x T over hd), into a score buffer.
    case scores
    /// O = E V (T x hd over T), into the output.
    case values
    /// dV = P^T dO, into dqkv.
    case valueGradient
    /// dP = dO V^T, into a score buffer.
    case probabilityGradient
    /// dQ = dS K, into dqkv.
    case queryGradient
    /// dK = dS^T Q, into dqkv.
    case keyGradient

    func key(_ s: Shape) -> MatMulPlan.Key {
      let t = s.tokens, hd = s.headDim, tp = s.paddedTokens, w = s.width
      func key(_ m: Int, _ n: Int, _ k: Int, _ ta: Bool, _ tb: Bool, _ lda: Int, _ ldb: Int, _ ldc: Int) -> MatMulPlan.Key {
        MatMulPlan.Key(m: m, n: n, k: k, transA: ta, transB: tb, lda: lda, ldb: ldb, ldc: ldc, typeA: .f32, typeB: .f32,
                       typeC: .f32, bias: false, accumulate: false, part: 0)
      }
      switch self {
      case .scores: return key(t, t, hd, false, true, 3 * w, 3 * w, tp)
      case .values: return key(t, hd, t, false, false, tp, 3 * w, w)
      case .valueGradient: return key(t, hd, t, true, false, tp, w, 3 * w)
      case .probabilityGradient: return key(t, t, hd, false, true, w, 3 * w, tp)
      case .queryGradient: return key(t, hd, t, false, false, tp, 3 * w, 3 * w)
      case .keyGradient: return key(t, hd, t, true, false, tp, 3 * w, 3 * w)
      }
    }
  }

  /// Plans of every per-head product for each of `parts` workers: plans[product * parts + worker].
  private static func withPlans<R>(_ s: Shape, parts: Int, products: MatMul,
                                   _ body: (UnsafeBufferPointer<MatMulPlan>) -> R) throws(LiftError) -> R {
    try products.withPlans(kinds: Product.allCases.count, parts: parts, key: { Product(rawValue: $0)!.key(s) }, body)
  }

  /// O = softmax(scale * Q K^T) V per (image, head); lse[(b*H + h)*T + i] = log-sum-exp of row i.
  /// The softmax normalisation is applied to O's rows (T x hd) rather than to the T x T
  /// probabilities.
  static func forward(qkv: UnsafePointer<Float>, shape s: Shape, out: UnsafeMutablePointer<Float>,
                      lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>,
                      products: MatMul) throws(LiftError) {
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens
    let extent = RowExtent(count: t)
    let parts = min(Parallel.workers, s.tasks)
    try withPlans(s, parts: parts, products: products) { plans in
      Parallel.forWorkers(s.tasks) { worker, tasks in
        let scores = plans[Product.scores.rawValue * parts + worker], values = plans[Product.values.rawValue * parts + worker]
        let p = scratch + worker * scratchPerWorker(tokens: t, headDim: hd)
        let inverseSums = p + 2 * t * tp
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          let q = qkv + b * t * 3 * w + h * hd, k = q + w, v = q + 2 * w
          let o = out + b * t * w + h * hd
          // S = Q K^T (T x Tpad; the padding columns are masked), E = exp(scale * S - max).
          scores.execute(a: q, b: k, c: p)
          for i in 0..<t {
            let (logSum, inverse) = expRow(p + i * tp, extent, scale: s.scale)
            lse?[task * t + i] = logSum
            inverseSums[i] = inverse
          }
          // O = E V, then each row divided by its sum.
          values.execute(a: p, b: v, c: o)
          for i in 0..<t { VectorOps.scale(o + i * w, hd, by: inverseSums[i]) }
        }
      }
    }
  }

  /// Gradients of the forward above: given dO (B*T x W), writes dqkv (B*T x 3W) and adds the
  /// column sums of dqkv (the in_proj bias gradient) into dBias (3W). `partials` holds
  /// workers * 3W floats.
  static func backward(qkv: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                       dOut: UnsafePointer<Float>, shape s: Shape, dqkv: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>, partials: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>, products: MatMul) throws(LiftError) {
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens
    let extent = RowExtent(count: t)
    let parts = min(Parallel.workers, s.tasks)
    try withPlans(s, parts: parts, products: products) { plans in
      Parallel.forWorkers(s.tasks) { worker, tasks in
        func plan(_ product: Product) -> MatMulPlan { plans[product.rawValue * parts + worker] }
        let scores = plan(.scores), valueGradient = plan(.valueGradient)
        let probabilityGradient = plan(.probabilityGradient), queryGradient = plan(.queryGradient)
        let keyGradient = plan(.keyGradient)
        let biasSums = partials + worker * 3 * w
        biasSums.initialize(repeating: 0, count: 3 * w)
        let p = scratch + worker * scratchPerWorker(tokens: t, headDim: hd)
        let dp = p + t * tp
        let rowDot = dp + t * tp
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          let q = qkv + b * t * 3 * w + h * hd
          let k = q + w, v = q + 2 * w
          let o = out + b * t * w + h * hd
          let dO = dOut + b * t * w + h * hd
          let dq = dqkv + b * t * 3 * w + h * hd
          let dk = dq + w, dv = dq + 2 * w
          // P = exp(scale * Q K^T - lse); dV = P^T dO; dP = dO V^T
          scores.execute(a: q, b: k, c: p)
          for i in 0..<t { expShifted(p + i * tp, extent, scale: s.scale, by: lse[task * t + i]) }
          valueGradient.execute(a: p, b: dO, c: dv)
          probabilityGradient.execute(a: dO, b: v, c: dp)
          // dS = scale * P * (dP - rowsum(dO * O))   (rowsum(dP * P) == rowsum(dO * O))
          for i in 0..<t { rowDot[i] = dot(dO + i * w, o + i * w, hd) }
          for i in 0..<t { softmaxGrad(p + i * tp, dp + i * tp, extent, rowDot[i], s.scale) }
          // dQ = dS K ; dK = dS^T Q   (dS is in dp)
          queryGradient.execute(a: dp, b: k, c: dq)
          keyGradient.execute(a: dp, b: q, c: dk)
          for block in 0..<3 {
            let sums = biasSums + block * w + h * hd, column = dq + block * w
            for i in 0..<t { addRow(column + i * 3 * w, into: sums, hd) }
          }
        }
      }
    }
    for worker in 0..<parts {
      let sums = partials + worker * 3 * w
      for j in 0..<(3 * w) { dBias[j] += sums[j] }
    }
  }

  /// <x, y> over n floats.
  @inline(__always)
  static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Vec16()
    var j = 0
    while j + 16 <= n { acc.addProduct(x.vload(j), y.vload(j)); j += 16 }
    var s = acc.sum()
    while j < n { s += x[j] * y[j]; j += 1 }
    return s
  }

  /// acc[0..<n] += x[0..<n].
  @inline(__always)
  static func addRow(_ x: UnsafePointer<Float>, into acc: UnsafeMutablePointer<Float>, _ n: Int) {
    var j = 0
    while j + 16 <= n { acc.vstore(acc.vload(j) + x.vload(j), j); j += 16 }
    while j < n { acc[j] += x[j]; j += 1 }
  }

  /// Where the valid entries of a score row end: rows hold `count` valid floats inside a
  /// padded stride (a multiple of 16), so the last vector is loaded whole and its lanes beyond
  /// `count` are masked instead of handled one by one.
  struct RowExtent {
    let count: Int
    /// Start of the last (possibly partial) vector.
    let last: Int
    /// Lanes of the last vector that are padding.
    let padding: SIMDMask<SIMD16<Int32>>

    init(count: Int) {
      self.count = count
      last = (count - 1) / 16 * 16
      let valid = count - last
      padding = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= SIMD16<Int32>(repeating: Int32(valid))
    }
  }

  /// x[j] = exp(scale * (x[j] - max)) in place (unnormalised softmax of the scaled row), padding
  /// lanes set to 0; returns (log-sum-exp of the scaled row, 1 / sum). scale > 0.
  @inline(__always)
  static func expRow(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent, scale: Float) -> (Float, Float) {
    let lastVector = x.vload(e.last).replacing(with: -.infinity, where: e.padding)
    var vmax = lastVector
    var j = 0
    while j < e.last { vmax = lanesMax(vmax, x.vload(j)); j += 16 }
    let m = vmax.max()
    let mv = Vec16(repeating: m), sv = Vec16(repeating: scale)
    var vsum = Vec16()
    j = 0
    while j < e.last {
      let v = MathApprox.exp((x.vload(j) - mv) * sv)
      x.vstore(v, j)
      vsum += v
      j += 16
    }
    let v = MathApprox.exp((lastVector - mv) * sv).replacing(with: 0, where: e.padding)
    x.vstore(v, e.last)
    vsum += v
    let sum = vsum.sum()
    return (m * scale + log(sum), 1 / sum)
  }

  /// x[j] = exp(scale * x[j] - shift) for the valid entries, 0 in the padding lanes.
  @inline(__always)
  static func expShifted(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent, scale: Float, by shift: Float) {
    let sv = Vec16(repeating: shift), sc = Vec16(repeating: scale)
    var j = 0
    while j < e.last { x.vstore(MathApprox.exp(x.vload(j) * sc - sv), j); j += 16 }
    x.vstore(MathApprox.exp(x.vload(e.last) * sc - sv).replacing(with: 0, where: e.padding), e.last)
  }

  /// dp[j] = scale * p[j] * (dp[j] - rowDot) (p is 0 in the padding lanes, so dp becomes 0).
  @inline(__always)
  static func softmaxGrad(_ p: UnsafePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ e: RowExtent,
                          _ rowDot: Float, _ scale: Float) {
    let d = Vec16(repeating: rowDot), sc = Vec16(repeating: scale)
    var j = 0
    while j <= e.last { dp.vstore(sc * p.vload(j) * (dp.vload(j) - d), j); j += 16 }
  }
}
