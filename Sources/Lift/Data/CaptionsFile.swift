import CHDF5

/// A captions file: caption embeddings with their classes' prompts and no images, the layout of
/// assets/fashion-mnist-captions.h5 (written by tools/make_fashion_captions.py, read by
/// `FashionMNIST.build`). Its datasets are those of an image-caption dataset without `images/*`:
///   captions/embeddings     float (M, D)   float16 or float32
///   captions/text           str   (M)      optional
///   classes/names           str   (L)      optional, with:
///   classes/prompt_offsets  int   (L + 1)  prompts of class k: prompt_rows[offsets[k] ..< offsets[k+1]]
///   classes/prompt_rows     int   (P)      rows of captions/embeddings
/// and root string attributes such as `liblift_format` ("captions") and `model` (the text model).
///
/// Thread safety: methods take the file's lock.
public final class CaptionsFile: @unchecked Sendable {  // every method takes `lock`
  public let path: String
  /// The caption embeddings, as a one-file store.
  public let captions: EmbeddingStore
  /// Per class, its prompt rows of `captions`; empty if the file has no classes.
  public let classPrompts: [[Int64]]
  public var classCount: Int { classPrompts.count }
  private let lock = Lock()

  /// Opens the file and checks its class lists (names are counted, not read).
  public init(path: String) throws(LiftError) {
    var options = EmbeddingStore.Options()
    options.dataset = "captions/embeddings"
    captions = try EmbeddingStore(paths: [path], options: options)
    self.path = path
    classPrompts = try ImageDataset.readClasses(file: captions.shards[0].file, path: path, captionCount: captions.rows)
  }

  /// Every class name (read from the file now).
  public func classNames() throws(LiftError) -> [String] {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      guard classCount > 0 else { return [] }
      return try HDF5.readAllStrings(captions.shards[0].file.id, "classes/names", path: path, limit: classCount)
    }
  }

  /// The root group's string attribute `name` (e.g. "model"), or nil if there is none.
  public func attribute(_ name: String) throws(LiftError) -> String? {
    try lock.withLock { () throws(LiftError) in
      HDF5.prepareThread()
      return try HDF5.readStringAttribute(captions.shards[0].file.id, name, path: path)
    }
  }
}
