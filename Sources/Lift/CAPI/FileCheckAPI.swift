import CLiftABI
import Glibc
import LiftSystemC

// Files from untrusted sources: the memory budget, the full read in this process (what the
// checking process runs) and the isolated check that runs it in a child process.

@_cdecl("lift_set_memory_limit")
public func cLiftSetMemoryLimit(_ bytes: UInt64) -> lift_status {
  MemoryBudget.set(bytes)
  return LIFT_OK
}

@_cdecl("lift_memory_limit")
public func cLiftMemoryLimit() -> UInt64 { MemoryBudget.bytes }

@_cdecl("lift_file_read_all")
public func cLiftFileReadAll(_ path: UnsafePointer<CChar>?, _ kind: lift_file_kind, _ summary: UnsafeMutablePointer<CChar>?,
                             _ cap: Int, _ len: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let path = try requiredString(path, "path")
    let expected = try fileKind(kind)
    copyTruncated(try FileCheck.readAll(path, expecting: expected), into: summary, capacity: cap, length: len)
  }
}

@_cdecl("lift_file_check")
public func cLiftFileCheck(_ path: UnsafePointer<CChar>?, _ kind: lift_file_kind, _ timeoutSeconds: Double,
                           _ summary: UnsafeMutablePointer<CChar>?, _ cap: Int,
                           _ len: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let path = try requiredString(path, "path")
    let expected = try fileKind(kind)
    guard timeoutSeconds.isFinite, timeoutSeconds > 0, timeoutSeconds <= 86_400 else {
      throw .argument("timeout must be in (0, 86400] seconds, got \(timeoutSeconds)")
    }
    _ = try requiredSize(cap, "cap")
    let verdict = FileCheck.isolated(command: try checkCommand(path, expected), timeout: timeoutSeconds)
    if let error = FileCheck.error(of: verdict, path: path) { throw error }
    if case .passed(let text) = verdict { copyTruncated(text, into: summary, capacity: cap, length: len) }
  }
}

/// Checks `path` in a separate process first when `flags` has LIFT_OPEN_UNTRUSTED (once per
/// process per version of the file); refuses other flags than `allowed`.
func checkUntrusted(_ path: String, kind: FileCheck.Expected, flags: UInt32, allowed: UInt32 = 0) throws(LiftError) {
  let known = allowed | LIFT_OPEN_UNTRUSTED
  guard flags & ~known == 0 else { throw .argument("unknown flags 0x\(String(flags & ~known, radix: 16))") }
  guard flags & LIFT_OPEN_UNTRUSTED != 0 else { return }
  try UntrustedFiles.require(path, kind: kind, command: checkCommand)
}

private func fileKind(_ kind: lift_file_kind) throws(LiftError) -> FileCheck.Expected {
  guard let expected = FileCheck.Expected(rawValue: Int32(bitPattern: kind.rawValue)) else {
    throw .argument("kind must be a lift_file_kind (0...\(FileCheck.Expected.allCases.count - 1)), got \(kind.rawValue)")
  }
  return expected
}

/// Copies `text` into the caller's buffer, cut to fit and NUL-terminated (when cap > 0); *len
/// receives the full length.
private func copyTruncated(_ text: String, into buffer: UnsafeMutablePointer<CChar>?, capacity: Int,
                           length: UnsafeMutablePointer<Int>?) {
  let bytes = Array(text.utf8)
  length?.pointee = bytes.count
  guard let buffer, capacity > 0 else { return }
  let n = min(bytes.count, capacity - 1)
  for i in 0..<n { buffer[i] = CChar(bitPattern: bytes[i]) }
  buffer[n] = 0
}

/// argv of the process that checks `path` as `kind`: `lift-file-check LIBRARY FILE KIND LIMIT`,
/// with this library's path (which the helper loads) and the memory budget.
private func checkCommand(_ path: String, _ kind: FileCheck.Expected) throws(LiftError) -> [String] {
  try checkHelper() + [path, String(kind.rawValue), String(MemoryBudget.bytes)]
}

/// The helper program and this library's path. The helper is $LIFT_FILE_CHECK_HELPER if set,
/// else lift-file-check next to this library (the build tree, the Python wheel) or in its
/// liblift/ folder (an installed library).
private func checkHelper() throws(LiftError) -> [String] {
  let anchor: @convention(c) (UnsafePointer<CChar>?, lift_file_kind, Double, UnsafeMutablePointer<CChar>?, Int,
                              UnsafeMutablePointer<Int>?) -> lift_status = cLiftFileCheck
  var name = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  guard ls_object_path(unsafeBitCast(anchor, to: UnsafeRawPointer.self), &name, name.count) == 0,
        let resolved = realpath(name, nil) else {
    throw .io("cannot find the path of the loaded liblift (dladdr), which the checking process must load")
  }
  let library = String(cString: resolved)
  free(resolved)
  let folder = library.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
  var candidates = [folder + "/lift-file-check", folder + "/liblift/lift-file-check"]
  if let env = getenv("LIFT_FILE_CHECK_HELPER"), env.pointee != 0 { candidates = [String(cString: env)] }
  guard let helper = candidates.first(where: { access($0, X_OK) == 0 }) else {
    throw .io("the checking program is missing: none of \(candidates.joined(separator: ", ")) is an executable "
              + "(it is built and installed with liblift; LIFT_FILE_CHECK_HELPER names another)")
  }
  return [helper, library]
}
