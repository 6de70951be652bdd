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

/// Decides when a progress line is due: at most every 0.25 s on a terminal (one live line) and
/// every 15 s otherwise (each update is a line of a log file), so a long loop does not flood a
/// log; the first update and the last always show.
struct ProgressPacer {
  private var lastShown = -Double.infinity

  mutating func due(last: Bool = false) -> Bool {
    let t = now()
    guard last || t - lastShown > (Console.isTerminal ? 0.25 : 15) else { return false }
    lastShown = t
    return true
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

/// Creates a folder and its parents (new ones with `mode`).
func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
  var prefix = path.hasPrefix("/") ? "/" : ""
  for part in path.split(separator: "/") {
    prefix += part + "/"
    if mkdir(prefix, mode) != 0 && errno != EEXIST {
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
  try cli { () throws(LiftError) in try FileSystem.requireReplaceable(path) }
  let tmp = path + ".tmp-\(getpid())"
  guard let f = fopen(tmp, "w") else { throw CLIError("cannot write '\(tmp)': \(String(cString: strerror(errno)))") }
  fputs(text, f)
  fflush(f)
  fsync(fileno(f))
  fclose(f)
  guard rename(tmp, path) == 0 else { throw CLIError("cannot rename '\(tmp)' to '\(path)': \(String(cString: strerror(errno)))") }
}
