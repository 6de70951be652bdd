import Glibc

/// Multi-head self-attention core over a fused qkv buffer, no mask (as OpenCLIP's ViT).
///
/// Layout: qkv is (B*T) x 3W row-major with q, k, v in column blocks [0,W), [W,2W), [2W,3W);
/// head h uses columns h*hd ..< (h+1)*hd of each block. The output O is (B*T) x W with head h in
/// columns h*hd ..< (h+1)*hd. Each (image, head) pair is an independent task; tasks are split
/// over liblift's workers, each issuing its own (single-threaded) sgemms.
///
/// Forward keeps only the per-row log-sum-exp of the scaled scores (B*H*T floats); backward
/// recomputes the probabilities from q, k and it instead of storing B*H*T*T of them.
enum Attention {
  struct Shape {
    let batch, tokens, width, heads: Int
    var headDim: Int { width / heads }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    var tasks: Int { batch * heads }
    /// Row stride of the T x T score buffers: tokens rounded up to 16.
    var paddedTokens: Int { (tokens + 15) / 16 * 16 }
    /// Head dimensions that are multiples of 16 (all presets: 64) use the SmallGemm kernels;
    /// others use OpenBLAS.
    var usesSmallGemm: Bool { headDim % 16 == 0 }
  }

  /// Scratch floats each worker needs: two T x Tpad score buffers, two packed hd x Tpad
  /// operands and one T vector.
  static func scratchPerWorker(tokens t: Int, headDim: Int) -> Int {
    let tp = (t + 15) / 16 * 16
    return 2 * t * tp + 2 * headDim * tp + t
  }

  /// O = softmax(scale * Q K^T) V per (image, head); lse[(b*H + h)*T + i] = log-sum-exp of row i.
  /// The softmax normalisation is applied to O's rows (T x hd) rather than to the T x T
  /// probabilities.
  static func forward(qkv: UnsafePointer<Float>, shape s: Shape, out: UnsafeMutablePointer<Float>,
                      lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens
    let extent = RowExtent(count: t)
    Parallel.forWorkers(s.tasks) { worker, tasks in
      let p = scratch + worker * scratchPerWorker(tokens: t, headDim: hd)
      let kT = p + 2 * t * tp
      let inverseSums = kT + 2 * hd * tp
      for task in tasks {
        let b = task / s.heads, h = task % s.heads
        let q = qkv + b * t * 3 * w + h * hd, k = q + w, v = q + 2 * w
        let o = out + b * t * w + h * hd
        // S = scale * Q K^T  (T x Tpad; padding columns are 0 and never read)
        if s.usesSmallGemm {
          SmallGemm.packTransposed(k, rows: t, cols: hd, ldSrc: 3 * w, scale: s.scale, into: kT, ldDst: tp)
          SmallGemm.product(m: t, n: tp, k: hd, q, aRow: 3 * w, aCol: 1, kT, ldb: tp, p, ldc: tp)
        } else {
          BLAS.gemm(false, true, m: t, n: t, k: hd, alpha: s.scale, q, lda: 3 * w, k, ldb: 3 * w, beta: 0, p, ldc: tp)
        }
        for i in 0..<t {
          let (logSum, inverse) = expRow(p + i * tp, extent)
          lse?[task * t + i] = logSum
          inverseSums[i] = inverse
        }
        // O = E V, then each row divided by its sum.
        if s.usesSmallGemm {
          SmallGemm.product(m: t, n: hd, k: t, p, aRow: tp, aCol: 1, v, ldb: 3 * w, o, ldc: w)
        } else {
          BLAS.gemm(false, false, m: t, n: hd, k: t, p, lda: tp, v, ldb: 3 * w, beta: 0, o, ldc: w)
        }
        for i in 0..<t { VectorOps.scale(o + i * w, hd, by: inverseSums[i]) }
      }
    }
  }

