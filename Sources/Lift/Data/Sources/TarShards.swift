import Dispatch
import Glibc

/// Samples of webdataset tar shards (as img2dataset writes them): members `<key>.<ext>`, where
/// the key is the member's path up to the first dot of its file name and the extension the rest
/// (webdataset's rule); consecutive members with one key form a sample. A sample's image is its
/// `jpg`, `jpeg`, `png` or `webp` member; its caption embedding its own `npy` (a float array of
/// D or 1 x D) or `emb` (D little-endian float32) member if it has one, else the row(s) of the
/// embedding store under its key.
///
/// Opening lists every shard once to count its samples (reading only tar headers, shards in
/// parallel); listing a shard again during training costs the same and holds one shard's
/// sample list. POSIX ustar, GNU (long names) and pax (path, size) headers are read; other
/// member types are skipped.
public final class TarShardSource: SampleSource {
  public let paths: [String]
  public let textDim: Int
  public let store: EmbeddingStore?
  public let counts: [Int64]
  let firstIDs: ShardStarts
  private let files = OpenFiles()
  private let lock = Lock()

  public var sampleCount: Int64 { firstIDs.total }
  public var shardSampleCounts: [Int64]? { counts }
  public var keyedStore: EmbeddingStore? { store }
  public var summary: String {
    "webdataset tar shards: \(paths.count) file\(paths.count == 1 ? "" : "s"), \(sampleCount) samples; caption embeddings "
      + (store.map { "from '\($0.paths[0])'\($0.paths.count > 1 ? " and \($0.paths.count - 1) more" : "") by key" } ?? "from the samples' npy/emb members")
  }

  /// Opens the shards (in the order given) and counts their samples; `store` supplies caption
  /// embeddings by key (nil: every sample must carry an `npy`/`emb` member). Shards without
  /// samples are left out.
  public init(paths: [String], store: EmbeddingStore?) throws(LiftError) {
    guard !paths.isEmpty else { throw .argument("no tar shards given") }
    let listed = try Self.countAll(paths)
    var kept: [String] = [], counts: [Int64] = []
    for (path, count) in zip(paths, listed) where count.samples > 0 {
      kept.append(path)
      counts.append(count.samples)
    }
    guard !kept.isEmpty else { throw .format("the tar shards (\(paths.count), e.g. '\(paths[0])') hold no samples") }
    self.paths = kept
    self.counts = counts
    self.store = store
    firstIDs = ShardStarts(counts: counts)
    if let store {
      textDim = Int(store.dim)
    } else if let dim = listed.lazy.compactMap(\.memberDim).first {
      textDim = dim
    } else {
      throw .argument("the tar shards carry no caption embeddings (no .npy or .emb members): give an embedding store keyed by sample")
    }
  }

  /// Samples (and, from the first sample with one, an embedding member's dimension) of each shard.
  private static func countAll(_ paths: [String]) throws(LiftError) -> [(samples: Int64, memberDim: Int?)] {
    let results = UnsafeMutableBufferPointer<Result<(Int64, Int?), LiftError>>.allocate(capacity: paths.count)
    results.initialize(repeating: .success((0, nil)))
    defer {
      results.deinitialize()  // a failure holds a message: released before the memory goes
      results.deallocate()
    }
    let work = CountWork(paths: paths, results: results)
    DispatchQueue.concurrentPerform(iterations: min(paths.count, 4)) { t in work.run(thread: t, of: min(paths.count, 4)) }
    var out: [(Int64, Int?)] = []
    for r in results {
      switch r {
      case .success(let v): out.append(v)
      case .failure(let e): throw e
      }
    }
    return out
  }

  public func listShard(_ s: Int) throws(LiftError) -> [SampleRef] {
    try TarListing.samples(path: paths[s], shard: s, firstID: firstIDs.starts[s])
  }

  private var lastListed: (shard: Int, refs: [SampleRef])? = nil

  public func ref(index: Int64) throws(LiftError) -> SampleRef {
    try lock.withLock { () throws(LiftError) in
      try refByIndex(index, starts: firstIDs, cache: &lastListed) { (s) throws(LiftError) in try listShard(s) }
    }
  }

