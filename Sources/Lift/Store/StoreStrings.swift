import CHDF5
import CLiftABI
import Glibc

/// Optional per-row string datasets of a store ("keys", "captions", ...): rank 1, one entry per
/// row of the shard, variable- or fixed-length strings.
extension EmbeddingStore {
  /// Whether every shard has a string dataset `name` with one entry per row.
  public func hasStrings(_ name: String) throws(LiftError) -> Bool {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      do throws(LiftError) {
        _ = try stringDatasetsLocked(name)
        return true
      } catch where error.status == LIFT_ERR_NOT_FOUND {
        return false
      }
    }
  }

  /// The bytes of string `row` of dataset `name` (UTF-8 as stored; no terminating NUL).
  public func stringBytes(_ name: String, row: Int64) throws(LiftError) -> [UInt8] {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      guard row >= 0, row < rows else {
        throw .argument("row \(row) is out of range: the store has \(rows) rows")
      }
      let datasets = try stringDatasetsLocked(name)
      let s = shardIndex(of: row)
      return try HDF5.readString(datasets[s].id, index: row - shards[s].firstRow, name: name, path: shards[s].path)
    }
  }

  /// The bytes of strings start ..< start + count of dataset `name`, read in one call per shard.
  public func stringBytes(_ name: String, from start: Int64, count: Int) throws(LiftError) -> [[UInt8]] {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      guard start >= 0, count >= 0, start <= rows, Int64(count) <= rows - start else {
        throw .argument("rows \(start) ..< \(start) + \(count) are out of range: the store has \(rows) rows")
      }
      let datasets = try stringDatasetsLocked(name)
      var out: [[UInt8]] = []
      var row = start
      while row < start + Int64(count) {
        let s = shardIndex(of: row)
        let n = Int(min(start + Int64(count), shards[s].firstRow + shards[s].rows) - row)
        out += try HDF5.readStrings(datasets[s].id, from: row - shards[s].firstRow, count: n, name: name, path: shards[s].path)
        row += Int64(n)
      }
      return out
    }
  }

  /// String `row` of dataset `name`, decoded as UTF-8 (invalid bytes replaced).
  public func string(_ name: String, row: Int64) throws(LiftError) -> String {
    String(decoding: try stringBytes(name, row: row), as: UTF8.self)
  }

  /// Opens (once) and checks the string dataset `name` in every shard. Caller holds the lock.
  private func stringDatasetsLocked(_ name: String) throws(LiftError) -> [H5Object] {
    if let cached = stringDatasets[name] { return cached }
    guard !name.isEmpty else { throw .argument("string dataset name is empty") }
    var opened: [H5Object] = []
    for shard in shards {
      let ds = try HDF5.openDataset(shard.file.id, name, path: shard.path)
      let type = H5Object(H5Dget_type(ds.id), .datatype)
      guard H5Tget_class(type.id) == H5T_STRING else {
        throw .format("dataset '\(name)' in '\(shard.path)' has dtype \(HDF5.describe(type: type.id)); expected strings")
      }
      let dims = try HDF5.dims(of: ds.id)
      guard dims.count == 1 else {
        throw .format("string dataset '\(name)' in '\(shard.path)' has rank \(dims.count); expected rank 1")
      }
      guard Int64(dims[0]) == shard.rows else {
        throw .shape("string dataset '\(name)' in '\(shard.path)' has \(dims[0]) entries but '\(options.dataset)' has \(shard.rows) rows")
      }
      opened.append(ds)
    }
    stringDatasets[name] = opened
    return opened
  }
}

extension EmbeddingStore {
  /// Global rows whose key is `key` (with or without an image extension: see `SampleKey`), in
  /// increasing order; empty if no row has it. Several rows under one key are alternative
  /// captions of one sample. The first lookup in a shard opens (or builds) its key index.
  public func rows(forKey key: some Collection<UInt8>) throws(LiftError) -> [Int64] {
    try rows(forHash: SampleKey.hash(key))
  }

  /// Global rows whose key hashes to `hash` (SampleKey.hash).
  func rows(forHash hash: UInt64) throws(LiftError) -> [Int64] {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      var found: [Int64] = []
      for (s, shard) in shards.enumerated() {
        if keyIndexes[s] == nil { keyIndexes[s] = try KeyIndex(file: shard.file, path: shard.path, storeRows: shard.rows) }
        found += try keyIndexes[s]!.rows(forHash: hash).map { $0 + shard.firstRow }
      }
      return found
    }
  }
}
