import Glibc
import Lift
import Synchronization

/// Terminal output: messages on stderr, a live progress line when stderr is a terminal.
enum Console {
  static let isTerminal = isatty(2) != 0
  /// Whether the terminal shows a progress line (to clear before other output).
  private static let progressShown = Mutex(false)

  static func line(_ text: String) {
    clearProgress()
    writeError(text + "\n")
  }

  /// Replaces the progress line (terminal) or prints it as a line (log files).
  static func progress(_ text: String) {
    if isTerminal {
      progressShown.withLock { shown in
        writeError("\r\u{1B}[2K" + text)
        shown = true
      }
    } else {
      writeError(text + "\n")
    }
  }

  static func clearProgress() {
    progressShown.withLock { shown in
      if shown { writeError("\r\u{1B}[2K") }
      shown = false
    }
  }

  static func out(_ text: String) {
    clearProgress()
    print(text)
    fflush(nil)
  }
}

/// Writes text to stderr (file descriptor 2, unbuffered; the C `stderr` global is shared mutable
/// state that Swift 6 does not let threads touch).
func writeError(_ text: String) {
  text.utf8CString.withUnsafeBufferPointer { buffer in
    var done = 0
    let count = buffer.count - 1
    while done < count {
      let n = write(2, buffer.baseAddress! + done, count - done)
      if n > 0 { done += n } else if errno != EINTR { return }
    }
  }
}

/// Seconds on a monotonic clock.
func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func formatDuration(_ s: Double) -> String {
  guard s.isFinite, s >= 0, s < 1e12 else { return "--:--" }
  let t = Int(s.rounded())
  return t >= 3600 ? "\(t / 3600):\(pad2((t / 60) % 60)):\(pad2(t % 60))" : "\(t / 60):\(pad2(t % 60))"
}

func pad2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// A fixed number of decimals, without Foundation.
func fixed(_ x: Double, _ digits: Int) -> String {
  // Beyond 1e15 the integer conversions below would overflow: Swift's own notation then.
  guard x.isFinite, abs(x) < 1e15, digits >= 0, digits <= 6 else { return "\(x)" }
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let r = (abs(x) * scale).rounded()
  var whole = String(Int(r / scale))
  let frac = Int(r.truncatingRemainder(dividingBy: scale))
  if x < 0 && r > 0 { whole = "-" + whole }
  if digits == 0 { return whole }
  let f = String(frac)
  return whole + "." + String(repeating: "0", count: digits - f.count) + f
}

/// Scientific notation with 2 decimals (learning rates).
func sci(_ x: Double) -> String {
  guard x != 0, x.isFinite else { return x == 0 ? "0" : "\(x)" }
  var e = 0
  var m = abs(x)
  while m >= 10 { m /= 10; e += 1 }
  while m < 1 { m *= 10; e -= 1 }
  return (x < 0 ? "-" : "") + fixed(m, 2) + "e" + (e < 0 ? "-" : "+") + pad2(abs(e))
}

func percent(_ x: Double) -> String { fixed(100 * x, 2) + "%" }

/// A failure the user can act on: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
  init(_ error: LiftError) { description = error.message }
}

/// Runs body, turning library errors into one-line CLI errors.
func cli<T>(_ body: () throws(LiftError) -> T) throws -> T {
  do {
    return try body()
  } catch {
    throw CLIError(error)
  }
}

/// Whether a path exists.
func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Creates a folder and its parents.
func makeDirectories(_ path: String) throws {
  var prefix = path.hasPrefix("/") ? "/" : ""
  for part in path.split(separator: "/") {
    prefix += part + "/"
    if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
      throw CLIError("cannot create folder '\(prefix)': \(String(cString: strerror(errno)))")
    }
  }
}

/// Appends lines to a file (the JSONL metrics log), flushing each.
final class LineLog {
  private let file: UnsafeMutablePointer<FILE>

  init(path: String) throws {
    guard let f = fopen(path, "a") else { throw CLIError("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    file = f
  }

  deinit { fclose(file) }

  func write(_ json: JSON) {
    fputs(json.serialized + "\n", file)
    fflush(file)
  }
}

/// Reads a whole text file.
func readFile(_ path: String) throws -> [UInt8] {
  guard let f = fopen(path, "rb") else { throw CLIError("cannot open '\(path)': \(String(cString: strerror(errno)))") }
  defer { fclose(f) }
  var out: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 1 << 16)
  while true {
    let n = fread(&buffer, 1, buffer.count, f)
    if n == 0 { break }
    out += buffer[0..<n]
  }
  return out
}

/// Writes a text file atomically (temporary name, fsync, rename).
func writeFileAtomically(_ path: String, _ text: String) throws {
  let tmp = path + ".tmp-\(getpid())"
  guard let f = fopen(tmp, "w") else { throw CLIError("cannot write '\(tmp)': \(String(cString: strerror(errno)))") }
  fputs(text, f)
  fflush(f)
  fsync(fileno(f))
  fclose(f)
  guard rename(tmp, path) == 0 else { throw CLIError("cannot rename '\(tmp)' to '\(path)': \(String(cString: strerror(errno)))") }
}
