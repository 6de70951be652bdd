/// A list of image files to encode, without captions: the images of an evaluation suite.
/// Indexed (sample i is files[i]); a file that is missing, too large or not an image liblift
/// decodes becomes a bad sample of the loader, named by its path. Caption embeddings are zeros
/// of dimension 1 (nothing reads them).
public final class ImageListSource: SampleSource {
  /// Absolute (or caller-relative) paths, one per sample.
  public let files: [String]
  public var textDim: Int { 1 }
  public var sampleCount: Int64 { Int64(files.count) }
  public var shardSampleCounts: [Int64]? { nil }
  public var keyedStore: EmbeddingStore? { nil }
  public var summary: String { "a list of \(files.count) image files" }
  private let lock = Lock()

  public init(files: [String]) throws(LiftError) {
    guard !files.isEmpty else { throw .argument("the image list is empty") }
    self.files = files
  }

  public func listShard(_ s: Int) throws(LiftError) -> [SampleRef] {
    throw .internal("an image list is read by index, not listed by shard")
  }

  public func ref(index: Int64) throws(LiftError) -> SampleRef {
    guard index >= 0, index < sampleCount else { throw .argument("sample \(index) is out of range: there are \(sampleCount)") }
    return fileRef(id: index, file: files[Int(index)], key: files[Int(index)])
  }

  public func fetch(_ refs: [SampleRef], images: Bool, into arena: ByteArena, texts: UnsafeMutablePointer<Float>,
                    pick: (Int, Int64) -> Int64) throws(LiftError) -> [FetchedSample] {
    try lock.withLock { () throws(LiftError) in
      texts.update(repeating: 0, count: refs.count)
      return try fetchFiles(refs, path: images ? { self.files[Int($0.id)] } : nil, store: nil, dim: 1, into: arena,
                            texts: texts, pick: pick)
    }
  }
}
