import Glibc

/// Image files named by key, in shard folders: the LIFT repository's `images/<shard>/<key>.<ext>`
/// (each subfolder a shard; image files directly in the root form one more shard). A sample's key
/// is its file name, which meets the store's keys with or without the extension (LIFT's caption
/// parquet names `<key>.<ext>`). Files that are not images (captions, metadata) are ignored;
/// images in formats liblift does not decode (GIF, BMP, ...) are samples with a problem.
public final class ImageFolderSource: SampleSource {
  public let root: String
  /// Shard folders relative to the root ("" is the root itself), sorted.
  public let shards: [String]
  public let counts: [Int64]
  public let store: EmbeddingStore
  public var textDim: Int { Int(store.dim) }
  let firstIDs: ShardStarts
  private let lock = Lock()

  public var sampleCount: Int64 { firstIDs.total }
  public var shardSampleCounts: [Int64]? { counts }
  public var keyedStore: EmbeddingStore? { store }
  public var summary: String {
    "image folders under '\(root)': \(shards.count) shard\(shards.count == 1 ? "" : "s"), \(sampleCount) images; "
      + "caption embeddings from '\(store.paths[0])' by file name"
  }

  public init(root: String, store: EmbeddingStore) throws(LiftError) {
    let root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    var found: [(String, Int64)] = []
    let (files, folders) = try Self.entries(root)
    let own = files.filter { Self.isImageName($0) }.count
    if own > 0 { found.append(("", Int64(own))) }
    for folder in folders {
      let n = try Self.entries(root + "/" + folder).files.filter { Self.isImageName($0) }.count
      if n > 0 { found.append((folder, Int64(n))) }
    }
    guard !found.isEmpty else { throw .format("'\(root)' holds no image files (directly or in its subfolders)") }
    self.root = root
    shards = found.map(\.0)
    counts = found.map(\.1)
    self.store = store
    firstIDs = ShardStarts(counts: counts)
  }

  static let decodable = ["jpg", "jpeg", "png", "webp"]
  static let otherImages = ["gif", "bmp", "tif", "tiff", "avif", "heic", "jxl", "ppm"]

  static func extensionOf(_ name: String) -> String? {
    guard let dot = name.lastIndex(of: "."), dot > name.startIndex else { return nil }
    return name[name.index(after: dot)...].lowercased()
  }

  static func isImageName(_ name: String) -> Bool {
    guard let ext = extensionOf(name) else { return false }
    return decodable.contains(ext) || otherImages.contains(ext)
  }

  /// Regular files and subfolders of a folder, each sorted by name (bytes).
  static func entries(_ path: String) throws(LiftError) -> (files: [String], folders: [String]) {
    guard let dir = opendir(path) else { throw .io("cannot read the folder '\(path)': \(String(cString: strerror(errno)))") }
    defer { closedir(dir) }
    var files: [String] = [], folders: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
      if name == "." || name == ".." || name.hasPrefix(".") { continue }
      var st = stat()
      guard stat(path + "/" + name, &st) == 0 else { continue }
      if (st.st_mode & S_IFMT) == S_IFDIR { folders.append(name) } else if (st.st_mode & S_IFMT) == S_IFREG { files.append(name) }
    }
    return (files.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) },
            folders.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
  }

  public func listShard(_ s: Int) throws(LiftError) -> [SampleRef] {
    let folder = shards[s].isEmpty ? root : root + "/" + shards[s]
    let names = try Self.entries(folder).files.filter { Self.isImageName($0) }
    return imageRefs(names, shard: s, firstID: firstIDs.starts[s], where: folder)
  }

  private var lastListed: (shard: Int, refs: [SampleRef])? = nil

  public func ref(index: Int64) throws(LiftError) -> SampleRef {
    try lock.withLock { () throws(LiftError) in
      try refByIndex(index, starts: firstIDs, cache: &lastListed) { (s) throws(LiftError) in try listShard(s) }
    }
  }

  /// The file of a sample: <root>/<shard>/<key>.
  func file(_ ref: SampleRef) -> String {
    shards[ref.shard].isEmpty ? root + "/" + ref.key : root + "/" + shards[ref.shard] + "/" + ref.key
  }

  public func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
                    pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
    try lock.withLock { () throws(LiftError) in
      try fetchFiles(refs, path: images ? file : nil, store: store, dim: textDim, into: arena, texts: texts, pick: pick)
    }
  }
}

/// Samples of a listing of image file names: key = name; a second file with the same key (by
/// SampleKey, so "a.jpg" and "a.png") and an image liblift cannot decode are samples with problems.
func imageRefs(_ names: [String], shard: Int, firstID: Int64, where folder: String) -> [SampleRef] {
  var seen = Set<UInt64>()
  return names.enumerated().map { i, name in
    var ref = fileRef(shard: shard, id: firstID + Int64(i), file: name, key: name)
    if ref.problem == nil, !seen.insert(SampleKey.hash(Array(name.utf8))).inserted {
      ref.problem = .duplicateKey
      ref.problemDetail = "'\(folder)' holds another image with the key of '\(name)'"
    }
    return ref
  }
}

