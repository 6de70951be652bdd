import CHDF5
import Glibc

/// The rows of one HDF5 dataset in one file, read as raw elements of a chosen memory type.
/// A row is everything after the first dimension ((N, D) -> D elements, (N, H, W, C) -> H*W*C).
///
/// Reads use one HDF5 hyperslab selection per call, or pread when the storage allows it
/// (`DirectRowSource`: unfiltered, file type identical to the memory type, whole-row chunks).
final class RowSource {
  let path: String
  let name: String
  let file: H5Object
  let dataset: H5Object
  /// A dataspace of the dataset's extent, reused for selections.
  let fileSpace: H5Object
  let dims: [UInt64]
  let rows: Int64
  /// Elements per row (product of dims[1...]).
  let rowElements: Int
  let memType: hid_t
  let memElementSize: Int
  let direct: DirectRowSource?

  /// Opens dataset `name` of an open file. The caller has checked rank and type; `memType`
  /// is what rows are converted to (HDF5 converts when it differs from the file type).
  init(file: H5Object, path: String, name: String, memType: hid_t) throws(LiftError) {
    let probe = try HDF5.openDataset(file.id, name, path: path)
    let dims = try HDF5.dims(of: probe.id)
    guard !dims.isEmpty else { throw .format("dataset '\(name)' in '\(path)' is a scalar; expected rows") }
    // Unfiltered chunks: no chunk cache, so HDF5 reads just the selected rows of each chunk
    // instead of whole chunks. Filtered (compressed) chunks must be decoded whole: cache them.
    let dcpl = H5Object(H5Dget_create_plist(probe.id), .propertyList)
    let filtered = dcpl.id >= 0 && H5Pget_nfilters(dcpl.id) > 0
    let dapl = H5Object(H5Pcreate(lift_h5p_dataset_access()), .propertyList)
    H5Pset_chunk_cache(dapl.id, filtered ? 10007 : 521, filtered ? 64 << 20 : 0, 0.75)
    let dataset = try HDF5.openDataset(file.id, name, path: path, access: dapl.id)
    let space = H5Object(H5Dget_space(dataset.id), .dataspace)
    guard space.id >= 0 else { throw .format("cannot read the dataspace of '\(name)' in '\(path)'") }
    let fileType = H5Object(H5Dget_type(dataset.id), .datatype)
    self.path = path
    self.name = name
    self.file = file
    self.dataset = dataset
    self.fileSpace = space
    // Extents come from the file: checked before any arithmetic on them.
    guard dims[0] <= UInt64(Int64.max) else { throw .format("dataset '\(name)' in '\(path)' claims \(dims[0]) rows") }
    var elements: UInt64 = 1
    for d in dims.dropFirst() {
      let (product, overflow) = elements.multipliedReportingOverflow(by: d)
      guard !overflow, product <= RowSource.maxRowElements else {
        throw .format("dataset '\(name)' in '\(path)' has rows of \(HDF5.shapeString(Array(dims.dropFirst()))) elements; "
                      + "at most \(RowSource.maxRowElements) are accepted")
      }
      elements = product
    }
    self.dims = dims
    self.rows = Int64(dims[0])
    self.rowElements = Int(elements)
    self.memType = memType
    self.memElementSize = H5Tget_size(memType)
    self.direct = DirectRowSource.make(file: file.id, dataset: dataset.id, path: path, fileType: fileType.id,
                                       memType: memType, dims: dims)
  }

  /// Largest row (elements) liblift reads: 2^32, i.e. 16 GiB of float32 per row.
  static let maxRowElements: UInt64 = 1 << 32

  var rowBytes: Int { rowElements * memElementSize }

  /// Reads the union of row runs (local rows, sorted, disjoint) into `dest` back to back
  /// (`rows` rows in all). pread when allowed and possible, else one H5Dread.
  func read(runs: [(start: Int64, count: Int64)], rows: Int64, into dest: UnsafeMutableRawPointer,
            allowDirect: Bool) throws(LiftError) {
    if allowDirect, let direct, try readDirectly(direct, runs: runs, into: dest) { return }
    let space = fileSpace.id
    let rank = dims.count
    var first = true
    var offset = [hsize_t](repeating: 0, count: rank)
    var extent = dims.map { hsize_t($0) }
    for run in runs {
      offset[0] = hsize_t(run.start)
      extent[0] = hsize_t(run.count)
      let status = H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, &offset, nil, &extent, nil)
      if status < 0 { throw .internal("selecting rows of '\(name)' in '\(path)': \(HDF5.takeErrorDescription())") }
      first = false
    }
    var memDims = dims.map { hsize_t($0) }
    memDims[0] = hsize_t(rows)
    let memSpace = H5Object(H5Screate_simple(Int32(rank), &memDims, nil), .dataspace)
    let status = H5Dread(dataset.id, memType, memSpace.id, space, lift_h5p_default(), dest)
    if status < 0 { throw .io("reading '\(name)' from '\(path)': \(HDF5.takeErrorDescription())") }
  }

  private func readDirectly(_ direct: DirectRowSource, runs: [(start: Int64, count: Int64)],
                            into dest: UnsafeMutableRawPointer) throws(LiftError) -> Bool {
    var offset = 0
    for run in runs {
      guard try direct.read(start: run.start, count: run.count, into: dest + offset) else { return false }
      offset += Int(run.count) * direct.rowBytes
    }
    return true
  }
}

