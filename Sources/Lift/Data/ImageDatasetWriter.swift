import CHDF5
import CLiftABI
import Glibc

/// Writes one dataset file in the layout `ImageDataset` reads, streaming: captions first (their
/// rows are what images refer to), then images in batches (stored pixels, or encoded files as
/// they are), optionally the classes; `finish()` moves the file into place atomically.
public final class ImageDatasetWriter {
  public let path: String
  /// Stored pixel size (0 x 0 x 3 for encoded images).
  public let height: Int, width: Int, channels: Int
  public let textDim: Int
  public let dtype: lift_dtype
  public var imageCount: Int64 { pixels?.rows ?? (encodedOffsets!.rows - 1) }
  public var captionCount: Int64 { embeddings.rows }

  private let writer: H5FileWriter
  private let pixels: ExtensibleDataset?
  /// Encoded images: the files back to back, and N + 1 offsets.
  private let encodedBytes: ExtensibleDataset?
  private let encodedOffsets: ExtensibleDataset?
  private let keys: ExtensibleDataset?
  private let offsets: ExtensibleDataset
  private let captionRows: ExtensibleDataset
  private let labels: ExtensibleDataset?
  private let embeddings: ExtensibleDataset
  private var captionTexts: ExtensibleDataset?
  private var staging = StagingBuffer()
  private var classesWritten = false

  public init(path: String, height: Int, width: Int, channels: Int, textDim: Int, dtype: lift_dtype = LIFT_DTYPE_FLOAT16,
              labels: Bool = false, overwrite: Bool = false) throws(LiftError) {
    guard height >= 1, width >= 1, height <= 1 << 14, width <= 1 << 14 else {
      throw .argument("image size must be in [1, 16384] (got \(height)x\(width))")
    }
    guard channels == 1 || channels == 3 else { throw .argument("channels must be 1 or 3 (got \(channels))") }
    guard textDim >= 1, textDim <= 1 << 16 else { throw .argument("text dim must be in [1, 65536] (got \(textDim))") }
    guard dtype == LIFT_DTYPE_FLOAT16 || dtype == LIFT_DTYPE_FLOAT32 else { throw .argument("caption dtype must be float16 or float32") }
    self.path = path
    self.height = height
    self.width = width
    self.channels = channels
    self.textDim = textDim
    self.dtype = dtype
    writer = try H5FileWriter(path: path, overwrite: overwrite)
    pixels = try writer.createDataset("images/pixels", rowShape: [height, width, channels], type: lift_h5t_native_uint8())
    encodedBytes = nil
    encodedOffsets = nil
    keys = nil
    offsets = try writer.createDataset("images/caption_offsets", rowShape: [], type: lift_h5t_native_int64())
    captionRows = try writer.createDataset("images/caption_rows", rowShape: [], type: lift_h5t_native_int64())
    self.labels = labels ? try writer.createDataset("images/labels", rowShape: [], type: lift_h5t_native_int64()) : nil
    embeddings = try Self.embeddingsDataset(writer, textDim: textDim, dtype: dtype)
    try offsets.append(int64s: [0])
    try Self.markFormat(writer)
  }

  /// A writer of encoded images (JPEG, PNG or WebP files stored as they are), each with a key.
  public init(encodedPath path: String, textDim: Int, dtype: lift_dtype = LIFT_DTYPE_FLOAT16, overwrite: Bool = false) throws(LiftError) {
    guard textDim >= 1, textDim <= 1 << 16 else { throw .argument("text dim must be in [1, 65536] (got \(textDim))") }
    guard dtype == LIFT_DTYPE_FLOAT16 || dtype == LIFT_DTYPE_FLOAT32 else { throw .argument("caption dtype must be float16 or float32") }
    self.path = path
    (height, width, channels) = (0, 0, 3)
    self.textDim = textDim
    self.dtype = dtype
    writer = try H5FileWriter(path: path, overwrite: overwrite)
    pixels = nil
    encodedBytes = try writer.createDataset("images/encoded", rowShape: [], type: lift_h5t_native_uint8())
    encodedOffsets = try writer.createDataset("images/encoded_offsets", rowShape: [], type: lift_h5t_native_int64())
    keys = try writer.createDataset("images/keys", rowShape: [], type: HDF5.variableUTF8)
    offsets = try writer.createDataset("images/caption_offsets", rowShape: [], type: lift_h5t_native_int64())
    captionRows = try writer.createDataset("images/caption_rows", rowShape: [], type: lift_h5t_native_int64())
    labels = nil
    embeddings = try Self.embeddingsDataset(writer, textDim: textDim, dtype: dtype)
    try offsets.append(int64s: [0])
    try encodedOffsets!.append(int64s: [0])
    try Self.markFormat(writer)
  }

