import Glibc

/// Fallible allocation. Swift's `allocate(capacity:)` and array growth end the process when
/// memory runs out; every buffer whose size comes from outside (a file, an option, a C argument)
/// is allocated here instead, so a size too large for the machine is a LIFT_ERR_MEMORY naming
/// what was asked for. A buffer larger than the memory budget (`MemoryBudget`) is refused before
/// the allocator is asked. Buffers are 64-byte aligned and released with `deallocate()`.

/// Allocates `count` elements of T (uninitialised), or a memory error naming `what`.
func allocateElements<T>(_ count: Int, of type: T.Type = T.self, what: @autoclosure () -> String)
  throws(LiftError) -> UnsafeMutablePointer<T> {
  let size = MemoryLayout<T>.stride
  guard count >= 0 else { throw .argument("\(what()): negative element count \(count)") }
  let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
  guard !overflow, bytes <= Int.max - 64 else { throw .memory("\(what()): \(count) elements of \(size) bytes is too many") }
  try MemoryBudget.require(bytes, for: what())
  guard let raw = aligned_alloc(64, max(64, (bytes + 63) / 64 * 64)) else {
    throw .memory("cannot allocate \(bytes) bytes for \(what())")
  }
  return raw.bindMemory(to: T.self, capacity: count)
}

/// Allocates `count` floats, or a memory error naming `what`.
func allocateFloats(_ count: Int, what: @autoclosure () -> String) throws(LiftError) -> UnsafeMutablePointer<Float> {
  try allocateElements(count, of: Float.self, what: what())
}

/// `count` zero floats mapped on demand: pages nobody writes cost no memory (reads of them see
/// the kernel's shared zero page). For buffers of which a run may touch only a part, such as the
/// gradients and AdamW moments of a partly frozen model. Page-aligned; unmapped on deinit.
final class ZeroedFloats {
  let pointer: UnsafeMutablePointer<Float>
  let count: Int
  private let bytes: Int

  init(_ count: Int, what: @autoclosure () -> String) throws(LiftError) {
    guard count >= 0 else { throw .argument("\(what()): negative element count \(count)") }
    let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
    guard !overflow else { throw .memory("\(what()): \(count) floats is too many") }
    try MemoryBudget.require(bytes, for: what())
    let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    guard let raw, raw != MAP_FAILED else { throw .memory("cannot map \(bytes) bytes for \(what())") }
    self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    self.count = count
    self.bytes = bytes
  }

  deinit { munmap(pointer, bytes) }
}

/// The memory one operation may claim when its sizes come from outside (a file's declared batch
/// capacity, shapes and counts, or a caller's): LIFT_MEMORY_LIMIT if set (bytes, or a number
/// followed by K, M, G or T, powers of 1024), else half the machine's physical memory; replaced
/// by `set` (lift_set_memory_limit). Operations add up what they will allocate and `require` it
/// before allocating or touching anything; a file check's process runs under it
/// (`FileCheck.limitMemory`).
public enum MemoryBudget {
  /// The budget of LIFT_MEMORY_LIMIT or half the physical memory (at least 1 GiB).
  public static let defaultBytes: UInt64 = {
    if let env = getenv("LIFT_MEMORY_LIMIT"), let parsed = parse(String(cString: env)) { return parsed }
    let pages = UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))), pageSize = UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
    return max(1 << 30, pages.multipliedReportingOverflow(by: pageSize).partialValue / 2)
  }()

  private static let lock = Lock()
  nonisolated(unsafe) private static var current: UInt64 = 0

  /// The budget in force.
  public static var bytes: UInt64 { lock.withLock { current == 0 ? defaultBytes : current } }

  /// Replaces the budget (0: back to the default).
  public static func set(_ bytes: UInt64) { lock.withLock { current = bytes } }

  /// Throws a memory error naming `what` unless one buffer of `bytes` fits the budget.
  @inline(__always)
  static func require(_ bytes: Int, for what: @autoclosure () -> String) throws(LiftError) {
    let budget = self.bytes
    guard UInt64(max(bytes, 0)) > budget else { return }
    throw .memory("\(what()) needs \(bytes) bytes, more than the memory budget of \(budget) bytes "
                  + "(LIFT_MEMORY_LIMIT or lift_set_memory_limit); nothing was allocated")
  }

  /// Throws a memory error naming `what` and the parts of `bytes` unless they fit the budget.
  /// `parts`: (name, bytes) of each buffer, for the message.
  public static func require(_ parts: [(String, Int)], for what: @autoclosure () -> String) throws(LiftError) {
    var total = 0
    for (_, b) in parts {
      let (sum, overflow) = total.addingReportingOverflow(max(b, 0))
      total = overflow ? Int.max : sum
    }
    let budget = bytes
    guard UInt64(total) > budget else { return }
    let detail = parts.filter { $0.1 > 0 }.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    throw .memory("\(what()) needs \(total) bytes (\(detail)), more than the memory budget of \(budget) bytes "
                  + "(LIFT_MEMORY_LIMIT or lift_set_memory_limit); nothing was allocated")
  }

  /// "123", "512M", "4G" -> bytes; nil if malformed, zero or overflowing.
  static func parse(_ text: String) -> UInt64? {
    var digits = text.trimmingSpaces
    var scale: UInt64 = 1
    if let last = digits.last, let shift = ["K": 10, "M": 20, "G": 30, "T": 40][String(last).uppercased()] {
      scale = 1 << UInt64(shift)
      digits.removeLast()
    }
    guard let n = UInt64(digits), n > 0 else { return nil }
    let (bytes, overflow) = n.multipliedReportingOverflow(by: scale)
    return overflow ? nil : bytes
  }
}
