import CHDF5
import Glibc

/// An image-caption dataset: one or more HDF5 files ("shards") read as one, streamed from disk
/// (memory does not grow with the number of images or captions).
///
/// Layout of each file (see README):
///   images/pixels           uint8 (N, H, W, C), C = 1 or 3           stored pixels, or
///   images/encoded          uint8 (B)       the encoded files (JPEG, PNG, WebP) back to back
///   images/encoded_offsets  int   (N + 1)   image i's bytes: encoded[offsets[i] ..< offsets[i+1]]
///   images/caption_offsets  int   (N + 1)   captions of image i: caption_rows[offsets[i] ..< offsets[i+1]]
///   images/caption_rows     int   (R)       rows of captions/embeddings in the same file
///   images/labels           int   (N)       optional, class index per image
///   images/keys             str   (N)       optional
///   captions/embeddings     float (M, D)    float16 or float32
///   captions/text           str   (M)       optional
///   classes/names           str   (L)       optional: classes for zero-shot evaluation
///   classes/prompt_offsets  int   (L + 1)   prompts of class k: prompt_rows[offsets[k] ..< offsets[k+1]]
///   classes/prompt_rows     int   (P)       rows of captions/embeddings
/// Image indices run over the shards in order; caption rows are local to their file. Classes
/// come from the first shard. All shards store images the same way (pixels or encoded).
///
/// Thread safety: methods take the dataset's lock.
public final class ImageDataset: @unchecked Sendable {  // every method takes `lock`
  /// How a file stores its images.
  enum Storage {
    /// uint8 (N, H, W, C) pixels.
    case pixels(RowSource)
    /// Encoded files back to back, with N + 1 offsets.
    case encoded(bytes: RowSource, offsets: RowSource)

    var isEncoded: Bool {
      if case .encoded = self { return true }
      return false
    }
  }

  /// Per-file readers.
  struct Shard {
    let path: String
    let storage: Storage
    let imageCount: Int64
    let offsets: RowSource
    let captionRows: RowSource
    let labels: RowSource?
    /// Global caption row of this file's caption 0 (in `captions`).
    let firstCaption: Int64
  }

  public let paths: [String]
  public let count: Int64
  /// Whether images are stored encoded (JPEG/PNG/WebP files of any size) rather than as pixels.
  public let encoded: Bool
  /// Size of stored pixel images; 0 x 0 for encoded images (each has its own size).
  public let height: Int
  public let width: Int
  /// Channels of stored pixels; for encoded images, 3 (or 1 if the file says so).
  public let channels: Int
  /// The caption embeddings of all shards, as one store (rows in shard order).
  public let captions: EmbeddingStore
  public var textDim: Int { Int(captions.dim) }
  public let hasLabels: Bool
  /// Number of classes and, per class, its prompt rows (global rows of `captions`); 0 and empty
  /// if the dataset has no classes. Names are read on request (`className`): opening a dataset
  /// reads no variable-length strings, the part of an HDF5 file libhdf5 is least robust against.
  public let classCount: Int
  public let classPrompts: [[Int64]]

  let shards: [Shard]
  /// Where each shard's images start.
  let imageStarts: ShardStarts
  /// Stored pixels as one sequence of rows (pixel datasets only).
  let pixelRows: ShardedRows?
  private let lock = Lock()
  private var staging = StagingBuffer()
  private let stagingBudget = 8 << 20

  deinit { staging.release() }

