/// Unaligned SIMD16 loads/stores and masked tails over float buffers.
typealias Vec16 = SIMD16<Float>

extension UnsafePointer where Pointee == Float {
  @inline(__always) func vload(_ i: Int) -> Vec16 { UnsafeRawPointer(self + i).loadUnaligned(as: Vec16.self) }
}

extension UnsafeMutablePointer where Pointee == Float {
  @inline(__always) func vload(_ i: Int) -> Vec16 { UnsafeRawPointer(self + i).loadUnaligned(as: Vec16.self) }
  @inline(__always) func vstore(_ v: Vec16, _ i: Int) { UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: Vec16.self) }
}

// Tails go through memory copies: per-lane SIMD subscripts are not specialised and cost far
// more than the whole vector operation.

/// Loads count (< 16) floats into the low lanes of a vector, `fill` elsewhere.
@inline(__always)
func loadTail(_ p: UnsafePointer<Float>, _ count: Int, fill: Float = 0) -> Vec16 {
  var v = Vec16(repeating: fill)
  withUnsafeMutableBytes(of: &v) { $0.baseAddress!.assumingMemoryBound(to: Float.self).update(from: p, count: count) }
  return v
}

@inline(__always)
func storeTail(_ v: Vec16, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
  withUnsafeBytes(of: v) { p.update(from: $0.baseAddress!.assumingMemoryBound(to: Float.self), count: count) }
}

/// Lane 0 of a vector.
@inline(__always)
func firstLane(_ v: Vec16) -> Float {
  withUnsafeBytes(of: v) { $0.load(as: Float.self) }
}

// Lane-wise max/min by compare-and-select. The standard pointwiseMax/pointwiseMin follow
// Swift.max's NaN rules lane by lane and compile to scalar code (~100x slower); these return
// `a` in a lane where either input is NaN.
@inline(__always) func lanesMax(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: b .> a) }
@inline(__always) func lanesMin(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: b .< a) }