  private static func embeddingsDataset(_ writer: H5FileWriter, textDim: Int, dtype: lift_dtype) throws(LiftError) -> ExtensibleDataset {
    try writer.createDataset("captions/embeddings", rowShape: [textDim], type: dtype == LIFT_DTYPE_FLOAT16 ? HDF5.halfLE : lift_h5t_ieee_f32le())
  }

  private static func markFormat(_ writer: H5FileWriter) throws(LiftError) {
    try writer.setAttribute("liblift_format", "dataset")
    try writer.setAttribute("liblift_version", "1")
  }

  deinit { staging.release() }

  /// Appends caption embeddings (count x textDim float32) and optionally their texts. Returns
  /// the row of the first one.
  @discardableResult
  public func addCaptions(_ data: UnsafePointer<Float>, count: Int, texts: [[UInt8]]? = nil) throws(LiftError) -> Int64 {
    guard count >= 0 else { throw .argument("caption count must be >= 0") }
    let first = embeddings.rows
    if let texts {
      guard texts.count == count else { throw .argument("\(texts.count) caption texts for \(count) captions") }
      if captionTexts == nil {
        guard first == 0 else { throw .argument("caption texts must be given from the first caption on") }
        captionTexts = try writer.createDataset("captions/text", rowShape: [], type: HDF5.variableUTF8)
      }
    } else if captionTexts != nil {
      throw .argument("caption texts were given before: give them for every caption")
    }
    try EmbeddingStoreWriter.checkRows(data, rows: count, dim: textDim, dtype: dtype, firstRow: first)
    try EmbeddingStoreWriter.appendRows(data, rows: Int64(count), total: count * textDim, dtype: dtype, to: embeddings,
                                        staging: &staging)
    if let texts {
      do throws(LiftError) { try captionTexts!.append(strings: texts) } catch {
        embeddings.truncate(to: first)
        throw error
      }
    }
    return first
  }

  /// Appends `count` images (count x H x W x C uint8), each with the caption rows that describe
  /// it (at least one, all already added) and, if the writer has labels, its label.
  public func addImages(_ data: UnsafePointer<UInt8>, count: Int, captions: [[Int64]], labels newLabels: [Int64]? = nil) throws(LiftError) {
    guard let pixels else { throw .state("this writer stores encoded images: use addEncodedImages") }
    guard captions.count == count else { throw .argument("\(captions.count) caption lists for \(count) images") }
    guard (newLabels != nil) == (labels != nil) else {
      throw .argument(labels != nil ? "the writer was created with labels: pass one per image" : "labels given, but the writer was created without labels")
    }
    if let newLabels, newLabels.count != count { throw .argument("\(newLabels.count) labels for \(count) images") }
    let (flat, ends) = try captionLists(captions)
    let before = (pixels.rows, offsets.rows, captionRows.rows, labels?.rows ?? 0)
    do throws(LiftError) {
      try pixels.append(UnsafeRawPointer(data), count: Int64(count), memType: lift_h5t_native_uint8())
      try captionRows.append(int64s: flat)
      try offsets.append(int64s: ends)
      if let newLabels, let labels { try labels.append(int64s: newLabels) }
    } catch {
      pixels.truncate(to: before.0)
      offsets.truncate(to: before.1)
      captionRows.truncate(to: before.2)
      labels?.truncate(to: before.3)
      throw error
    }
  }

