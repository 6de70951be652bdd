import CHDF5
import Glibc

/// Sample keys: how a sample's name in a data source (a tar member's key, an image file's name)
/// meets a row of an embedding store's `keys`.
public enum SampleKey {
  /// Extensions that a key may carry or not: "000000001.jpg" and "000000001" are the same sample
  /// (LIFT's caption parquet names images with their extension, webdataset keys have none).
  static let imageExtensions: [[UInt8]] = ["jpg", "jpeg", "png", "webp"].map { Array($0.utf8) }

  /// The key without a trailing image extension (any letter case).
  public static func normalized(_ key: some Collection<UInt8>) -> ArraySlice<UInt8> {
    let bytes = Array(key)[...]
    guard let dot = bytes.lastIndex(of: UInt8(ascii: ".")), dot > bytes.startIndex else { return bytes }
    let ext = bytes[(dot + 1)...].map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
    return imageExtensions.contains(ext) ? bytes[..<dot] : bytes
  }

  /// 64-bit hash of the normalised key: FNV-1a over its bytes, then splitmix64's finaliser.
  /// Two different keys share a hash with probability 2^-64 per pair.
  public static func hash(_ key: some Collection<UInt8>) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in normalized(key) { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    return mix64(h)
  }
}

/// The key index of one store file: `key_index/hashes` (uint64, sorted) and `key_index/rows`
/// (int64, the store row of each hash), written by the store writer. Lookups read one block of
/// at most `stride` hashes; memory holds every `stride`-th hash (N / 1024 words), so it does not
/// grow with the store beyond that. A file with keys but no index (written by another tool) is
/// indexed in memory on first use instead (16 bytes per row).
///
/// Opening checks that the hashes are sorted and every row is inside the store (so a damaged
/// index cannot make a read go astray); that each hash is the hash of its row's key is checked
/// by `verify` (`lift check`), which reads every key.
final class KeyIndex {
  static let stride = 1024
  /// Most keys of a file without an index that are indexed in memory (16 bytes each).
  static let maxInMemoryKeys = 1 << 26
  let path: String
  let count: Int64
  private let hashes: RowSource?
  private let rowSource: RowSource?
  private var samples: [UInt64] = []
  private var memoryHashes: [UInt64] = []
  private var memoryRows: [Int64] = []
  /// One block of hashes and rows, reused by every lookup (callers hold the store's lock).
  private var block: (UnsafeMutablePointer<UInt64>, UnsafeMutablePointer<Int64>)? = nil

  deinit {
    block?.0.deallocate()
    block?.1.deallocate()
  }

  /// Opens (or, without one, builds) the index of the store file `file` of `storeRows` rows.
  init(file: H5Object, path: String, storeRows: Int64) throws(LiftError) {
    self.path = path
    if HDF5.exists(file.id, "key_index/hashes") {
      let h = try RowSource(file: file, path: path, name: "key_index/hashes", memType: lift_h5t_native_uint64())
      let r = try RowSource(file: file, path: path, name: "key_index/rows", memType: lift_h5t_native_int64())
      guard h.dims.count == 1, r.dims == h.dims, h.rows == storeRows else {
        throw .format("'key_index' in '\(path)' has hashes \(HDF5.shapeString(h.dims)) and rows \(HDF5.shapeString(r.dims)) "
                      + "for a store of \(storeRows) rows; expected (\(storeRows),) each")
      }
      hashes = h
      rowSource = r
      count = h.rows
      try scanFileIndex(storeRows: storeRows)
    } else {
      guard HDF5.exists(file.id, "keys") else { throw .notFound("'\(path)' has no 'keys' dataset: its rows cannot be found by key") }
      let n = try HDF5.stringListCount(file.id, "keys", path: path)
      guard n == storeRows else { throw .format("'keys' in '\(path)' has \(n) entries for \(storeRows) rows") }
      guard n <= Int64(Self.maxInMemoryKeys) else {
        throw .value("'\(path)' has \(n) keys but no key index; at most \(Self.maxInMemoryKeys) are indexed in memory: "
                     + "rewrite the store with liblift's store writer (it writes the index)")
      }
      let ds = try HDF5.openDataset(file.id, "keys", path: path)
      var pairs: [(UInt64, Int64)] = []
      pairs.reserveCapacity(Int(n))
      for row in 0..<n {
        pairs.append((SampleKey.hash(try HDF5.readString(ds.id, index: row, name: "keys", path: path)), row))
      }
      pairs.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
      memoryHashes = pairs.map(\.0)
      memoryRows = pairs.map(\.1)
      hashes = nil
      rowSource = nil
      count = n
    }
  }

