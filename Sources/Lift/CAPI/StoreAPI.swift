import CLiftABI
import Glibc

// C entry points of the embedding store (see Include/lift.h for the contract of each).

private let storeFlags: UInt32 = LIFT_STORE_NORMALIZE | LIFT_STORE_SKIP_FINITE_CHECK
private let writerFlags: UInt32 = LIFT_WRITER_KEYS | LIFT_WRITER_CAPTIONS | LIFT_WRITER_OVERWRITE

@_cdecl("lift_store_open")
public func cLiftStoreOpen(_ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int,
                           _ dataset: UnsafePointer<CChar>?, _ flags: UInt32,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let paths = try required(paths, "paths")
    let n = try requiredSize(count, "n_paths")
    guard n >= 1 else { throw .argument("n_paths must be >= 1") }
    var list: [String] = []
    list.reserveCapacity(n)
    for i in 0..<n { list.append(try requiredString(paths[i], "paths[\(i)]")) }
    for path in list { try checkUntrusted(path, kind: .store, flags: flags, allowed: storeFlags) }
    var options = EmbeddingStore.Options()
    if let dataset { options.dataset = String(cString: dataset) }
    options.normalize = flags & LIFT_STORE_NORMALIZE != 0
    options.checkFinite = flags & LIFT_STORE_SKIP_FINITE_CHECK == 0
    let store = try EmbeddingStore(paths: list, options: options)
    out.pointee = makeHandle(store)
  }
}

@_cdecl("lift_store_free")
public func cLiftStoreFree(_ store: OpaquePointer?) { releaseHandle(store) }

@_cdecl("lift_store_shape")
public func cLiftStoreShape(_ handle: OpaquePointer?, _ rows: UnsafeMutablePointer<Int64>?,
                            _ dim: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    rows?.pointee = store.rows
    dim?.pointee = store.dim
  }
}

@_cdecl("lift_store_shard_count")
public func cLiftStoreShardCount(_ handle: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    try required(count, "count").pointee = Int64(store.shards.count)
  }
}

@_cdecl("lift_store_shard_dtype")
public func cLiftStoreShardDtype(_ handle: OpaquePointer?, _ shard: Int64,
                                 _ dtype: UnsafeMutablePointer<lift_dtype>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    let dtype = try required(dtype, "dtype")
    guard shard >= 0, shard < Int64(store.shards.count) else {
      throw .argument("shard \(shard) is out of range: the store has \(store.shards.count) shards")
    }
    dtype.pointee = store.shards[Int(shard)].dtype
  }
}

@_cdecl("lift_store_set_buffer_bytes")
public func cLiftStoreSetBufferBytes(_ handle: OpaquePointer?, _ bytes: Int64) -> lift_status {
  capi { () throws(LiftError) in
    try object(handle, as: EmbeddingStore.self, "store").setBufferBytes(bytes)
  }
}

@_cdecl("lift_store_read_range")
public func cLiftStoreReadRange(_ handle: OpaquePointer?, _ start: Int64, _ count: Int64,
                                _ out: UnsafeMutablePointer<Float>?, _ outLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    let capacity = try requiredSize(outLen, "out_len")
    if count == 0 { return }
    try store.read(range: start, count: count, into: try required(out, "out"), capacity: capacity)
  }
}

@_cdecl("lift_store_read_rows")
public func cLiftStoreReadRows(_ handle: OpaquePointer?, _ rows: UnsafePointer<Int64>?, _ count: Int64,
                               _ out: UnsafeMutablePointer<Float>?, _ outLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    try requireNonNegative(count, "count")
    let capacity = try requiredSize(outLen, "out_len")
    if count == 0 { return }
    let list = UnsafeBufferPointer(start: try required(rows, "rows"), count: Int(count))
    try store.read(rows: list, into: try required(out, "out"), capacity: capacity)
  }
}

@_cdecl("lift_store_validate")
public func cLiftStoreValidate(_ handle: OpaquePointer?) -> lift_status {
  capi { () throws(LiftError) in
    try object(handle, as: EmbeddingStore.self, "store").validate()
  }
}

@_cdecl("lift_store_has_strings")
public func cLiftStoreHasStrings(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                 _ present: UnsafeMutablePointer<Int32>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    let name = try requiredString(name, "name")
    let present = try required(present, "present")
    present.pointee = try store.hasStrings(name) ? 1 : 0
  }
}

@_cdecl("lift_store_rows_for_key")
public func cLiftStoreRowsForKey(_ handle: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ rows: UnsafeMutablePointer<Int64>?,
                                 _ capacity: Int, _ count: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    let key = try requiredString(key, "key")
    let count = try required(count, "count")
    let found = try store.rows(forKey: Array(key.utf8))
    count.pointee = found.count
    guard try requiredSize(capacity, "cap") >= found.count else {
      throw .buffer("key '\(key)' has \(found.count) rows; the buffer holds \(capacity)")
    }
    if !found.isEmpty { try required(rows, "rows").update(from: found, count: found.count) }
  }
}

