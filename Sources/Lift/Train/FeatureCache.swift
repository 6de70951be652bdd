import CHDF5
import Glibc

/// The pooled features (count x width) of every image of a dataset under a frozen image tower:
/// with the whole tower locked and no augmentation, an image's feature never changes, so it is
/// computed once (`Model.features`, images prepared as the data loader prepares them without
/// augmentation) and every later step trains the head on it (`Trainer.step(features:...)`).
///
/// Kept in memory, and optionally in an HDF5 file (dataset "features", float32 count x width,
/// root attributes "lift.kind" = "feature_cache" and "lift.fingerprint") that later runs and
/// resumed runs read instead of recomputing. The fingerprint covers the tower's parameters,
/// the image preprocessing and the dataset's files (path, size, modification time): a file made
/// for anything else is recomputed and replaced. A file at that path that is not a feature
/// cache is never overwritten.
public final class FeatureCache {
  public let count: Int
  public let width: Int
  public let fingerprint: String
  /// count x width, row i = image i of the dataset.
  let rows: UnsafeMutablePointer<Float>
  /// The rows of the last `rows(for:)` call.
  private var batchRows: GrowableFloats

  static let kind = "feature_cache"

  init(count: Int, width: Int, fingerprint: String) throws(LiftError) {
    let floats = try checkedCount(Int64(count), Int64(width), "the feature cache of \(count) images")
    rows = try allocateFloats(floats, what: "the pooled features of \(count) images (\(floats / 262_144) MiB)")
    do {
      batchRows = try GrowableFloats(0, what: "a batch of pooled features")
    } catch {
      rows.deallocate()
      throw error
    }
    self.count = count
    self.width = width
    self.fingerprint = fingerprint
  }

  deinit {
    rows.deallocate()
    batchRows.release()
  }

  /// What made the features: reading them from a file needs the same.
  public static func fingerprint(model: Model, dataset: ImageDataset) -> String {
    let c = model.config, l = model.layout
    var h = Hash64()
    // The tower's parameters (a prefix of the buffer: the head follows).
    h.add(UnsafeRawPointer(model.parameters), bytes: l.offset(ofGroup: l.towerGroups) * 4)
    var settings = c.json
    if case .object(let members) = settings {
      // The head's settings do not change the features.
      settings = .object(members.filter { !["head_layers", "text_dim", "objective"].contains($0.0) })
    }
    h.add(settings.serialized)
    for path in dataset.paths {
      var st = stat()
      let found = stat(path, &st) == 0
      h.add("\(path)|\(found ? Int(st.st_size) : -1)|\(found ? st.st_mtim.tv_sec : 0).\(found ? st.st_mtim.tv_nsec : 0)")
    }
    h.add("\(dataset.count)x\(dataset.height)x\(dataset.width)x\(dataset.channels)")
    return String(h.value, radix: 16)
  }

  /// The features of every image of `dataset` under `model`'s tower: read from `path` when it
  /// holds a cache with this fingerprint, else computed in chunks of `chunk` images (and written
  /// to `path` when given, atomically). With a communicator every rank computes its share and
  /// all get the whole cache; rank 0 alone writes the file. `progress(done, total)` reports.
  /// Returns whether the features were computed (false: read from the file).
  public static func make(model: Model, dataset: ImageDataset, path: String?, chunk: Int = 64,
                          communicator comm: Communicator? = nil,
                          progress: ((Int, Int) -> Void)? = nil) throws(LiftError) -> (FeatureCache, computed: Bool) {
    guard dataset.count >= 1, dataset.count <= Int64(Int32.max) else {
      throw .argument("a feature cache holds 1 to \(Int32.max) images; the data has \(dataset.count)")
    }
    let cache = try FeatureCache(count: Int(dataset.count), width: model.config.width,
                                 fingerprint: fingerprint(model: model, dataset: dataset))
    var readable = false
    if let path { readable = try cache.read(path) }
    if let comm, comm.size > 1 {
      // Read only if every rank can (a file on a disk the others do not share is recomputed).
      readable = try comm.allGather(readable ? 1 : 0).allSatisfy { $0 == 1 }
    }
    if readable { return (cache, false) }
    try cache.compute(model: model, dataset: dataset, chunk: chunk, communicator: comm, progress: progress)
    if let path, (comm?.rank ?? 0) == 0 { try cache.write(path) }
    return (cache, true)
  }