  public init(paths: [String]) throws(LiftError) {
    guard !paths.isEmpty else { throw .argument("no dataset files given") }
    HDF5.prepareThread()
    var options = EmbeddingStore.Options()
    options.dataset = "captions/embeddings"
    captions = try EmbeddingStore(paths: paths, options: options)
    var shards: [Shard] = []
    var shape: [UInt64]? = nil
    for (s, path) in paths.enumerated() {
      let file = captions.shards[s].file
      let (storage, imageCount) = try Self.openImages(file: file, path: path)
      if case .pixels(let pixels) = storage {
        let imageShape = Array(pixels.dims.dropFirst())
        if let shape, shape != imageShape {
          throw .shape("'\(path)' holds \(HDF5.shapeString(imageShape)) images but '\(paths[0])' holds \(HDF5.shapeString(shape))")
        }
        shape = imageShape
      }
      if let first = shards.first, first.storage.isEncoded != storage.isEncoded {
        let kind = { (e: Bool) in e ? "encoded images" : "pixels" }
        throw .format("'\(path)' holds \(kind(storage.isEncoded)) but '\(paths[0])' holds \(kind(first.storage.isEncoded)); "
                      + "a dataset's files store images one way")
      }
      let offsets = try RowSource(file: file, path: path, name: "images/caption_offsets", memType: lift_h5t_native_int64())
      let rows = try RowSource(file: file, path: path, name: "images/caption_rows", memType: lift_h5t_native_int64())
      try Self.requireInteger(offsets)
      try Self.requireInteger(rows)
      guard offsets.dims == [UInt64(imageCount) + 1] else {
        throw .shape("'images/caption_offsets' in '\(path)' has \(HDF5.shapeString(offsets.dims)) entries; expected N + 1 = \(imageCount + 1)")
      }
      guard rows.dims.count == 1 else { throw .format("'images/caption_rows' in '\(path)' must have rank 1") }
      var labels: RowSource? = nil
      if HDF5.exists(file.id, "images/labels") {
        let l = try RowSource(file: file, path: path, name: "images/labels", memType: lift_h5t_native_int64())
        try Self.requireInteger(l)
        guard l.dims == [UInt64(imageCount)] else {
          throw .shape("'images/labels' in '\(path)' has \(HDF5.shapeString(l.dims)) entries; expected N = \(imageCount)")
        }
        labels = l
      }
      shards.append(Shard(path: path, storage: storage, imageCount: imageCount, offsets: offsets, captionRows: rows,
                          labels: labels, firstCaption: captions.shards[s].firstRow))
    }
    self.paths = paths
    self.shards = shards
    self.imageStarts = ShardStarts(counts: shards.map(\.imageCount))
    self.count = imageStarts.total
    if let shape {
      encoded = false
      pixelRows = ShardedRows(shards.map { shard -> RowSource in
        if case .pixels(let p) = shard.storage { return p }
        fatalError("unreachable: every shard stores pixels")
      })
      self.height = Int(shape[0])
      self.width = Int(shape[1])
      self.channels = Int(shape[2])
    } else {
      encoded = true
      pixelRows = nil
      self.height = 0
      self.width = 0
      let stated = try HDF5.readStringAttribute(captions.shards[0].file.id, "channels", path: paths[0])
      self.channels = stated == "1" ? 1 : 3
    }
    self.hasLabels = shards.allSatisfy { $0.labels != nil }
    classPrompts = try Self.readClasses(file: captions.shards[0].file, path: paths[0], captionCount: captions.shards[0].rows)
    classCount = classPrompts.count
  }

  /// A file's images: `images/encoded` + `images/encoded_offsets` if present, else
  /// `images/pixels`; checked for type, rank and sizes. Returns the storage and image count.
  private static func openImages(file: H5Object, path: String) throws(LiftError) -> (Storage, Int64) {
    if HDF5.exists(file.id, "images/encoded") {
      let bytes = try RowSource(file: file, path: path, name: "images/encoded", memType: lift_h5t_native_uint8())
      try requireInteger(bytes, unsigned8: true)
      guard bytes.dims.count == 1 else {
        throw .format("'images/encoded' in '\(path)' has shape \(HDF5.shapeString(bytes.dims)); expected (bytes,)")
      }
      let offsets = try RowSource(file: file, path: path, name: "images/encoded_offsets", memType: lift_h5t_native_int64())
      try requireInteger(offsets)
      guard offsets.dims.count == 1, offsets.rows >= 1 else {
        throw .format("'images/encoded_offsets' in '\(path)' has shape \(HDF5.shapeString(offsets.dims)); expected (N + 1,)")
      }
      return (.encoded(bytes: bytes, offsets: offsets), offsets.rows - 1)
    }
    let pixels = try RowSource(file: file, path: path, name: "images/pixels", memType: lift_h5t_native_uint8())
    try requireInteger(pixels, unsigned8: true)
    guard pixels.dims.count == 4, pixels.dims[3] == 1 || pixels.dims[3] == 3 else {
      throw .format("'images/pixels' in '\(path)' has shape \(HDF5.shapeString(pixels.dims)); expected (N, H, W, C) with C = 1 or 3")
    }
    let imageShape = Array(pixels.dims.dropFirst())
    guard imageShape[0] >= 1, imageShape[1] >= 1, imageShape[0] <= UInt64(Self.maxImageSide),
          imageShape[1] <= UInt64(Self.maxImageSide) else {
      throw .format("'images/pixels' in '\(path)' holds \(HDF5.shapeString(imageShape)) images; height and width must be "
                    + "in [1, \(Self.maxImageSide)]")
    }
    return (.pixels(pixels), pixels.rows)
  }

