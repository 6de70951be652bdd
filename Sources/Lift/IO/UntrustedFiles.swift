import Glibc

/// One version of a file: its (device, inode, size, modification time, status-change time, both
/// in nanoseconds) at one moment. A file replaced, renamed into place, rewritten or touched since
/// is another version: the status-change time (ctime) moves with any of those and, unlike the
/// modification time, cannot be set by a user (tar, rsync or touch restore mtime, not ctime).
public struct FileVersion: Hashable, Sendable {
  public let device: UInt64, inode: UInt64, size: Int64
  public let seconds: Int, nanoseconds: Int, changeSeconds: Int, changeNanoseconds: Int

  /// The version of the file at `path` now (symbolic links followed).
  public init(path: String) throws(LiftError) {
    var st = stat()
    guard stat(path, &st) == 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    self.init(st)
  }

  init(_ st: stat) {
    device = UInt64(st.st_dev)
    inode = UInt64(st.st_ino)
    size = Int64(st.st_size)
    seconds = st.st_mtim.tv_sec
    nanoseconds = st.st_mtim.tv_nsec
    changeSeconds = st.st_ctim.tv_sec
    changeNanoseconds = st.st_ctim.tv_nsec
  }

  /// The seven numbers separated by spaces (the form `init?(text:)` reads).
  public var text: String { "\(device) \(inode) \(size) \(seconds) \(nanoseconds) \(changeSeconds) \(changeNanoseconds)" }

  public init?(text: Substring) {
    let parts = text.split(separator: " ")
    guard parts.count == 7, let d = UInt64(parts[0]), let i = UInt64(parts[1]), let s = Int64(parts[2]),
          let sec = Int(parts[3]), let ns = Int(parts[4]), let csec = Int(parts[5]), let cns = Int(parts[6]) else { return nil }
    (device, inode, size, seconds, nanoseconds, changeSeconds, changeNanoseconds) = (d, i, s, sec, ns, csec, cns)
  }
}

/// Opening files from untrusted sources: each file is read in full in a separate process first
/// (`FileCheck`), once per process for each version of the file (`FileVersion`).
public enum UntrustedFiles {
  /// The seconds a check of a file of `bytes` may take before the file counts as hanging
  /// libhdf5: LIFT_CHECK_TIMEOUT if set, else 600, or 120 per GiB for larger files (a full
  /// read, images decoded, at 8.5 MiB/s).
  public static func timeout(forBytes bytes: Int64) throws(LiftError) -> Double {
    if let env = getenv("LIFT_CHECK_TIMEOUT") {
      let text = String(cString: env)
      guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= 86_400 else {
        throw .argument("LIFT_CHECK_TIMEOUT must be seconds in (0, 86400], got '\(text)'")
      }
      return seconds
    }
    return max(600, Double(max(bytes, 0)) / Double(1 << 30) * 120)
  }

  private struct Passed: Hashable {
    let version: FileVersion
    let kind: Int32
  }

  private static let lock = Lock()
  nonisolated(unsafe) private static var passed: Set<Passed> = []

  /// Throws unless the file at `path` reads in full as `kind` in a separate process: the
  /// reader's own error for a file liblift refuses, LIFT_ERR_UNSAFE for one that crashes or
  /// hangs the checking process. `command(path, kind)` is the checking process's argv (the C
  /// API's helper program, or the `lift` command itself). A file that passed before, unchanged,
  /// is not checked again. Returns the version that passed: the file's version before the check,
  /// which must still be its version after it (a file replaced or changed meanwhile is an error).
  /// Not covered: a change between this return and the caller's open.
  @discardableResult
  public static func require(_ path: String, kind: FileCheck.Expected,
                             command: (String, FileCheck.Expected) throws(LiftError) -> [String]) throws(LiftError) -> FileVersion {
    let entry = Passed(version: try FileVersion(path: path), kind: kind.rawValue)
    if lock.withLock({ passed.contains(entry) }) { return entry.version }
    let bytes = FileSystem.isDirectory(path) ? FileSystem.treeBytes(path) : entry.version.size
    let verdict = FileCheck.isolated(command: try command(path, kind), timeout: try timeout(forBytes: bytes))
    if let error = FileCheck.error(of: verdict, path: path) { throw error }
    guard try FileVersion(path: path) == entry.version else {
      throw .io("'\(path)' changed while it was checked; check it again once it is complete")
    }
    lock.withLock { _ = passed.insert(entry) }
    return entry.version
  }

  /// Forgets every check (for the fuzzer, whose inputs reuse one path).
  static func forgetAll() { lock.withLock { passed = [] } }
}

/// The HDF5 files liblift finishes writing, reported to an observer the program sets: the
/// `lift` command keeps a list of them, so that it opens what it wrote without checking it
/// again.
public enum WrittenFiles {
  nonisolated(unsafe) private static var observer: (@Sendable (String, FileVersion) -> Void)?
  private static let lock = Lock()

  /// Calls `observer(path, version)` on the writing thread after each file is in place.
  public static func observe(_ observer: @escaping @Sendable (String, FileVersion) -> Void) {
    lock.withLock { self.observer = observer }
  }

  /// The inode of a finished temporary file about to be moved into place (nil if nobody
  /// observes, or it cannot be read).
  static func inode(ofTemporary temporary: String) -> UInt64? {
    guard lock.withLock({ observer }) != nil else { return nil }
    return try? FileVersion(path: temporary).inode
  }

  /// Reports `path`, now in place, if it is still the temporary file's inode (a file swapped in
  /// at `path` since is not taken for liblift's). Its version is taken now: the rename into
  /// place changed its status-change time.
  static func finished(_ path: String, inode: UInt64?) {
    guard let inode, let observer = lock.withLock({ observer }),
          let version = try? FileVersion(path: path), version.inode == inode else { return }
    observer(path, version)
  }
}
