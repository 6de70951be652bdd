/// Register-blocked matrix products for attention's small per-head matrices (T x T x head_dim,
/// e.g. 197 x 197 x 64), single-threaded: each attention task runs on one worker.
///
/// Used for heads of few tokens, where a oneDNN call costs more than the product (see
/// `Attention.Shape.smallKernelTokens`); these kernels skip packing the broadcast operand.
/// Micro-kernel: 6 rows x 16 columns of C in registers (6 SIMD16
/// accumulators = 12 AVX2 registers), one 16-wide load of B and 6 broadcasts of A per k.
///
/// Both kernels compute C (m x n) = A' B, where row k of B is 16-wide-loadable at b + k * ldb
/// (any stride), n is a multiple of 16, and A' is addressed through `aRow`/`aCol` strides:
/// element (i, k) of A' is a[i * aRow + k * aCol]. So A' = A uses (lda, 1) and A' = A^T uses
/// (1, lda). `accumulate` adds into C instead of overwriting it.
enum SmallGemm {
  @inline(__always)
  static func product(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, aRow: Int, aCol: Int,
                      _ b: UnsafePointer<Float>, ldb: Int, _ c: UnsafeMutablePointer<Float>, ldc: Int,
                      accumulate: Bool = false) {
    var i = 0
    while i + 6 <= m {
      let a0 = a + i * aRow
      var j = 0
      while j < n {
        var c0 = Vec16(), c1 = Vec16(), c2 = Vec16(), c3 = Vec16(), c4 = Vec16(), c5 = Vec16()
        var ap = a0
        var bp = b + j
        for _ in 0..<k {
          let bv = bp.vload(0)
          c0.addProduct(Vec16(repeating: ap[0]), bv)
          c1.addProduct(Vec16(repeating: ap[aRow]), bv)
          c2.addProduct(Vec16(repeating: ap[2 * aRow]), bv)
          c3.addProduct(Vec16(repeating: ap[3 * aRow]), bv)
          c4.addProduct(Vec16(repeating: ap[4 * aRow]), bv)
          c5.addProduct(Vec16(repeating: ap[5 * aRow]), bv)
          ap += aCol
          bp += ldb
        }
        let cp = c + i * ldc + j
        if accumulate {
          c0 += cp.vload(0); c1 += cp.vload(ldc); c2 += cp.vload(2 * ldc)
          c3 += cp.vload(3 * ldc); c4 += cp.vload(4 * ldc); c5 += cp.vload(5 * ldc)
        }
        cp.vstore(c0, 0); cp.vstore(c1, ldc); cp.vstore(c2, 2 * ldc)
        cp.vstore(c3, 3 * ldc); cp.vstore(c4, 4 * ldc); cp.vstore(c5, 5 * ldc)
        j += 16
      }
      i += 6
    }
    while i < m {
      var j = 0
      while j < n {
        var acc = Vec16()
        var ap = a + i * aRow
        var bp = b + j
        for _ in 0..<k {
          acc.addProduct(Vec16(repeating: ap[0]), bp.vload(0))
          ap += aCol
          bp += ldb
        }
        let cp = c + i * ldc + j
        if accumulate { acc += cp.vload(0) }
        cp.vstore(acc, 0)
        j += 16
      }
      i += 1
    }
  }

  /// dst (cols x ldDst, zero beyond `rows`) = scale * transpose of src (rows x cols, stride ldSrc):
  /// dst[c * ldDst + r] = scale * src[r * ldSrc + c] for r < rows; dst[c * ldDst + r] = 0 for
  /// rows <= r < ldDst.
  @inline(__always)
  static func packTransposed(_ src: UnsafePointer<Float>, rows: Int, cols: Int, ldSrc: Int, scale: Float,
                             into dst: UnsafeMutablePointer<Float>, ldDst: Int) {
    for col in 0..<cols {
      let d = dst + col * ldDst
      for r in 0..<rows { d[r] = scale * src[r * ldSrc + col] }
      for r in rows..<ldDst { d[r] = 0 }
    }
  }
}