  public func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
                    pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
    try lock.withLock { () throws(LiftError) in
      var out: [FetchedSample] = []
      var lookups = KeyedEmbeddings(store: store, dim: textDim)
      for (i, ref) in refs.enumerated() {
        if let problem = ref.problem {
          out.append(.failed(problem, ref.problemDetail))
          continue
        }
        let fd = try files.descriptor(paths[ref.shard])
        var sample = FetchedSample()
        if images {
          let start = try arena.append(Int(ref.imageLength))
          if let short = try preadAll(fd, arena.base + start, count: Int(ref.imageLength), at: ref.imageOffset) {
            out.append(.failed(.truncated, "'\(paths[ref.shard])' ends \(short) bytes into the image member"))
            continue
          }
          sample.payload = .encoded(start: start, count: Int(ref.imageLength))
        }
        if ref.embeddingOffset >= 0 {
          if let problem = try memberEmbedding(ref, fd: fd, into: texts + i * textDim) {
            out.append(.failed(problem.0, problem.1))
            continue
          }
        } else {
          lookups.request(slot: i, key: ref.key)
        }
        out.append(sample)
      }
      try lookups.resolve(into: texts, samples: &out, pick: pick)
      return out
    }
  }

  /// Reads a sample's `npy` / `emb` member into `out`; a problem if it is not D finite floats.
  private func memberEmbedding(_ ref: SampleRef, fd: Int32, into out: UnsafeMutablePointer<Float>) throws(LiftError)
    -> (SampleProblem, String)? {
    guard ref.embeddingLength <= 1 << 26 else { return (.corrupt, "embedding member of \(ref.embeddingLength) bytes") }
    var bytes = [UInt8](repeating: 0, count: Int(ref.embeddingLength))
    let short = try bytes.withUnsafeMutableBufferPointer { (b) throws(LiftError) in
      try preadAll(fd, b.baseAddress!, count: b.count, at: ref.embeddingOffset)
    }
    if let short { return (.truncated, "'\(paths[ref.shard])' ends \(short) bytes into the embedding member") }
    let values: [Float]
    do throws(LiftError) {
      values = ref.embeddingIsNumpy ? try NumpyArray.floats(bytes) : try NumpyArray.rawFloat32(bytes)
    } catch {
      return (.corrupt, "embedding member: \(error.message)")
    }
    guard values.count == textDim else {
      return (.corrupt, "embedding member holds \(values.count) values; the caption embeddings have \(textDim)")
    }
    if let c = values.firstIndex(where: { !$0.isFinite }) {
      return (.nonFiniteEmbedding, "embedding member has \(values[c]) at column \(c)")
    }
    out.update(from: values, count: textDim)
    return nil
  }
}

/// Counting shards on several threads: thread t lists shards t, t + threads, ... and writes only
/// their result entries.
private struct CountWork: @unchecked Sendable {
  let paths: [String]
  let results: UnsafeMutableBufferPointer<Result<(Int64, Int?), LiftError>>

  func run(thread t: Int, of threads: Int) {
    for s in stride(from: t, to: paths.count, by: threads) {
      do throws(LiftError) {
        let refs = try TarListing.samples(path: paths[s], shard: s, firstID: 0)
        results[s] = .success((Int64(refs.count), try TarListing.memberDimension(path: paths[s], refs: refs)))
      } catch {
        results[s] = .failure(error)
      }
    }
  }
}

/// Reading a tar file's headers into samples.
enum TarListing {
  static let imageExtensions = ["jpg", "jpeg", "png", "webp"]
  static let unsupportedImages = ["gif", "bmp", "tif", "tiff", "avif", "heic", "jxl", "ppm"]

  /// One member: its path, data offset and size.
  struct Member {
    var path: String
    var offset: Int64
    var size: Int64
  }

  /// The samples of the tar at `path`, in file order (ids firstID, firstID + 1, ...).
  static func samples(path: String, shard: Int, firstID: Int64) throws(LiftError) -> [SampleRef] {
    var refs: [SampleRef] = []
    var seen = Set<String>()
    var group: [Member] = []
    var groupKey: String? = nil
    func close() {
      guard let key = groupKey else { return }
      var ref = SampleRef(shard: shard, id: firstID + Int64(refs.count), key: key)
      describe(group, into: &ref)
      if !seen.insert(key).inserted {
        ref.problem = .duplicateKey
        ref.problemDetail = "key '\(key)' appears again later in '\(path)'"
      }
      refs.append(ref)
      group = []
    }
    let end = try members(path) { member, truncated in
      guard let (key, _) = split(member.path) else { return }
      if key != groupKey {
        close()
        groupKey = key
      }
      group.append(member)
      if truncated {
        close()
        refs[refs.count - 1].problem = .truncated
        refs[refs.count - 1].problemDetail = "'\(path)' ends inside the member '\(member.path)'"
        groupKey = nil
      }
    }
    close()
    _ = end
    return refs
  }

