import CHDF5
import CLiftABI
import Glibc

/// Builds an embedding store file by appending float32 rows, stored as float32 or float16, with
/// optional "keys" / "captions" string datasets (variable-length UTF-8, one per row). With keys,
/// `finish` also writes the key index (`KeyIndex`) that finds rows by key in bounded memory.
///
/// The file is written under a temporary name next to `path` and moved into place by `finish()`
/// (flush, fsync, rename, fsync of the directory): readers never see a partial file, and a
/// writer that is dropped or crashes leaves whatever was at `path` untouched.
///
/// Thread safety: methods take the writer's lock.
public final class EmbeddingStoreWriter: @unchecked Sendable {  // every method takes `lock`
  public let path: String
  public let dataset: String
  public let dim: Int64
  public let dtype: lift_dtype
  public let writesKeys: Bool
  public let writesCaptions: Bool
  /// Where rows go until `finish()` renames the file to `path`.
  public var temporaryPath: String { writer.temporaryPath }
  public var rows: Int64 { embeddings.rows }
  public var finished: Bool { writer.finished }

  private let writer: H5FileWriter
  private let embeddings: ExtensibleDataset
  private let keys: ExtensibleDataset?
  private let captions: ExtensibleDataset?
  /// The `key_index` of the keys (written by `finish`).
  private let keyIndex: KeyIndexBuilder?
  private let lock = Lock()
  private var staging = StagingBuffer()

  /// `keyRunLimit`: key-index entries held in memory before a sorted run is spilled (tests
  /// lower it to exercise the merge).
  public init(path: String, dataset: String = "embeddings", dim: Int64, dtype: lift_dtype,
              keys: Bool = false, captions: Bool = false, overwrite: Bool = false,
              keyRunLimit: Int = 1 << 20) throws(LiftError) {
    guard !path.isEmpty else { throw .argument("store path is empty") }
    guard !dataset.isEmpty else { throw .argument("dataset name is empty") }
    guard dim >= 1, dim <= 1 << 24 else { throw .argument("dim must be in [1, 16777216] (got \(dim))") }
    guard dtype == LIFT_DTYPE_FLOAT32 || dtype == LIFT_DTYPE_FLOAT16 else {
      throw .argument("the writer stores float32 or float16 (got dtype \(dtype.rawValue))")
    }
    if (keys && dataset == "keys") || (captions && dataset == "captions") {
      throw .argument("dataset name '\(dataset)' clashes with the \(dataset) string dataset")
    }
    self.path = path
    self.dataset = dataset
    self.dim = dim
    self.dtype = dtype
    self.writesKeys = keys
    self.writesCaptions = captions
    writer = try H5FileWriter(path: path, overwrite: overwrite)
    embeddings = try writer.createDataset(dataset, rowShape: [Int(dim)],
                                          type: dtype == LIFT_DTYPE_FLOAT16 ? HDF5.halfLE : lift_h5t_ieee_f32le())
    self.keys = keys ? try writer.createDataset("keys", rowShape: [], type: HDF5.variableUTF8) : nil
    self.captions = captions ? try writer.createDataset("captions", rowShape: [], type: HDF5.variableUTF8) : nil
    keyIndex = keys ? KeyIndexBuilder(temporaryBase: writer.temporaryPath, runLimit: keyRunLimit) : nil
  }

  deinit { staging.release() }