/// The sample of image file `file`: a problem from the listing if its extension names an image
/// kind liblift does not decode.
func fileRef(shard: Int = 0, id: Int64, file: String, key: String) -> SampleRef {
  var ref = SampleRef(shard: shard, id: id, key: key)
  if let ext = ImageFolderSource.extensionOf(file), ImageFolderSource.otherImages.contains(ext) {
    ref.problem = .unsupported
    ref.problemDetail = "\(ext.uppercased()) images are not supported (JPEG, PNG and WebP are)"
  }
  return ref
}

/// Sample `index` of a sharded source, listing its shard (the last listing is kept: in-order
/// reads list each shard once).
func refByIndex(_ index: Int64, starts: ShardStarts, cache: inout (shard: Int, refs: [SampleRef])?,
                list: (Int) throws(LiftError) -> [SampleRef]) throws(LiftError) -> SampleRef {
  guard index >= 0, index < starts.total else { throw .argument("sample \(index) is out of range: there are \(starts.total)") }
  let s = starts.shardIndex(of: index)
  if cache?.shard != s { cache = (s, try list(s)) }
  let refs = cache!.refs
  let position = Int(index - starts.starts[s])
  guard position < refs.count else {
    throw .state("shard \(s) now lists \(refs.count) samples but held \(starts.counts[s]) when the data was opened: was it changed during the run?")
  }
  return refs[position]
}

/// Reads each sample's image file (at `path(ref)`; no images if nil) into the arena and its
/// caption embedding from the store by key (none without a store: images only).
func fetchFiles(_ refs: [SampleRef], path: ((SampleRef) -> String)?, store: EmbeddingStore?, dim: Int, into arena: ByteArena,
                texts: UnsafeMutablePointer<Float>, pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
  var out: [FetchedSample] = []
  var lookups = KeyedEmbeddings(store: store, dim: dim)
  for (i, ref) in refs.enumerated() {
    if let problem = ref.problem {
      out.append(.failed(problem, ref.problemDetail))
      continue
    }
    guard let path else {
      out.append(FetchedSample())
      lookups.request(slot: i, key: ref.key)
      continue
    }
    let file = path(ref)
    let fd = open(file, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      // The listing saw it: a file that vanished is a bad sample, not the end of the run.
      out.append(.failed(.empty, "cannot open '\(file)': \(String(cString: strerror(errno)))"))
      continue
    }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, Int64(st.st_size) <= ImageDataset.maxEncodedBytes else {
      out.append(.failed(.tooLarge, "'\(file)' is larger than \(ImageDataset.maxEncodedBytes) bytes"))
      continue
    }
    let size = Int(st.st_size)
    let start = try arena.append(size)
    if let short = try preadAll(fd, arena.base + start, count: size, at: 0) {
      out.append(.failed(.truncated, "'\(file)' shrank by \(short) bytes while being read"))
      continue
    }
    var sample = FetchedSample()
    sample.payload = .encoded(start: start, count: size)
    out.append(sample)
    if store != nil { lookups.request(slot: i, key: ref.key) }
  }
  try lookups.resolve(into: texts, samples: &out, pick: pick)
  return out
}

/// An image folder with an index file listing its images: CSV with a header holding an `image`
/// column (and optionally `key`), or JSONL objects with "image" (and "key"). Image paths are
/// relative to the folder; an image listed on several lines is one sample. A sample's key is its
/// `key` if the index has one, else its image path; its caption embedding is the store's row(s)
/// under that key. Indexed: the index is held in memory (a path and a key per image).
public final class IndexedFolderSource: SampleSource {
  public let root: String
  public let index: String
  public let images: [String]
  public let keys: [String]
  public let store: EmbeddingStore
  public var textDim: Int { Int(store.dim) }
  private let lock = Lock()

  public var sampleCount: Int64 { Int64(images.count) }
  public var shardSampleCounts: [Int64]? { nil }
  public var keyedStore: EmbeddingStore? { store }
  public var summary: String {
    "images under '\(root)' listed by '\(index)': \(images.count) images; caption embeddings from '\(store.paths[0])' by key"
  }

  public init(root: String, index: String, store: EmbeddingStore) throws(LiftError) {
    let entries = try IndexFile.read(index)
    var seen = Set<String>(), images: [String] = [], keys: [String] = []
    for e in entries where seen.insert(e.image).inserted {
      images.append(e.image)
      keys.append(e.key ?? e.image)
    }
    guard !images.isEmpty else { throw .format("'\(index)' lists no images") }
    self.root = root
    self.index = index
    self.images = images
    self.keys = keys
    self.store = store
  }

