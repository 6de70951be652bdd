import Lift

/// Runs the evaluation protocols a data source supports on a model: zero-shot classification
/// (a liblift dataset with classes and labels), image<->text retrieval over its captions (a
/// dataset's caption lists, or a keyed source's store rows under each sample's key), and pairwise
/// compositional accuracy per negative type (a dataset with compositional pairs). Samples that
/// cannot be read (an undecodable image, a missing embedding) are left out and counted.
struct Evaluation {
  var zeroShot: Metrics.ZeroShot?
  var retrieval: Metrics.Retrieval?
  /// (type, correct, total) sorted by type, plus the overall accuracy.
  var compositional: [(type: String, correct: Int, total: Int)]?
  /// Samples left out, and why (empty if none).
  var skipped: Int64 = 0
  var skippedReport = ""
  var seconds = 0.0

  /// Image embeddings of every sample in order (rows of samples left out stay zero), with a
  /// progress line.
  static func encodeAll(model: Model, source: SampleSource, batch: Int, filter: ResampleFilter,
                        progress: Bool, what: String) throws -> ImageEncoding.Result {
    var options = ImageEncoding.Options()
    options.batch = batch
    options.filter = filter
    var pacer = ProgressPacer()
    return try cli { () throws(LiftError) in
      try ImageEncoding.encode(model: model, source: source, options: options) { done, total in
        if progress && pacer.due(last: done == total) {
          Console.progress("\(what.isEmpty ? "" : what + ": ")encoded \(done)/\(total) images")
        }
      }
    }
  }

  static func run(model: Model, source: SampleSource, batch: Int = 256, filter: ResampleFilter = .bicubic,
                  retrieval wantRetrieval: Bool = true, progress: Bool = true) throws -> Evaluation {
    let d = model.config.textDim
    guard source.textDim == d else {
      throw CLIError("the model makes \(d)-d embeddings but the evaluation data has \(source.textDim)-d captions")
    }
    let start = now()
    let encoded = try encodeAll(model: model, source: source, batch: batch, filter: filter, progress: progress, what: "evaluating")
    var result = Evaluation()
    result.skipped = encoded.bad.total
    result.skippedReport = encoded.bad.description
    let kept = encoded.kept
    let packed = try cli { () throws(LiftError) in try encoded.packed() }
    defer { withExtendedLifetime(packed) {} }  // `images` points into it
    let images = UnsafePointer(packed.pointer)
    let dataset = source as? ImageDataset
    if let dataset, dataset.classCount > 0, dataset.hasLabels {
      result.zeroShot = try zeroShot(dataset, images: images, kept: kept, d: d)
    }
    if wantRetrieval {
      result.retrieval = try retrievalOf(source, keys: encoded.keys, images: images, kept: kept, d: d)
    }
    if let dataset { result.compositional = try compositional(dataset, encoded: encoded.images, kept: kept, d: d) }
    result.seconds = now() - start
    Console.clearProgress()
    return result
  }

  private static func zeroShot(_ dataset: ImageDataset, images: UnsafePointer<Float>, kept: [Int], d: Int) throws -> Metrics.ZeroShot {
    let captionCount = Int(dataset.captions.rows)
    var captions = [Float](repeating: 0, count: captionCount * d)
    try captions.withUnsafeMutableBufferPointer { (b) in
      try cli { () throws(LiftError) in try dataset.captions.read(range: 0, count: Int64(captionCount), into: b.baseAddress!, capacity: b.count) }
    }
    let prompts = dataset.classPrompts.map { $0.map { Int($0) } }
    let classes = try captions.withUnsafeBufferPointer { (c) in
      try cli { () throws(LiftError) in try Metrics.classEmbeddings(prompts: c.baseAddress!, d: d, classes: prompts) }
    }
    var labels = [Int64](repeating: 0, count: kept.count)
    let list = kept.map { Int64($0) }
    try list.withUnsafeBufferPointer { (l) in
      try labels.withUnsafeMutableBufferPointer { (out) in
        try cli { () throws(LiftError) in try dataset.readLabels(l, into: out.baseAddress!) }
      }
    }
    return try cli { () throws(LiftError) in
      try Metrics.zeroShot(images: images, n: kept.count, classes: classes, classCount: dataset.classCount, d: d, labels: labels)
    }
  }

