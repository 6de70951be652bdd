import Lift

/// Runs the evaluation protocols a dataset supports on a model: zero-shot classification (if
/// it has classes and labels), image<->text retrieval over its captions, and pairwise
/// compositional accuracy per negative type (if it has compositional pairs).
struct Evaluation {
  var zeroShot: Metrics.ZeroShot?
  var retrieval: Metrics.Retrieval?
  /// (type, correct, total) sorted by type, plus the overall accuracy.
  var compositional: [(type: String, correct: Int, total: Int)]?
  var seconds = 0.0

  static func run(model: Model, dataset: ImageDataset, batch: Int = 256, retrieval wantRetrieval: Bool = true,
                  progress: Bool = true) throws -> Evaluation {
    let config = model.config
    guard dataset.textDim == config.textDim else {
      throw CLIError("the model makes \(config.textDim)-d embeddings but '\(dataset.paths[0])' has \(dataset.textDim)-d captions")
    }
    let start = now()
    let n = Int(dataset.count), d = config.textDim
    // Image embeddings in file order, through the same preprocessing as training (no augmentation).
    var options = DataLoader.Options(batchSize: batch, imageSize: config.imageSize, channels: config.channels)
    options.shuffle = false
    let loader = try cli { () throws(LiftError) in try DataLoader(dataset: dataset, options: options) }
    var images = [Float](repeating: 0, count: n * d)
    var done = 0
    var pacer = ProgressPacer()
    while done < n {
      let b = try cli { () throws(LiftError) in try loader.next() }
      try images.withUnsafeMutableBufferPointer { (out) in
        try cli { () throws(LiftError) in
          try model.encode(.uint8NHWC(UnsafePointer(b.images)), count: b.count, chunk: batch,
                           into: out.baseAddress! + done * d)
        }
      }
      done += b.count
      if progress && pacer.due(last: done == n) { Console.progress("evaluating: encoded \(done)/\(n) images") }
    }
    loader.close()
    var result = Evaluation()
    let captionCount = Int(dataset.captions.rows)
    var captions = [Float](repeating: 0, count: captionCount * d)
    try captions.withUnsafeMutableBufferPointer { (b) in
      try cli { () throws(LiftError) in try dataset.captions.read(range: 0, count: Int64(captionCount), into: b.baseAddress!, capacity: b.count) }
    }
    if dataset.classCount > 0 && dataset.hasLabels {
      let prompts = dataset.classPrompts.map { $0.map { Int($0) } }
      let classes = try captions.withUnsafeBufferPointer { (c) in
        try cli { () throws(LiftError) in try Metrics.classEmbeddings(prompts: c.baseAddress!, d: d, classes: prompts) }
      }
      var labels = [Int64](repeating: 0, count: n)
      let all = (0..<Int64(n)).map { $0 }
      try all.withUnsafeBufferPointer { (list) in
        try labels.withUnsafeMutableBufferPointer { (out) in
          try cli { () throws(LiftError) in try dataset.readLabels(list, into: out.baseAddress!) }
        }
      }
      result.zeroShot = try cli { () throws(LiftError) in
        try Metrics.zeroShot(images: images, n: n, classes: classes, classCount: dataset.classCount, d: d, labels: labels)
      }
    }
    if wantRetrieval {
      var offsets: [Int64] = [0]
      var rows: [Int64] = []
      for i in 0..<Int64(n) {
        rows += try cli { () throws(LiftError) in try dataset.captionRows(of: i) }
        offsets.append(Int64(rows.count))
      }
      result.retrieval = try cli { () throws(LiftError) in
        try Metrics.retrieval(images: images, n: n, texts: captions, m: captionCount, d: d, captionOffsets: offsets, captionRows: rows)
      }
    }
    if let pairs = try cli({ () throws(LiftError) in try dataset.compositionalPairs() }) {
      var pairImages = [Float](repeating: 0, count: pairs.images.count * d)
      for (i, image) in pairs.images.enumerated() {
        for j in 0..<d { pairImages[i * d + j] = images[Int(image) * d + j] }
      }
      let correct = try cli { () throws(LiftError) in
        try Metrics.pairwise(images: pairImages, positives: pairs.positives, negatives: pairs.negatives, n: pairs.images.count, d: d)
      }
      var byType: [String: (Int, Int)] = [:]
      for (i, t) in pairs.types.enumerated() {
        let c = byType[t] ?? (0, 0)
        byType[t] = (c.0 + (correct[i] ? 1 : 0), c.1 + 1)
      }
      result.compositional = byType.keys.sorted().map { ($0, byType[$0]!.0, byType[$0]!.1) }
    }
    result.seconds = now() - start
    Console.clearProgress()
    return result
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
    return lines.joined(separator: "\n")
  }
}

extension String {
  func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