  /// Copies the features of images `indices` (each in [0, count)) into `out` (indices.count x width).
  public func gather(_ indices: [Int64], into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    for (i, index) in indices.enumerated() {
      guard index >= 0, index < Int64(count) else {
        throw .argument("image \(index) is outside the feature cache of \(count) images")
      }
      (out + i * width).update(from: rows + Int(index) * width, count: width)
    }
  }

  /// The features of images `indices` (indices.count x width), valid until the next call.
  public func rows(for indices: [Int64]) throws(LiftError) -> UnsafePointer<Float> {
    try batchRows.reserve(indices.count * width)
    try gather(indices, into: batchRows.pointer)
    return UnsafePointer(batchRows.pointer)
  }

  /// The features of image `index` (for tests; `rows(for:)` checks its indices).
  func row(_ index: Int) -> UnsafeBufferPointer<Float> {
    precondition(index >= 0 && index < count)
    return UnsafeBufferPointer(start: rows + index * width, count: width)
  }

  // MARK: Computing

  private func compute(model: Model, dataset: ImageDataset, chunk: Int, communicator comm: Communicator?,
                       progress: ((Int, Int) -> Void)?) throws(LiftError) {
    let workers = comm?.size ?? 1
    guard chunk >= 1, chunk <= 1 << 16 else { throw .argument("the feature chunk must be in [1, 65536] (got \(chunk))") }
    var options = DataLoader.Options(batchSize: chunk * workers, imageSize: model.config.imageSize,
                                     channels: model.config.channels)
    options.shuffle = false
    options.rank = comm?.rank ?? 0
    options.workers = workers
    let loader = try DataLoader(dataset: dataset, options: options)
    defer { loader.close() }
    let staging = try allocateFloats((chunk + 1) * width, what: "a chunk of pooled features")
    defer { staging.deallocate() }
    if workers > 1 { rows.initialize(repeating: 0, count: count * width) }
    var done = 0
    for _ in 0..<loader.batchesPerEpoch {
      let batch = try loader.next()
      try model.features(.uint8NHWC(UnsafePointer(batch.images)), count: batch.count, chunk: chunk, into: staging)
      for (i, index) in batch.indices.enumerated() {
        (rows + Int(index) * width).update(from: staging + i * width, count: width)
      }
      done += batch.globalCount
      progress?(done, count)
    }
    // Each rank filled its share; the others' rows are zero, so the sum is every row exactly.
    if let comm, workers > 1 {
      var start = 0
      let total = count * width
      while start < total {
        let n = min(total - start, 1 << 28)
        try comm.allReduceSum(rows + start, count: n)
        start += n
      }
    }
  }

  // MARK: The file

  /// Reads the cache at `path` if it is one with this fingerprint and shape. A missing file or
  /// another fingerprint is false; a file that is not a feature cache is an error (it is never
  /// replaced).
  func read(_ path: String) throws(LiftError) -> Bool {
    guard access(path, F_OK) == 0 else { return false }
    let file = try FeatureCache.openFile(path)
    guard try HDF5.readStringAttribute(file.id, "lift.fingerprint", path: path) == fingerprint else { return false }
    let dataset = try HDF5.openDataset(file.id, "features", path: path)
    let dims = try HDF5.dims(of: dataset.id)
    guard dims == [UInt64(count), UInt64(width)] else {
      throw .shape("'\(path)': features have shape \(HDF5.shapeString(dims)); expected (\(count), \(width))")
    }
    try readRows(dataset, path)
    return true
  }

  /// The cache file at `path` as it is, whatever made it (for `lift info` and `lift check`):
  /// every feature read and checked finite.
  public static func load(path: String) throws(LiftError) -> FeatureCache {
    let opened = try openAny(path)
    let h = opened.header
    let cache = try FeatureCache(count: h.count, width: h.width, fingerprint: h.fingerprint)
    try cache.readRows(opened.dataset, path)
    return cache
  }

  /// The shape and fingerprint of the cache file at `path`, without reading its features.
  public static func header(path: String) throws(LiftError) -> (count: Int, width: Int, fingerprint: String) {
    try openAny(path).header
  }

