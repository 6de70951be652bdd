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
  }

  /// Scratch floats each worker needs: forward T*T, backward 2*T*T + T.
  static func scratchPerWorker(tokens t: Int) -> Int { 2 * t * t + t }

  /// O = softmax(scale * Q K^T) V per (image, head); lse[(b*H + h)*T + i] = log-sum-exp of row i.
  /// The softmax normalisation is applied to O's rows (T x hd) rather than to the T x T
  /// probabilities.
  static func forward(qkv: UnsafePointer<Float>, shape s: Shape, out: UnsafeMutablePointer<Float>,
                      lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
    let t = s.tokens, w = s.width, hd = s.headDim
    Parallel.forWorkers(s.tasks) { worker, tasks in
      let p = scratch + worker * scratchPerWorker(tokens: t)
      let inverseSums = p + t * t
      for task in tasks {
        let b = task / s.heads, h = task % s.heads
        let q = qkv + b * t * 3 * w + h * hd
        BLAS.gemm(false, true, m: t, n: t, k: hd, alpha: s.scale, q, lda: 3 * w, q + w, ldb: 3 * w,
                  beta: 0, p, ldc: t)
        for i in 0..<t {
          let (logSum, inverse) = expRow(p + i * t, t)
          lse?[task * t + i] = logSum
          inverseSums[i] = inverse
        }
        let o = out + b * t * w + h * hd
        BLAS.gemm(false, false, m: t, n: hd, k: t, p, lda: t, q + 2 * w, ldb: 3 * w, beta: 0, o, ldc: w)
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
    let t = s.tokens, w = s.width, hd = s.headDim
    let parts = Parallel.forWorkers(s.tasks) { worker, tasks in
      let biasSums = partials + worker * 3 * w
      biasSums.initialize(repeating: 0, count: 3 * w)
      let p = scratch + worker * scratchPerWorker(tokens: t)
      let dp = p + t * t
      let rowDot = dp + t * t
      for task in tasks {
        let b = task / s.heads, h = task % s.heads
        let q = qkv + b * t * 3 * w + h * hd
        let k = q + w, v = q + 2 * w
        let o = out + b * t * w + h * hd
        let dO = dOut + b * t * w + h * hd
        let dq = dqkv + b * t * 3 * w + h * hd
        let dk = dq + w, dv = dq + 2 * w
        // P = exp(scale * Q K^T - lse)
        BLAS.gemm(false, true, m: t, n: t, k: hd, alpha: s.scale, q, lda: 3 * w, k, ldb: 3 * w, beta: 0, p, ldc: t)
        for i in 0..<t { expShifted(p + i * t, t, by: lse[task * t + i]) }
        // dV = P^T dO ; dP = dO V^T
        BLAS.gemm(true, false, m: t, n: hd, k: t, p, lda: t, dO, ldb: w, beta: 0, dv, ldc: 3 * w)
        BLAS.gemm(false, true, m: t, n: t, k: hd, dO, lda: w, v, ldb: 3 * w, beta: 0, dp, ldc: t)
        // dS = scale * P * (dP - rowsum(dO * O))   (rowsum(dP * P) == rowsum(dO * O))
        for i in 0..<t { rowDot[i] = dot(dO + i * w, o + i * w, hd) }
        for i in 0..<t { softmaxGrad(p + i * t, dp + i * t, t, rowDot[i], s.scale) }
        // dQ = dS K ; dK = dS^T Q   (dS is in dp)
        BLAS.gemm(false, false, m: t, n: hd, k: t, dp, lda: t, k, ldb: 3 * w, beta: 0, dq, ldc: 3 * w)
        BLAS.gemm(true, false, m: t, n: hd, k: t, dp, lda: t, q, ldb: 3 * w, beta: 0, dk, ldc: 3 * w)
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

  /// x[j] = exp(x[j] - max) in place (unnormalised softmax); returns (log-sum-exp, 1 / sum).
  @inline(__always)
  static func expRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> (Float, Float) {
    var vmax = Vec16(repeating: -.infinity)
    var j = 0
    while j + 16 <= n { vmax = lanesMax(vmax, x.vload(j)); j += 16 }
    var m = vmax.max()
    while j < n { m = Swift.max(m, x[j]); j += 1 }
    let mv = Vec16(repeating: m)
    var vsum = Vec16()
    j = 0
    while j + 16 <= n {
      let e = MathApprox.exp(x.vload(j) - mv)
      x.vstore(e, j)
      vsum += e
      j += 16
    }
    if j < n {
      // Padding lanes hold -inf, whose exp is 0.
      let e = MathApprox.exp(loadTail(x + j, n - j, fill: -.infinity) - mv)
      storeTail(e, x + j, n - j)
      vsum += e
    }
    let sum = vsum.sum()
    return (m + log(sum), 1 / sum)
  }

  /// x[j] = exp(x[j] - shift).
  @inline(__always)
  static func expShifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, by shift: Float) {
    let sv = Vec16(repeating: shift)
    var j = 0
    while j + 16 <= n { x.vstore(MathApprox.exp(x.vload(j) - sv), j); j += 16 }
    if j < n { storeTail(MathApprox.exp(loadTail(x + j, n - j) - sv), x + j, n - j) }
  }

  /// dp[j] = scale * p[j] * (dp[j] - rowDot).
  @inline(__always)
  static func softmaxGrad(_ p: UnsafePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ n: Int,
                          _ rowDot: Float, _ scale: Float) {
    let d = Vec16(repeating: rowDot), sc = Vec16(repeating: scale)
    var j = 0
    while j + 16 <= n { dp.vstore(sc * p.vload(j) * (dp.vload(j) - d), j); j += 16 }
    while j < n { dp[j] = scale * p[j] * (dp[j] - rowDot); j += 1 }
  }
}