  /// Largest encoded image liblift reads (bytes): a bound on what a file's offsets can make it allocate.
  public static let maxEncodedBytes: Int64 = 1 << 28

  private static func requireInteger(_ source: RowSource, unsigned8: Bool = false) throws(LiftError) {
    let type = H5Object(H5Dget_type(source.dataset.id), .datatype)
    guard H5Tget_class(type.id) == H5T_INTEGER else {
      throw .format("'\(source.name)' in '\(source.path)' has dtype \(HDF5.describe(type: type.id)); expected \(unsigned8 ? "uint8" : "integers")")
    }
    if unsigned8, H5Tget_size(type.id) != 1 || H5Tget_sign(type.id) != H5T_SGN_NONE {
      throw .format("'\(source.name)' in '\(source.path)' has dtype \(HDF5.describe(type: type.id)); expected uint8")
    }
  }

  /// Largest stored image height or width.
  public static let maxImageSide = 1 << 14

  /// Most classes a dataset may define, and most entries of a whole-read integer list (prompt
  /// rows, compositional pairs): bounds on what a file can make liblift read into memory.
  static let maxClasses = 1 << 20
  static let maxListEntries = 1 << 26

  /// Prompt rows per class (rows of the file's `captions/embeddings`, which come first in a
  /// dataset's captions), after checking the class lists: as many names as classes (counted, not
  /// read), prompt offsets increasing from 0 to the prompt rows' count, every row a caption of
  /// the file. Empty if the file has no classes. (Also reads a captions file's classes.)
  static func readClasses(file: H5Object, path: String, captionCount: Int64) throws(LiftError) -> [[Int64]] {
    guard HDF5.exists(file.id, "classes/names") else { return [] }
    let nameCount = try HDF5.stringListCount(file.id, "classes/names", path: path)
    guard nameCount <= Int64(maxClasses) else {
      throw .format("'classes/names' in '\(path)' has \(nameCount) entries; at most \(maxClasses) classes are accepted")
    }
    let offsets = try readAllInts(file, "classes/prompt_offsets", path: path, limit: maxClasses + 1)
    let rows = try readAllInts(file, "classes/prompt_rows", path: path, limit: maxListEntries)
    guard offsets.count == Int(nameCount) + 1, offsets.first == 0, offsets.last == Int64(rows.count) else {
      throw .format("'classes/prompt_offsets' in '\(path)' must have \(nameCount + 1) entries from 0 to \(rows.count)")
    }
    var prompts: [[Int64]] = []
    for k in 0..<Int(nameCount) {
      guard offsets[k] < offsets[k + 1], offsets[k + 1] <= Int64(rows.count) else {
        throw .format("class \(k) in '\(path)' has prompt offsets [\(offsets[k]), \(offsets[k + 1])); "
                      + "each class needs at least one prompt, in increasing order within the \(rows.count) prompt rows")
      }
      let list = Array(rows[Int(offsets[k])..<Int(offsets[k + 1])])
      for r in list where r < 0 || r >= captionCount {
        throw .format("class \(k) in '\(path)' refers to caption row \(r); the file has \(captionCount)")
      }
      prompts.append(list)
    }
    return prompts
  }

  /// The name of class k (read from the file now).
  public func className(_ k: Int) throws(LiftError) -> String {
    try lock.withLock { () throws(LiftError) in
      guard k >= 0, k < classCount else { throw .argument("class \(k) is out of range: the dataset has \(classCount) classes") }
      HDF5.prepareThread()
      let ds = try HDF5.openDataset(captions.shards[0].file.id, "classes/names", path: paths[0])
      return String(decoding: try HDF5.readString(ds.id, index: Int64(k), name: "classes/names", path: paths[0]), as: UTF8.self)
    }
  }