  /// Appends `n` rows (n x dim float32). `keys` / `captions` must hold n strings exactly when the
  /// writer was created to write them. Validates everything before writing anything.
  public func append(_ data: UnsafePointer<Float>, rows n: Int64, keys newKeys: [[UInt8]]? = nil,
                     captions newCaptions: [[UInt8]]? = nil) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard !finished else { throw .state("the writer for '\(path)' is already finished") }
      try requireNonNegative(n, "row count")
      let total = try checkedCount(n, dim, "rows")
      try checkStrings(newKeys, wanted: writesKeys, name: "keys", count: n)
      try checkStrings(newCaptions, wanted: writesCaptions, name: "captions", count: n)
      try Self.checkRows(data, rows: Int(n), dim: Int(dim), dtype: dtype, firstRow: rows)
      guard n > 0 else { return }
      HDF5.prepareThread()
      let old = rows
      do throws(LiftError) {
        try Self.appendRows(data, rows: n, total: total, dtype: dtype, to: embeddings, staging: &staging)
        if let newKeys { try keys!.append(strings: newKeys) }
        if let newCaptions { try captions!.append(strings: newCaptions) }
        if let newKeys { try keyIndex!.add(newKeys, firstRow: old) }
      } catch {
        // Leave every dataset as it was before this call.
        for ds in [embeddings, keys, captions].compactMap({ $0 }) { ds.truncate(to: old) }
        throw error
      }
    }
  }

  /// Rows about to be stored must be finite and, for float16, within +-65504.
  static func checkRows(_ data: UnsafePointer<Float>, rows n: Int, dim d: Int, dtype: lift_dtype,
                        firstRow: Int64) throws(LiftError) {
    for i in 0..<n {
      let row = data + i * d
      if let c = VectorOps.firstNonFinite(row, d) {
        throw .value("append row \(i) (store row \(firstRow + Int64(i))) has a non-finite value \(row[c]) at column \(c)")
      }
      if dtype == LIFT_DTYPE_FLOAT16, let c = VectorOps.firstBeyond(row, d, limit: 65504) {
        throw .value("append row \(i) (store row \(firstRow + Int64(i))) value \(row[c]) at column \(c) overflows float16 (max 65504)")
      }
    }
  }

  /// Appends checked float32 rows to a dataset stored as `dtype` (float16 rounded to nearest even).
  static func appendRows(_ data: UnsafePointer<Float>, rows n: Int64, total: Int, dtype: lift_dtype,
                         to dataset: ExtensibleDataset, staging: inout StagingBuffer) throws(LiftError) {
    if dtype == LIFT_DTYPE_FLOAT16 {
      let stage = staging.reserve(bytes: total * 2)
      VectorOps.floatToHalf(data, stage, total)
      try dataset.append(UnsafeRawPointer(stage), count: n, memType: HDF5.halfLE)
    } else {
      try dataset.append(UnsafeRawPointer(data), count: n, memType: lift_h5t_native_float())
    }
  }

  private func checkStrings(_ strings: [[UInt8]]?, wanted: Bool, name: String, count: Int64) throws(LiftError) {
    if wanted {
      guard let strings else { throw .argument("the writer was created with \(name): pass \(count) \(name)") }
      guard strings.count == count else {
        throw .argument("\(strings.count) \(name) given for \(count) rows")
      }
      for (i, s) in strings.enumerated() where s.contains(0) {
        throw .argument("\(name)[\(i)] contains a NUL byte")
      }
    } else if strings != nil {
      throw .argument("\(name) given, but the writer was created without \(name)")
    }
  }

  /// Writes the key index (if keys were written), flushes, fsyncs and renames the file into
  /// place; the writer then refuses appends.
  /// Sets a string attribute on the file's root group (before `finish`).
  func setAttribute(_ name: String, _ value: String) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard !finished else { throw .state("the writer for '\(path)' is already finished") }
      HDF5.prepareThread()
      try writer.setAttribute(name, value)
    }
  }

  public func finish() throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard !finished else { throw .state("the writer for '\(path)' is already finished") }
      HDF5.prepareThread()
      try keyIndex?.write(into: writer)
      try writer.finish()
    }
  }
}

/// Durable file-system operations.
public enum FileSystem {
  /// Throws unless `path` is absent or a regular file: liblift's writers replace regular files
  /// only (by renaming a finished temporary file over them), never a device, FIFO, socket,
  /// symbolic link or folder, whatever the overwrite option says.
  public static func requireReplaceable(_ path: String) throws(LiftError) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    let kinds: [(mode_t, String)] = [(S_IFREG, ""), (S_IFDIR, "a folder"), (S_IFLNK, "a symbolic link"),
                                     (S_IFCHR, "a character device"), (S_IFBLK, "a block device"), (S_IFIFO, "a FIFO"),
                                     (S_IFSOCK, "a socket")]
    let kind = kinds.first { $0.0 == st.st_mode & S_IFMT }?.1 ?? "not a regular file"
    guard !kind.isEmpty else { return }
    throw .io("'\(path)' is \(kind): liblift replaces only regular files")
  }

  public static func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
  }

  /// The bytes of the regular files under `folder` (symbolic links to files followed, to
  /// folders not), counting at most 2^24 entries.
  static func treeBytes(_ folder: String) -> Int64 {
    var total: Int64 = 0, entries = 0
    var pending = [folder]
    while let dir = pending.popLast(), entries < 1 << 24 {
      guard let handle = opendir(dir) else { continue }
      defer { closedir(handle) }
      while let entry = readdir(handle), entries < 1 << 24 {
        entries += 1
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard name != ".", name != ".." else { continue }
        let path = dir + "/" + name
        var st = stat()
        guard lstat(path, &st) == 0 else { continue }
        if (st.st_mode & S_IFMT) == S_IFDIR {
          pending.append(path)
        } else if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
          total = total.addingReportingOverflow(Int64(st.st_size)).overflow ? Int64.max : total + Int64(st.st_size)
        }
      }
    }
    return total
  }

  static func fsyncFile(_ path: String) throws(LiftError) {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw .io("cannot open '\(path)' to sync: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw .io("cannot fsync '\(path)': \(String(cString: strerror(errno)))") }
  }

  static func fsyncDirectory(of path: String) throws(LiftError) {
    var dir = path
    if let slash = dir.lastIndex(of: "/") {
      dir = slash == dir.startIndex ? "/" : String(dir[..<slash])
    } else {
      dir = "."
    }
    let fd = open(dir, O_RDONLY | O_DIRECTORY)
    guard fd >= 0 else { throw .io("cannot open directory '\(dir)' to sync: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    _ = fsync(fd)
  }
}
