/// Image embeddings of every sample of a source, in order, through the loader's evaluation
/// preprocessing (no augmentation, no shuffling): what evaluation and `lift encode` need.
public enum ImageEncoding {
  public struct Options {
    /// Images decoded and encoded together (memory: batch x image + batch x d floats).
    public var batch = 256
    public var filter = ResampleFilter.bicubic
    /// Short side before the centre crop (nil: the model's image size); see DataLoader.Options.
    public var resize: Int? = nil
    public var decodeThreads = 1
    public var reducedDecode = true
    public init() {}
  }

  /// Embeddings of the samples that could be read. `images` holds sampleCount x d floats (the
  /// rows of samples left out are zero), `kept` the rows that hold an embedding (increasing),
  /// `keys` each sample's key, `bad` what was left out and why.
  public struct Result {
    public var images: FloatMatrix
    public var kept: [Int]
    public var keys: [String]
    public var bad = DataLoader.BadSamples()
    public var dim: Int { images.cols }

    /// The kept rows packed one after another (kept.count x dim).
    public func packed() throws(LiftError) -> FloatMatrix {
      try images.gather(kept)
    }
  }

  /// `progress(encoded, total)` is called after every batch.
  public static func encode(model: Model, source: SampleSource, options: Options = Options(),
                            progress: ((Int, Int) -> Void)? = nil) throws(LiftError) -> Result {
    let config = model.config
    let d = config.textDim
    let n = Int(source.sampleCount)
    guard options.batch >= 1, options.batch <= 1 << 16 else { throw .argument("batch must be in [1, 65536] (got \(options.batch))") }
    var loaderOptions = DataLoader.Options(batchSize: options.batch, imageSize: config.imageSize, channels: config.channels)
    loaderOptions.shuffle = false
    loaderOptions.filter = options.filter
    loaderOptions.resize = options.resize
    loaderOptions.decodeThreads = options.decodeThreads
    loaderOptions.reducedDecode = options.reducedDecode
    loaderOptions.maxBadFraction = 1
    loaderOptions.allowEmptyBatches = true
    let loader = try DataLoader(source: source, options: loaderOptions)
    defer { loader.close() }
    var out = Result(images: try FloatMatrix(rows: n, cols: d, what: "\(n) image embeddings"), kept: [],
                     keys: [String](repeating: "", count: n))
    let staged = try allocateFloats(try checkedCount(Int64(loader.capacity), Int64(d), "a batch's embeddings"),
                                    what: "a batch of \(loader.capacity) embeddings")
    defer { staged.deallocate() }
    for _ in 0..<loader.batchesPerEpoch {
      let b = try loader.next()
      if b.count > 0 {
        try model.encode(.uint8NHWC(UnsafePointer(b.images)), count: b.count, chunk: min(options.batch, model.encodeChunk), into: staged)
      }
      for (i, index) in b.indices.enumerated() {
        let row = Int(index)
        out.images.row(row).update(from: staged + i * d, count: d)
        out.kept.append(row)
        out.keys[row] = b.keys[i]
      }
      out.bad = b.badSamples
      progress?(out.kept.count + Int(out.bad.total), n)
    }
    out.kept.sort()
    return out
  }
}
