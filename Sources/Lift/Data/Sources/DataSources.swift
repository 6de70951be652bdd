import Glibc

/// Opening image-caption data as users have it, with its kind detected from the content:
/// - liblift HDF5 datasets (files starting with HDF5's signature, or a folder of .h5 shards; they
///   carry their captions);
/// - webdataset tar shards: .tar files, brace patterns (`shards/{00000..00099}.tar`), or a folder
///   holding .tar files;
/// - image folders: a folder of shard subfolders of images (the LIFT repository's `images/`,
///   also found as `<root>/images`), or a flat folder of images;
/// - an image folder with an index file (`index`: CSV or JSONL listing its images).
/// All but the first need an embedding store keyed by sample (`embeddings`); tar samples may
/// carry their own `.npy` / `.emb` embeddings instead.
public enum DataSources {
  public enum Kind: String, Sendable {
    case dataset
    case tarShards = "tar"
    case imageFolders = "folders"
    case indexedFolder = "index"
  }

  public struct Request {
    public var paths: [String]
    public var embeddings: [String] = []
    public var index: String? = nil
    public init(paths: [String], embeddings: [String] = [], index: String? = nil) {
      self.paths = paths
      self.embeddings = embeddings
      self.index = index
    }
  }

  /// Most paths a brace pattern may expand to.
  static let maxExpansion = 1 << 20

  public static func open(_ request: Request) throws(LiftError) -> SampleSource {
    let (kind, paths) = try detect(request)
    let store = request.embeddings.isEmpty ? nil : try EmbeddingStore(paths: request.embeddings.flatMap { p in
      (try? expandBraces(p)) ?? [p]
    })
    func needStore() throws(LiftError) -> EmbeddingStore {
      guard let store else {
        throw .argument("\(paths[0]) holds images without caption embeddings: give the embedding store keyed by sample (--embeddings)")
      }
      return store
    }
    switch kind {
    case .dataset:
      guard request.embeddings.isEmpty else {
        throw .argument("a liblift dataset carries its caption embeddings; an embedding store is not used with it")
      }
      return try ImageDataset(paths: paths)
    case .tarShards:
      return try TarShardSource(paths: paths, store: store)
    case .imageFolders:
      return try ImageFolderSource(root: paths[0], store: try needStore())
    case .indexedFolder:
      return try IndexedFolderSource(root: paths[0], index: request.index!, store: try needStore())
    }
  }

  /// The kind of the data and the paths to open (patterns expanded, folders resolved).
  public static func detect(_ request: Request) throws(LiftError) -> (Kind, [String]) {
    guard !request.paths.isEmpty else { throw .argument("no data given") }
    var paths: [String] = []
    for p in request.paths { paths += try expandBraces(p) }
    if let index = request.index {
      guard paths.count == 1, isDirectory(paths[0]) else {
        throw .argument("an index file (\(index)) goes with one images folder; got \(paths.joined(separator: ", "))")
      }
      return (.indexedFolder, paths)
    }
    if paths.count == 1, isDirectory(paths[0]) {
      let folder = paths[0]
      let (files, folders) = try ImageFolderSource.entries(folder)
      let tars = files.filter { $0.lowercased().hasSuffix(".tar") }
      if !tars.isEmpty { return (.tarShards, tars.map { folder + "/" + $0 }) }
      // A folder of liblift dataset shards (what `lift build` writes).
      let h5 = files.filter { $0.lowercased().hasSuffix(".h5") || $0.lowercased().hasSuffix(".hdf5") }
      if !h5.isEmpty, !files.contains(where: ImageFolderSource.isImageName), folders.isEmpty {
        return (.dataset, h5.map { folder + "/" + $0 })
      }
      if folders.contains("images"), !files.contains(where: ImageFolderSource.isImageName) {
        return (.imageFolders, [folder + "/images"])
      }
      return (.imageFolders, [folder])
    }
    var kinds = Set<Kind>()
    for p in paths {
      guard !isDirectory(p) else { throw .argument("'\(p)' is a folder: give one folder, or files of one kind") }
      let head = try fileHead(p)
      if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {
        kinds.insert(.dataset)
      } else if head.count >= 262, Array(head[257..<262]) == Array("ustar".utf8) || p.lowercased().hasSuffix(".tar") {
        kinds.insert(.tarShards)
      } else {
        throw .format("'\(p)' is neither a liblift HDF5 dataset nor a tar shard")
      }
    }
    guard kinds.count == 1 else { throw .argument("the data mixes HDF5 datasets and tar shards; give files of one kind") }
    return (kinds.first!, paths)
  }

