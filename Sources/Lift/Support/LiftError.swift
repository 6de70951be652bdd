@_exported import CLiftABI

/// An error every liblift operation can throw: a C status code plus a message that names what was
/// wrong (file, dataset, shape, row). The C layer turns it into a `lift_status` and the
/// thread-local last-error message.
public struct LiftError: Error, CustomStringConvertible, Equatable {
  public var status: lift_status
  public var message: String
  /// Set when the error concerns one sample of a data source (an image that does not decode, a
  /// missing embedding): the loader skips such samples and counts them by kind.
  public var sampleProblem: SampleProblem? = nil

  public init(_ status: lift_status, _ message: String, sampleProblem: SampleProblem? = nil) {
    self.status = status
    self.message = message
    self.sampleProblem = sampleProblem
  }

  public var description: String { "\(statusName(status)): \(message)" }

  static func argument(_ message: String) -> LiftError { LiftError(LIFT_ERR_ARGUMENT, message) }
  static func io(_ message: String) -> LiftError { LiftError(LIFT_ERR_IO, message) }
  static func format(_ message: String) -> LiftError { LiftError(LIFT_ERR_FORMAT, message) }
  static func shape(_ message: String) -> LiftError { LiftError(LIFT_ERR_SHAPE, message) }
  static func value(_ message: String) -> LiftError { LiftError(LIFT_ERR_VALUE, message) }
  static func notFound(_ message: String) -> LiftError { LiftError(LIFT_ERR_NOT_FOUND, message) }
  static func memory(_ message: String) -> LiftError { LiftError(LIFT_ERR_MEMORY, message) }
  static func state(_ message: String) -> LiftError { LiftError(LIFT_ERR_STATE, message) }
  static func buffer(_ message: String) -> LiftError { LiftError(LIFT_ERR_BUFFER, message) }
  static func `internal`(_ message: String) -> LiftError { LiftError(LIFT_ERR_INTERNAL, message) }
  static func unsupported(_ message: String) -> LiftError { LiftError(LIFT_ERR_UNSUPPORTED, message) }
}

/// The constant name of a status code ("LIFT_ERR_IO"), as the header spells it.
public func statusName(_ status: lift_status) -> String {
  switch status {
  case LIFT_OK: return "LIFT_OK"
  case LIFT_ERR_ARGUMENT: return "LIFT_ERR_ARGUMENT"
  case LIFT_ERR_IO: return "LIFT_ERR_IO"
  case LIFT_ERR_FORMAT: return "LIFT_ERR_FORMAT"
  case LIFT_ERR_SHAPE: return "LIFT_ERR_SHAPE"
  case LIFT_ERR_VALUE: return "LIFT_ERR_VALUE"
  case LIFT_ERR_NOT_FOUND: return "LIFT_ERR_NOT_FOUND"
  case LIFT_ERR_MEMORY: return "LIFT_ERR_MEMORY"
  case LIFT_ERR_STATE: return "LIFT_ERR_STATE"
  case LIFT_ERR_BUFFER: return "LIFT_ERR_BUFFER"
  case LIFT_ERR_UNSUPPORTED: return "LIFT_ERR_UNSUPPORTED"
  case LIFT_ERR_UNSAFE: return "LIFT_ERR_UNSAFE"
  case LIFT_ERR_INTERNAL: return "LIFT_ERR_INTERNAL"
  default: return "LIFT_ERR_UNKNOWN"
  }
}

// MARK: - Checked sizes

/// `a * b` as an Int, or an argument error naming `what` if it is negative or overflows.
@inline(__always)
func checkedCount(_ a: Int64, _ b: Int64, _ what: @autoclosure () -> String) throws(LiftError) -> Int {
  guard a >= 0, b >= 0 else { throw .argument("\(what()): negative size (\(a) x \(b))") }
  let (p, overflow) = a.multipliedReportingOverflow(by: b)
  guard !overflow, p <= Int64(Int.max / 8) else {
    throw .argument("\(what()): size \(a) x \(b) overflows")
  }
  return Int(p)
}

/// Requires `value >= 0`.
@inline(__always)
func requireNonNegative(_ value: Int64, _ name: @autoclosure () -> String) throws(LiftError) {
  if value < 0 { throw .argument("\(name()) must be >= 0 (got \(value))") }
}

/// Requires `value >= 1`.
@inline(__always)
func requirePositive(_ value: Int64, _ name: @autoclosure () -> String) throws(LiftError) {
  if value < 1 { throw .argument("\(name()) must be >= 1 (got \(value))") }
}
