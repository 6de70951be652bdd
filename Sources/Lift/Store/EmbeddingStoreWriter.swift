import CHDF5
import CLiftABI
import Glibc

/// Builds an embedding store file by appending float32 rows, stored as float32 or float16, with
/// optional "keys" / "captions" string datasets (variable-length UTF-8, one per row).
///
/// The file is written under a temporary name next to `path` and moved into place by `finish()`
/// (flush, fsync, rename, fsync of the directory): readers never see a partial file, and a
/// writer that is dropped or crashes leaves whatever was at `path` untouched.
///
/// Thread safety: methods take the writer's lock.
public final class EmbeddingStoreWriter {
  public let path: String
  public let dataset: String
  public let dim: Int64
  public let dtype: lift_dtype
  public let writesKeys: Bool
  public let writesCaptions: Bool
  public let overwrite: Bool
  /// Where rows go until `finish()` renames the file to `path`.
  public let temporaryPath: String
  public private(set) var rows: Int64 = 0
  public private(set) var finished = false

  private var file: H5Object?
  private var embeddings: H5Object?
  private var keys: H5Object?
  private var captions: H5Object?
  private let lock = Lock()
  private var staging = StagingBuffer()

  /// Rows per chunk: about 64 KiB per chunk, so random row reads stay cheap.
  static func chunkRows(dim: Int64, elementSize: Int) -> Int64 {
    max(1, min(4096, (64 << 10) / (dim * Int64(elementSize))))
  }

  public init(path: String, dataset: String = "embeddings", dim: Int64, dtype: lift_dtype,
              keys: Bool = false, captions: Bool = false, overwrite: Bool = false) throws(LiftError) {
    guard !path.isEmpty else { throw .argument("store path is empty") }
    guard !dataset.isEmpty else { throw .argument("dataset name is empty") }
    guard dim >= 1, dim <= 1 << 24 else { throw .argument("dim must be in [1, 16777216] (got \(dim))") }
    guard dtype == LIFT_DTYPE_FLOAT32 || dtype == LIFT_DTYPE_FLOAT16 else {
      throw .argument("the writer stores float32 or float16 (got dtype \(dtype.rawValue))")
    }
    if (keys && dataset == "keys") || (captions && dataset == "captions") {
      throw .argument("dataset name '\(dataset)' clashes with the \(dataset) string dataset")
    }
    var st = stat()
    if stat(path, &st) == 0 {
      if (st.st_mode & S_IFMT) == S_IFDIR { throw .io("cannot write '\(path)': is a directory") }
      if !overwrite { throw .io("'\(path)' already exists (pass the overwrite flag to replace it)") }
    }
    self.path = path
    self.dataset = dataset
    self.dim = dim
    self.dtype = dtype
    self.writesKeys = keys
    self.writesCaptions = captions
    self.overwrite = overwrite
    self.temporaryPath = EmbeddingStoreWriter.temporaryName(for: path)
    HDF5.prepareThread()
    let fid = H5Fcreate(temporaryPath, lift_h5f_acc_excl(), lift_h5p_default(), lift_h5p_default())
    guard fid >= 0 else {
      throw .io("cannot create '\(temporaryPath)' (for '\(path)'): \(HDF5.takeErrorDescription())")
    }
    let file = H5Object(fid, .file)
    self.file = file
    do throws(LiftError) {
      let elementSize = dtype == LIFT_DTYPE_FLOAT16 ? 2 : 4
      embeddings = try Self.createExtensible(file.id, dataset, columns: dim,
                                             type: dtype == LIFT_DTYPE_FLOAT16 ? HDF5.halfLE : lift_h5t_ieee_f32le(),
                                             chunkRows: Self.chunkRows(dim: dim, elementSize: elementSize), path: temporaryPath)
      if keys {
        self.keys = try Self.createExtensible(file.id, "keys", columns: nil, type: HDF5.variableUTF8, chunkRows: 1024, path: temporaryPath)
      }
      if captions {
        self.captions = try Self.createExtensible(file.id, "captions", columns: nil, type: HDF5.variableUTF8, chunkRows: 1024, path: temporaryPath)
      }
    } catch {
      closeHandles()
      unlink(temporaryPath)
      throw error
    }
  }