  /// Every class name (read from the file now).
  public func classNames() throws(LiftError) -> [String] {
    var names: [String] = []
    for k in 0..<classCount { names.append(try className(k)) }
    return names
  }

  /// A whole small rank-1 integer dataset of at most `limit` entries.
  static func readAllInts(_ file: H5Object, _ name: String, path: String, limit: Int) throws(LiftError) -> [Int64] {
    let source = try RowSource(file: file, path: path, name: name, memType: lift_h5t_native_int64())
    try requireInteger(source)
    guard source.dims.count == 1 else { throw .format("'\(name)' in '\(path)' must have rank 1") }
    guard source.rows <= Int64(limit) else {
      throw .format("'\(name)' in '\(path)' has \(source.rows) entries; at most \(limit) are accepted")
    }
    let n = Int(source.rows)
    let buffer = try allocateElements(max(n, 1), of: Int64.self, what: "'\(name)' of '\(path)'")
    defer { buffer.deallocate() }
    if n > 0 { try source.read(runs: [(0, source.rows)], rows: source.rows, into: buffer, allowDirect: true) }
    return Array(UnsafeBufferPointer(start: buffer, count: n))
  }

  /// Bytes of one stored pixel image (0 for encoded images).
  public var imageBytes: Int { height * width * channels }

  // MARK: Reading

  private func validate(_ list: UnsafeBufferPointer<Int64>) throws(LiftError) {
    for (i, r) in list.enumerated() where r < 0 || r >= count {
      throw .argument("images[\(i)] = \(r) is out of range: there are \(count) images")
    }
  }

