import Glibc

/// Multi-head self-attention core over a fused qkv buffer, no mask (as OpenCLIP's ViT).
///
/// Layout: qkv is (B*T) x 3W row-major with q, k, v in column blocks [0,W), [W,2W), [2W,3W);
/// head h uses columns h*hd ..< (h+1)*hd of each block. The output O is (B*T) x W with head h in
/// columns h*hd ..< (h+1)*hd. Each (image, head) pair is an independent task; tasks are split
/// over liblift's workers, each issuing single-threaded sgemms.
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
  static func forward(qkv: UnsafePointer<Float>, shape s: Shape, out: UnsafeMutablePointer<Float>,
                      lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
    let t = s.tokens, w = s.width, hd = s.headDim
    BLAS.singleThreaded {
      Parallel.forWorkers(s.tasks) { worker, tasks in
        let p = scratch + worker * scratchPerWorker(tokens: t)
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          let q = qkv + b * t * 3 * w + h * hd
          BLAS.gemm(false, true, m: t, n: t, k: hd, alpha: s.scale, q, lda: 3 * w, q + w, ldb: 3 * w,
                    beta: 0, p, ldc: t)
          for i in 0..<t {
            let l = softmaxRow(p + i * t, t)
            lse?[task * t + i] = l
          }
          BLAS.gemm(false, false, m: t, n: hd, k: t, p, lda: t, q + 2 * w, ldb: 3 * w,
                    beta: 0, out + b * t * w + h * hd, ldc: w)
        }
      }
    }
  }

  /// Gradients of the forward above: given dO (B*T x W), writes dqkv (B*T x 3W).
  static func backward(qkv: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                       dOut: UnsafePointer<Float>, shape s: Shape, dqkv: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>) {
    let t = s.tokens, w = s.width, hd = s.headDim
    BLAS.singleThreaded {
      Parallel.forWorkers(s.tasks) { worker, tasks in
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
          for i in 0..<t {
            var acc: Float = 0
            for j in 0..<hd { acc += dO[i * w + j] * o[i * w + j] }
            rowDot[i] = acc
          }
          for i in 0..<t { softmaxGrad(p + i * t, dp + i * t, t, rowDot[i], s.scale) }
          // dQ = dS K ; dK = dS^T Q   (dS is in dp)
          BLAS.gemm(false, false, m: t, n: hd, k: t, dp, lda: t, k, ldb: 3 * w, beta: 0, dq, ldc: 3 * w)
          BLAS.gemm(true, false, m: t, n: hd, k: t, dp, lda: t, q, ldb: 3 * w, beta: 0, dk, ldc: 3 * w)
        }
      }
    }
  }

  /// In-place softmax of x[0..<n]; returns the log-sum-exp.
  @inline(__always)
  static func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
    var vmax = Vec16(repeating: -.infinity)
    var j = 0
    while j + 16 <= n { vmax = pointwiseMax(vmax, x.vload(j)); j += 16 }
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
    var sum = vsum.sum()
    if j < n {
      let e = MathApprox.exp(loadTail(x + j, n - j) - mv)
      for i in 0..<(n - j) { x[j + i] = e[i]; sum += e[i] }
    }
    let inv = Vec16(repeating: 1 / sum)
    j = 0
    while j + 16 <= n { x.vstore(x.vload(j) * inv, j); j += 16 }
    while j < n { x[j] *= inv[0]; j += 1 }
    return m + log(sum)
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