  deinit {
    if !finished {
      closeHandles()
      unlink(temporaryPath)
    }
    staging.release()
  }

  private static func temporaryName(for path: String) -> String {
    let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    return "\(path).tmp-\(getpid())-\(suffix)"
  }

  /// A chunked dataset of shape (0, columns) or (0,) extensible along rows.
  private static func createExtensible(_ file: hid_t, _ name: String, columns: Int64?, type: hid_t,
                                       chunkRows: Int64, path: String) throws(LiftError) -> H5Object {
    let rank: Int32 = columns == nil ? 1 : 2
    var current: [hsize_t] = columns.map { [0, hsize_t($0)] } ?? [0]
    var maximum: [hsize_t] = columns.map { [lift_h5s_unlimited(), hsize_t($0)] } ?? [lift_h5s_unlimited()]
    var chunk: [hsize_t] = columns.map { [hsize_t(chunkRows), hsize_t($0)] } ?? [hsize_t(chunkRows)]
    let space = H5Object(H5Screate_simple(rank, &current, &maximum), .dataspace)
    let dcpl = H5Object(H5Pcreate(lift_h5p_dataset_create()), .propertyList)
    H5Pset_chunk(dcpl.id, rank, &chunk)
    let id = H5Dcreate2(file, name, type, space.id, lift_h5p_default(), dcpl.id, lift_h5p_default())
    guard id >= 0 else { throw .io("cannot create dataset '\(name)' in '\(path)': \(HDF5.takeErrorDescription())") }
    return H5Object(id, .dataset)
  }

  private func closeHandles() {
    keys = nil
    captions = nil
    embeddings = nil
    file = nil
  }

  /// Appends `n` rows (n x dim float32). `keys` / `captions` must hold n strings exactly when the
  /// writer was created to write them. Validates everything before writing anything.
  public func append(_ data: UnsafePointer<Float>, rows n: Int64, keys newKeys: [[UInt8]]? = nil,
                     captions newCaptions: [[UInt8]]? = nil) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard !finished, embeddings != nil else { throw .state("the writer for '\(path)' is already finished") }
      try requireNonNegative(n, "row count")
      let total = try checkedCount(n, dim, "rows")
      try checkStrings(newKeys, wanted: writesKeys, name: "keys", count: n)
      try checkStrings(newCaptions, wanted: writesCaptions, name: "captions", count: n)
      let d = Int(dim)
      for i in 0..<Int(n) {
        let row = data + i * d
        if let c = VectorOps.firstNonFinite(row, d) {
          throw .value("append row \(i) (store row \(rows + Int64(i))) has a non-finite value \(row[c]) at column \(c)")
        }
        if dtype == LIFT_DTYPE_FLOAT16, let c = VectorOps.firstBeyond(row, d, limit: 65504) {
          throw .value("append row \(i) (store row \(rows + Int64(i))) value \(row[c]) at column \(c) overflows float16 (max 65504)")
        }
      }
      guard n > 0 else { return }
      HDF5.prepareThread()
      let old = rows
      do throws(LiftError) {
        try extend(embeddings!, to: old + n, columns: dim)
        if dtype == LIFT_DTYPE_FLOAT16 {
          let stage = staging.reserve(bytes: total * 2)
          VectorOps.floatToHalf(data, stage, total)
          try write(embeddings!, from: old, count: n, columns: dim, type: HDF5.halfLE, data: stage)
        } else {
          try write(embeddings!, from: old, count: n, columns: dim, type: lift_h5t_native_float(),
                    data: UnsafeRawPointer(data))
        }
        if let newKeys { try writeStrings(keys!, newKeys, from: old) }
        if let newCaptions { try writeStrings(captions!, newCaptions, from: old) }
        rows = old + n
      } catch {
        // Leave the datasets as they were before this call.
        for ds in [embeddings, keys, captions].compactMap({ $0 }) {
          let columns: Int64? = ds === embeddings ? dim : nil
          try? extend(ds, to: old, columns: columns)
        }
        throw error
      }
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

