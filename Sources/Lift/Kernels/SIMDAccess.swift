/// Unaligned SIMD16 loads/stores and masked tails over float buffers.
typealias Vec16 = SIMD16<Float>

extension UnsafePointer where Pointee == Float {
  @inline(__always) func vload(_ i: Int) -> Vec16 { UnsafeRawPointer(self + i).loadUnaligned(as: Vec16.self) }
}

extension UnsafeMutablePointer where Pointee == Float {
  @inline(__always) func vload(_ i: Int) -> Vec16 { UnsafeRawPointer(self + i).loadUnaligned(as: Vec16.self) }
  @inline(__always) func vstore(_ v: Vec16, _ i: Int) { UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: Vec16.self) }
}

/// Loads count (< 16) floats into the low lanes of a vector, `fill` elsewhere.
@inline(__always)
func loadTail(_ p: UnsafePointer<Float>, _ count: Int, fill: Float = 0) -> Vec16 {
  var v = Vec16(repeating: fill)
  for i in 0..<count { v[i] = p[i] }
  return v
}

@inline(__always)
func storeTail(_ v: Vec16, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
  for i in 0..<count { p[i] = v[i] }
}
