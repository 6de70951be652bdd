import CHDF5
import Glibc

/// Image embeddings kept between evaluations (`--image-cache FILE`): an embedding store
/// (float32, a `keys` dataset) whose root attributes say what made it: `lift.kind` =
/// "image_embeddings" and `lift.fingerprint` (the model's parameters and configuration, and
/// the preprocessing). A row's key is the image file's real path, size and modification time,
/// so suites that share images (COCO retrieval and SugarCrepe on val2017) encode each once,
/// and a changed file is encoded again. A cache made by another model or preprocessing is
/// refused (never overwritten); images that could not be read are not cached.
public enum ImageEmbeddingCache {
  public static let kind = "image_embeddings"

  /// What the embeddings depend on.
  public static func fingerprint(model: Model, options: ImageEncoding.Options) -> String {
    var h = Hash64()
    h.add(UnsafeRawPointer(model.parameters), bytes: model.layout.totalCount * 4)
    h.add(model.config.json.serialized)
    h.add("filter=\(options.filter.rawValue) resize=\(options.resize.map(String.init) ?? "-") reduced=\(options.reducedDecode)")
    return String(h.value, radix: 16)
  }

  /// The cache key of an image file ("" if it cannot be stat'ed: never found, never stored).
  public static func key(of path: String) -> String {
    var st = stat()
    guard stat(path, &st) == 0, let resolved = realpath(path, nil) else { return "" }
    defer { free(resolved) }
    return "\(String(cString: resolved))|\(st.st_size)|\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
  }

  /// Rows of `keys` found in the cache at `path` (copied into `out`, rows in key order), or
  /// an empty set when there is no file. Errors: a file that is not such a cache, or one made
  /// with another fingerprint.
  static func read(_ path: String, fingerprint: String, keys: [String], into out: FloatMatrix) throws(LiftError) -> Set<Int> {
    guard access(path, F_OK) == 0 else { return [] }
    let store = try EmbeddingStore(paths: [path])
    let file = store.shards[0].file.id
    let madeBy = try HDF5.readStringAttribute(file, "lift.fingerprint", path: path)
    guard try HDF5.readStringAttribute(file, "lift.kind", path: path) == kind, let madeBy else {
      throw .format("'\(path)' is not an image-embedding cache (no lift.kind = \(kind)): give another --image-cache path")
    }
    guard madeBy == fingerprint else {
      throw .value("the image cache '\(path)' was made by another model or preprocessing (fingerprint \(madeBy), this run \(fingerprint)): "
                   + "give another --image-cache path or delete it")
    }
    guard store.dim == Int64(out.cols) else { throw .shape("the image cache '\(path)' holds \(store.dim)-d rows; the model makes \(out.cols)-d") }
    var found = Set<Int>(), wanted: [(Int, Int64)] = []
    for (i, key) in keys.enumerated() where !key.isEmpty {
      if let row = try store.rows(forKey: Array(key.utf8)).first { wanted.append((i, row)) }
    }
    guard !wanted.isEmpty else { return [] }
    let staged = try FloatMatrix(rows: wanted.count, cols: out.cols, what: "\(wanted.count) cached embeddings")
    let rows = wanted.map(\.1)
    try rows.withUnsafeBufferPointer { (l) throws(LiftError) in try store.read(rows: l, into: staged.pointer, capacity: rows.count * out.cols) }
    for (k, (i, _)) in wanted.enumerated() {
      out.row(i).update(from: staged.row(k), count: out.cols)
      found.insert(i)
    }
    return found
  }

  /// Writes the cache: the rows it held for other images (streamed, a block at a time) plus
  /// `rows` of `embeddings` under their `keys`. The file is replaced atomically.
  static func write(_ path: String, fingerprint: String, keys: [String], rows: [Int], embeddings: FloatMatrix) throws(LiftError) {
    let d = embeddings.cols, block = 1024
    let writer = try EmbeddingStoreWriter(path: path, dim: Int64(d), dtype: LIFT_DTYPE_FLOAT32, keys: true, overwrite: true)
    try writer.setAttribute("lift.kind", kind)
    try writer.setAttribute("lift.fingerprint", fingerprint)
    let staged = try FloatMatrix(rows: block, cols: d, what: "a block of cached embeddings")
    defer { withExtendedLifetime(staged) {} }  // appends read through its pointer
    if access(path, F_OK) == 0 {
      let old = try EmbeddingStore(paths: [path])
      let mine = Set(rows.map { keys[$0] })
      let buffer = try FloatMatrix(rows: block, cols: d, what: "a block of cached embeddings")
      var start: Int64 = 0
      while start < old.rows {
        let n = Int(min(Int64(block), old.rows - start))
        let oldKeys = try old.stringBytes("keys", from: start, count: n)
        try old.read(range: start, count: Int64(n), into: buffer.pointer, capacity: block * d)
        var kept: [[UInt8]] = []
        for (k, key) in oldKeys.enumerated() where !mine.contains(String(decoding: key, as: UTF8.self)) {
          staged.row(kept.count).update(from: buffer.row(k), count: d)
          kept.append(key)
        }
        if !kept.isEmpty { try writer.append(staged.pointer, rows: Int64(kept.count), keys: kept) }
        start += Int64(n)
      }
    }
    let fresh = rows.filter { !keys[$0].isEmpty }
    for first in stride(from: 0, to: fresh.count, by: block) {
      let part = fresh[first..<min(first + block, fresh.count)]
      for (k, i) in part.enumerated() { staged.row(k).update(from: embeddings.row(i), count: d) }
      try writer.append(staged.pointer, rows: Int64(part.count), keys: part.map { Array(keys[$0].utf8) })
    }
    try writer.finish()
  }
}
