/// Elementwise kernels over contiguous float buffers (SIMD16, unaligned loads allowed).
enum VectorOps {
  /// dst[i] = Float(src[i]) for `count` little-endian IEEE binary16 values at `src`.
  static func halfToFloat(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    var i = 0
    while i + 16 <= count {
      let h = src.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<Float16>.self)
      UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD16<Float>(h), as: SIMD16<Float>.self)
      i += 16
    }
    while i < count {
      dst[i] = Float(src.loadUnaligned(fromByteOffset: i * 2, as: Float16.self))
      i += 1
    }
  }

  /// dst[i] = Float16(src[i]) rounded to nearest even; values beyond +-65504 become +-inf.
  static func floatToHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ count: Int) {
    var i = 0
    while i + 16 <= count {
      let f = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<Float>.self)
      dst.storeBytes(of: SIMD16<Float16>(f), toByteOffset: i * 2, as: SIMD16<Float16>.self)
      i += 16
    }
    while i < count {
      dst.storeBytes(of: Float16(src[i]), toByteOffset: i * 2, as: Float16.self)
      i += 1
    }
  }

  /// Index of the first NaN or infinity in `x[0..<count]`, or nil if all are finite.
  static func firstNonFinite(_ x: UnsafePointer<Float>, _ count: Int) -> Int? {
    // x - x is 0 for finite x and NaN for NaN/inf; NaN survives the sum.
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
      let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
      acc += v - v
      i += 16
    }
    var tail: Float = 0
    while i < count { tail += x[i] - x[i]; i += 1 }
    if acc.sum() + tail == 0 { return nil }
    for j in 0..<count where !x[j].isFinite { return j }
    return nil
  }

  /// Index of the first element with |x| > limit (or NaN), or nil.
  static func firstBeyond(_ x: UnsafePointer<Float>, _ count: Int, limit: Float) -> Int? {
    for j in 0..<count where !(abs(x[j]) <= limit) { return j }
    return nil
  }

  /// Sum of squares, accumulated in float32 SIMD lanes (inf if it overflows float32).
  static func sumOfSquares(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= count {
      let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
      acc.addProduct(v, v)
      i += 16
    }
    var s = acc.sum()
    while i < count { s += x[i] * x[i]; i += 1 }
    return s
  }

  /// Euclidean norm of x; exact to float precision even when the squares overflow float32.
  static func norm(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    let s = sumOfSquares(x, count)
    if s.isFinite { return s.squareRoot() }
    var d = 0.0
    for j in 0..<count { d += Double(x[j]) * Double(x[j]) }
    return Float(d.squareRoot())
  }

  /// x *= factor.
  static func scale(_ x: UnsafeMutablePointer<Float>, _ count: Int, by factor: Float) {
    var i = 0
    let f = SIMD16<Float>(repeating: factor)
    while i + 16 <= count {
      let raw = UnsafeMutableRawPointer(x + i)
      raw.storeBytes(of: raw.loadUnaligned(as: SIMD16<Float>.self) * f, as: SIMD16<Float>.self)
      i += 16
    }
    while i < count { x[i] *= factor; i += 1 }
  }

  /// y[j] += sum over i of a[i * lda + j], for j in 0..<cols: the column sums of a rows x cols
  /// matrix (bias gradients). Columns are split over the workers in blocks of 64; each block is
  /// summed over the rows in order (deterministic for a given worker count).
  static func addColumnSums(_ a: UnsafePointer<Float>, rows: Int, cols: Int, lda: Int, into y: UnsafeMutablePointer<Float>) {
    let blocks = (cols + 63) / 64
    Parallel.forRanges(blocks, grain: rows * 64 >= 1 << 14 ? 1 : blocks) { r in
      for block in r {
        let j0 = block * 64
        if j0 + 64 <= cols {
          var s0 = Vec16(), s1 = Vec16(), s2 = Vec16(), s3 = Vec16()
          for i in 0..<rows {
            let row = a + i * lda + j0
            s0 += row.vload(0); s1 += row.vload(16); s2 += row.vload(32); s3 += row.vload(48)
          }
          y.vstore(y.vload(j0) + s0, j0); y.vstore(y.vload(j0 + 16) + s1, j0 + 16)
          y.vstore(y.vload(j0 + 32) + s2, j0 + 32); y.vstore(y.vload(j0 + 48) + s3, j0 + 48)
          continue
        }
        var j = j0
        while j < cols {
          let n = min(16, cols - j)
          var s = Vec16()
          for i in 0..<rows { s += n == 16 ? (a + i * lda + j).vload(0) : loadTail(a + i * lda + j, n) }
          storeTail(loadTail(y + j, n) + s, y + j, n)
          j += n
        }
      }
    }
  }

  /// Scales x to unit L2 norm. Returns false (x untouched) if its norm is zero or not finite.
  @discardableResult
  static func normalize(_ x: UnsafeMutablePointer<Float>, _ count: Int) -> Bool {
    let n = norm(x, count)
    guard n > 0, n.isFinite else { return false }
    scale(x, count, by: 1 / n)
    return true
  }
}