  /// webdataset's key and extension of a member path: "dir/000001.seg.png" -> ("dir/000001", "seg.png").
  static func split(_ path: String) -> (String, String)? {
    let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
    guard let dot = path[slash...].firstIndex(of: "."), dot > slash else { return nil }
    let ext = path[path.index(after: dot)...]
    guard !ext.isEmpty, !ext.contains("/") else { return nil }
    return (String(path[..<dot]), ext.lowercased())
  }

  /// Fills a sample's image and embedding members (or its problem) from its group.
  private static func describe(_ group: [Member], into ref: inout SampleRef) {
    var image: Member? = nil, unsupported: String? = nil
    for ext in imageExtensions {
      if let m = group.first(where: { split($0.path)?.1 == ext }) { image = m; break }
    }
    for m in group {
      guard let ext = split(m.path)?.1 else { continue }
      if ext == "npy" || ext == "emb", ref.embeddingOffset < 0 {
        ref.embeddingOffset = m.offset
        ref.embeddingLength = m.size
        ref.embeddingIsNumpy = ext == "npy"
      }
      if unsupportedImages.contains(ext) { unsupported = ext }
    }
    if let image {
      ref.imageOffset = image.offset
      ref.imageLength = image.size
      if image.size == 0 {
        ref.problem = .empty
        ref.problemDetail = "the image member '\(image.path)' is empty"
      } else if image.size > ImageDataset.maxEncodedBytes {
        ref.problem = .tooLarge
        ref.problemDetail = "the image member '\(image.path)' has \(image.size) bytes; at most \(ImageDataset.maxEncodedBytes) are read"
      }
    } else {
      ref.problem = .unsupported
      let names = group.compactMap { split($0.path)?.1 }.joined(separator: ", ")
      ref.problemDetail = unsupported.map { "\($0.uppercased()) images are not supported (JPEG, PNG and WebP are)" }
        ?? "no jpg, jpeg, png or webp member (members: \(names))"
    }
  }

  /// The dimension of the first sample's embedding member (npy or emb), if any.
  static func memberDimension(path: String, refs: [SampleRef]) throws(LiftError) -> Int? {
    guard let ref = refs.first(where: { $0.embeddingOffset >= 0 && $0.problem == nil }), ref.embeddingLength <= 1 << 26 else {
      return nil
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: Int(ref.embeddingLength))
    let short = try bytes.withUnsafeMutableBufferPointer { (b) throws(LiftError) in
      try preadAll(fd, b.baseAddress!, count: b.count, at: ref.embeddingOffset)
    }
    guard short == nil else { return nil }
    let values = ref.embeddingIsNumpy ? try? NumpyArray.floats(bytes) : try? NumpyArray.rawFloat32(bytes)
    return values.map(\.count)
  }

