import CLiftABI
import CZlib
import Glibc

/// The default dataset: Fashion-MNIST (60,000 train / 10,000 test 28x28 grey images, 10 classes;
/// MIT licence) from Debian's dataset-fashion-mnist IDX files, paired with caption embeddings of
/// prompt templates x class names from a captions file (assets/fashion-mnist-captions.h5).
/// Each image's captions are all prompts of its class (one drawn at random at every visit); the
/// same prompts make the zero-shot classifier.
public enum FashionMNIST {
  public static let debianDirectory = "/usr/share/datasets/fashion-mnist"

  /// (dims, bytes) of an IDX file of unsigned bytes (gzip-compressed or not).
  public static func readIDX(_ path: String) throws(LiftError) -> (dims: [Int], data: [UInt8]) {
    try HDF5.requireReadableFile(path)
    guard let gz = gzopen(path, "rb") else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { gzclose(gz) }
    func read(_ count: Int) throws(LiftError) -> [UInt8] {
      var out = [UInt8](repeating: 0, count: count)
      var done = 0
      while done < count {
        let n = out.withUnsafeMutableBytes { gzread(gz, $0.baseAddress! + done, UInt32(min(count - done, 1 << 30))) }
        if n <= 0 { throw .format("'\(path)' ends early (wanted \(count) bytes, got \(done))") }
        done += Int(n)
      }
      return out
    }
    let header = try read(4)
    guard header[0] == 0, header[1] == 0, header[2] == 0x08 else {
      throw .format("'\(path)' is not an IDX file of unsigned bytes (magic \(header))")
    }
    let rank = Int(header[3])
    guard rank >= 1, rank <= 4 else { throw .format("'\(path)' has rank \(rank)") }
    let dimBytes = try read(4 * rank)
    var dims: [Int] = []
    for i in 0..<rank {
      dims.append(Int(dimBytes[4 * i]) << 24 | Int(dimBytes[4 * i + 1]) << 16 | Int(dimBytes[4 * i + 2]) << 8 | Int(dimBytes[4 * i + 3]))
    }
    guard dims.allSatisfy({ $0 > 0 }), dims.reduce(1, *) <= 1 << 31 else { throw .format("'\(path)' has dimensions \(dims)") }
    return (dims, try read(dims.reduce(1, *)))
  }

  /// Writes `outDirectory/train.h5` and `outDirectory/test.h5` from the IDX files in
  /// `idxDirectory` and the caption embeddings in `captionsPath`. Returns the two paths.
  @discardableResult
  public static func build(idxDirectory: String = debianDirectory, captionsPath: String, outDirectory: String,
                           overwrite: Bool = false) throws(LiftError) -> (train: String, test: String) {
    var options = EmbeddingStore.Options()
    options.dataset = "captions/embeddings"
    let captions = try EmbeddingStore(paths: [captionsPath], options: options)
    let file = captions.shards[0].file
    let names = try HDF5.readAllStrings(file.id, "classes/names", path: captionsPath, limit: 10)
    let offsets = try ImageDataset.readAllInts(file, "classes/prompt_offsets", path: captionsPath, limit: 11)
    let rows = try ImageDataset.readAllInts(file, "classes/prompt_rows", path: captionsPath, limit: ImageDataset.maxListEntries)
    guard names.count == 10, offsets.count == 11, offsets.first == 0, offsets.last == Int64(rows.count),
          zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else {
      throw .format("'\(captionsPath)' must define 10 classes with increasing prompt offsets from 0 to \(rows.count)")
    }
    // The captions are read whole: a prompt file, not a corpus.
    guard captions.rows <= 1 << 20 else {
      throw .format("'\(captionsPath)' holds \(captions.rows) captions; a Fashion-MNIST prompt file holds at most \(1 << 20)")
    }
    let prompts = (0..<10).map { Array(rows[Int(offsets[$0])..<Int(offsets[$0 + 1])]) }
    for p in prompts.joined() where p < 0 || p >= captions.rows {
      throw .format("'\(captionsPath)' refers to caption row \(p); it has \(captions.rows)")
    }
    var embeddings = [Float](repeating: 0, count: Int(captions.rows * captions.dim))
    try embeddings.withUnsafeMutableBufferPointer { (b) throws(LiftError) in
      try captions.read(range: 0, count: captions.rows, into: b.baseAddress!, capacity: b.count)
    }
    var texts: [[UInt8]]? = nil
    if try captions.hasStrings("captions/text") {
      var t: [[UInt8]] = []
      for r in 0..<captions.rows { t.append(try captions.stringBytes("captions/text", row: r)) }
      texts = t
    }
    if mkdir(outDirectory, 0o755) != 0 && errno != EEXIST {
      throw .io("cannot create '\(outDirectory)': \(String(cString: strerror(errno)))")
    }
    var outputs: [String] = []
    for (split, prefix) in [("train", "train"), ("test", "t10k")] {
      let imagesPath = "\(idxDirectory)/\(prefix)-images-idx3-ubyte.gz"
      let labelsPath = "\(idxDirectory)/\(prefix)-labels-idx1-ubyte.gz"
      let (imageDims, pixels) = try readIDX(imagesPath)
      let (labelDims, labels) = try readIDX(labelsPath)
      guard imageDims.count == 3, labelDims == [imageDims[0]] else {
        throw .format("'\(imagesPath)' (\(imageDims)) and '\(labelsPath)' (\(labelDims)) do not match")
      }
      for (i, l) in labels.enumerated() where l >= 10 { throw .format("'\(labelsPath)' label \(i) is \(l)") }
      let out = "\(outDirectory)/\(split).h5"
      let writer = try ImageDatasetWriter(path: out, height: imageDims[1], width: imageDims[2], channels: 1,
                                          textDim: Int(captions.dim), labels: true, overwrite: overwrite)
      try embeddings.withUnsafeBufferPointer { (b) throws(LiftError) in
        _ = try writer.addCaptions(b.baseAddress!, count: Int(captions.rows), texts: texts)
      }
      let perImage = imageDims[1] * imageDims[2]
      var start = 0
      while start < imageDims[0] {
        let n = min(10_000, imageDims[0] - start)
        let lists = (start..<start + n).map { prompts[Int(labels[$0])] }
        let labelChunk = (start..<start + n).map { Int64(labels[$0]) }
        try pixels.withUnsafeBufferPointer { (b) throws(LiftError) in
          try writer.addImages(b.baseAddress! + start * perImage, count: n, captions: lists, labels: labelChunk)
        }
        start += n
      }
      try writer.setClasses(names: names, prompts: prompts)
      try writer.finish()
      outputs.append(out)
    }
    return (outputs[0], outputs[1])
  }
}
