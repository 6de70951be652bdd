/// Vectorised transcendental functions on SIMD16<Float>.
///
/// exp: Cephes-style range reduction (x = n ln2 + r, |r| <= ln2/2) and a degree-6 polynomial,
/// relative error ~2e-7 over the float range; inputs are clamped to [-87.3, 88.7].
/// erf: Abramowitz & Stegun 7.1.26 (the form PyTorch's vectorised CPU erf uses), absolute error
/// <= 1.5e-7 plus float rounding.
///
/// Written with compare-and-select (lanesMin/lanesMax) and addingProduct (fused multiply-add)
/// only: generic SIMD helpers such as `clamped` or `pointwiseMax` compile to scalar code.
enum MathApprox {
  typealias V = SIMD16<Float>

  /// a * b + c, fused.
  @inline(__always)
  static func fma(_ a: V, _ b: V, _ c: V) -> V { c.addingProduct(a, b) }

  @inline(__always)
  static func exp(_ x: V) -> V {
    let xc = lanesMin(lanesMax(x, V(repeating: -87.3)), V(repeating: 88.7))
    // n = round(x / ln2) via the 1.5 * 2^23 trick, which also leaves n in the low mantissa bits.
    let magic = V(repeating: 12_582_912)
    let shifted = fma(xc, V(repeating: 1.442_695_04), magic)
    let n = shifted - magic
    let r = fma(n, V(repeating: 2.121_944_4e-4), fma(n, V(repeating: -0.693_359_375), xc))
    var p = V(repeating: 1.987_569_15e-4)
    p = fma(p, r, V(repeating: 1.398_199_95e-3))
    p = fma(p, r, V(repeating: 8.333_451_9e-3))
    p = fma(p, r, V(repeating: 4.166_579_6e-2))
    p = fma(p, r, V(repeating: 1.666_666_55e-1))
    p = fma(p, r, V(repeating: 5.000_000_1e-1))
    p = fma(p, r * r, r + V(repeating: 1))
    let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: V.self)
    return p * scale
  }

  /// erf(x) given e = exp(-x*x) (callers that also need the Gaussian share it).
  @inline(__always)
  static func erf(_ x: V, expNegSquare e: V) -> V {
    let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
    let signBit = bits & SIMD16<UInt32>(repeating: 0x8000_0000)
    let a = unsafeBitCast(bits & SIMD16<UInt32>(repeating: 0x7FFF_FFFF), to: V.self)
    let t = V(repeating: 1) / fma(V(repeating: 0.327_591_1), a, V(repeating: 1))
    var poly = V(repeating: 1.061_405_429)
    poly = fma(poly, t, V(repeating: -1.453_152_027))
    poly = fma(poly, t, V(repeating: 1.421_413_741))
    poly = fma(poly, t, V(repeating: -0.284_496_736))
    poly = fma(poly, t, V(repeating: 0.254_829_592))
    let y = fma(-poly * t, e, V(repeating: 1))
    // Copy the sign of x onto y (y >= 0).
    return unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) | signBit, to: V.self)
  }

  @inline(__always)
  static func erf(_ x: V) -> V { erf(x, expNegSquare: exp(-x * x)) }

  /// Scalar exp through the vector path (identical results to the vector lanes).
  @inline(__always)
  static func exp(_ x: Float) -> Float { firstLane(exp(V(repeating: x))) }
}