  /// One pass over the file's index: sorted hashes, rows in range, every stride-th hash kept.
  private func scanFileIndex(storeRows: Int64) throws(LiftError) {
    let block = 1 << 16
    let h = try allocateElements(block, of: UInt64.self, what: "a key index block")
    defer { h.deallocate() }
    let r = try allocateElements(block, of: Int64.self, what: "a key index block")
    defer { r.deallocate() }
    var previous: UInt64 = 0
    var start: Int64 = 0
    while start < count {
      let n = Int(min(Int64(block), count - start))
      try read(start, n, hashes: h, rows: r)
      for i in 0..<n {
        guard h[i] >= previous else {
          throw .format("'key_index/hashes' in '\(path)' is not sorted at entry \(start + Int64(i)); rebuild the store's index")
        }
        guard r[i] >= 0, r[i] < storeRows else {
          throw .format("'key_index/rows' in '\(path)' names row \(r[i]) at entry \(start + Int64(i)); the store has \(storeRows) rows")
        }
        previous = h[i]
        if (start + Int64(i)) % Int64(Self.stride) == 0 { samples.append(h[i]) }
      }
      start += Int64(n)
    }
  }

  private func read(_ start: Int64, _ n: Int, hashes h: UnsafeMutablePointer<UInt64>,
                    rows r: UnsafeMutablePointer<Int64>) throws(LiftError) {
    guard let hashes, let rowSource, n > 0 else { return }
    try hashes.read(runs: [(start, Int64(n))], rows: Int64(n), into: UnsafeMutableRawPointer(h), allowDirect: true)
    try rowSource.read(runs: [(start, Int64(n))], rows: Int64(n), into: UnsafeMutableRawPointer(r), allowDirect: true)
  }

  /// Rows (of this file) whose key hashes to `hash`, in increasing order; empty if none.
  func rows(forHash hash: UInt64) throws(LiftError) -> [Int64] {
    if hashes == nil {
      var lo = lowerBound(memoryHashes, hash)
      var found: [Int64] = []
      while lo < memoryHashes.count && memoryHashes[lo] == hash {
        found.append(memoryRows[lo])
        lo += 1
      }
      return found
    }
    // The first entry >= hash lies after the block start before the first sample >= hash (and
    // at or before that sample): scan from there until a larger hash.
    let j = lowerBound(samples, hash)
    var start = Int64(max(j - 1, 0)) * Int64(Self.stride)
    var found: [Int64] = []
    if block == nil {
      let h = try allocateElements(Self.stride, of: UInt64.self, what: "a key index block")
      do {
        block = (h, try allocateElements(Self.stride, of: Int64.self, what: "a key index block"))
      } catch {
        h.deallocate()
        throw error
      }
    }
    let (h, r) = block!
    scan: while start < count {
      let n = Int(min(Int64(Self.stride), count - start))
      try read(start, n, hashes: h, rows: r)
      for i in 0..<n {
        if h[i] > hash { break scan }
        if h[i] == hash { found.append(r[i]) }
      }
      start += Int64(n)
    }
    return found.sorted()
  }

  private func lowerBound(_ a: [UInt64], _ value: UInt64) -> Int {
    var lo = 0, hi = a.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if a[mid] < value { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }
}

/// Builds a store file's key index while rows are appended, in memory bounded by `runLimit`
/// entries: full runs are sorted and spilled to temporary files next to the store, and
/// `write` merges them into `key_index/hashes` and `key_index/rows`.
final class KeyIndexBuilder {
  private let base: String
  private let runLimit: Int
  private var pending: [(hash: UInt64, row: Int64)] = []
  private var runs: [String] = []

  init(temporaryBase: String, runLimit: Int = 1 << 20) {
    base = temporaryBase
    self.runLimit = max(runLimit, 1)
  }

  deinit { runs.forEach { unlink($0) } }

  /// Adds the keys of rows firstRow, firstRow + 1, ... and spills a full run. If this throws,
  /// the builder holds exactly what it held before the call.
  func add(_ keys: [[UInt8]], firstRow: Int64) throws(LiftError) {
    let before = pending.count
    for (i, key) in keys.enumerated() { pending.append((SampleKey.hash(key), firstRow + Int64(i))) }
    if pending.count >= runLimit {
      do throws(LiftError) { try spill() } catch {
        pending.removeSubrange(before...)
        throw error
      }
    }
  }

