import CBLAS

/// sgemm/sgemv through OpenBLAS (row-major), and the linear-layer products built on them.
enum BLAS {
  static func requireDims(_ dims: Int...) throws(LiftError) {
    for v in dims where v > Int(Int32.max) {
      throw .argument("matrix dimension \(v) exceeds the BLAS limit of \(Int32.max)")
    }
  }

  /// C (m x n) = alpha * op(A) * op(B) + beta * C, op = transpose when the flag is set.
  @inline(__always)
  static func gemm(_ transA: Bool, _ transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                   _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                   beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// y (cols) (+)= column sums of A (rows x cols, leading dimension lda); `ones` holds >= rows ones.
  @inline(__always)
  static func columnSums(_ a: UnsafePointer<Float>, rows: Int, cols: Int, lda: Int,
                         ones: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, accumulate: Bool) {
    cblas_sgemv(CblasRowMajor, CblasTrans, Int32(rows), Int32(cols), 1, a, Int32(lda), ones, 1,
                accumulate ? 1 : 0, y, 1)
  }

  /// OpenBLAS's thread count for sgemm outside `singleThreaded` sections.
  nonisolated(unsafe) static var threads: Int = Int(openblas_get_num_threads())

  /// Runs body with OpenBLAS limited to one thread, for sections where liblift's own workers
  /// each issue small sgemms in parallel.
  @inline(__always)
  static func singleThreaded<T>(_ body: () -> T) -> T {
    if threads > 1 { openblas_set_num_threads(1) }
    defer { if threads > 1 { openblas_set_num_threads(Int32(threads)) } }
    return body()
  }
}

/// y = x W^T + b for a Linear layer with W (out x in) row-major, over `rows` input rows.
enum Linear {
  /// y (rows x out) = x (rows x in) W^T + b, or y += x W^T + b when `accumulate`.
  static func forward(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                      _ y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
    var beta: Float = accumulate ? 1 : 0
    if let bias {
      broadcastRows(bias, rows: rows, cols: outFeatures, into: y, accumulate: accumulate)
      beta = 1
    }
    BLAS.gemm(false, true, m: rows, n: outFeatures, k: inFeatures, x, lda: inFeatures, weight, ldb: inFeatures,
              beta: beta, y, ldc: outFeatures)
  }

  /// Backward of y = x W^T + b: dW += dy^T x, db += column sums of dy, and dx = dy W
  /// (dx += dy W when `accumulateInput`; skipped when dx is nil).
  static func backward(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                       outFeatures: Int, weight: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>?,
                       accumulateInput: Bool = false, ones: UnsafePointer<Float>) {
    BLAS.gemm(true, false, m: outFeatures, n: inFeatures, k: rows, dy, lda: outFeatures, x, ldb: inFeatures,
              beta: 1, dWeight, ldc: inFeatures)
    if let dBias {
      BLAS.columnSums(dy, rows: rows, cols: outFeatures, lda: outFeatures, ones: ones, into: dBias, accumulate: true)
    }
    if let dx {
      BLAS.gemm(false, false, m: rows, n: inFeatures, k: outFeatures, dy, lda: outFeatures, weight, ldb: inFeatures,
                beta: accumulateInput ? 1 : 0, dx, ldc: inFeatures)
    }
  }

  /// Each row of y (rows x cols) = v, or += v when `accumulate`.
  static func broadcastRows(_ v: UnsafePointer<Float>, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>,
                            accumulate: Bool) {
    Parallel.forRanges(rows, grain: max(1, 16384 / cols)) { r in
      for i in r {
        let yr = y + i * cols
        if accumulate {
          var j = 0
          while j + 16 <= cols { yr.vstore(yr.vload(j) + v.vload(j), j); j += 16 }
          while j < cols { yr[j] += v[j]; j += 1 }
        } else {
          yr.update(from: v, count: cols)
        }
      }
    }
  }
}
