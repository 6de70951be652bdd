import Glibc
import LiftSystemC

/// The two sides of `FileCheck`'s child process: the child reads and prints its verdict line,
/// the parent starts it, bounds its time and output, and reads how it ended.
extension FileCheck {
  /// How a check in a child process ended.
  public enum Verdict: Equatable, Sendable {
    /// Read in full; what the file holds.
    case passed(String)
    /// liblift refused the file (a clear error, as an in-process open would give).
    case invalid(LiftError)
    /// The child died of `signal`: a fault below liblift (in libhdf5); `detail` is the end of
    /// what it printed.
    case crashed(signal: Int32, detail: String)
    /// The child did not finish within `seconds` and was killed.
    case timedOut(seconds: Double)
    /// The child ended without a verdict line (it could not load liblift, say).
    case failedToRun(String)
  }

  /// The verdict as the error an untrusted open reports (nil when the file passed): the
  /// reader's own status for an invalid file, LIFT_ERR_UNSAFE for a crash or a hang,
  /// LIFT_ERR_IO when the check could not run.
  public static func error(of verdict: Verdict, path: String) -> LiftError? {
    let unsafe = "do not open it in-process"
    switch verdict {
    case .passed: return nil
    case .invalid(let e): return e.message.contains(path) ? e : LiftError(e.status, "'\(path)' is unusable: \(e.message)")
    case .crashed(let signal, let detail):
      return LiftError(LIFT_ERR_UNSAFE, "reading '\(path)' crashed the checking process (signal \(signal)"
        + "\(detail.isEmpty ? "" : ": \(detail)")), a fault below liblift (in libhdf5) or an allocation beyond "
        + "the memory budget (\(MemoryBudget.bytes) bytes, LIFT_MEMORY_LIMIT): \(unsafe)")
    case .timedOut(let seconds):
      return LiftError(LIFT_ERR_UNSAFE, "reading '\(path)' did not finish within \(formatSeconds(seconds)) s "
        + "(a hang below liblift, in libhdf5, or a file too large for the time limit): \(unsafe)")
    case .failedToRun(let why): return .io("cannot check '\(path)' in a separate process: \(why)")
    }
  }

  private static func formatSeconds(_ s: Double) -> String {
    s == s.rounded() && s < 1e9 ? String(Int(s)) : String(s)
  }

  // MARK: Child side

  /// The child's verdict line for the outcome of `readAll` (no newline inside).
  public static func verdictLine(_ outcome: Result<String, LiftError>) -> String {
    switch outcome {
    case .success(let summary): return "ok\t" + oneLine(summary)
    case .failure(let e): return "error\t\(e.status.rawValue)\t" + oneLine(e.message)
    }
  }

  private static func oneLine(_ s: String) -> String {
    String(s.map { $0 == "\n" || $0 == "\r" || $0 == "\t" ? " " : $0 })
  }

  /// Makes this (checking) process end with the process waiting for it, so a check whose
  /// caller was killed does not hang on, holding a core.
  public static func endWithParent() { _ = ls_die_with_parent() }

  /// Caps this process's data segment (heap and private mappings: RLIMIT_DATA) at `bytes`, so a
  /// file whose declared sizes would exhaust the machine fails an allocation instead. 0 = no cap.
  public static func limitMemory(_ bytes: UInt64) {
    guard bytes > 0 else { return }
    var limit = rlimit(rlim_cur: rlim_t(bytes), rlim_max: rlim_t(bytes))
    _ = setrlimit(__rlimit_resource_t(RLIMIT_DATA.rawValue), &limit)
  }

  // MARK: Parent side

  /// How a child process ended: its output (the last 64 KiB of standard output and error),
  /// its wait status (nil when the host reaps children itself), whether it ended before the
  /// time limit, or why it could not start.
  public struct ChildRun {
    public var output: [UInt8] = []
    public var waitStatus: Int32?
    public var finished = false
    public var startFailure: String?

    /// The signal that ended the child, if one did.
    public var signal: Int32? { waitStatus.flatMap { $0 & 0x7f != 0 ? $0 & 0x7f : nil } }
    /// The child's exit status, if it exited.
    public var exitStatus: Int32? { waitStatus.flatMap { $0 & 0x7f == 0 ? ($0 >> 8) & 0xff : nil } }
    public var text: String { String(decoding: output, as: UTF8.self) }
  }

  /// `runChild(command, timeout)`'s verdict: the file check's child protocol.
  public static func isolated(command: [String], timeout: Double) -> Verdict {
    let run = runChild(command: command, timeout: timeout)
    if let why = run.startFailure { return .failedToRun(why) }
    guard run.finished else { return .timedOut(seconds: timeout) }
    return verdict(output: run.output, waitStatus: run.waitStatus)
  }

