/// Evaluation protocols (docs/design.md, section 6): zero-shot classification, image<->text retrieval with
/// several captions per image, and pairwise compositional accuracy. Inputs are embeddings
/// (normalised here); all scores are cosine similarities.
public enum Metrics {
  public struct ZeroShot: Equatable {
    public var top1: Double
    public var top5: Double
    public var count: Int
  }

  /// Class embeddings: per class, L2-normalise(mean of the L2-normalised prompt embeddings).
  /// `prompts` (P x d) holds all prompts; `classes[k]` lists the prompt rows of class k.
  public static func classEmbeddings(prompts: UnsafePointer<Float>, d: Int, classes: [[Int]]) throws(LiftError) -> [Float] {
    var out = [Float](repeating: 0, count: classes.count * d)
    for (k, rows) in classes.enumerated() {
      guard !rows.isEmpty else { throw .argument("class \(k) has no prompts") }
      let dst = k * d
      for r in rows {
        let src = prompts + r * d
        let n = VectorOps.norm(src, d)
        guard n > 0, n.isFinite else { throw .value("prompt row \(r) of class \(k) has zero or non-finite norm") }
        for j in 0..<d { out[dst + j] += src[j] / n }
      }
      let inv = 1 / Float(rows.count)
      for j in 0..<d { out[dst + j] *= inv }
      let n = out.withUnsafeBufferPointer { VectorOps.norm($0.baseAddress! + dst, d) }
      guard n > 0 else { throw .value("class \(k)'s prompts average to zero") }
      for j in 0..<d { out[dst + j] /= n }
    }
    return out
  }

  /// Top-1 / top-5 accuracy of predicting labels[i] as the class whose embedding is most
  /// cosine-similar to image i (top-5: the label is among the 5 best; with fewer than 5 classes,
  /// among all).
  public static func zeroShot(images: UnsafePointer<Float>, n: Int, classes: UnsafePointer<Float>, classCount: Int,
                              d: Int, labels: UnsafePointer<Int64>) throws(LiftError) -> ZeroShot {
    guard n > 0 else { throw .argument("zero-shot evaluation needs at least one image") }
    guard classCount > 0 else { throw .argument("zero-shot evaluation needs at least one class") }
    for i in 0..<n where labels[i] < 0 || labels[i] >= Int64(classCount) {
      throw .argument("label of image \(i) is \(labels[i]); there are \(classCount) classes")
    }
    let k = min(5, classCount)
    var correct1 = 0, correct5 = 0
    let block = 1024
    var scores = [Float](repeating: 0, count: min(n, block) * classCount)
    var top = [Int64](repeating: 0, count: min(n, block) * k)
    var start = 0
    while start < n {
      let m = min(block, n - start)
      try scores.withUnsafeMutableBufferPointer { (s) throws(LiftError) in
        try Similarity.cosine(images + start * d, n: m, classes, m: classCount, d: d, into: s.baseAddress!,
                              aName: "image", bName: "class")
      }
      try top.withUnsafeMutableBufferPointer { (t) throws(LiftError) in
        try scores.withUnsafeBufferPointer { (s) throws(LiftError) in
          try Similarity.topK(s.baseAddress!, n: m, m: classCount, k: k, indices: t.baseAddress!, values: nil)
        }
      }
      for i in 0..<m {
        let label = labels[start + i]
        if top[i * k] == label { correct1 += 1 }
        if top[(i * k)..<(i * k + k)].contains(label) { correct5 += 1 }
      }
      start += m
    }
    return ZeroShot(top1: Double(correct1) / Double(n), top5: Double(correct5) / Double(n), count: n)
  }

  public struct Retrieval: Equatable {
    /// Recall@1, @5, @10 for image -> text and text -> image.
    public var imageToText: [Double]
    public var textToImage: [Double]
    public var images: Int
    public var texts: Int
  }

  public static let recallKs = [1, 5, 10]