  /// Gradients of the forward above: given dO (B*T x W), writes dqkv (B*T x 3W) and adds the
  /// column sums of dqkv (the in_proj bias gradient) into dBias (3W). `partials` holds
  /// workers * 3W floats.
  static func backward(qkv: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                       dOut: UnsafePointer<Float>, shape s: Shape, dqkv: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>, partials: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>) {
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens
    let extent = RowExtent(count: t)
    let parts = Parallel.forWorkers(s.tasks) { worker, tasks in
      let biasSums = partials + worker * 3 * w
      biasSums.initialize(repeating: 0, count: 3 * w)
      let p = scratch + worker * scratchPerWorker(tokens: t, headDim: hd)
      let dp = p + t * tp
      let kT = dp + t * tp, vT = kT + hd * tp
      let rowDot = vT + hd * tp
      for task in tasks {
        let b = task / s.heads, h = task % s.heads
        let q = qkv + b * t * 3 * w + h * hd
        let k = q + w, v = q + 2 * w
        let o = out + b * t * w + h * hd
        let dO = dOut + b * t * w + h * hd
        let dq = dqkv + b * t * 3 * w + h * hd
        let dk = dq + w, dv = dq + 2 * w
        if s.usesSmallGemm {
          // P = exp(scale * Q K^T - lse); dV = P^T dO; dP = dO V^T
          SmallGemm.packTransposed(k, rows: t, cols: hd, ldSrc: 3 * w, scale: s.scale, into: kT, ldDst: tp)
          SmallGemm.product(m: t, n: tp, k: hd, q, aRow: 3 * w, aCol: 1, kT, ldb: tp, p, ldc: tp)
          for i in 0..<t { expShifted(p + i * tp, extent, by: lse[task * t + i]) }
          SmallGemm.product(m: t, n: hd, k: t, p, aRow: 1, aCol: tp, dO, ldb: w, dv, ldc: 3 * w)
          SmallGemm.packTransposed(v, rows: t, cols: hd, ldSrc: 3 * w, scale: 1, into: vT, ldDst: tp)
          SmallGemm.product(m: t, n: tp, k: hd, dO, aRow: w, aCol: 1, vT, ldb: tp, dp, ldc: tp)
        } else {
          BLAS.gemm(false, true, m: t, n: t, k: hd, alpha: s.scale, q, lda: 3 * w, k, ldb: 3 * w, beta: 0, p, ldc: tp)
          for i in 0..<t { expShifted(p + i * tp, extent, by: lse[task * t + i]) }
          BLAS.gemm(true, false, m: t, n: hd, k: t, p, lda: tp, dO, ldb: w, beta: 0, dv, ldc: 3 * w)
          BLAS.gemm(false, true, m: t, n: t, k: hd, dO, lda: w, v, ldb: 3 * w, beta: 0, dp, ldc: tp)
        }
        // dS = scale * P * (dP - rowsum(dO * O))   (rowsum(dP * P) == rowsum(dO * O))
        for i in 0..<t { rowDot[i] = dot(dO + i * w, o + i * w, hd) }
        for i in 0..<t { softmaxGrad(p + i * tp, dp + i * tp, extent, rowDot[i], s.scale) }
        // dQ = dS K ; dK = dS^T Q   (dS is in dp)
        if s.usesSmallGemm {
          SmallGemm.product(m: t, n: hd, k: t, dp, aRow: tp, aCol: 1, k, ldb: 3 * w, dq, ldc: 3 * w)
          SmallGemm.product(m: t, n: hd, k: t, dp, aRow: 1, aCol: tp, q, ldb: 3 * w, dk, ldc: 3 * w)
        } else {
          BLAS.gemm(false, false, m: t, n: hd, k: t, dp, lda: tp, k, ldb: 3 * w, beta: 0, dq, ldc: 3 * w)
          BLAS.gemm(true, false, m: t, n: hd, k: t, dp, lda: tp, q, ldb: 3 * w, beta: 0, dk, ldc: 3 * w)
        }
        for block in 0..<3 {
          let sums = biasSums + block * w + h * hd, column = dq + block * w
          for i in 0..<t { addRow(column + i * 3 * w, into: sums, hd) }
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

  /// x[j] = exp(x[j] - max) in place (unnormalised softmax), padding lanes set to 0; returns
  /// (log-sum-exp, 1 / sum).
  @inline(__always)
  static func expRow(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent) -> (Float, Float) {
    let lastVector = x.vload(e.last).replacing(with: -.infinity, where: e.padding)
    var vmax = lastVector
    var j = 0
    while j < e.last { vmax = lanesMax(vmax, x.vload(j)); j += 16 }
    let m = vmax.max()
    let mv = Vec16(repeating: m)
    var vsum = Vec16()
    j = 0
    while j < e.last {
      let v = MathApprox.exp(x.vload(j) - mv)
      x.vstore(v, j)
      vsum += v
      j += 16
    }
    let v = MathApprox.exp(lastVector - mv).replacing(with: 0, where: e.padding)
    x.vstore(v, e.last)
    vsum += v
    let sum = vsum.sum()
    return (m + log(sum), 1 / sum)
  }

  /// x[j] = exp(x[j] - shift) for the valid entries, 0 in the padding lanes.
  @inline(__always)
  static func expShifted(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent, by shift: Float) {
    let sv = Vec16(repeating: shift)
    var j = 0
    while j < e.last { x.vstore(MathApprox.exp(x.vload(j) - sv), j); j += 16 }
    x.vstore(MathApprox.exp(x.vload(e.last) - sv).replacing(with: 0, where: e.padding), e.last)
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