  /// Stored pixels (H x W x C uint8 each) of the listed images into `out`, in list order.
  public func readPixels(_ list: UnsafeBufferPointer<Int64>, into out: UnsafeMutablePointer<UInt8>) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard let pixelRows else {
        throw .unsupported("'\(paths[0])' stores encoded images (each its own size); read them with readEncoded / lift_dataset_read_image")
      }
      HDF5.prepareThread()
      try validate(list)
      let bytes = imageBytes
      try pixelRows.read(rows: list, staging: &staging, budget: stagingBudget, allowDirect: true) { slot, _, staged in
        (out + slot * bytes).update(from: staged.assumingMemoryBound(to: UInt8.self), count: bytes)
      }
    }
  }

  /// The encoded bytes of image `image` appended to `arena`; returns (start, count).
  func readEncoded(_ image: Int64, into arena: ByteArena) throws(LiftError) -> (start: Int, count: Int) {
    try lock.withLock { () throws(LiftError) in try readEncodedLocked(image, into: arena) }
  }

  private func readEncodedLocked(_ image: Int64, into arena: ByteArena) throws(LiftError) -> (start: Int, count: Int) {
    guard image >= 0, image < count else { throw .argument("image \(image) is out of range: there are \(count) images") }
    HDF5.prepareThread()
    let s = imageStarts.shardIndex(of: image)
    guard case .encoded(let bytes, let offsets) = shards[s].storage else {
      throw .unsupported("'\(paths[s])' stores pixels, not encoded images")
    }
    let local = image - imageStarts.starts[s]
    var pair = (Int64(0), Int64(0))
    try withUnsafeMutableBytes(of: &pair) { (raw) throws(LiftError) in
      try offsets.read(runs: [(local, 2)], rows: 2, into: raw.baseAddress!, allowDirect: true)
    }
    let (begin, end) = pair
    guard begin >= 0, end >= begin, end <= bytes.rows, end - begin <= Self.maxEncodedBytes else {
      throw .format("image \(local) of '\(paths[s])' has encoded offsets [\(begin), \(end)); they must increase within the "
                    + "\(bytes.rows) bytes of 'images/encoded', at most \(Self.maxEncodedBytes) per image")
    }
    let start = try arena.append(Int(end - begin))
    if end > begin {
      try bytes.read(runs: [(begin, end - begin)], rows: end - begin, into: UnsafeMutableRawPointer(arena.base + start),
                     allowDirect: true)
    }
    return (start, Int(end - begin))
  }

  /// The encoded bytes of one image (encoded datasets).
  public func encodedImage(_ image: Int64) throws(LiftError) -> [UInt8] {
    let arena = try ByteArena(capacity: 1 << 16)
    let (start, n) = try readEncoded(image, into: arena)
    return Array(arena.bytes(start, n))
  }

  /// Shard and [begin, end) range of caption_rows positions of global image `image`
  /// (validated). Caller holds the lock.
  private func captionRange(_ image: Int64) throws(LiftError) -> (shard: Int, begin: Int64, end: Int64) {
    let s = imageStarts.shardIndex(of: image)
    let shard = shards[s]
    let local = image - imageStarts.starts[s]
    var pair = (Int64(0), Int64(0))
    try withUnsafeMutableBytes(of: &pair) { (raw) throws(LiftError) in
      try shard.offsets.read(runs: [(local, 2)], rows: 2, into: raw.baseAddress!, allowDirect: true)
    }
    let (begin, end) = pair
    guard begin >= 0, end > begin, end <= shard.captionRows.rows else {
      throw .format("image \(local) of '\(shard.path)' has caption offsets [\(begin), \(end)); it needs at least one caption within the \(shard.captionRows.rows) caption rows")
    }
    return (s, begin, end)
  }

  /// The global caption row at position `position` of shard `s`'s caption_rows (validated).
  private func captionRow(shard s: Int, position: Int64) throws(LiftError) -> Int64 {
    let shard = shards[s]
    var row: Int64 = 0
    try withUnsafeMutableBytes(of: &row) { (raw) throws(LiftError) in
      try shard.captionRows.read(runs: [(position, 1)], rows: 1, into: raw.baseAddress!, allowDirect: true)
    }
    let captionCount = captions.shards[s].rows
    guard row >= 0, row < captionCount else {
      throw .format("caption_rows[\(position)] of '\(shard.path)' is \(row); the file has \(captionCount) captions")
    }
    return row + shard.firstCaption
  }

  /// For each listed image, picks one of its captions: `choose(i, count)` returns which of the
  /// `count` captions image list[i] gets (0..<count); its global caption row goes to rowsOut[i].
  public func chooseCaptions(_ list: UnsafeBufferPointer<Int64>, into rowsOut: UnsafeMutablePointer<Int64>,
                             choose: (Int, Int64) -> Int64) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      try validate(list)
      for (i, image) in list.enumerated() {
        let (s, begin, end) = try captionRange(image)
        let pick = choose(i, end - begin)
        precondition(pick >= 0 && pick < end - begin, "caption choice out of range")
        rowsOut[i] = try captionRow(shard: s, position: begin + pick)
      }
    }
  }

  /// All caption rows (global) of image `image`.
  public func captionRows(of image: Int64) throws(LiftError) -> [Int64] {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      guard image >= 0, image < count else { throw .argument("image \(image) is out of range: there are \(count) images") }
      let (s, begin, end) = try captionRange(image)
      var rows: [Int64] = []
      for p in begin..<end { rows.append(try captionRow(shard: s, position: p)) }
      return rows
    }
  }

  /// Compositional test pairs (SugarCrepe-style): for each pair, an image (global index), a
  /// positive and a hard-negative caption embedding, and the negative's type. Read whole (an
  /// evaluation set); nil if no shard has them. Layout per file: compositional/image int (Q),
  /// compositional/positive float (Q, D), compositional/negative float (Q, D),
  /// compositional/type str (Q).
  public func compositionalPairs() throws(LiftError) -> (images: [Int64], positives: [Float], negatives: [Float], types: [String])? {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      var images: [Int64] = [], positives: [Float] = [], negatives: [Float] = [], types: [String] = []
      var found = false
      for (s, shard) in shards.enumerated() {
        let file = captions.shards[s].file
        guard HDF5.exists(file.id, "compositional/image") else { continue }
        found = true
        let imgs = try Self.readAllInts(file, "compositional/image", path: shard.path, limit: Self.maxListEntries)
        let t = try HDF5.readAllStrings(file.id, "compositional/type", path: shard.path, limit: imgs.count)
        var pairs: [[Float]] = []
        for name in ["compositional/positive", "compositional/negative"] {
          let source = try RowSource(file: file, path: shard.path, name: name, memType: lift_h5t_native_float())
          guard source.dims.count == 2, source.dims[1] == UInt64(textDim), source.rows == Int64(imgs.count) else {
            throw .shape("'\(name)' in '\(shard.path)' has shape \(HDF5.shapeString(source.dims)); expected (\(imgs.count), \(textDim))")
          }
          let buffer = try allocateFloats(max(1, try checkedCount(Int64(imgs.count), Int64(textDim), "'\(name)'")),
                                          what: "'\(name)' of '\(shard.path)'")
          defer { buffer.deallocate() }
          if !imgs.isEmpty { try source.read(runs: [(0, source.rows)], rows: source.rows, into: buffer, allowDirect: true) }
          pairs.append(Array(UnsafeBufferPointer(start: buffer, count: imgs.count * textDim)))
        }
        guard t.count == imgs.count else { throw .shape("'compositional/type' in '\(shard.path)' has \(t.count) entries for \(imgs.count) pairs") }
        for i in imgs where i < 0 || i >= shard.imageCount {
          throw .format("'compositional/image' in '\(shard.path)' refers to image \(i); the file has \(shard.imageCount)")
        }
        images += imgs.map { $0 + imageStart(s) }
        positives += pairs[0]
        negatives += pairs[1]
        types += t
      }
      return found ? (images, positives, negatives, types) : nil
    }
  }

  private func imageStart(_ shard: Int) -> Int64 { imageStarts.starts[shard] }

  /// Labels of the listed images (the dataset must have labels).
  public func readLabels(_ list: UnsafeBufferPointer<Int64>, into out: UnsafeMutablePointer<Int64>) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      guard hasLabels else { throw .notFound("the dataset has no 'images/labels'") }
      HDF5.prepareThread()
      try validate(list)
      let labelRows = ShardedRows(shards.map { $0.labels! })
      try labelRows.read(rows: list, staging: &staging, budget: stagingBudget, allowDirect: true) { slot, _, staged in
        out[slot] = staged.load(as: Int64.self)
      }
    }
  }
}

