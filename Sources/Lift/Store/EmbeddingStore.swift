import CHDF5
import CLiftABI
import Glibc

/// A read-only view of one or more HDF5 files ("shards") as one logical (rows x dim) float32 matrix.
///
/// Every shard holds a rank-2 float dataset (float16, float32 or float64, any byte order, any
/// layout) with the same number of columns; shard rows are concatenated in the order given.
/// Reads go through HDF5 hyperslab selections into a staging buffer of bounded size
/// (`bufferBytes`), so stores larger than memory work. Opening touches metadata only.
///
/// Thread safety: every method takes the store's lock, so one store may be shared by threads;
/// calls run one at a time.
public final class EmbeddingStore: @unchecked Sendable {  // every method takes `lock`
  public struct Options {
    /// Name of the embeddings dataset in every shard.
    public var dataset: String = "embeddings"
    /// L2-normalise every row on read (a zero row is a value error).
    public var normalize: Bool = false
    /// Check every row read for NaN/Inf (a bad row is a value error naming it).
    public var checkFinite: Bool = true
    public init() {}
  }

  /// One file of the store: its rows, read as binary16 LE for float16 shards and as native
  /// float32 otherwise (HDF5 converts float64 and big-endian data).
  struct Shard {
    let source: RowSource
    let dtype: lift_dtype
    /// Global index of this shard's row 0.
    let firstRow: Int64
    var path: String { source.path }
    var file: H5Object { source.file }
    var rows: Int64 { source.rows }
    var direct: DirectRowSource? { source.direct }
    /// Bytes per staged element (2 for float16, 4 otherwise).
    var stagedSize: Int { source.memElementSize }
  }

  public let options: Options
  public let paths: [String]
  public let rows: Int64
  public let dim: Int64
  let shards: [Shard]
  let sharded: ShardedRows
  let lock = Lock()
  private var staging = StagingBuffer()
  /// Upper bound on staging memory per read (bytes).
  public private(set) var bufferBytes: Int = 8 << 20
  /// Whether scattered row reads may bypass HDF5's selection machinery (tests turn it off to
  /// compare both paths).
  var directReads = true
  /// String datasets opened so far, by name: one dataset per shard.
  var stringDatasets: [String: [H5Object]] = [:]
  /// Each shard's key index, opened on first lookup.
  var keyIndexes: [KeyIndex?] = []

  deinit { staging.release() }

  /// Opens `paths` as one store. Throws io (missing file, not HDF5), notFound/format (missing
  /// dataset, rank, dtype) or shape (D differs between shards) errors naming the file.
  public init(paths: [String], options: Options = Options()) throws(LiftError) {
    guard !paths.isEmpty else { throw .argument("no store files given") }
    guard !options.dataset.isEmpty else { throw .argument("dataset name is empty") }
    HDF5.prepareThread()
    var shards: [Shard] = []
    shards.reserveCapacity(paths.count)
    var total: Int64 = 0
    var dim: Int64 = -1
    for path in paths {
      let shard = try Self.openShard(path: path, dataset: options.dataset, firstRow: total)
      let shardDim = shard.source.dims[1]
      if dim < 0 {
        dim = Int64(shardDim)
      } else if Int64(shardDim) != dim {
        throw .shape("'\(path)' dataset '\(options.dataset)' has \(shardDim) columns but '\(paths[0])' has \(dim)")
      }
      total += shard.rows
      shards.append(shard)
    }
    self.options = options
    self.paths = paths
    self.shards = shards
    self.sharded = ShardedRows(shards.map(\.source))
    self.keyIndexes = Array(repeating: nil, count: shards.count)
    self.rows = total
    self.dim = dim
  }

