import Glibc
import Lift
import Synchronization

/// The files this user's `lift` wrote, or read in full in a check that passed, each as the
/// version (device, inode, size, mtime) it wrote or checked. `InputChecks` opens a listed
/// version without checking it again; any other version of the same path (replaced, rewritten,
/// touched) is checked.
///
/// The list is `$XDG_STATE_HOME/liblift/known-files` (default `~/.local/state/liblift/`), one
/// line per file: `<device> <inode> <size> <seconds> <nanoseconds><TAB><kind><TAB><path>`, where
/// kind is `written` or what a check read the file as. Lines are appended with one write(2)
/// each (O_APPEND), so concurrent lift processes do not interleave them; past 1 MiB the list
/// is rewritten with the newest entries whose file is still that version, at most 512 KiB of
/// them. It is used only as a regular file owned by this user that nobody else can write;
/// otherwise nothing counts as known and every input is checked.
enum KnownFiles {
  static let written = "written"
  static let maxBytes = 1 << 20

  private struct Entry: Hashable {
    let version: FileVersion
    let kind: String
  }

  /// The entries read from the list on first use, plus those added since.
  private static let loaded = Mutex<Set<Entry>?>(nil)

  /// The list's path, or nil when neither XDG_STATE_HOME nor HOME is set.
  static var location: String? {
    // XDG: a relative XDG_STATE_HOME is ignored.
    if let state = getenv("XDG_STATE_HOME"), state.pointee == UInt8(ascii: "/") {
      return String(cString: state) + "/liblift/known-files"
    }
    guard let home = getenv("HOME"), home.pointee != 0 else { return nil }
    return String(cString: home) + "/.local/state/liblift/known-files"
  }

  /// Whether `version` was written by lift, or passed a check as `kind`.
  static func contains(_ version: FileVersion, kind: String) -> Bool {
    loaded.withLock { (entries) -> Bool in
      if entries == nil { entries = readList() }
      return entries!.contains(Entry(version: version, kind: written)) || entries!.contains(Entry(version: version, kind: kind))
    }
  }

  /// Adds `path` as `version` (written by lift, or checked as `kind`). Best effort: a list that
  /// cannot be written leaves the file to be checked next time.
  static func remember(_ path: String, _ version: FileVersion, kind: String) {
    guard let location, let full = realpath(path, nil) else { return }
    let absolute = String(cString: full)
    free(full)
    guard !absolute.contains(where: { $0 == "\n" || $0 == "\t" }) else { return }
    loaded.withLock { (entries) in
      if entries == nil { entries = readList() }
      guard entries!.insert(Entry(version: version, kind: kind)).inserted else { return }
      if let size = listSize(location), size > maxBytes { prune(location) }
      append("\(version.text)\t\(kind)\t\(absolute)\n", to: location)
    }
  }

  // MARK: The list file

  /// The list's text (its last 4 MiB: the newest entries), if it is a regular file owned by
  /// this user and writable by no one else.
  private static func readTrusted(_ location: String) -> String? {
    let fd = open(location, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else {
      return nil
    }
    let start = max(0, Int(st.st_size) - 4 * maxBytes)
    var bytes = [UInt8](repeating: 0, count: Int(st.st_size) - start)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
    guard n >= 0 else { return nil }
    var text = bytes[0..<n]
    if start > 0, let newline = text.firstIndex(of: UInt8(ascii: "\n")) { text = text[(newline + 1)...] }  // a cut line
    return String(decoding: text, as: UTF8.self)
  }

  private static func parse(_ text: String) -> [(Entry, String)] {
    text.split(separator: "\n").compactMap { line in
      let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
      guard fields.count == 3, let version = FileVersion(text: fields[0]), !fields[1].isEmpty else { return nil }
      return (Entry(version: version, kind: String(fields[1])), String(fields[2]))
    }
  }

  private static func readList() -> Set<Entry> {
    guard let location, let text = readTrusted(location) else { return [] }
    return Set(parse(text).map(\.0))
  }

  private static func listSize(_ location: String) -> Int? {
    var st = stat()
    return lstat(location, &st) == 0 ? Int(st.st_size) : nil
  }

  /// Rewrites the list (atomically) with the newest entries whose file is still that version,
  /// each once, at most maxBytes / 2 of them.
  private static func prune(_ location: String) {
    guard let text = readTrusted(location) else { return }
    var seen = Set<Entry>(), lines: [String] = [], bytes = 0
    for (entry, path) in parse(text).reversed() where seen.insert(entry).inserted {
      guard (try? FileVersion(path: path)) == entry.version else { continue }
      let line = "\(entry.version.text)\t\(entry.kind)\t\(path)\n"
      bytes += line.utf8.count
      if bytes > maxBytes / 2 { break }
      lines.append(line)
    }
    let body = lines.reversed().joined()
    let temporary = location + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
    guard fd >= 0 else { return }
    let complete = Array(body.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count }
    close(fd)
    if !complete || rename(temporary, location) != 0 { unlink(temporary) }
  }

  private static func append(_ line: String, to location: String) {
    // Errors are left to the open below.
    if let slash = location.lastIndex(of: "/") { try? makeDirectories(String(location[..<slash]), mode: 0o700) }
    let fd = open(location, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
    guard fd >= 0 else { return }
    defer { close(fd) }
    _ = Array(line.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
  }
}
