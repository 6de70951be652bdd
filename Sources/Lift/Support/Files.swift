import Glibc

/// Reads a whole file of at most `limit` bytes (an index or list file), or throws naming it.
func readWholeFile(_ path: String, limit: Int = 1 << 30) throws(LiftError) -> [UInt8] {
  let fd = open(path, O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
  defer { close(fd) }
  var st = stat()
  guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw .io("'\(path)' is not a regular file") }
  guard Int64(st.st_size) <= Int64(limit) else { throw .value("'\(path)' is \(st.st_size) bytes; at most \(limit) are read") }
  var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
  let short = try bytes.withUnsafeMutableBufferPointer { (b) throws(LiftError) -> Int? in
    guard let base = b.baseAddress else { return nil }
    return try preadAll(fd, base, count: b.count, at: 0)
  }
  if let short { bytes.removeLast(short) }
  return bytes
}