  /// Sorts the pending entries into a run file (listed only once completely written).
  private func spill() throws(LiftError) {
    pending.sort { $0.hash < $1.hash || ($0.hash == $1.hash && $0.row < $1.row) }
    let path = "\(base).keyrun-\(runs.count)"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { throw .io("cannot create '\(path)': \(String(cString: strerror(errno)))") }
    var bytes: [UInt64] = []
    bytes.reserveCapacity(pending.count * 2)
    for p in pending { bytes.append(p.hash.littleEndian); bytes.append(UInt64(bitPattern: p.row).littleEndian) }
    do throws(LiftError) {
      let data = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: max(bytes.count, 1))
      defer { data.deallocate() }
      _ = data.initialize(from: bytes)
      try writeAll(fd, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: data[0..<bytes.count])), path: path)
    } catch {
      close(fd)
      unlink(path)
      throw error
    }
    close(fd)
    runs.append(path)
    pending.removeAll(keepingCapacity: true)
  }

  /// Merges every run into the writer's `key_index` datasets.
  func write(into writer: H5FileWriter) throws(LiftError) {
    if !pending.isEmpty || runs.isEmpty { try spill() }
    let hashes = try writer.createDataset("key_index/hashes", rowShape: [], type: lift_h5t_std_u64le())
    let rows = try writer.createDataset("key_index/rows", rowShape: [], type: lift_h5t_std_i64le())
    var readers: [RunReader] = []
    for path in runs { readers.append(try RunReader(path: path)) }
    var outHashes: [UInt64] = [], outRows: [Int64] = []
    func flush() throws(LiftError) {
      guard !outHashes.isEmpty else { return }
      try appendArray(outHashes, to: hashes, memType: lift_h5t_native_uint64())
      try appendArray(outRows, to: rows, memType: lift_h5t_native_int64())
      outHashes.removeAll(keepingCapacity: true)
      outRows.removeAll(keepingCapacity: true)
    }
    // k-way merge; runs are few (rows / runLimit), so a linear scan of the heads is enough.
    while true {
      var best = -1
      for (k, r) in readers.enumerated() where r.head != nil {
        if best < 0 || r.head! < readers[best].head! { best = k }
      }
      guard best >= 0 else { break }
      let (h, row) = readers[best].head!
      outHashes.append(h)
      outRows.append(row)
      try readers[best].advance()
      if outHashes.count >= 1 << 16 { try flush() }
    }
    try flush()
    readers.removeAll()
    runs.forEach { unlink($0) }
    runs.removeAll()
  }
}

/// Appends an array's elements as rows of a rank-1 dataset.
private func appendArray<T>(_ values: [T], to dataset: ExtensibleDataset, memType: hid_t) throws(LiftError) {
  let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count)
  defer { buffer.deallocate() }
  _ = buffer.initialize(from: values)
  try dataset.append(UnsafeRawPointer(buffer.baseAddress!), count: Int64(values.count), memType: memType)
}

/// Sequential reader of a spilled run: (hash, row) pairs, 16 bytes each, little-endian.
private final class RunReader {
  let path: String
  let fd: Int32
  private var buffer = [UInt64](repeating: 0, count: 1 << 13)
  private var filled = 0, position = 0
  private(set) var head: (UInt64, Int64)? = nil

  init(path: String) throws(LiftError) {
    self.path = path
    fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    try advance()
  }

  deinit { close(fd) }

  func advance() throws(LiftError) {
    if position + 2 > filled {
      let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
      guard n >= 0 else { throw .io("cannot read '\(path)': \(String(cString: strerror(errno)))") }
      filled = n / 8
      position = 0
      if filled < 2 { head = nil; return }
    }
    head = (UInt64(littleEndian: buffer[position]), Int64(bitPattern: UInt64(littleEndian: buffer[position + 1])))
    position += 2
  }
}

/// Writes every byte or throws.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(LiftError) {
  var done = 0
  while done < bytes.count {
    let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
    if n < 0 && errno == EINTR { continue }
    guard n > 0 else { throw .io("cannot write '\(path)': \(String(cString: strerror(errno)))") }
    done += n
  }
}