  /// Opens the cache file at `path` and its features, whatever its fingerprint, and checks
  /// their shape.
  private static func openAny(_ path: String) throws(LiftError)
    -> (file: H5Object, dataset: H5Object, header: (count: Int, width: Int, fingerprint: String)) {
    let file = try openFile(path)
    guard let fingerprint = try HDF5.readStringAttribute(file.id, "lift.fingerprint", path: path) else {
      throw .format("'\(path)': the feature cache has no 'lift.fingerprint' attribute")
    }
    let dataset = try HDF5.openDataset(file.id, "features", path: path)
    let dims = try HDF5.dims(of: dataset.id)
    guard dims.count == 2, (1...UInt64(Int32.max)).contains(dims[0]), (1...UInt64(1 << 16)).contains(dims[1]) else {
      throw .shape("'\(path)': features have shape \(HDF5.shapeString(dims)); expected (images, width) "
                   + "with 1 to \(Int32.max) images of width 1 to 65536")
    }
    // liblift writes caches uncompressed: a file smaller than its features is not one (and its
    // declared shape must not size an allocation).
    var st = stat()
    let bytes = dims[0] * dims[1] * 4
    guard stat(path, &st) == 0, bytes <= UInt64(max(st.st_size, 0)) else {
      throw .format("'\(path)': features of shape \(HDF5.shapeString(dims)) need \(bytes) bytes, more than the file holds "
                    + "(\(st.st_size)); liblift's feature caches are stored uncompressed")
    }
    return (file, dataset, (Int(dims[0]), Int(dims[1]), fingerprint))
  }

  /// Opens `path` and checks it says it is a feature cache.
  private static func openFile(_ path: String) throws(LiftError) -> H5Object {
    HDF5.prepareThread()
    let file = try HDF5.openReadOnly(path)
    guard try HDF5.readStringAttribute(file.id, "lift.kind", path: path) == FeatureCache.kind else {
      throw .io("'\(path)' exists and is not a liblift feature cache; it is left alone (choose another path)")
    }
    return file
  }

  /// Reads `dataset` (count x width floats, shape already checked) into the rows, all finite.
  private func readRows(_ dataset: H5Object, _ path: String) throws(LiftError) {
    let type = H5Object(H5Dget_type(dataset.id), .datatype)
    guard type.id >= 0, H5Tget_class(type.id) == H5T_FLOAT else {
      throw .format("'\(path)': features are not floating point")
    }
    guard H5Dread(dataset.id, lift_h5t_native_float(), lift_h5s_all(), lift_h5s_all(), lift_h5p_default(), rows) >= 0 else {
      throw .io("cannot read the features of '\(path)': \(HDF5.takeErrorDescription())")
    }
    if let j = VectorOps.firstNonFinite(rows, count * width) {
      throw .value("'\(path)': the feature of image \(j / width) is not finite")
    }
  }

  /// Writes the cache to `path` (atomically), replacing an older feature cache there.
  private func write(_ path: String) throws(LiftError) {
    let writer = try H5FileWriter(path: path, overwrite: true)
    let features = try writer.createDataset("features", rowShape: [width], type: lift_h5t_ieee_f32le())
    try features.append(UnsafeRawPointer(rows), count: Int64(count), memType: lift_h5t_native_float())
    try writer.setAttribute("lift.kind", FeatureCache.kind)
    try writer.setAttribute("lift.fingerprint", fingerprint)
    try writer.finish()
  }
}

/// A 64-bit hash of bytes and strings (FNV-1a on 8-byte words), for fingerprints, not security.
struct Hash64 {
  private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

  mutating func add(_ bytes: UnsafeRawPointer, bytes count: Int) {
    var i = 0
    while i + 8 <= count {
      value = (value ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x100_0000_01b3
      i += 8
    }
    while i < count {
      value = (value ^ UInt64(bytes.load(fromByteOffset: i, as: UInt8.self))) &* 0x100_0000_01b3
      i += 1
    }
  }

  mutating func add(_ text: String) {
    var t = text + "\u{0}"
    t.withUTF8 { add($0.baseAddress!, bytes: $0.count) }
  }
}