  private static func openShard(path: String, dataset name: String, firstRow: Int64) throws(LiftError) -> Shard {
    let file = try HDF5.openReadOnly(path)
    let probe = try HDF5.openDataset(file.id, name, path: path)
    let dims = try HDF5.dims(of: probe.id)
    guard dims.count == 2 else {
      throw .format("dataset '\(name)' in '\(path)' has rank \(dims.count) (shape \(HDF5.shapeString(dims))); expected rank 2 (rows, dim)")
    }
    guard dims[1] >= 1 else { throw .format("dataset '\(name)' in '\(path)' has zero columns") }
    guard dims[0] <= UInt64(Int64.max / 2), dims[1] <= UInt64(1 << 24) else {
      throw .format("dataset '\(name)' in '\(path)' has an unsupported shape \(HDF5.shapeString(dims))")
    }
    let fileType = H5Object(H5Dget_type(probe.id), .datatype)
    guard fileType.id >= 0 else { throw .format("cannot read the dtype of '\(name)' in '\(path)': \(HDF5.takeErrorDescription())") }
    guard H5Tget_class(fileType.id) == H5T_FLOAT else {
      throw .format("dataset '\(name)' in '\(path)' has dtype \(HDF5.describe(type: fileType.id)); expected float16, float32 or float64")
    }
    let dtype: lift_dtype
    switch H5Tget_size(fileType.id) {
    case 2:
      var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
      H5Tget_fields(fileType.id, &spos, &epos, &esize, &mpos, &msize)
      guard spos == 15, epos == 10, esize == 5, mpos == 0, msize == 10 else {
        throw .format("dataset '\(name)' in '\(path)' is a 16-bit float that is not IEEE binary16 (sign \(spos), exponent \(epos)+\(esize), mantissa \(mpos)+\(msize))")
      }
      dtype = LIFT_DTYPE_FLOAT16
    case 4: dtype = LIFT_DTYPE_FLOAT32
    case 8: dtype = LIFT_DTYPE_FLOAT64
    default:
      throw .format("dataset '\(name)' in '\(path)' has dtype \(HDF5.describe(type: fileType.id)); expected float16, float32 or float64")
    }
    let memType = dtype == LIFT_DTYPE_FLOAT16 ? HDF5.halfLE : lift_h5t_native_float()
    let source = try RowSource(file: file, path: path, name: name, memType: memType)
    return Shard(source: source, dtype: dtype, firstRow: firstRow)
  }

  /// Sets the staging-buffer budget (bytes, >= 1).
  public func setBufferBytes(_ bytes: Int64) throws(LiftError) {
    try requirePositive(bytes, "buffer bytes")
    lock.withLock {
      bufferBytes = Int(min(bytes, Int64(Int.max / 4)))
      staging.shrink(to: bufferBytes)
    }
  }

  /// On-disk dtype of each shard.
  public var shardDtypes: [lift_dtype] { shards.map(\.dtype) }

  /// Index of the shard holding global row `row` (0 <= row < rows).
  func shardIndex(of row: Int64) -> Int { sharded.shardIndex(of: row) }

  /// Rows of one staged read that fit the buffer budget (at least 1).
  private func stagedRowsBudget(_ shard: Shard) -> Int64 {
    max(1, Int64(bufferBytes) / (dim * Int64(shard.stagedSize)))
  }

  // MARK: - Reading rows

