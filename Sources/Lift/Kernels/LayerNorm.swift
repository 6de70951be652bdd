import LiftKernelsC

/// LayerNorm over the last dimension (affine), as nn.LayerNorm with the model's eps.
///
/// Forward saves xhat = (x - mean) * rstd and rstd per row instead of x: backward needs only
/// those, and the layer output is recomputed from xhat when a matmul needs it again.
/// On AVX-512 CPUs the rows run through LiftKernelsC's kernels (`lk_layernorm_*`), elsewhere
/// through the portable loops below; `vectorKernels: false` selects the loops (for tests).
enum LayerNorm {
  /// For each of `rows` rows of x (rows x cols): y = xhat * gamma + beta (float32, or rounded
  /// to bfloat16 when y feeds a bf16 product). xhat and rstd (rows) are written when non-nil.
  /// y may alias x.
  static func forward(_ x: UnsafePointer<Float>, rows: Int, cols: Int, gamma: UnsafePointer<Float>,
                      beta: UnsafePointer<Float>, eps: Float, y: MatrixElements,
                      xhat: UnsafeMutablePointer<Float>?, rstd: UnsafeMutablePointer<Float>?,
                      vectorKernels: Bool = BF16.hasVectorKernels) {
    if vectorKernels {
      let (f, b) = y.outputPointers
      Parallel.forRanges(rows, grain: max(1, 8192 / cols)) { r in
        let first = r.lowerBound * cols
        lk_layernorm_forward(x + first, r.count, cols, gamma, beta, eps, f.map { $0 + first }, b.map { $0 + first },
                             xhat.map { $0 + first }, rstd.map { $0 + r.lowerBound })
      }
      return
    }
    switch y {
    case .f32(let p):
      forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: eps, into: Float32Writer(pointer: p), xhat: xhat,
              rstd: rstd)
    case .bf16(let p):
      forward(x, rows: rows, cols: cols, gamma: gamma, beta: beta, eps: eps, into: BFloat16Writer(pointer: p), xhat: xhat,
              rstd: rstd)
    }
  }

  private static func forward<W: ProductInputWriter>(_ x: UnsafePointer<Float>, rows: Int, cols: Int,
                                                     gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
                                                     into y: W,
                                                     xhat: UnsafeMutablePointer<Float>?, rstd: UnsafeMutablePointer<Float>?) {
    let inv = 1 / Float(cols)
    Parallel.forRanges(rows, grain: max(1, 8192 / cols)) { r in
      for row in r {
        let xr = x + row * cols
        var acc = Vec16()
        var j = 0
        while j + 16 <= cols { acc += xr.vload(j); j += 16 }
        var sum = acc.sum()
        while j < cols { sum += xr[j]; j += 1 }
        let mean = sum * inv
        var accv = Vec16()
        let m = Vec16(repeating: mean)
        j = 0
        while j + 16 <= cols { let d = xr.vload(j) - m; accv.addProduct(d, d); j += 16 }
        var sq = accv.sum()
        while j < cols { let d = xr[j] - mean; sq += d * d; j += 1 }
        let rs = 1 / (sq * inv + eps).squareRoot()
        rstd?[row] = rs
        let yr = y.advanced(by: row * cols)
        let xh = xhat.map { $0 + row * cols }
        let s = Vec16(repeating: rs)
        j = 0
        while j + 16 <= cols {
          let h = (xr.vload(j) - m) * s
          xh?.vstore(h, j)
          yr.store(h * gamma.vload(j) + beta.vload(j), at: j)
          j += 16
        }
        while j < cols {
          let h = (xr[j] - mean) * rs
          xh?[j] = h
          yr.store(h * gamma[j] + beta[j], at: j)
          j += 1
        }
      }
    }
  }

  /// y = xhat * gamma + beta (the forward output, recomputed from the saved xhat).
  static func affine(_ xhat: UnsafePointer<Float>, rows: Int, cols: Int, gamma: UnsafePointer<Float>,
                     beta: UnsafePointer<Float>, y: MatrixElements, vectorKernels: Bool = BF16.hasVectorKernels) {
    if vectorKernels {
      let (f, b) = y.outputPointers
      Parallel.forRanges(rows, grain: max(1, 16384 / cols)) { r in
        let first = r.lowerBound * cols
        lk_layernorm_affine(xhat + first, r.count, cols, gamma, beta, f.map { $0 + first }, b.map { $0 + first })
      }
      return
    }
    switch y {
    case .f32(let p): affine(xhat, rows: rows, cols: cols, gamma: gamma, beta: beta, into: Float32Writer(pointer: p))
    case .bf16(let p): affine(xhat, rows: rows, cols: cols, gamma: gamma, beta: beta, into: BFloat16Writer(pointer: p))
    }
  }

  private static func affine<W: ProductInputWriter>(_ xhat: UnsafePointer<Float>, rows: Int, cols: Int,
                                                    gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, into y: W) {
    Parallel.forRanges(rows, grain: max(1, 16384 / cols)) { r in
      for row in r {
        let xr = xhat + row * cols, yr = y.advanced(by: row * cols)
        var j = 0
        while j + 16 <= cols { yr.store(xr.vload(j) * gamma.vload(j) + beta.vload(j), at: j); j += 16 }
        while j < cols { yr.store(xr[j] * gamma[j] + beta[j], at: j); j += 1 }
      }
    }
  }

  /// Backward of y = LN(x): dx (+)= rstd * (g - mean(g) - xhat * mean(g * xhat)) with
  /// g = dy * gamma; dgamma += sum_rows dy * xhat; dbeta += sum_rows dy.
  /// `partials` is scratch of at least 2 * workers * cols floats.
  static func backward(_ dy: UnsafePointer<Float>, xhat: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                       gamma: UnsafePointer<Float>, rows: Int, cols: Int,
                       dx: UnsafeMutablePointer<Float>, accumulate: Bool,
                       dgamma: UnsafeMutablePointer<Float>, dbeta: UnsafeMutablePointer<Float>,
                       partials: UnsafeMutablePointer<Float>, vectorKernels: Bool = BF16.hasVectorKernels) {
    let inv = 1 / Float(cols)
    let parts = Parallel.forWorkers(rows, grain: max(1, 4096 / cols)) { w, r in
      let pg = partials + w * 2 * cols, pb = pg + cols
      pg.initialize(repeating: 0, count: 2 * cols)
      if vectorKernels {
        let first = r.lowerBound * cols
        lk_layernorm_backward(dy + first, xhat + first, rstd + r.lowerBound, gamma, r.count, cols, dx + first,
                              accumulate ? 1 : 0, pg, pb)
        return
      }
      for row in r {
        let dyr = dy + row * cols, xr = xhat + row * cols, dxr = dx + row * cols
        var a1 = Vec16(), a2 = Vec16()
        var j = 0
        while j + 16 <= cols {
          let d = dyr.vload(j), h = xr.vload(j)
          let g = d * gamma.vload(j)
          a1 += g
          a2.addProduct(g, h)
          pg.vstore(pg.vload(j) + d * h, j)
          pb.vstore(pb.vload(j) + d, j)
          j += 16
        }
        var s1 = a1.sum(), s2 = a2.sum()
        while j < cols {
          let d = dyr[j], h = xr[j], g = d * gamma[j]
          s1 += g; s2 += g * h
          pg[j] += d * h; pb[j] += d
          j += 1
        }
        let mg = Vec16(repeating: s1 * inv), mgh = Vec16(repeating: s2 * inv), rs = Vec16(repeating: rstd[row])
        j = 0
        while j + 16 <= cols {
          let g = dyr.vload(j) * gamma.vload(j)
          var v = rs * (g - mg - xr.vload(j) * mgh)
          if accumulate { v += dxr.vload(j) }
          dxr.vstore(v, j)
          j += 16
        }
        while j < cols {
          let g = dyr[j] * gamma[j]
          let v = rstd[row] * (g - s1 * inv - xr[j] * s2 * inv)
          dxr[j] = accumulate ? dxr[j] + v : v
          j += 1
        }
      }
    }
    for w in 0..<parts {
      let pg = partials + w * 2 * cols, pb = pg + cols
      for j in 0..<cols { dgamma[j] += pg[j]; dbeta[j] += pb[j] }
    }
  }
}

extension MatrixElements {
  /// (float32, bfloat16) output pointers for the C kernels: exactly one is non-nil.
  fileprivate var outputPointers: (UnsafeMutablePointer<Float>?, UnsafeMutablePointer<BFloat16>?) {
    switch self {
    case .f32(let p): return (p, nil)
    case .bf16(let p): return (nil, p)
    }
  }
}