@_cdecl("lift_store_read_string")
public func cLiftStoreReadString(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ row: Int64,
                                 _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                                 _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    let name = try requiredString(name, "name")
    let bytes = try store.stringBytes(name, row: row)
    try copyCString(bytes, into: buffer, capacity: capacity, length: length, what: "string \(row) of '\(name)'")
  }
}

@_cdecl("lift_store_search")
public func cLiftStoreSearch(_ handle: OpaquePointer?, _ queries: UnsafePointer<Float>?, _ nq: Int64,
                             _ d: Int64, _ k: Int64, _ indices: UnsafeMutablePointer<Int64>?,
                             _ scores: UnsafeMutablePointer<Float>?) -> lift_status {
  capi { () throws(LiftError) in
    let store = try object(handle, as: EmbeddingStore.self, "store")
    try requireNonNegative(nq, "nq")
    guard d == store.dim else { throw .shape("queries have d = \(d) but the store has D = \(store.dim)") }
    _ = try checkedCount(nq, d, "queries")
    guard k >= 1, k <= store.rows else { throw .argument("k must be in [1, \(store.rows)] (got \(k))") }
    if nq == 0 { return }
    try store.search(queries: try required(queries, "queries"), count: Int(nq), k: Int(k),
                     indices: indices, scores: scores)
  }
}

// MARK: - Writer

@_cdecl("lift_store_writer_create")
public func cLiftStoreWriterCreate(_ path: UnsafePointer<CChar>?, _ dataset: UnsafePointer<CChar>?,
                                   _ dim: Int64, _ dtype: lift_dtype, _ flags: UInt32,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let path = try requiredString(path, "path")
    guard flags & ~writerFlags == 0 else { throw .argument("unknown writer flags 0x\(String(flags & ~writerFlags, radix: 16))") }
    let writer = try EmbeddingStoreWriter(
      path: path, dataset: dataset.map { String(cString: $0) } ?? "embeddings", dim: dim, dtype: dtype,
      keys: flags & LIFT_WRITER_KEYS != 0, captions: flags & LIFT_WRITER_CAPTIONS != 0,
      overwrite: flags & LIFT_WRITER_OVERWRITE != 0)
    out.pointee = makeHandle(writer)
  }
}

/// n C strings as byte arrays; nil if the array pointer is NULL.
private func byteStrings(_ array: UnsafePointer<UnsafePointer<CChar>?>?, _ n: Int64, _ name: String) throws(LiftError) -> [[UInt8]]? {
  guard let array else { return nil }
  var result: [[UInt8]] = []
  result.reserveCapacity(Int(n))
  for i in 0..<Int(n) {
    guard let s = array[i] else { throw .argument("\(name)[\(i)] is NULL") }
    result.append(Array(UnsafeRawBufferPointer(start: s, count: strlen(s))))
  }
  return result
}

@_cdecl("lift_store_writer_append")
public func cLiftStoreWriterAppend(_ handle: OpaquePointer?, _ rows: UnsafePointer<Float>?, _ n: Int64,
                                   _ keys: UnsafePointer<UnsafePointer<CChar>?>?,
                                   _ captions: UnsafePointer<UnsafePointer<CChar>?>?) -> lift_status {
  capi { () throws(LiftError) in
    let writer = try object(handle, as: EmbeddingStoreWriter.self, "writer")
    try requireNonNegative(n, "n")
    _ = try checkedCount(n, writer.dim, "rows")
    let data = n == 0 ? UnsafePointer<Float>(bitPattern: 16)! : try required(rows, "rows")
    try writer.append(data, rows: n, keys: try byteStrings(keys, n, "keys"),
                      captions: try byteStrings(captions, n, "captions"))
  }
}

@_cdecl("lift_store_writer_rows")
public func cLiftStoreWriterRows(_ handle: OpaquePointer?, _ rows: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let writer = try object(handle, as: EmbeddingStoreWriter.self, "writer")
    try required(rows, "rows").pointee = writer.rows
  }
}

@_cdecl("lift_store_writer_finish")
public func cLiftStoreWriterFinish(_ handle: OpaquePointer?) -> lift_status {
  capi { () throws(LiftError) in
    try object(handle, as: EmbeddingStoreWriter.self, "writer").finish()
  }
}

@_cdecl("lift_store_writer_free")
public func cLiftStoreWriterFree(_ handle: OpaquePointer?) { releaseHandle(handle) }