  /// Reads rows [start, start + count) into `out` (count x dim floats; `capacity` in floats).
  public func read(range start: Int64, count: Int64, into out: UnsafeMutablePointer<Float>,
                   capacity: Int) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      try requireNonNegative(start, "start row")
      try requireNonNegative(count, "row count")
      guard start <= rows, count <= rows - start else {
        throw .argument("rows [\(start), \(start) + \(count)) are out of range: the store has \(rows) rows")
      }
      let needed = try checkedCount(count, dim, "output")
      guard capacity >= needed else {
        throw .buffer("output holds \(capacity) floats but \(count) rows x \(dim) need \(needed)")
      }
      try readRangeLocked(start: start, count: count, into: out)
      try postprocess(out, count: Int(count)) { start + Int64($0) }
    }
  }

  /// Reads rows[i] into out[i*dim ..< (i+1)*dim] for every i; any order, repeats allowed.
  public func read(rows list: UnsafeBufferPointer<Int64>, into out: UnsafeMutablePointer<Float>,
                   capacity: Int) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      try readRowsLocked(list, into: out, capacity: capacity)
      try postprocess(out, count: list.count) { list[$0] }
    }
  }

  /// `read(rows:)` without the finite check or normalisation: the caller checks each row (the
  /// data loader skips a sample whose embedding is not finite instead of failing the batch).
  func readUnchecked(rows list: UnsafeBufferPointer<Int64>, into out: UnsafeMutablePointer<Float>,
                     capacity: Int) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in try readRowsLocked(list, into: out, capacity: capacity) }
  }

  private func readRowsLocked(_ list: UnsafeBufferPointer<Int64>, into out: UnsafeMutablePointer<Float>,
                              capacity: Int) throws(LiftError) {
    HDF5.prepareThread()
    let count = list.count
    let needed = try checkedCount(Int64(count), dim, "output")
    guard capacity >= needed else {
      throw .buffer("output holds \(capacity) floats but \(count) rows x \(dim) need \(needed)")
    }
    try sharded.validate(list)
    let d = Int(dim)
    try sharded.read(rows: list, staging: &staging, budget: bufferBytes, allowDirect: directReads) { slot, row, staged in
      let dst = out + slot * d
      if shards[shardIndex(of: row)].stagedSize == 2 {
        VectorOps.halfToFloat(staged, dst, d)
      } else {
        dst.update(from: staged.assumingMemoryBound(to: Float.self), count: d)
      }
    }
  }

  /// Where global row `row` lives, for messages ("row 7 of 'a.h5'").
  func describeRow(_ row: Int64) -> String {
    let shard = shards[shardIndex(of: row)]
    return "row \(row - shard.firstRow) of '\(shard.path)'"
  }

  /// Reads `count` rows of one shard starting at shard-local row `local` into `out`.
  private func readShardRange(_ shard: Shard, local: Int64, count: Int64,
                              into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    if shard.stagedSize == 4 {
      // float32/float64: straight into the caller's buffer (HDF5 converts if needed).
      try shard.source.read(runs: [(local, count)], rows: count, into: UnsafeMutableRawPointer(out), allowDirect: false)
      return
    }
    let budget = stagedRowsBudget(shard)
    var done: Int64 = 0
    while done < count {
      let n = min(budget, count - done)
      let stage = staging.reserve(bytes: Int(n * dim) * shard.stagedSize)
      try shard.source.read(runs: [(local + done, n)], rows: n, into: stage, allowDirect: false)
      VectorOps.halfToFloat(stage, out + Int(done * dim), Int(n * dim))
      done += n
    }
  }

  /// Finite check and normalisation of `count` rows just read; `globalRow(i)` names row i in errors.
  private func postprocess(_ out: UnsafeMutablePointer<Float>, count: Int,
                           globalRow: (Int) -> Int64) throws(LiftError) {
    let d = Int(dim)
    if options.checkFinite {
      for i in 0..<count {
        if let col = VectorOps.firstNonFinite(out + i * d, d) {
          throw nonFiniteError(row: globalRow(i), column: col, value: out[i * d + col])
        }
      }
    }
    if options.normalize {
      for i in 0..<count where !VectorOps.normalize(out + i * d, d) {
        let row = globalRow(i)
        let path = shards[shardIndex(of: row)].path
        throw .value("row \(row) (in '\(path)') has zero or non-finite norm and cannot be normalised")
      }
    }
  }

  private func nonFiniteError(row: Int64, column: Int, value: Float) -> LiftError {
    let shard = shards[shardIndex(of: row)]
    return .value("row \(row) (row \(row - shard.firstRow) of '\(shard.path)', dataset '\(options.dataset)') has a non-finite value \(value) at column \(column)")
  }

  /// Scans every row in bounded memory; throws a value error naming the first NaN/Inf row.
  public func validate() throws(LiftError) {
    let blockRows = max(1, min(rows, Int64(bufferBytes) / (dim * 4)))
    guard rows > 0 else { return }
    let block = UnsafeMutablePointer<Float>.allocate(capacity: Int(blockRows * dim))
    defer { block.deallocate() }
    var start: Int64 = 0
    while start < rows {
      let n = min(blockRows, rows - start)
      try readRaw(range: start, count: n, into: block)
      let d = Int(dim)
      for i in 0..<Int(n) {
        if let col = VectorOps.firstNonFinite(block + i * d, d) {
          throw nonFiniteError(row: start + Int64(i), column: col, value: block[i * d + col])
        }
      }
      start += n
    }
  }

  /// Reads a row range with no finite check or normalisation (for scans that do their own).
  func readRaw(range start: Int64, count: Int64, into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      try readRangeLocked(start: start, count: count, into: out)
    }
  }

  /// Reads validated rows [start, start + count) shard by shard. Caller holds the lock.
  private func readRangeLocked(start: Int64, count: Int64, into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    var row = start
    while row < start + count {
      let shard = shards[shardIndex(of: row)]
      let local = row - shard.firstRow
      let n = min(shard.rows - local, start + count - row)
      try readShardRange(shard, local: local, count: n, into: out + Int((row - start) * dim))
      row += n
    }
  }
}
