/// Runs a benchmark suite on a model: text embeddings looked up by exact text in a store made
/// with the user's text model, image embeddings computed once per image (or read from an image
/// cache), then the suite's metrics on the images that could be read.
public enum SuiteRunner {
  public struct Options {
    public var encoding = ImageEncoding.Options()
    /// An image-embedding cache file (`ImageEmbeddingCache`), read and then updated.
    public var imageCache: String? = nil
    public init() {}
  }

  public static func run(_ suite: BenchmarkSuite, model: Model, texts store: EmbeddingStore, options: Options = Options(),
                         progress: ((Int, Int) -> Void)? = nil) throws(LiftError) -> SuiteResult {
    let start = monotonicSeconds()
    let d = model.config.textDim
    // Texts first: a missing text fails before any image is encoded.
    let texts = suite.texts
    let textMatrix = try TextEmbeddings.lookup(texts, in: store, dim: d)
    var textRow: [String: Int] = [:]
    for (i, t) in texts.enumerated() { textRow[t] = i }
    let images = try encodeImages(suite.images, model: model, options: options, progress: progress)
    var result = SuiteResult(suite: suite.name, images: suite.images.count, kept: images.kept.count, bad: images.bad,
                             notes: suite.notes)
    guard !images.kept.isEmpty else { throw .value("none of the suite's \(suite.images.count) images could be read: \(images.bad.description)") }
    switch suite.task {
    case .classification(let c):
      result.metrics = .classification(try classify(c, images: images, textMatrix: textMatrix, textRow: textRow))
    case .retrieval(let r):
      result.metrics = .retrieval(try retrieve(r, images: images, textMatrix: textMatrix, textRow: textRow))
    case .pairs(let subsets):
      result.metrics = .pairs(try pairs(subsets, images: images, textMatrix: textMatrix, textRow: textRow))
    }
    result.seconds = monotonicSeconds() - start
    return result
  }

  /// Embeddings of the image files in order: from the cache where it has them, the rest encoded
  /// (and added to the cache). Rows of images that could not be read are left out of `kept`.
  static func encodeImages(_ files: [String], model: Model, options: Options,
                           progress: ((Int, Int) -> Void)?) throws(LiftError) -> ImageEncoding.Result {
    let d = model.config.textDim
    var result = ImageEncoding.Result(images: try FloatMatrix(rows: files.count, cols: d, what: "\(files.count) image embeddings"),
                                      kept: [], keys: files)
    let fingerprint = options.imageCache.map { _ in ImageEmbeddingCache.fingerprint(model: model, options: options.encoding) }
    let keys = options.imageCache == nil ? [] : files.map(ImageEmbeddingCache.key)
    var cached = Set<Int>()
    if let path = options.imageCache, let fingerprint {
      cached = try ImageEmbeddingCache.read(path, fingerprint: fingerprint, keys: keys, into: result.images)
    }
    let missing = files.indices.filter { !cached.contains($0) }
    var fresh: [Int] = []
    if !missing.isEmpty {
      let source = try ImageListSource(files: missing.map { files[$0] })
      let encoded = try ImageEncoding.encode(model: model, source: source, options: options.encoding) { done, _ in
        progress?(cached.count + done, files.count)
      }
      for k in encoded.kept {
        result.images.row(missing[k]).update(from: encoded.images.row(k), count: d)
        fresh.append(missing[k])
      }
      result.bad = encoded.bad
    }
    result.kept = (Array(cached) + fresh).sorted()
    if let path = options.imageCache, let fingerprint, !fresh.isEmpty {
      try ImageEmbeddingCache.write(path, fingerprint: fingerprint, keys: keys, rows: fresh, embeddings: result.images)
    }
    progress?(files.count, files.count)
    return result
  }

  // MARK: metrics

  private static func classify(_ c: BenchmarkSuite.Classification, images: ImageEncoding.Result, textMatrix: FloatMatrix,
                               textRow: [String: Int]) throws(LiftError) -> SuiteResult.Classification {
    let d = textMatrix.cols
    let prompts = c.classNames.map { name in c.templates.map { textRow[PromptTemplates.format($0, name)]! } }
    let classes = try Metrics.classEmbeddings(prompts: textMatrix.pointer, d: d, classes: prompts)
    let packed = try images.packed()
    let k = min(5, c.classNames.count)
    var perClass = [(images: Int, top1: Int, top5: Int)](repeating: (0, 0, 0), count: c.classNames.count)
    try classes.withUnsafeBufferPointer { (cls) throws(LiftError) in
      try Metrics.blockwiseTopK(queries: packed.pointer, nq: packed.rows, keys: cls.baseAddress!, nk: c.classNames.count, d: d, k: k) { i, ranked in
        let label = c.labels[images.kept[i]]
        perClass[label].images += 1
        if ranked.first == Int64(label) { perClass[label].top1 += 1 }
        if ranked.contains(Int64(label)) { perClass[label].top5 += 1 }
      }
    }
    let n = Double(packed.rows)
    return SuiteResult.Classification(
      top1: Double(perClass.reduce(0) { $0 + $1.top1 }) / n, top5: Double(perClass.reduce(0) { $0 + $1.top5 }) / n,
      classes: c.classNames.indices.map { (c.classIDs[$0], c.classNames[$0], perClass[$0].images, perClass[$0].top1, perClass[$0].top5) },
      templates: c.templates.count)
  }

  private static func retrieve(_ r: BenchmarkSuite.Retrieval, images: ImageEncoding.Result, textMatrix: FloatMatrix,
                               textRow: [String: Int]) throws(LiftError) -> Metrics.Retrieval {
    // The text side: the captions of the images that were read, one row per annotation.
    var rows: [Int] = [], offsets: [Int64] = [0]
    for i in images.kept {
      rows += r.captions[r.offsets[i]..<r.offsets[i + 1]].map { textRow[$0]! }
      offsets.append(Int64(rows.count))
    }
    let captions = try textMatrix.gather(rows)
    let packed = try images.packed()
    defer { withExtendedLifetime((captions, packed)) {} }  // the call reads through their pointers
    return try Metrics.retrieval(images: packed.pointer, n: packed.rows, texts: captions.pointer, m: captions.rows, d: textMatrix.cols,
                                 captionOffsets: offsets, captionRows: (0..<Int64(rows.count)).map { $0 })
  }

  private static func pairs(_ subsets: [BenchmarkSuite.PairSubset], images: ImageEncoding.Result, textMatrix: FloatMatrix,
                            textRow: [String: Int]) throws(LiftError) -> [SuiteResult.Subset] {
    let kept = Set(images.kept)
    var out: [SuiteResult.Subset] = []
    for s in subsets {
      let use = s.images.indices.filter { kept.contains(s.images[$0]) }
      guard !use.isEmpty else {
        out.append(.init(name: s.name, correct: 0, total: 0, left: s.images.count))
        continue
      }
      let img = try images.images.gather(use.map { s.images[$0] })
      let pos = try textMatrix.gather(use.map { textRow[s.positives[$0]]! })
      let neg = try textMatrix.gather(use.map { textRow[s.negatives[$0]]! })
      defer { withExtendedLifetime((img, pos, neg)) {} }  // the call reads through their pointers
      let correct = try Metrics.pairwise(images: img.pointer, positives: pos.pointer, negatives: neg.pointer, n: use.count, d: textMatrix.cols)
      out.append(.init(name: s.name, correct: correct.filter { $0 }.count, total: use.count, left: s.images.count - use.count))
    }
    return out
  }
}
