import Glibc

/// Reading a file from an untrusted source in full, in a separate process.
///
/// liblift's own readers check every size, index and value, but an HDF5 file is parsed by
/// libhdf5, which can crash or loop on crafted metadata (a damaged global heap behind a
/// variable-length string, say). `readAll` reads everything liblift would read from a file, in
/// this process; `isolated` runs that read in a child process with a time limit and a memory
/// limit and turns the child's end into a verdict, so a fault below liblift ends the child,
/// never the caller.
///
/// The child is started with posix_spawn (vfork + exec), never a bare fork, so it is safe from a
/// multi-threaded host: nothing of the host's threads, locks or libhdf5 state is copied into a
/// process that keeps running. Protocol: the child's standard output ends with one line,
/// `ok<TAB>summary` or `error<TAB>status<TAB>message`.
public enum FileCheck {
  /// What the file is expected to hold (lift_file_kind).
  public enum Expected: Int32, Sendable, CaseIterable {
    /// Judged from the content, as `lift check` does.
    case any = 0
    /// A model or a training checkpoint (safetensors).
    case model = 1
    case store = 2
    case dataset = 3
    case captions = 4
    case featureCache = 5
    /// Tar shards (a path or a `{a..b}` pattern) or a folder of images.
    case imageSource = 6

    var noun: String {
      switch self {
      case .any: return "a liblift file"
      case .model: return "a model or training checkpoint"
      case .store: return "an embedding store"
      case .dataset: return "an image-caption dataset"
      case .captions: return "a captions file"
      case .featureCache: return "a feature cache"
      case .imageSource: return "an image source (tar shards or an image folder)"
      }
    }
  }

  // MARK: Reading in full (in this process)

  /// Opens `path` as `expected` (or as what its content says, for `.any`) and reads all of it:
  /// every tensor, row, image (decoded), caption, label, class name and string. Returns a
  /// one-line summary of what the file holds.
  public static func readAll(_ path: String, expecting expected: Expected = .any) throws(LiftError) -> String {
    if expected == .imageSource || (expected == .any && looksLikeImageSource(path)) {
      let text = try DataSources.decodeAll(path)
      return text.hasPrefix(path + ": ") ? String(text.dropFirst(path.count + 2)) : text
    }
    let kind = try LiftFileKind.of(path: path)
    guard expected == .any || expected == expectedKind(of: kind) else {
      throw .format("'\(path)' is not \(expected.noun): its content is \(describe(kind))")
    }
    // The root's string attributes (lift.kind, lift.fingerprint, channels, model, ...), which
    // the readers of every HDF5 kind read some of.
    if [.dataset, .captions, .store, .featureCache].contains(kind) { _ = try HDF5.readRootStringAttributes(path) }
    switch kind {
    case .safetensors: return try readModel(path)
    case .dataset: return try readDataset(path)
    case .captions:
      let file = try CaptionsFile(path: path)
      _ = try file.classNames()
      try readStore(file.captions)
      return "captions file of \(file.captions.rows) captions, \(file.classCount) classes"
    case .store:
      let store = try EmbeddingStore(paths: [path])
      try readStore(store)
      return "embedding store of \(store.rows) x \(store.dim)"
    case .featureCache:
      let cache = try FeatureCache.load(path: path)
      return "feature cache of \(cache.count) x \(cache.width)"
    case .otherHDF5, .unknown:
      throw .format("'\(path)' is \(describe(kind))")
    }
  }

  static func looksLikeImageSource(_ path: String) -> Bool {
    DataSources.isDirectory(path) || path.contains("{") || path.lowercased().hasSuffix(".tar")
  }

  private static func expectedKind(of kind: LiftFileKind) -> Expected? {
    switch kind {
    case .safetensors: return .model
    case .dataset: return .dataset
    case .captions: return .captions
    case .store: return .store
    case .featureCache: return .featureCache
    case .otherHDF5, .unknown: return nil
    }
  }

  private static func describe(_ kind: LiftFileKind) -> String {
    switch kind {
    case .safetensors: return "safetensors (a model or checkpoint)"
    case .dataset: return "an image-caption dataset"
    case .captions: return "a captions file"
    case .store: return "an embedding store"
    case .featureCache: return "a feature cache"
    case .otherHDF5:
      return "an HDF5 file but not a liblift one (no images/pixels, images/encoded, captions/embeddings, "
        + "embeddings or feature-cache features dataset)"
    case .unknown: return "neither safetensors nor HDF5"
    }
  }

  private static func readModel(_ path: String) throws(LiftError) -> String {
    let model = try Model.load(path: path)
    if let (trainer, _) = try? Trainer.load(path: path, batchCapacity: 1) {
      return "training checkpoint at step \(trainer.step), \(model.layout.parameterCount) parameters"
    }
    return "model, \(model.layout.parameterCount) parameters"
  }

  private static func readDataset(_ path: String) throws(LiftError) -> String {
    let ds = try ImageDataset(paths: [path])
    var undecodable = DataLoader.BadSamples()
    var pixels = [UInt8](repeating: 0, count: ds.encoded ? 0 : ds.imageBytes)
    let scratch = ScratchBuffer()
    for i in 0..<ds.count {
      if ds.encoded {
        if let failure = decodeFailure(try ds.encodedImage(i), scratch: scratch) {
          guard let problem = failure.sampleProblem else { throw failure }
          undecodable.add(problem, "image \(i): \(failure.message)")
        }
      } else {
        try [i].withUnsafeBufferPointer { (rows) throws(LiftError) in
          try pixels.withUnsafeMutableBufferPointer { (p) throws(LiftError) in try ds.readPixels(rows, into: p.baseAddress!) }
        }
      }
      _ = try ds.captionRows(of: i)
    }
    if ds.hasLabels {
      // In chunks, so a declared image count does not size a buffer.
      var labels = [Int64](repeating: 0, count: 1 << 16)
      var first: Int64 = 0
      while first < ds.count {
        let rows = (first..<min(first + Int64(labels.count), ds.count)).map { $0 }
        try rows.withUnsafeBufferPointer { (list) throws(LiftError) in
          try labels.withUnsafeMutableBufferPointer { (out) throws(LiftError) in try ds.readLabels(list, into: out.baseAddress!) }
        }
        first += Int64(rows.count)
      }
    }
    _ = try ds.classNames()
    _ = try ds.compositionalPairs()
    try readStore(ds.captions)
    return "dataset of \(ds.count) \(ds.encoded ? "encoded " : "")images, \(ds.captions.rows) captions, \(ds.classCount) classes"
      + (undecodable.total > 0
        ? "; \(undecodable.total) images do not decode (training skips them): \(undecodable.description)" : "")
  }

  /// The error decoding `bytes` as an image ends in, or nil if it decodes.
  private static func decodeFailure(_ bytes: [UInt8], scratch: ScratchBuffer) -> LiftError? {
    bytes.withUnsafeBytes { (b) -> LiftError? in
      do throws(LiftError) {
        _ = try ImageDecoder.decode(b, header: try ImageDecoder.header(b), channels: 3, into: scratch)
        return nil
      } catch {
        return error
      }
    }
  }

  /// The string datasets liblift reads from a store: keys, caption texts, and the text columns
  /// of evaluation texts (`TextEmbeddings.textColumns`).
  static let storeStrings = ["keys", "captions/text"] + TextEmbeddings.textColumns

  private static func readStore(_ store: EmbeddingStore) throws(LiftError) {
    try store.validate()
    for name in storeStrings where (try? store.hasStrings(name)) == true {
      for r in 0..<store.rows { _ = try store.stringBytes(name, row: r) }
    }
  }
}
