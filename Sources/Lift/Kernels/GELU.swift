/// Exact (erf) GELU: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as nn.GELU() computes it.
enum GELU {
  static let invSqrt2: Float = 0.707_106_781_186_547_5
  static let invSqrt2Pi: Float = 0.398_942_280_401_432_7

  @inline(__always)
  static func value(_ x: Vec16) -> Vec16 {
    let u = x * Vec16(repeating: invSqrt2)
    return Vec16(repeating: 0.5) * x * (Vec16(repeating: 1) + MathApprox.erf(u))
  }

  /// d/dx GELU(x) = Phi(x) + x phi(x).
  @inline(__always)
  static func derivative(_ x: Vec16) -> Vec16 {
    let u = x * Vec16(repeating: invSqrt2)
    let e = MathApprox.exp(-u * u)
    let cdf = Vec16(repeating: 0.5) * (Vec16(repeating: 1) + MathApprox.erf(u, expNegSquare: e))
    return cdf + x * Vec16(repeating: invSqrt2Pi) * e
  }

  /// y[i] = GELU(x[i]) for i in 0..<count (parallel).
  static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        y.vstore(value(x.vload(i)), i)
        i += 16
      }
      if i < r.upperBound { storeTail(value(loadTail(x + i, r.upperBound - i)), y + i, r.upperBound - i) }
    }
  }

  /// dx[i] = dy[i] * GELU'(x[i]) (dx may alias dy).
  static func backward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRanges(count, grain: 1 << 14) { r in
      var i = r.lowerBound
      while i + 16 <= r.upperBound {
        dx.vstore(dy.vload(i) * derivative(x.vload(i)), i)
        i += 16
      }
      let n = r.upperBound - i
      if n > 0 { storeTail(loadTail(dy + i, n) * derivative(loadTail(x + i, n)), dx + i, n) }
    }
  }
}