  /// Calls `body` for every regular-file member of the tar at `path` (with `truncated` set for
  /// a member whose data runs past the end of the file, the last one reported). Throws if the
  /// file cannot be read or its first header is not a tar header.
  @discardableResult
  static func members(_ path: String, _ body: (Member, Bool) -> Void) throws(LiftError) -> Int64 {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw .io("cannot stat '\(path)': \(String(cString: strerror(errno)))") }
    let fileSize = Int64(st.st_size)
    var header = [UInt8](repeating: 0, count: 512)
    var offset: Int64 = 0
    var longName: String? = nil, paxPath: String? = nil, paxSize: Int64? = nil
    var first = true
    while offset + 512 <= fileSize {
      let short = try header.withUnsafeMutableBufferPointer { (b) throws(LiftError) in try preadAll(fd, b.baseAddress!, count: 512, at: offset) }
      if short != nil { break }
      if header.allSatisfy({ $0 == 0 }) { break }  // end of archive
      guard checksumMatches(header) else {
        if first { throw .format("'\(path)' is not a tar file (its first header is not a valid tar header)") }
        break  // damaged from here on: the samples before it stand
      }
      first = false
      let type = header[156]
      var size = paxSize ?? number(header[124..<136])
      guard size >= 0 else { break }
      let dataOffset = offset + 512
      let next = dataOffset + (size + 511) / 512 * 512
      switch type {
      case UInt8(ascii: "L"):  // GNU long name of the next member
        longName = try readString(fd, at: dataOffset, size: min(size, 1 << 16), fileSize: fileSize)
      case UInt8(ascii: "x"):  // pax header of the next member
        let records = try readString(fd, at: dataOffset, size: min(size, 1 << 20), fileSize: fileSize) ?? ""
        (paxPath, paxSize) = pax(records)
      case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
        let name = paxPath ?? longName ?? headerName(header)
        size = max(size, 0)
        body(Member(path: name, offset: dataOffset, size: size), dataOffset + size > fileSize)
        longName = nil; paxPath = nil; paxSize = nil
        if dataOffset + size > fileSize { return offset }
      default:
        longName = nil; paxPath = nil; paxSize = nil  // directories, links, global pax headers
      }
      if type != UInt8(ascii: "x") { paxSize = nil }
      offset = next
    }
    return offset
  }

  private static func readString(_ fd: Int32, at offset: Int64, size: Int64, fileSize: Int64) throws(LiftError) -> String? {
    guard offset + size <= fileSize else { return nil }
    var bytes = [UInt8](repeating: 0, count: Int(size))
    let short = try bytes.withUnsafeMutableBufferPointer { (b) throws(LiftError) in try preadAll(fd, b.baseAddress!, count: b.count, at: offset) }
    guard short == nil else { return nil }
    return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
  }

  /// The `path` and `size` records of a pax extended header ("LEN key=value\n" ...).
  static func pax(_ text: String) -> (String?, Int64?) {
    var path: String? = nil, size: Int64? = nil
    for line in text.split(separator: "\n") {
      guard let space = line.firstIndex(of: " "), let eq = line[space...].firstIndex(of: "=") else { continue }
      let key = line[line.index(after: space)..<eq], value = String(line[line.index(after: eq)...])
      if key == "path" { path = value }
      if key == "size", let v = Int64(value), v >= 0 { size = v }
    }
    return (path, size)
  }

  private static func headerName(_ h: [UInt8]) -> String {
    let name = String(decoding: h[0..<100].prefix { $0 != 0 }, as: UTF8.self)
    let magic = h[257..<262]
    if Array(magic) == Array("ustar".utf8) {
      let prefix = String(decoding: h[345..<500].prefix { $0 != 0 }, as: UTF8.self)
      if !prefix.isEmpty { return prefix + "/" + name }
    }
    return name
  }

  /// An octal field (or GNU base-256 when the high bit is set); -1 if malformed.
  static func number(_ field: ArraySlice<UInt8>) -> Int64 {
    if let first = field.first, first & 0x80 != 0 {
      var v: Int64 = Int64(first & 0x7F)
      for b in field.dropFirst() {
        guard v < Int64.max >> 9 else { return -1 }
        v = v << 8 | Int64(b)
      }
      return v
    }
    var v: Int64 = 0
    var any = false
    for b in field {
      if b == 0 || b == 32 { if any { break } else { continue } }
      guard b >= 48, b <= 55, v < Int64.max >> 4 else { return -1 }
      v = v * 8 + Int64(b - 48)
      any = true
    }
    return v
  }

  /// The header checksum: the sum of its bytes with the checksum field read as spaces.
  static func checksumMatches(_ h: [UInt8]) -> Bool {
    var sum: Int64 = 0
    for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 32 : Int64(b) }
    return number(h[148..<156]) == sum
  }
}

/// Reads exactly `count` bytes at `offset`; returns nil, or how many bytes were missing at the
/// end of the file. Throws on a read error.
func preadAll(_ fd: Int32, _ dest: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws(LiftError) -> Int? {
  var done = 0
  while done < count {
    let n = pread(fd, dest + done, count - done, off_t(offset) + off_t(done))
    if n < 0 && errno == EINTR { continue }
    guard n >= 0 else { throw .io("read error: \(String(cString: strerror(errno)))") }
    if n == 0 { return count - done }
    done += n
  }
  return nil
}

/// Open file descriptors of recently read files (a handful: a block spans few shards).
final class OpenFiles {
  private var open: [(path: String, fd: Int32)] = []

  deinit { open.forEach { close($0.fd) } }

  func descriptor(_ path: String) throws(LiftError) -> Int32 {
    if let hit = open.first(where: { $0.path == path }) { return hit.fd }
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    open.append((path, fd))
    if open.count > 8 { close(open.removeFirst().fd) }
    return fd
  }
}
