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