  /// Appends encoded image files (stored as they are), each with its key and caption rows.
  public func addEncodedImages(_ files: [[UInt8]], keys newKeys: [String], captions: [[Int64]]) throws(LiftError) {
    guard let encodedBytes, let encodedOffsets, let keys else { throw .state("this writer stores pixels: use addImages") }
    guard captions.count == files.count, newKeys.count == files.count else {
      throw .argument("\(files.count) files need as many keys and caption lists (got \(newKeys.count), \(captions.count))")
    }
    let (flat, ends) = try captionLists(captions)
    var position = encodedBytes.rows
    var starts: [Int64] = []
    for f in files {
      position += Int64(f.count)
      starts.append(position)
    }
    let before = (encodedBytes.rows, encodedOffsets.rows, keys.rows, offsets.rows, captionRows.rows)
    do throws(LiftError) {
      let blob = files.joined().map { $0 }
      if !blob.isEmpty {
        let buffer = try allocateElements(blob.count, of: UInt8.self, what: "\(blob.count) bytes of images")
        defer { buffer.deallocate() }
        buffer.initialize(from: blob, count: blob.count)
        try encodedBytes.append(UnsafeRawPointer(buffer), count: Int64(blob.count), memType: lift_h5t_native_uint8())
      }
      try encodedOffsets.append(int64s: starts)
      try keys.append(strings: newKeys.map { Array($0.utf8) })
      try captionRows.append(int64s: flat)
      try offsets.append(int64s: ends)
    } catch {
      encodedBytes.truncate(to: before.0)
      encodedOffsets.truncate(to: before.1)
      keys.truncate(to: before.2)
      offsets.truncate(to: before.3)
      captionRows.truncate(to: before.4)
      throw error
    }
  }

  /// The caption rows of new images, checked (each image has some, all already added), flattened,
  /// with the running end offsets.
  private func captionLists(_ captions: [[Int64]]) throws(LiftError) -> (flat: [Int64], ends: [Int64]) {
    var flat: [Int64] = []
    var ends: [Int64] = []
    var position = captionRows.rows
    for (i, list) in captions.enumerated() {
      guard !list.isEmpty else { throw .argument("image \(imageCount + Int64(i)) has no captions") }
      for r in list where r < 0 || r >= captionCount {
        throw .argument("image \(imageCount + Int64(i)) refers to caption \(r); \(captionCount) captions were added")
      }
      flat += list
      position += Int64(list.count)
      ends.append(position)
    }
    return (flat, ends)
  }

  /// Classes for zero-shot evaluation: names and, per class, its prompt caption rows.
  public func setClasses(names: [String], prompts: [[Int64]]) throws(LiftError) {
    guard !classesWritten else { throw .state("classes were already written") }
    guard names.count == prompts.count, !names.isEmpty else { throw .argument("give one prompt list per class name") }
    let namesDS = try writer.createDataset("classes/names", rowShape: [], type: HDF5.variableUTF8)
    try namesDS.append(strings: names.map { Array($0.utf8) })
    var ends: [Int64] = [0]
    var flat: [Int64] = []
    for (k, list) in prompts.enumerated() {
      guard !list.isEmpty else { throw .argument("class \(k) ('\(names[k])') has no prompts") }
      for r in list where r < 0 || r >= captionCount {
        throw .argument("class \(k) refers to caption \(r); \(captionCount) captions were added")
      }
      flat += list
      ends.append(Int64(flat.count))
    }
    try writer.createDataset("classes/prompt_offsets", rowShape: [], type: lift_h5t_native_int64()).append(int64s: ends)
    try writer.createDataset("classes/prompt_rows", rowShape: [], type: lift_h5t_native_int64()).append(int64s: flat)
    classesWritten = true
  }

  /// Compositional test pairs (see `ImageDataset.compositionalPairs`): image indices of this
  /// file, positive and negative caption embeddings (count x textDim each), negative types.
  public func setCompositional(images: [Int64], positives: UnsafePointer<Float>, negatives: UnsafePointer<Float>,
                               types: [String]) throws(LiftError) {
    guard types.count == images.count else { throw .argument("\(types.count) types for \(images.count) pairs") }
    for i in images where i < 0 || i >= imageCount {
      throw .argument("compositional pair refers to image \(i); \(imageCount) images were added")
    }
    let n = images.count
    for (name, data) in [("positive", positives), ("negative", negatives)] {
      try EmbeddingStoreWriter.checkRows(data, rows: n, dim: textDim, dtype: LIFT_DTYPE_FLOAT32, firstRow: 0)
      let ds = try writer.createDataset("compositional/\(name)", rowShape: [textDim], type: lift_h5t_ieee_f32le())
      try ds.append(UnsafeRawPointer(data), count: Int64(n), memType: lift_h5t_native_float())
    }
    try writer.createDataset("compositional/image", rowShape: [], type: lift_h5t_native_int64()).append(int64s: images)
    try writer.createDataset("compositional/type", rowShape: [], type: HDF5.variableUTF8).append(strings: types.map { Array($0.utf8) })
  }

  public func finish() throws(LiftError) {
    guard captionCount > 0 || imageCount == 0 else { throw .state("the dataset has images but no captions") }
    try writer.finish()
  }
}
