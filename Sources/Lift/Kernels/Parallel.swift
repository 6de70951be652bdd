import Glibc
import LiftKernelsC

/// Splits elementwise and row-wise work over the machine's cores.
///
/// Matrix products run on the same workers (`MatMul`, one single-threaded oneDNN primitive per
/// part), so nothing else competes for the cores.
enum Parallel {
  /// Number of workers for liblift's own kernels, fixed when the library loads: the environment
  /// variable LIFT_NUM_THREADS if set (1...256), else the number of online cores. Workspaces
  /// size per-worker scratch by it.
  static let workers: Int = {
    if let env = getenv("LIFT_NUM_THREADS"), let n = Int(String(cString: env)), n >= 1, n <= 256 { return n }
    return max(1, min(256, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
  }()

  /// Calls body(range) on disjoint ranges covering 0..<count, in parallel when count is at least
  /// `grain` per worker. Ranges are contiguous and in order of worker index.
  @inline(__always)
  static func forRanges(_ count: Int, grain: Int = 4096, _ body: (Range<Int>) -> Void) {
    let parts = min(workers, count / max(grain, 1))
    if parts <= 1 {
      if count > 0 { body(0..<count) }
      return
    }
    run(parts) { p in body(split(count, parts: parts, index: p)) }
  }

  /// Calls body(worker, range) with `workers`-way (or fewer) split, for kernels that keep
  /// per-worker partial results. Returns the number of parts used.
  @discardableResult
  static func forWorkers(_ count: Int, grain: Int = 1, _ body: (Int, Range<Int>) -> Void) -> Int {
    let parts = max(1, min(workers, count / max(grain, 1)))
    if parts == 1 {
      if count > 0 { body(0, 0..<count) }
      return 1
    }
    run(parts) { p in body(p, split(count, parts: parts, index: p)) }
    return parts
  }

  @inline(__always)
  static func split(_ count: Int, parts: Int, index: Int) -> Range<Int> {
    let base = count / parts, extra = count % parts
    let start = index * base + min(index, extra)
    return start..<(start + base + (index < extra ? 1 : 0))
  }
}

extension Parallel {
  /// Calls part(p) for p in 0..<parts on the pool of LiftKernelsC (`lk_parallel_run`): part 0
  /// on this thread, the others on its helper threads, all returned before this returns.
  ///
  /// The parts capture raw buffers (not Sendable) and run concurrently: every caller of
  /// `Parallel` writes only the rows, columns or per-worker slots of its own part, and reads
  /// shared inputs only. That invariant is what makes this crossing safe; it is checked by the
  /// kernels' tests, not by the compiler, and this is the one place it is asserted.
  @inline(__always)
  static func run(_ parts: Int, _ part: (Int) -> Void) {
    withoutActuallyEscaping(part) { part in
      var body = part
      withUnsafeMutablePointer(to: &body) { context in
        lk_parallel_run(Int32(parts), { context, index in
          context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(index))
        }, context)
      }
    }
  }
}

/// The number of workers liblift's own kernels use (see `Parallel.workers`).
public var liftWorkerCount: Int { Parallel.workers }