  private func extend(_ ds: H5Object, to newRows: Int64, columns: Int64?) throws(LiftError) {
    var dims: [hsize_t] = columns.map { [hsize_t(newRows), hsize_t($0)] } ?? [hsize_t(newRows)]
    guard H5Dset_extent(ds.id, &dims) >= 0 else {
      throw .io("cannot grow '\(temporaryPath)' to \(newRows) rows: \(HDF5.takeErrorDescription())")
    }
  }

  private func write(_ ds: H5Object, from start: Int64, count: Int64, columns: Int64?, type: hid_t,
                     data: UnsafeRawPointer) throws(LiftError) {
    let space = H5Object(H5Dget_space(ds.id), .dataspace)
    var offset: [hsize_t] = columns == nil ? [hsize_t(start)] : [hsize_t(start), 0]
    var extent: [hsize_t] = columns.map { [hsize_t(count), hsize_t($0)] } ?? [hsize_t(count)]
    H5Sselect_hyperslab(space.id, H5S_SELECT_SET, &offset, nil, &extent, nil)
    let memSpace = H5Object(H5Screate_simple(Int32(extent.count), &extent, nil), .dataspace)
    guard H5Dwrite(ds.id, type, memSpace.id, space.id, lift_h5p_default(), data) >= 0 else {
      throw .io("writing rows \(start)..<\(start + count) of '\(temporaryPath)': \(HDF5.takeErrorDescription())")
    }
  }

  private func writeStrings(_ ds: H5Object, _ strings: [[UInt8]], from start: Int64) throws(LiftError) {
    try extend(ds, to: start + Int64(strings.count), columns: nil)
    // Every string NUL-terminated in one buffer, and the array of pointers HDF5's vlen strings read.
    let total = strings.reduce(0) { $0 + $1.count + 1 }
    let blob = UnsafeMutablePointer<CChar>.allocate(capacity: total)
    defer { blob.deallocate() }
    var pointers: [UnsafePointer<CChar>?] = []
    pointers.reserveCapacity(strings.count)
    var offset = 0
    for s in strings {
      if !s.isEmpty {
        s.withUnsafeBytes { UnsafeMutableRawPointer(blob + offset).copyMemory(from: $0.baseAddress!, byteCount: s.count) }
      }
      blob[offset + s.count] = 0
      pointers.append(UnsafePointer(blob + offset))
      offset += s.count + 1
    }
    let count = Int64(strings.count)
    try pointers.withUnsafeBufferPointer { (buffer) throws(LiftError) in
      try write(ds, from: start, count: count, columns: nil, type: HDF5.variableUTF8,
                data: UnsafeRawPointer(buffer.baseAddress!))
    }
  }

  /// Flushes, fsyncs and renames the file into place; the writer then refuses appends.
  public func finish() throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard !finished, file != nil else { throw .state("the writer for '\(path)' is already finished") }
      HDF5.prepareThread()
      guard H5Fflush(file!.id, H5F_SCOPE_GLOBAL) >= 0 else {
        throw .io("cannot flush '\(temporaryPath)': \(HDF5.takeErrorDescription())")
      }
      closeHandles()
      try FileSystem.fsyncFile(temporaryPath)
      if overwrite {
        guard rename(temporaryPath, path) == 0 else {
          throw .io("cannot rename '\(temporaryPath)' to '\(path)': \(String(cString: strerror(errno)))")
        }
      } else {
        // link() fails if path exists, so a file that appeared meanwhile is never replaced.
        guard link(temporaryPath, path) == 0 else {
          let reason = errno == EEXIST ? "it already exists" : String(cString: strerror(errno))
          finished = true  // keep the temporary file: it holds the data
          throw .io("cannot create '\(path)': \(reason); the data is kept in '\(temporaryPath)'")
        }
        unlink(temporaryPath)
      }
      try FileSystem.fsyncDirectory(of: path)
      finished = true
    }
  }
}

/// Durable file-system operations.
enum FileSystem {
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
