import Glibc

/// Opening files from untrusted sources: each file is read in full in a separate process first
/// (`FileCheck`), once per process for each version of the file.
///
/// A version is the file's (device, inode, size, modification time in nanoseconds) when it was
/// checked: a file replaced or rewritten since then (new inode, size or mtime) is checked again.
/// Not covered: a file rewritten in place between the check and the open with its size and mtime
/// kept (which needs write access to the file and a forged timestamp).
public enum UntrustedFiles {
  /// The seconds a check may take before the file counts as hanging libhdf5.
  public static let timeout: Double = 600

  private struct Version: Hashable {
    let device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    let kind: Int32
  }

  private static let lock = Lock()
  nonisolated(unsafe) private static var passed: Set<Version> = []

  /// Throws unless the file at `path` reads in full as `kind` in a separate process: the
  /// reader's own error for a file liblift refuses, LIFT_ERR_UNSAFE for one that crashes or
  /// hangs the checking process. `command(path, kind)` is the checking process's argv (the C
  /// API's helper program, or the `lift` command itself). A file that passed before, unchanged,
  /// is not checked again.
  public static func require(_ path: String, kind: FileCheck.Expected,
                             command: (String, FileCheck.Expected) throws(LiftError) -> [String]) throws(LiftError) {
    let version = try self.version(of: path, kind: kind)
    if lock.withLock({ passed.contains(version) }) { return }
    let verdict = FileCheck.isolated(command: try command(path, kind), timeout: timeout)
    if let error = FileCheck.error(of: verdict, path: path) { throw error }
    // Remember the version seen before the check: if the file changed meanwhile, the next
    // open sees a different version and checks again.
    lock.withLock { _ = passed.insert(version) }
  }

  private static func version(of path: String, kind: FileCheck.Expected) throws(LiftError) -> Version {
    var st = stat()
    guard stat(path, &st) == 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    return Version(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                   seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec, kind: kind.rawValue)
  }
}
