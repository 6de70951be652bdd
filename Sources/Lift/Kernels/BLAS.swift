import CBLAS

/// sgemm/sgemv through OpenBLAS (row-major).
///
/// Threading: liblift runs OpenBLAS single-threaded and splits large products over its own
/// workers itself. OpenBLAS's pool threads busy-wait (sched_yield) for a long while after
/// every multi-threaded call, so letting them run would steal the cores from liblift's own
/// kernels (layer norm, GELU, softmax) that run between products; measured here, attention
/// ran 1.8x slower with OpenBLAS threads alive. The library sets OpenBLAS to one thread when
/// it is first used; this affects every user of the system OpenBLAS in the same process.
enum BLAS {
  /// Runs once, before the first product: OpenBLAS to a single thread.
  static let configured: Void = { openblas_set_num_threads(1) }()

  static func requireDims(_ dims: Int...) throws(LiftError) {
    for v in dims where v > Int(Int32.max) {
      throw .argument("matrix dimension \(v) exceeds the BLAS limit of \(Int32.max)")
    }
  }

  /// C (m x n) = alpha * op(A) * op(B) + beta * C on the calling thread, op = transpose when
  /// the flag is set.
  @inline(__always)
  static func gemm(_ transA: Bool, _ transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                   _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                   beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    _ = configured
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// The same product split over liblift's workers: rows of C when m >= n, else columns, in
  /// blocks that are multiples of 16. Each worker's part is one single-threaded sgemm, so the
  /// result is independent of timing.
  static func parallelGemm(_ transA: Bool, _ transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                           _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                           beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    let work = Double(m) * Double(n) * Double(k)
    let workers = Parallel.workers
    if workers == 1 || work < 4e6 {
      gemm(transA, transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb, beta: beta, c, ldc: ldc)
      return
    }
    let splitRows = m >= n
    let extent = splitRows ? m : n
    let blocks = (extent + 15) / 16
    let parts = min(workers, blocks)
    Parallel.forWorkers(parts) { _, r in
      let part = r.lowerBound
      let blockRange = Parallel.split(blocks, parts: parts, index: part)
      let lo = blockRange.lowerBound * 16, hi = min(extent, blockRange.upperBound * 16)
      if lo >= hi { return }
      if splitRows {
        // Rows lo..<hi of C come from rows lo..<hi of op(A).
        let aPart = transA ? a + lo : a + lo * lda
        gemm(transA, transB, m: hi - lo, n: n, k: k, alpha: alpha, aPart, lda: lda, b, ldb: ldb,
             beta: beta, c + lo * ldc, ldc: ldc)
      } else {
        // Columns lo..<hi of C come from columns lo..<hi of op(B).
        let bPart = transB ? b + lo * ldb : b + lo
        gemm(transA, transB, m: m, n: hi - lo, k: k, alpha: alpha, a, lda: lda, bPart, ldb: ldb,
             beta: beta, c + lo, ldc: ldc)
      }
    }
  }

  /// C (m x n) += A^T B with A (k x m) and B (k x n) row-major and k large (weight gradients:
  /// k is the number of token rows). Splits k over the workers, each with its own m x n
  /// partial (worker 0 accumulates into C directly, the others into `scratch`, which must hold
  /// (workers - 1) * m * n floats; `scratchCapacity` says how many it holds), then adds the
  /// partials in worker order. Falls back to `parallelGemm` when k is not the large dimension
  /// or the scratch is too small. Deterministic for a given worker count.
  static func accumulateTransposedProduct(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, lda: Int,
                                          _ b: UnsafePointer<Float>, ldb: Int, into c: UnsafeMutablePointer<Float>,
                                          ldc: Int, scratch: UnsafeMutablePointer<Float>, scratchCapacity: Int) {
    let workers = Parallel.workers
    let parts = min(workers, k / 256)
    guard parts > 1, k >= 2 * max(m, n), ldc == n, (parts - 1) * m * n <= scratchCapacity else {
      parallelGemm(true, false, m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, beta: 1, c, ldc: ldc)
      return
    }
    Parallel.forWorkers(parts) { _, r in
      let part = r.lowerBound
      let rows = Parallel.split(k, parts: parts, index: part)
      let target = part == 0 ? c : scratch + (part - 1) * m * n
      gemm(true, false, m: m, n: n, k: rows.count, a + rows.lowerBound * lda, lda: lda, b + rows.lowerBound * ldb,
           ldb: ldb, beta: part == 0 ? 1 : 0, target, ldc: n)
    }
    Parallel.forRanges(m * n, grain: 1 << 14) { r in
      for part in 1..<parts {
        let src = scratch + (part - 1) * m * n
        var i = r.lowerBound
        while i + 16 <= r.upperBound { c.vstore(c.vload(i) + src.vload(i), i); i += 16 }
        while i < r.upperBound { c[i] += src[i]; i += 1 }
      }
    }
  }

  /// y (cols) (+)= column sums of A (rows x cols, leading dimension lda); `ones` holds >= rows
  /// ones. Columns are split over the workers.
  static func columnSums(_ a: UnsafePointer<Float>, rows: Int, cols: Int, lda: Int,
                         ones: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, accumulate: Bool) {
    _ = configured
    Parallel.forRanges(cols, grain: rows * cols >= 1 << 16 ? 16 : cols) { r in
      cblas_sgemv(CblasRowMajor, CblasTrans, Int32(rows), Int32(r.count), 1, a + r.lowerBound, Int32(lda), ones, 1,
                  accumulate ? 1 : 0, y + r.lowerBound, 1)
    }
  }
}

/// Per-worker partial products for `BLAS.accumulateTransposedProduct`.
struct GemmScratch {
  let pointer: UnsafeMutablePointer<Float>
  let capacity: Int
}

/// y = x W^T + b for a Linear layer with W (out x in) row-major, over `rows` input rows.
enum Linear {
  /// y (rows x out) = x (rows x in) W^T + b, or y += x W^T + b when `accumulate`.
  static func forward(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
                      weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                      _ y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
    var beta: Float = accumulate ? 1 : 0
    if let bias {
      Profile.measure(.elementwiseForward) { broadcastRows(bias, rows: rows, cols: outFeatures, into: y, accumulate: accumulate) }
      beta = 1
    }
    BLAS.parallelGemm(false, true, m: rows, n: outFeatures, k: inFeatures, x, lda: inFeatures, weight,
                      ldb: inFeatures, beta: beta, y, ldc: outFeatures)
  }

  /// Backward of y = x W^T + b: dW += dy^T x, db += column sums of dy, and dx = dy W
  /// (dx += dy W when `accumulateInput`; skipped when dx is nil).
  static func backward(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                       outFeatures: Int, weight: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>?,
                       accumulateInput: Bool = false, ones: UnsafePointer<Float>, scratch: GemmScratch) {
    BLAS.accumulateTransposedProduct(m: outFeatures, n: inFeatures, k: rows, dy, lda: outFeatures, x,
                                     ldb: inFeatures, into: dWeight, ldc: inFeatures,
                                     scratch: scratch.pointer, scratchCapacity: scratch.capacity)
    if let dBias {
      Profile.measure(.elementwiseBackward) { BLAS.columnSums(dy, rows: rows, cols: outFeatures, lda: outFeatures, ones: ones, into: dBias, accumulate: true) }
    }
    if let dx {
      BLAS.parallelGemm(false, false, m: rows, n: inFeatures, k: outFeatures, dy, lda: outFeatures, weight,
                        ldb: inFeatures, beta: accumulateInput ? 1 : 0, dx, ldc: inFeatures)
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