  /// Runs `command` (argv; command[0] an absolute path) with standard output and error on a
  /// pipe, for at most `timeout` seconds (then SIGKILL). At most 64 KiB of output is kept. The
  /// pipe is close-on-exec, so processes the host starts meanwhile do not inherit it.
  public static func runChild(command: [String], timeout: Double) -> ChildRun {
    var fds: [Int32] = [-1, -1]
    guard ls_pipe_cloexec(&fds) == 0 else { return ChildRun(startFailure: "cannot create a pipe: \(errnoText())") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    var argv = command.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var envp = childEnvironment().map { strdup($0) } + [nil]
    defer { envp.forEach { free($0) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, command[0], &actions, nil, &argv, &envp)
    close(fds[1])
    guard rc == 0 else {
      close(fds[0])
      return ChildRun(startFailure: "cannot start '\(command[0])': \(String(cString: strerror(rc)))")
    }
    let (output, status, finished) = collect(pid: pid, fd: fds[0], timeout: timeout)
    close(fds[0])
    return ChildRun(output: output, waitStatus: status, finished: finished)
  }

  /// The host's environment, with the Swift runtime's crash backtraces off: a crash is a verdict
  /// here, and symbolicating it would only delay it.
  private static func childEnvironment() -> [String] {
    var environment = ["SWIFT_BACKTRACE=enable=no"]
    var entry = environ
    while let p = entry.pointee {
      let variable = String(cString: p)
      if !variable.hasPrefix("SWIFT_BACKTRACE=") { environment.append(variable) }
      entry += 1
    }
    return environment
  }

  /// Reads the child's output until it exits or `timeout` passes (then kills it). Returns the
  /// output, the wait status (nil if the host reaps children itself) and whether it finished.
  private static func collect(pid: pid_t, fd: Int32, timeout: Double) -> ([UInt8], Int32?, Bool) {
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let deadline = monotonicSeconds() + timeout
    var status: Int32 = 0
    while true {
      let waited = waitpid(pid, &status, WNOHANG)
      if waited == pid { break }
      if waited < 0 && errno == ECHILD { return (drain(fd, into: output), nil, true) }
      let left = deadline - monotonicSeconds()
      if left <= 0 {
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (output, nil, false)
      }
      if poller.fd >= 0, poll(&poller, 1, Int32(min(100, max(1, left * 1000)))) > 0 {
        let n = read(fd, &buffer, buffer.count)
        if n > 0 { append(&output, buffer[0..<n]) } else if n == 0 { poller.fd = -1 }
      } else if poller.fd < 0 {
        usleep(10_000)
      }
    }
    return (drain(fd, into: output), status, true)
  }

  private static func drain(_ fd: Int32, into output: [UInt8]) -> [UInt8] {
    var output = output
    var buffer = [UInt8](repeating: 0, count: 4096)
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    while true {
      let n = read(fd, &buffer, buffer.count)
      guard n > 0 else { break }
      append(&output, buffer[0..<n])
    }
    return output
  }

  private static func append(_ output: inout [UInt8], _ bytes: ArraySlice<UInt8>) {
    let limit = 1 << 16
    output += bytes
    if output.count > limit { output.removeFirst(output.count - limit) }
  }

  /// The verdict from the child's output and wait status.
  static func verdict(output: [UInt8], waitStatus: Int32?) -> Verdict {
    let lines = String(decoding: output, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
    if let status = waitStatus, status & 0x7f != 0 {
      let message = lines.first(where: { $0.contains("rror") }).map { String($0.prefix(300)) } ?? ""
      return .crashed(signal: status & 0x7f, detail: message)
    }
    guard let line = lines.last(where: { $0.hasPrefix("ok\t") || $0.hasPrefix("error\t") }) else {
      let tail = lines.last.map { String($0.suffix(300)) } ?? "no output"
      return .failedToRun("the checking process gave no verdict (\(tail))")
    }
    let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
    if fields[0] == "ok" { return .passed(fields.count > 1 ? String(fields[1]) : "") }
    guard fields.count == 3, let raw = UInt32(fields[1]) else {
      return .failedToRun("the checking process printed a malformed verdict: \(line.prefix(300))")
    }
    return .invalid(LiftError(lift_status(rawValue: raw), String(fields[2])))
  }

  private static func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
  }

  private static func errnoText() -> String { String(cString: strerror(errno)) }
}
