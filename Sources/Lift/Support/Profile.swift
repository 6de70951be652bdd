import Glibc
import Synchronization

/// Opt-in wall-clock accounting of the training step by phase, for performance work.
/// Enabled when the environment variable LIFT_PROFILE is set when the library loads; otherwise
/// each `measure` is one predictable branch.
public enum Profile {
  public enum Phase: Int, CaseIterable {
    case patchify, gemmForward, attentionForward, layerNormForward, geluForward, elementwiseForward
    case gemmBackward, attentionBackward, layerNormBackward, geluBackward, elementwiseBackward
    case loss, optimizer
    /// bf16 precision: rounding weights and gradients to bfloat16 for the products.
    case precision
    /// Data-parallel collectives, waiting for the slowest rank included.
    case gather, allReduce
  }

  public static let enabled: Bool = getenv("LIFT_PROFILE") != nil
  /// Process-wide totals: every trainer on every thread adds to them (under the mutex).
  private static let seconds = Mutex([Double](repeating: 0, count: Phase.allCases.count))

  @inline(__always)
  static func measure<T, E: Error>(_ phase: Phase, _ body: () throws(E) -> T) throws(E) -> T {
    guard enabled else { return try body() }
    var a = timespec(), b = timespec()
    clock_gettime(CLOCK_MONOTONIC, &a)
    defer {
      clock_gettime(CLOCK_MONOTONIC, &b)
      let elapsed = Double(b.tv_sec - a.tv_sec) + Double(b.tv_nsec - a.tv_nsec) * 1e-9
      seconds.withLock { $0[phase.rawValue] += elapsed }
    }
    return try body()
  }

  /// A stopwatch over a sequence of calls: `lap(phase)` adds the time since the previous lap
  /// (or since `Laps()`) to `phase`, so a pass reads as kernel calls each followed by the phase
  /// it belongs to. Free when profiling is off.
  struct Laps {
    private var last = timespec()

    init() { if Profile.enabled { clock_gettime(CLOCK_MONOTONIC, &last) } }

    @inline(__always)
    mutating func lap(_ phase: Phase) {
      guard Profile.enabled else { return }
      var now = timespec()
      clock_gettime(CLOCK_MONOTONIC, &now)
      let elapsed = Double(now.tv_sec - last.tv_sec) + Double(now.tv_nsec - last.tv_nsec) * 1e-9
      seconds.withLock { $0[phase.rawValue] += elapsed }
      last = now
    }
  }

  /// Seconds per phase accumulated so far (empty when profiling is off).
  public static func report() -> [(String, Double)] {
    guard enabled else { return [] }
    let totals = seconds.withLock { $0 }
    return Phase.allCases.map { ("\($0)", totals[$0.rawValue]) }
  }

  public static func reset() { seconds.withLock { $0 = [Double](repeating: 0, count: Phase.allCases.count) } }
}