// MARK: - As a data source

extension ImageDataset: SampleSource {
  public var sampleCount: Int64 { count }
  public var shardSampleCounts: [Int64]? { nil }
  public var keyedStore: EmbeddingStore? { nil }

  public var summary: String {
    let images = encoded ? "encoded images" : "\(height)x\(width)x\(channels) pixel images"
    return "liblift dataset (\(paths.count) file\(paths.count == 1 ? "" : "s")): \(count) \(images), \(captions.rows) captions (\(textDim)-d)"
  }

  public func listShard(_ s: Int) throws(LiftError) -> [SampleRef] {
    throw .internal("a liblift dataset is read by index, not listed by shard")
  }

  public func ref(index: Int64) throws(LiftError) -> SampleRef { SampleRef(shard: 0, id: index) }

  /// Images (stored pixels in one read, or each image's encoded bytes) and one caption per
  /// image drawn by `pick`; a caption embedding that is not finite makes its sample unusable.
  public func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
                    pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
    let list = refs.map(\.id)
    var out = [FetchedSample](repeating: FetchedSample(), count: list.count)
    try list.withUnsafeBufferPointer { (l) throws(LiftError) in
      if images && !encoded {
        let bytes = imageBytes
        let start = try arena.append(try checkedCount(Int64(l.count), Int64(bytes), "a batch's pixels"))
        try readPixels(l, into: arena.base + start)
        for i in out.indices { out[i].payload = .pixels(start: start + i * bytes, width: width, height: height, channels: channels) }
      } else if images {
        for (i, image) in l.enumerated() {
          let (start, n) = try readEncoded(image, into: arena)
          out[i].payload = .encoded(start: start, count: n)
        }
      }
      var rows = [Int64](repeating: 0, count: l.count)
      try rows.withUnsafeMutableBufferPointer { (r) throws(LiftError) in
        try chooseCaptions(l, into: r.baseAddress!, choose: pick)
        try captions.readUnchecked(rows: UnsafeBufferPointer(r), into: texts, capacity: l.count * textDim)
      }
      for i in out.indices {
        out[i].captionRow = rows[i]
        if let c = VectorOps.firstNonFinite(texts + i * textDim, textDim) {
          out[i].problem = .nonFiniteEmbedding
          out[i].detail = "caption embedding \(captions.describeRow(rows[i])) has \(texts[i * textDim + c]) at column \(c)"
        }
      }
    }
    return out
  }
}
