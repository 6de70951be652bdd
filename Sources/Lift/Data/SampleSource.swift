/// Where training and evaluation samples come from: image-caption data as it is on disk. Each
/// kind reads its images (encoded bytes or stored pixels) and pairs each with a caption
/// embedding; the `DataLoader` orders, decodes, preprocesses and batches them.
///
/// Two shapes:
/// - indexed (`shardSampleCounts == nil`): random access by sample index 0..<sampleCount (a
///   liblift HDF5 dataset, an image folder with an index file); the loader permutes every sample
///   each epoch;
/// - sharded: shards (tar files, image folders) listed one at a time in file order, memory
///   bounded by a shard; the loader shuffles shards, then samples within blocks, and gives each
///   rank its own shards.
public protocol SampleSource: AnyObject {
  /// Dimension of the caption embeddings.
  var textDim: Int { get }
  /// Samples in all (as counted when the source was opened).
  var sampleCount: Int64 { get }
  /// Samples per shard of a sharded source (each >= 1); nil for an indexed source.
  var shardSampleCounts: [Int64]? { get }
  /// A one-line description ("webdataset tar shards: 12 files, 10000 samples").
  var summary: String { get }
  /// The store holding caption embeddings by sample key (nil for a liblift dataset).
  var keyedStore: EmbeddingStore? { get }
  /// The samples of shard `s` in file order (sharded sources).
  func listShard(_ s: Int) throws(LiftError) -> [SampleRef]
  /// The sample at `index` (0 ..< sampleCount; a sharded source lists the shard holding it).
  func ref(index: Int64) throws(LiftError) -> SampleRef
  /// Reads the listed samples: each image's bytes or pixels into `arena` (unless `images` is
  /// false: captions only, for training on cached features) and one caption embedding into
  /// texts[i * textDim ..< (i + 1) * textDim], `pick(i, count)` choosing among a sample's `count`
  /// captions. A sample that cannot be used gets a `problem` (and no payload); a failure of the
  /// source itself (an unreadable file) throws.
  func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
             pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample]
}

/// One sample's place in its source. Small: a loader keeps a shuffle block of thousands.
public struct SampleRef: Sendable, Equatable {
  /// The shard (file or folder) holding the sample.
  public var shard: Int
  /// Global sample number (indexed: the sample index; sharded: the shard's first sample +
  /// the sample's position in it). Stable for a source; the batch's `indices`.
  public var id: Int64
  /// The sample's key (file name, tar member key) for lookups and messages; empty if none.
  public var key: String
  /// Source-specific locations: a tar member's data offset and size; -1 when unused.
  var imageOffset: Int64 = -1
  var imageLength: Int64 = 0
  /// A tar sample's own embedding member (`.npy` / `.emb`): offset, size and format.
  var embeddingOffset: Int64 = -1
  var embeddingLength: Int64 = 0
  var embeddingIsNumpy = false
  /// A problem known from the listing (a duplicate key, no image member).
  var problem: SampleProblem? = nil
  var problemDetail = ""

  public init(shard: Int, id: Int64, key: String = "") {
    self.shard = shard
    self.id = id
    self.key = key
  }
}

/// What `fetch` produced for one sample.
public struct FetchedSample {
  public enum Payload {
    case none
    /// Encoded image bytes at arena[start ..< start + count].
    case encoded(start: Int, count: Int)
    /// Stored pixels (height x width x channels) at arena[start ...].
    case pixels(start: Int, width: Int, height: Int, channels: Int)
  }

  public var payload: Payload = .none
  /// The store row of the caption embedding (-1 when it came from elsewhere).
  public var captionRow: Int64 = -1
  public var problem: SampleProblem? = nil
  public var detail = ""

  public init() {}

  static func failed(_ problem: SampleProblem, _ detail: String) -> FetchedSample {
    var f = FetchedSample()
    f.problem = problem
    f.detail = detail
    return f
  }
}

/// Bytes of a batch's images, appended one after another and reused from batch to batch.
public final class ByteArena {
  private(set) var base: UnsafeMutablePointer<UInt8>
  private(set) var capacity: Int
  private(set) var used = 0
  /// Largest arena (bytes) a batch may fill: a bound on what a source's sizes can make liblift
  /// allocate.
  static let limit = 1 << 34

  public init(capacity: Int = 1 << 20) throws(LiftError) {
    base = try allocateElements(max(capacity, 64), of: UInt8.self, what: "the batch's image bytes")
    self.capacity = max(capacity, 64)
  }

  deinit { base.deallocate() }

  public func reset() { used = 0 }

  /// Room for `count` more bytes (growing, keeping what is there); returns their start.
  func append(_ count: Int) throws(LiftError) -> Int {
    guard count >= 0, count <= Self.limit - used else {
      throw .value("a batch's images need more than \(Self.limit) bytes")
    }
    if used + count > capacity {
      let grown = max(capacity * 2, used + count)
      let fresh = try allocateElements(grown, of: UInt8.self, what: "\(grown) bytes of a batch's images")
      fresh.update(from: base, count: used)
      base.deallocate()
      base = fresh
      capacity = grown
    }
    let start = used
    used += count
    return start
  }

  public func bytes(_ start: Int, _ count: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: base + start, count: count)
  }
}