  /// Image i's positives are the captions captionRows[captionOffsets[i] ..< captionOffsets[i+1]]
  /// (rows of `texts`). Image->text R@K: share of images with a positive among the K captions most
  /// similar to it. Text->image R@K: share of captions (those some image owns) with an owning
  /// image among the K most similar images. Scores are computed in blocks; memory stays
  /// O(block * max(n, m)).
  public static func retrieval(images: UnsafePointer<Float>, n: Int, texts: UnsafePointer<Float>, m: Int, d: Int,
                               captionOffsets: [Int64], captionRows: [Int64]) throws(LiftError) -> Retrieval {
    guard n > 0, m > 0 else { throw .argument("retrieval needs images and captions") }
    guard captionOffsets.count == n + 1, captionOffsets.first == 0, captionOffsets.last == Int64(captionRows.count) else {
      throw .argument("caption offsets must have n + 1 = \(n + 1) entries from 0 to \(captionRows.count)")
    }
    var owners = [[Int]](repeating: [], count: m)
    for i in 0..<n {
      guard captionOffsets[i] <= captionOffsets[i + 1], captionOffsets[i + 1] <= Int64(captionRows.count) else {
        throw .argument("caption offsets must increase from 0 to \(captionRows.count); they do not at image \(i)")
      }
      for p in captionOffsets[i]..<captionOffsets[i + 1] {
        let r = captionRows[Int(p)]
        guard r >= 0, r < Int64(m) else { throw .argument("image \(i) refers to caption \(r); there are \(m)") }
        owners[Int(r)].append(i)
      }
    }
    let kMax = recallKs.last!
    // Image -> text.
    var hitsI2T = [Int](repeating: 0, count: recallKs.count)
    try blockwiseTopK(queries: images, nq: n, keys: texts, nk: m, d: d, k: min(kMax, m)) { i, ranked in
      let positives = Set(captionRows[Int(captionOffsets[i])..<Int(captionOffsets[i + 1])].map { Int($0) })
      for (j, kk) in recallKs.enumerated() where ranked.prefix(kk).contains(where: { positives.contains(Int($0)) }) {
        hitsI2T[j] += 1
      }
    }
    // Text -> image, over captions that have an owner.
    var hitsT2I = [Int](repeating: 0, count: recallKs.count)
    let owned = owners.indices.filter { !owners[$0].isEmpty }
    try blockwiseTopK(queries: texts, nq: m, keys: images, nk: n, d: d, k: min(kMax, n)) { c, ranked in
      guard !owners[c].isEmpty else { return }
      let positives = Set(owners[c])
      for (j, kk) in recallKs.enumerated() where ranked.prefix(kk).contains(where: { positives.contains(Int($0)) }) {
        hitsT2I[j] += 1
      }
    }
    return Retrieval(imageToText: hitsI2T.map { Double($0) / Double(n) },
                     textToImage: hitsT2I.map { Double($0) / Double(max(owned.count, 1)) }, images: n, texts: owned.count)
  }

  /// For each query row, the k most cosine-similar key rows (best first), computed in blocks.
  static func blockwiseTopK(queries: UnsafePointer<Float>, nq: Int, keys: UnsafePointer<Float>, nk: Int, d: Int, k: Int,
                            _ visit: (Int, ArraySlice<Int64>) -> Void) throws(LiftError) {
    let block = max(1, min(nq, (16 << 20) / max(nk, 1)))
    var scores = [Float](repeating: 0, count: block * nk)
    var top = [Int64](repeating: 0, count: block * k)
    var start = 0
    while start < nq {
      let b = min(block, nq - start)
      try scores.withUnsafeMutableBufferPointer { (s) throws(LiftError) in
        try Similarity.cosine(queries + start * d, n: b, keys, m: nk, d: d, into: s.baseAddress!, aName: "query", bName: "key")
      }
      try top.withUnsafeMutableBufferPointer { (t) throws(LiftError) in
        try scores.withUnsafeBufferPointer { (s) throws(LiftError) in
          try Similarity.topK(s.baseAddress!, n: b, m: nk, k: k, indices: t.baseAddress!, values: nil)
        }
      }
      for i in 0..<b { visit(start + i, top[(i * k)..<(i * k + k)]) }
      start += b
    }
  }

  /// Pairwise compositional test (SugarCrepe): correct[i] = cos(image_i, positive_i) >
  /// cos(image_i, negative_i). Returns the flags (accuracy per negative type is the caller's
  /// grouping).
  public static func pairwise(images: UnsafePointer<Float>, positives: UnsafePointer<Float>, negatives: UnsafePointer<Float>,
                              n: Int, d: Int) throws(LiftError) -> [Bool] {
    var out: [Bool] = []
    out.reserveCapacity(n)
    for i in 0..<n {
      let img = images + i * d, p = positives + i * d, q = negatives + i * d
      let ni = VectorOps.norm(img, d), np = VectorOps.norm(p, d), nq = VectorOps.norm(q, d)
      guard ni > 0, np > 0, nq > 0, ni.isFinite, np.isFinite, nq.isFinite else {
        throw .value("pair \(i) has a zero or non-finite embedding")
      }
      var dp: Float = 0, dq: Float = 0
      for j in 0..<d { dp += img[j] * p[j]; dq += img[j] * q[j] }
      out.append(dp / np > dq / nq)
    }
    return out
  }
}