  /// Brace expansion as shells do it: `a{1..3}b` -> a1b a2b a3b (zero padded when the bounds
  /// are, `{00..10}`), `{x,y}` -> x y; several groups multiply. A path without braces is itself.
  public static func expandBraces(_ pattern: String) throws(LiftError) -> [String] {
    let chars = Array(pattern)
    guard let open = chars.firstIndex(of: "{") else { return [pattern] }
    guard let close = chars[open...].firstIndex(of: "}") else { throw .argument("'\(pattern)': a '{' without '}'") }
    let head = String(chars[..<open]), body = String(chars[(open + 1)..<close]), tail = String(chars[(close + 1)...])
    var choices: [String] = []
    let range = body.split(separator: ".", omittingEmptySubsequences: false)
    if range.count == 3, range[1].isEmpty, let lo = Int(range[0]), let hi = Int(range[2]) {
      guard abs(hi - lo) < maxExpansion else { throw .argument("'\(pattern)' expands to more than \(maxExpansion) paths") }
      let width = (range[0].hasPrefix("0") || range[2].hasPrefix("0")) ? max(range[0].count, range[2].count) : 0
      for v in stride(from: lo, through: hi, by: lo <= hi ? 1 : -1) {
        let digits = String(abs(v))
        let padded = String(repeating: "0", count: max(0, width - digits.count - (v < 0 ? 1 : 0))) + digits
        choices.append((v < 0 ? "-" : "") + padded)
      }
    } else if body.contains(",") {
      choices = body.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    } else {
      throw .argument("'\(pattern)': braces hold a range {a..b} or a list {x,y}; got {\(body)}")
    }
    var out: [String] = []
    for rest in try expandBraces(tail) {
      for c in choices {
        out.append(head + c + rest)
        guard out.count <= maxExpansion else { throw .argument("'\(pattern)' expands to more than \(maxExpansion) paths") }
      }
    }
    // Order: the first group varies slowest.
    let restCount = out.count / max(choices.count, 1)
    return (0..<choices.count).flatMap { c in (0..<restCount).map { r in out[r * choices.count + c] } }
  }

  /// What tar shards or image folders hold, from their listings alone (no embeddings needed):
  /// files, samples, samples with their own embedding, and problems the listing shows.
  public static func census(_ path: String) throws(LiftError) -> String {
    try walk(path, decode: false)
  }

  /// Reads and decodes every image of tar shards or image folders as well: a one-line summary
  /// with the samples that cannot be used, by kind.
  public static func decodeAll(_ path: String) throws(LiftError) -> String {
    try walk(path, decode: true)
  }

  /// Every sample of tar shards or image folders, listed (and with `decode`, each image read and
  /// decoded), summarised in one line.
  private static func walk(_ path: String, decode: Bool) throws(LiftError) -> String {
    let (kind, paths) = try detect(Request(paths: [path]))
    var bad = DataLoader.BadSamples()
    var samples = 0, embedded = 0, shards = 0
    let scratch = ScratchBuffer()
    /// Counts a listed sample; decodes its image (read by `bytes`) when asked.
    func visit(_ ref: SampleRef, _ bytes: () throws(LiftError) -> [UInt8]?) throws(LiftError) {
      samples += 1
      if ref.embeddingOffset >= 0 { embedded += 1 }
      if let problem = ref.problem { bad.add(problem, "\(ref.key): \(ref.problemDetail)"); return }
      guard decode else { return }
      guard let data = try bytes() else { bad.add(.truncated, "\(ref.key): the file ends inside the image"); return }
      let failure = data.withUnsafeBytes { (b) -> LiftError? in
        do throws(LiftError) {
          _ = try ImageDecoder.decode(b, header: try ImageDecoder.header(b), channels: 3, into: scratch)
          return nil
        } catch {
          return error
        }
      }
      if let failure { bad.add(failure.sampleProblem ?? .corrupt, "\(ref.key): \(failure.message)") }
    }
    var text: String
    switch kind {
    case .tarShards:
      let files = OpenFiles()
      for p in paths {
        let refs = try TarListing.samples(path: p, shard: 0, firstID: 0)
        if !refs.isEmpty { shards += 1 }
        for ref in refs {
          try visit(ref) { () throws(LiftError) -> [UInt8]? in
            var bytes = [UInt8](repeating: 0, count: Int(ref.imageLength))
            let fd = try files.descriptor(p)
            let short = try bytes.withUnsafeMutableBufferPointer { (b) throws(LiftError) in
              try preadAll(fd, b.baseAddress!, count: b.count, at: ref.imageOffset)
            }
            return short == nil ? bytes : nil
          }
        }
      }
      text = "\(path): webdataset tar shards: \(paths.count) file\(paths.count == 1 ? "" : "s"), \(samples) samples"
        + (embedded > 0 ? ", \(embedded) with their own npy/emb embedding" : "; caption embeddings come from a store keyed by sample")
    case .imageFolders:
      let root = paths[0]
      let (files, folders) = try ImageFolderSource.entries(root)
      for (i, folder) in ([""] + folders).enumerated() {
        let dir = i == 0 ? root : root + "/" + folder
        let names = (i == 0 ? files : try ImageFolderSource.entries(dir).files).filter { ImageFolderSource.isImageName($0) }
        if !names.isEmpty { shards += 1 }
        for ref in imageRefs(names, shard: 0, firstID: 0, where: dir) {
          try visit(ref) { () throws(LiftError) -> [UInt8]? in
            try readWholeFile(dir + "/" + ref.key, limit: Int(ImageDataset.maxEncodedBytes))
          }
        }
      }
      text = "\(path): image folders under '\(root)': \(shards) shard\(shards == 1 ? "" : "s"), \(samples) images; "
        + "caption embeddings come from a store keyed by file name"
    case .dataset, .indexedFolder:
      throw .argument("'\(path)' is not tar shards or an image folder")
    }
    if decode {
      text += "; read and decoded"
    }
    guard bad.total > 0 else { return text + (decode ? ", all usable" : "") }
    return text + "; \(bad.total) cannot be used (training skips them): \(bad.description)"
  }

  public static func isDirectory(_ path: String) -> Bool { FileSystem.isDirectory(path) }

  /// The first 512 bytes of a file (fewer if it is shorter).
  private static func fileHead(_ path: String) throws(LiftError) -> [UInt8] {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var head = [UInt8](repeating: 0, count: 512)
    let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress!, 512) }
    guard n >= 0 else { throw .io("cannot read '\(path)': \(String(cString: strerror(errno)))") }
    return Array(head.prefix(n))
  }
}
