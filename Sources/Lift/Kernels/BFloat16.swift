/// bfloat16 values as their 16 bits: the upper half of the float32 with the same sign, exponent
/// and leading 7 fraction bits.
typealias BFloat16 = UInt16

/// float32 <-> bfloat16 conversions (round to nearest, ties to even, as PyTorch and oneDNN do;
/// NaN stays a quiet NaN, overflow becomes infinity).
enum BF16 {
  @inline(__always)
  static func round(_ v: Vec16) -> SIMD16<UInt16> {
    let bits = unsafeBitCast(v, to: SIMD16<UInt32>.self)
    let rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
    let isNaN = (bits & 0x7FFF_FFFF) .> 0x7F80_0000
    return SIMD16<UInt16>(truncatingIfNeeded: rounded.replacing(with: (bits &>> 16) | 0x40, where: isNaN))
  }

  @inline(__always)
  static func round(_ x: Float) -> BFloat16 {
    let bits = x.bitPattern
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return BFloat16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    return BFloat16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
  }

  @inline(__always)
  static func widen(_ h: SIMD16<UInt16>) -> Vec16 {
    unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16, to: Vec16.self)
  }

  @inline(__always)
  static func widen(_ h: BFloat16) -> Float { Float(bitPattern: UInt32(h) << 16) }

  /// dst[i] = round(src[i]) for i in 0..<count, on the calling thread.
  static func convert(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<BFloat16>, count: Int) {
    var i = 0
    while i + 16 <= count {
      UnsafeMutableRawPointer(dst + i).storeBytes(of: round(src.vload(i)), as: SIMD16<UInt16>.self)
      i += 16
    }
    while i < count { dst[i] = round(src[i]); i += 1 }
  }

  /// The same over the workers.
  static func convertParallel(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<BFloat16>, count: Int) {
    Parallel.forRanges(count, grain: 1 << 15) { r in convert(src + r.lowerBound, dst + r.lowerBound, count: r.count) }
  }

  /// Rows of a rows x cols matrix with leading dimension ld into a dense rows x cols bfloat16 matrix.
  static func convertRows(_ src: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int,
                          into dst: UnsafeMutablePointer<BFloat16>) {
    Parallel.forRanges(rows, grain: max(1, (1 << 15) / max(cols, 1))) { r in
      for row in r { convert(src + row * ld, dst + row * cols, count: cols) }
    }
  }

  /// dst[i] = widen(src[i]) for i in 0..<count, on the calling thread.
  static func widen(_ src: UnsafePointer<BFloat16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
      dst.vstore(widen(UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<UInt16>.self)), i)
      i += 16
    }
    while i < count { dst[i] = widen(src[i]); i += 1 }
  }
}