  public func listShard(_ s: Int) throws(LiftError) -> [SampleRef] {
    throw .internal("an indexed image folder is read by index, not listed by shard")
  }

  public func ref(index: Int64) throws(LiftError) -> SampleRef {
    guard index >= 0, index < sampleCount else { throw .argument("sample \(index) is out of range: there are \(sampleCount)") }
    return fileRef(id: index, file: images[Int(index)], key: keys[Int(index)])
  }

  public func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
                    pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
    try lock.withLock { () throws(LiftError) in
      try fetchFiles(refs, path: images ? { self.root + "/" + self.images[Int($0.id)] } : nil, store: store, dim: textDim,
                     into: arena, texts: texts, pick: pick)
    }
  }
}

/// Index files of image folders: CSV (RFC 4180 quoting) with a header, or JSON lines.
enum IndexFile {
  struct Entry {
    var image: String
    var key: String?
  }

  static func read(_ path: String) throws(LiftError) -> [Entry] {
    let bytes = try readWholeFile(path)
    if path.lowercased().hasSuffix(".jsonl") || path.lowercased().hasSuffix(".json") { return try jsonLines(bytes, path: path) }
    return try csv(bytes, path: path)
  }

  private static func jsonLines(_ bytes: [UInt8], path: String) throws(LiftError) -> [Entry] {
    var out: [Entry] = []
    for (n, line) in bytes.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
      guard line.contains(where: { $0 != 32 && $0 != 9 && $0 != 13 }) else { continue }
      let json = try JSON.parse(Array(line), what: "'\(path)' line \(n + 1)")
      guard let image = json["image"]?.string, !image.isEmpty else {
        throw .format("'\(path)' line \(n + 1): each line needs a non-empty \"image\" string")
      }
      try checkRelative(image, path: path, line: n + 1)
      out.append(Entry(image: image, key: json["key"]?.string))
    }
    return out
  }

  private static func csv(_ bytes: [UInt8], path: String) throws(LiftError) -> [Entry] {
    let rows = try csvRows(bytes, path: path)
    guard let header = rows.first else { throw .format("'\(path)' is empty") }
    guard let imageColumn = header.firstIndex(of: "image") else {
      throw .format("'\(path)': the header has no 'image' column (columns: \(header.joined(separator: ", ")))")
    }
    let keyColumn = header.firstIndex(of: "key")
    var out: [Entry] = []
    for (n, row) in rows.dropFirst().enumerated() {
      if row.count == 1 && row[0].isEmpty { continue }
      guard row.count == header.count else {
        throw .format("'\(path)' line \(n + 2) has \(row.count) fields; the header has \(header.count)")
      }
      guard !row[imageColumn].isEmpty else { throw .format("'\(path)' line \(n + 2): empty image") }
      try checkRelative(row[imageColumn], path: path, line: n + 2)
      out.append(Entry(image: row[imageColumn], key: keyColumn.map { row[$0] }))
    }
    return out
  }

  /// Image paths stay inside the folder: relative, with no ".." component.
  private static func checkRelative(_ image: String, path: String, line: Int) throws(LiftError) {
    guard !image.hasPrefix("/"), !image.split(separator: "/").contains("..") else {
      throw .format("'\(path)' line \(line): image '\(image)' must be a path inside the images folder (relative, no '..')")
    }
  }

  /// Records of a CSV file: fields separated by commas, quoted with double quotes ("" inside
  /// quotes is a quote), records ended by LF or CRLF.
  static func csvRows(_ bytes: [UInt8], path: String) throws(LiftError) -> [[String]] {
    var rows: [[String]] = [], row: [String] = [], field: [UInt8] = []
    var quoted = false, i = 0
    while i < bytes.count {
      let b = bytes[i]
      if quoted {
        if b == 34 {
          if i + 1 < bytes.count && bytes[i + 1] == 34 { field.append(34); i += 1 } else { quoted = false }
        } else {
          field.append(b)
        }
      } else if b == 34 && field.isEmpty {
        quoted = true
      } else if b == 44 {
        row.append(String(decoding: field, as: UTF8.self)); field = []
      } else if b == 10 || b == 13 {
        if b == 13 && i + 1 < bytes.count && bytes[i + 1] == 10 { i += 1 }
        row.append(String(decoding: field, as: UTF8.self)); field = []
        rows.append(row); row = []
      } else {
        field.append(b)
      }
      i += 1
    }
    if quoted { throw .format("'\(path)' ends inside a quoted field") }
    if !field.isEmpty || !row.isEmpty { row.append(String(decoding: field, as: UTF8.self)); rows.append(row) }
    return rows
  }
}
