import Glibc

/// Fallible allocation. Swift's `allocate(capacity:)` and array growth end the process when
/// memory runs out; every buffer whose size comes from outside (a file, an option, a C argument)
/// is allocated here instead, so a size too large for the machine is a LIFT_ERR_MEMORY naming
/// what was asked for. Buffers are 64-byte aligned and released with `deallocate()`.

/// Allocates `count` elements of T (uninitialised), or a memory error naming `what`.
func allocateElements<T>(_ count: Int, of type: T.Type = T.self, what: @autoclosure () -> String)
  throws(LiftError) -> UnsafeMutablePointer<T> {
  let size = MemoryLayout<T>.stride
  guard count >= 0 else { throw .argument("\(what()): negative element count \(count)") }
  let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
  guard !overflow, bytes <= Int.max - 64 else { throw .memory("\(what()): \(count) elements of \(size) bytes is too many") }
  guard let raw = aligned_alloc(64, max(64, (bytes + 63) / 64 * 64)) else {
    throw .memory("cannot allocate \(bytes) bytes for \(what())")
  }
  return raw.bindMemory(to: T.self, capacity: count)
}

/// Allocates `count` floats, or a memory error naming `what`.
func allocateFloats(_ count: Int, what: @autoclosure () -> String) throws(LiftError) -> UnsafeMutablePointer<Float> {
  try allocateElements(count, of: Float.self, what: what())
}