/// Where each shard's items start when shards of `counts` items are concatenated.
struct ShardStarts {
  let starts: [Int64]
  let counts: [Int64]
  let total: Int64

  init(counts: [Int64]) {
    var starts: [Int64] = []
    var total: Int64 = 0
    for c in counts { starts.append(total); total += c }
    self.starts = starts
    self.counts = counts
    self.total = total
  }

  /// Index of the shard holding global item `index` (0 <= index < total).
  func shardIndex(of index: Int64) -> Int {
    var lo = 0, hi = starts.count - 1
    while lo < hi {
      let mid = (lo + hi + 1) / 2
      if starts[mid] <= index { lo = mid } else { hi = mid - 1 }
    }
    // Empty shards share a start with their successor: skip to the one that holds the item.
    while counts[lo] == 0 || index >= starts[lo] + counts[lo] { lo += 1 }
    return lo
  }
}

/// Several `RowSource`s (one per shard file) as one sequence of rows, with the bookkeeping for
/// scattered reads: sort the requested rows, group them by shard within a staging budget,
/// coalesce runs, one read per group, then hand each staged row to the caller.
struct ShardedRows {
  let sources: [RowSource]
  let layout: ShardStarts
  /// Global index of each shard's row 0.
  var starts: [Int64] { layout.starts }
  var rows: Int64 { layout.total }

  init(_ sources: [RowSource]) {
    self.sources = sources
    layout = ShardStarts(counts: sources.map(\.rows))
  }

  /// Index of the shard holding global row `row` (0 <= row < rows).
  func shardIndex(of row: Int64) -> Int { layout.shardIndex(of: row) }

  /// Throws an argument error for the first entry of `list` outside [0, rows).
  func validate(_ list: UnsafeBufferPointer<Int64>, what: String = "rows") throws(LiftError) {
    for (i, r) in list.enumerated() where r < 0 || r >= rows {
      throw .argument("\(what)[\(i)] = \(r) is out of range: there are \(rows) rows")
    }
  }

  /// Reads list[i] for every i (any order, repeats read once) and calls place(i, row, staged)
  /// with a pointer to that row in memory-type elements. At most `budget` bytes are staged at
  /// a time (at least one row). Rows must be validated.
  func read(rows list: UnsafeBufferPointer<Int64>, staging: inout StagingBuffer, budget: Int, allowDirect: Bool,
            place: (_ slot: Int, _ row: Int64, _ staged: UnsafeRawPointer) -> Void) throws(LiftError) {
    let count = list.count
    // (row, output slot) in row order.
    var order = [(row: Int64, slot: Int)]()
    order.reserveCapacity(count)
    for (i, r) in list.enumerated() { order.append((r, i)) }
    order.sort { $0.row < $1.row || ($0.row == $1.row && $0.slot < $1.slot) }
    var begin = 0
    while begin < count {
      let s = shardIndex(of: order[begin].row)
      let source = sources[s], first = starts[s]
      let rowBytes = source.rowBytes
      let maxRows = max(1, budget / max(rowBytes, 1))
      // Consecutive sorted entries in this shard whose distinct rows fit the budget.
      var end = begin
      var distinct = 0
      var runs: [(start: Int64, count: Int64)] = []
      while end < count, order[end].row < first + source.rows {
        let local = order[end].row - first
        if end == begin || order[end].row != order[end - 1].row {
          if distinct == maxRows { break }
          distinct += 1
          if let last = runs.last, last.start + last.count == local {
            runs[runs.count - 1].count += 1
          } else {
            runs.append((local, 1))
          }
        }
        end += 1
      }
      let stage = staging.reserve(bytes: distinct * rowBytes)
      try source.read(runs: runs, rows: Int64(distinct), into: stage, allowDirect: allowDirect)
      var staged = -1
      var lastRow: Int64 = -1
      for entry in order[begin..<end] {
        if entry.row != lastRow { staged += 1; lastRow = entry.row }
        place(entry.slot, entry.row, UnsafeRawPointer(stage + staged * rowBytes))
      }
      begin = end
    }
  }
}

/// A growable raw buffer reused across reads.
struct StagingBuffer {
  private(set) var pointer: UnsafeMutableRawPointer?
  private(set) var capacity = 0

  mutating func reserve(bytes: Int) -> UnsafeMutableRawPointer {
    if bytes > capacity || pointer == nil {
      pointer?.deallocate()
      capacity = max(bytes, 64)
      pointer = .allocate(byteCount: capacity, alignment: 64)
    }
    return pointer!
  }

  mutating func release() {
    pointer?.deallocate()
    pointer = nil
    capacity = 0
  }

  /// Frees the buffer if it is larger than `limit` bytes.
  mutating func shrink(to limit: Int) {
    if capacity > limit { release() }
  }
}