  /// Retrieval over each kept sample's captions: a dataset's caption lists, or a keyed source's
  /// store rows under the sample's key. The text side holds exactly the captions of kept samples.
  private static func retrievalOf(_ source: SampleSource, keys: [String], images: UnsafePointer<Float>, kept: [Int], d: Int) throws -> Metrics.Retrieval? {
    let store: EmbeddingStore
    var lists: [[Int64]] = []
    var rows: [Int64]
    if let dataset = source as? ImageDataset {
      // A dataset's text set is all its captions (class prompts included).
      store = dataset.captions
      for row in kept { lists.append(try cli { () throws(LiftError) in try dataset.captionRows(of: Int64(row)) }) }
      rows = Array(0..<store.rows)
    } else if let keyed = source.keyedStore {
      store = keyed
      for row in kept { lists.append(try cli { () throws(LiftError) in try keyed.rows(forKey: Array(keys[row].utf8)) }) }
      // A keyed store's text set is the captions of the evaluated samples.
      rows = Array(Set(lists.joined())).sorted()
    } else {
      return nil
    }
    guard !rows.isEmpty, !kept.isEmpty else { return nil }
    let position = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1, Int64($0)) })
    var texts = [Float](repeating: 0, count: rows.count * d)
    try rows.withUnsafeBufferPointer { (r) in
      try texts.withUnsafeMutableBufferPointer { (t) in
        try cli { () throws(LiftError) in try store.read(rows: r, into: t.baseAddress!, capacity: t.count) }
      }
    }
    var offsets: [Int64] = [0], flat: [Int64] = []
    for list in lists {
      flat += list.map { position[$0]! }
      offsets.append(Int64(flat.count))
    }
    return try cli { () throws(LiftError) in
      try Metrics.retrieval(images: images, n: kept.count, texts: texts, m: rows.count, d: d, captionOffsets: offsets, captionRows: flat)
    }
  }

  /// Pairwise accuracy per negative type, over the pairs whose image was kept.
  private static func compositional(_ dataset: ImageDataset, encoded: FloatMatrix, kept: [Int], d: Int) throws
    -> [(type: String, correct: Int, total: Int)]? {
    guard let pairs = try cli({ () throws(LiftError) in try dataset.compositionalPairs() }) else { return nil }
    let keptSet = Set(kept)
    let use = pairs.images.indices.filter { keptSet.contains(Int(pairs.images[$0])) }
    guard !use.isEmpty else { return nil }
    var pairImages = [Float](repeating: 0, count: use.count * d)
    var positives = [Float](repeating: 0, count: use.count * d), negatives = positives
    for (k, i) in use.enumerated() {
      for j in 0..<d {
        pairImages[k * d + j] = encoded.row(Int(pairs.images[i]))[j]
        positives[k * d + j] = pairs.positives[i * d + j]
        negatives[k * d + j] = pairs.negatives[i * d + j]
      }
    }
    let correct = try cli { () throws(LiftError) in
      try Metrics.pairwise(images: pairImages, positives: positives, negatives: negatives, n: use.count, d: d)
    }
    var byType: [String: (Int, Int)] = [:]
    for (k, i) in use.enumerated() {
      let c = byType[pairs.types[i]] ?? (0, 0)
      byType[pairs.types[i]] = (c.0 + (correct[k] ? 1 : 0), c.1 + 1)
    }
    return byType.keys.sorted().map { ($0, byType[$0]!.0, byType[$0]!.1) }
  }

  var json: JSON {
    var members: [(String, JSON)] = []
    if let z = zeroShot {
      members.append(("zero_shot", .object([("top1", .number(z.top1)), ("top5", .number(z.top5)), ("images", .number(Double(z.count)))])))
    }
    if let r = retrieval {
      func recalls(_ v: [Double]) -> JSON { .object(zip(Metrics.recallKs, v).map { ("R@\($0.0)", .number($0.1)) }) }
      members.append(("retrieval", .object([("image_to_text", recalls(r.imageToText)), ("text_to_image", recalls(r.textToImage)),
                                            ("images", .number(Double(r.images))), ("captions", .number(Double(r.texts)))])))
    }
    if let c = compositional {
      let total = c.reduce(0) { $0 + $1.total }, correct = c.reduce(0) { $0 + $1.correct }
      members.append(("compositional", .object(
        c.map { ($0.type, .number(Double($0.correct) / Double($0.total))) } + [("overall", .number(Double(correct) / Double(max(total, 1))))])))
    }
    if skipped > 0 { members.append(("skipped", .object([("samples", .number(Double(skipped))), ("report", .string(skippedReport))]))) }
    members.append(("seconds", .number(seconds)))
    return .object(members)
  }

  /// A plain-text table.
  var table: String {
    var lines: [String] = []
    if let z = zeroShot {
      lines.append("zero-shot classification (\(z.count) images)   top-1 \(percent(z.top1))   top-5 \(percent(z.top5))")
    }
    if let r = retrieval {
      let i2t = zip(Metrics.recallKs, r.imageToText).map { "R@\($0.0) \(percent($0.1))" }.joined(separator: "  ")
      let t2i = zip(Metrics.recallKs, r.textToImage).map { "R@\($0.0) \(percent($0.1))" }.joined(separator: "  ")
      lines.append("retrieval image->text (\(r.images) images)     \(i2t)")
      lines.append("retrieval text->image (\(r.texts) captions)    \(t2i)")
    }
    if let c = compositional {
      lines.append("compositional (pairwise accuracy)")
      for row in c { lines.append("  \(row.type.padding(16))  \(percent(Double(row.correct) / Double(row.total)))  (\(row.total) pairs)") }
    }
    if skipped > 0 { lines.append("left out \(skipped) samples that could not be read: \(skippedReport)") }
    return lines.joined(separator: "\n")
  }
}

extension String {
  func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
