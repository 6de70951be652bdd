/// Vectorised transcendental functions on SIMD16<Float>.
///
/// exp: Cephes-style range reduction (x = n ln2 + r, |r| <= ln2/2) and a degree-6 polynomial,
/// relative error ~2e-7 over the float range; inputs are clamped to [-87.3, 88.7].
/// erf: Abramowitz & Stegun 7.1.26 (the form PyTorch's vectorised CPU erf uses), absolute error
/// <= 1.5e-7.
enum MathApprox {
  typealias V = SIMD16<Float>

  @inline(__always)
  static func exp(_ x: V) -> V {
    let xc = x.clamped(lowerBound: V(repeating: -87.3), upperBound: V(repeating: 88.7))
    // n = round(x / ln2) via the 1.5 * 2^23 trick, which also leaves n in the low mantissa bits.
    let magic = V(repeating: 12_582_912)
    let shifted = xc * V(repeating: 1.442_695_04) + magic
    let n = shifted - magic
    let r = xc - n * V(repeating: 0.693_359_375) - n * V(repeating: -2.121_944_4e-4)
    var p = V(repeating: 1.987_569_15e-4)
    p = p * r + V(repeating: 1.398_199_95e-3)
    p = p * r + V(repeating: 8.333_451_9e-3)
    p = p * r + V(repeating: 4.166_579_6e-2)
    p = p * r + V(repeating: 1.666_666_55e-1)
    p = p * r + V(repeating: 5.000_000_1e-1)
    p = p * r * r + r + V(repeating: 1)
    let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: V.self)
    return p * scale
  }

  /// erf(x) given e = exp(-x*x) (callers that also need the Gaussian share it).
  @inline(__always)
  static func erf(_ x: V, expNegSquare e: V) -> V {
    let signBit = unsafeBitCast(x, to: SIMD16<UInt32>.self) & SIMD16<UInt32>(repeating: 0x8000_0000)
    let a = unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & SIMD16<UInt32>(repeating: 0x7FFF_FFFF), to: V.self)
    let t = V(repeating: 1) / (V(repeating: 1) + V(repeating: 0.327_591_1) * a)
    var poly = V(repeating: 1.061_405_429)
    poly = poly * t + V(repeating: -1.453_152_027)
    poly = poly * t + V(repeating: 1.421_413_741)
    poly = poly * t + V(repeating: -0.284_496_736)
    poly = poly * t + V(repeating: 0.254_829_592)
    let y = V(repeating: 1) - poly * t * e
    // Copy the sign of x onto y (y >= 0).
    return unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) | signBit, to: V.self)
  }

  @inline(__always)
  static func erf(_ x: V) -> V { erf(x, expNegSquare: exp(-x * x)) }

  /// Scalar versions for loop tails, computed through the vector path for identical results.
  @inline(__always)
  static func exp(_ x: Float) -> Float { exp(V(repeating: x))[0] }
}
