import Glibc

/// The three training objectives over a (possibly multi-worker) global batch of n pairs.
///
/// Inputs are unit-norm image embeddings I (n x D) and unit-norm text embeddings T (n x D);
/// pair i is (I_i, T_i). Only the rows [localStart, localStart + localCount) of dLoss/dI are
/// produced (a worker's own images), multiplied by `featureGradScale` (the number of workers,
/// so that averaging the workers' gradients gives the exact global-batch gradient). The
/// gradients of the scalar parameters (logit scale s, logit bias b) are for the whole batch.
enum Objectives {
  struct Result {
    var loss: Double
    var dLogitScale: Double
    var dLogitBias: Double
  }

  /// Scratch for the n x n logits and per-row/column statistics (grows, never shrinks), and the
  /// plans of the loss's float32 products.
  final class Scratch {
    private(set) var logits: UnsafeMutablePointer<Float>
    private(set) var stats: UnsafeMutablePointer<Float>
    private(set) var sums: UnsafeMutablePointer<Double>
    private(set) var capacity: Int
    let products = MatMul()

    /// Bytes of a scratch for a global batch of `capacity`: capacity^2 logits, 3 x capacity
    /// statistics (floats) and capacity row sums (doubles).
    static func bytes(capacity: Int) -> Int {
      let c = max(capacity, 1)
      let (square, overflow) = c.multipliedReportingOverflow(by: c)
      return overflow || square > Int.max / 8 ? Int.max : square * 4 + c * 20
    }

    init(capacity: Int) throws(LiftError) {
      self.capacity = max(capacity, 1)
      logits = try allocateFloats(self.capacity * self.capacity, what: "loss logits")
      stats = try allocateFloats(3 * self.capacity, what: "loss statistics")
      sums = .allocate(capacity: self.capacity)
    }

    deinit { logits.deallocate(); stats.deallocate(); sums.deallocate() }

    /// Makes room for a global batch of n (allocates only when n exceeds every earlier batch).
    func reserve(_ n: Int) throws(LiftError) {
      if n <= capacity { return }
      let newLogits = try allocateFloats(n * n, what: "loss logits for a global batch of \(n)")
      let newStats: UnsafeMutablePointer<Float>
      do { newStats = try allocateFloats(3 * n, what: "loss statistics") } catch { newLogits.deallocate(); throw error }
      logits.deallocate(); stats.deallocate(); sums.deallocate()
      logits = newLogits; stats = newStats; sums = .allocate(capacity: n); capacity = n
    }
  }

  static func compute(_ objective: ModelConfig.Objective, images: UnsafePointer<Float>, texts: UnsafePointer<Float>,
                      n: Int, d: Int, logitScale: Float, logitBias: Float, localStart: Int, localCount: Int,
                      featureGradScale: Float, dImages: UnsafeMutablePointer<Float>, scratch: Scratch) throws(LiftError) -> Result {
    switch objective {
    case .cosine:
      return cosine(images: images, texts: texts, n: n, d: d, localStart: localStart, localCount: localCount,
                    scale: featureGradScale, dImages: dImages)
    case .contrastive:
      return try contrastive(images: images, texts: texts, n: n, d: d, logitScale: logitScale, localStart: localStart,
                         localCount: localCount, scale: featureGradScale, dImages: dImages, scratch: scratch)
    case .sigmoid:
      return try sigmoid(images: images, texts: texts, n: n, d: d, logitScale: logitScale, logitBias: logitBias,
                     localStart: localStart, localCount: localCount, scale: featureGradScale, dImages: dImages,
                     scratch: scratch)
    }
  }

  /// LIFT's simplistic cosine loss: mean_i (1 - <I_i, T_i>); dI_i = -T_i / n.
  static func cosine(images: UnsafePointer<Float>, texts: UnsafePointer<Float>, n: Int, d: Int, localStart: Int,
                     localCount: Int, scale: Float, dImages: UnsafeMutablePointer<Float>) -> Result {
    var loss = 0.0
    for i in 0..<n {
      var dot = 0.0
      for j in 0..<d { dot += Double(images[i * d + j]) * Double(texts[i * d + j]) }
      loss += 1 - dot
    }
    let g = -scale / Float(n)
    for i in 0..<localCount {
      let t = texts + (localStart + i) * d
      for j in 0..<d { dImages[i * d + j] = g * t[j] }
    }
    return Result(loss: loss / Double(n), dLogitScale: 0, dLogitBias: 0)
  }

  /// logits = e^s I T^T (n x n).
  private static func logits(images: UnsafePointer<Float>, texts: UnsafePointer<Float>, n: Int, d: Int,
                             scale: Float, into out: UnsafeMutablePointer<Float>, products: MatMul) throws(LiftError) {
    try products.product(transA: false, transB: true, m: n, n: n, k: d, Matrix(images, ld: d), Matrix(texts, ld: d),
                         Matrix(out, ld: n))
    AdamW.scaleBuffer(out, count: n * n, by: scale)
  }

  /// dI (localCount x d) = scale * dlogits[local rows] T.
  private static func featureGradient(_ dLogits: UnsafePointer<Float>, texts: UnsafePointer<Float>, n: Int, d: Int,
                                      localCount: Int, scale: Float, into dImages: UnsafeMutablePointer<Float>,
                                      products: MatMul) throws(LiftError) {
    try products.product(transA: false, transB: false, m: localCount, n: d, k: n, Matrix(dLogits, ld: n),
                         Matrix(texts, ld: d), Matrix(dImages, ld: d))
    AdamW.scaleBuffer(dImages, count: localCount * d, by: scale)
  }

  /// CLIP loss: 1/2 (mean_i CE(row i -> i) + mean_j CE(column j -> j)) on logits = e^s I T^T.
  /// dlogits = (softmax_rows + softmax_columns - 2 Id) / (2n); dI = e^s dlogits T; ds = sum dlogits * logits.
  static func contrastive(images: UnsafePointer<Float>, texts: UnsafePointer<Float>, n: Int, d: Int,
                          logitScale: Float, localStart: Int, localCount: Int, scale: Float,
                          dImages: UnsafeMutablePointer<Float>, scratch: Scratch) throws(LiftError) -> Result {
    let e = Float(exp(Double(logitScale)))
    let z = scratch.logits
    try logits(images: images, texts: texts, n: n, d: d, scale: e, into: z, products: scratch.products)
    let rowLse = scratch.stats, colMax = rowLse + n, colLse = colMax + n, sums = scratch.sums
    // Rows, then columns, then the gradient, each split between the workers (rows or columns
    // of their own; every sum runs in the same order whatever the split, so the result does
    // not depend on the thread count).
    let grain = max(1, 4096 / n)
    Parallel.forRanges(n, grain: grain) { rows in
      for i in rows {
        let row = z + i * n
        var m = -Float.infinity
        for j in 0..<n { m = max(m, row[j]) }
        var s = 0.0
        for j in 0..<n { s += Double(exp(row[j] - m)) }
        rowLse[i] = m + Float(log(s))
      }
    }
    Parallel.forRanges(n, grain: grain) { columns in
      for j in columns { colMax[j] = -.infinity; sums[j] = 0 }
      for i in 0..<n {
        let row = z + i * n
        for j in columns { colMax[j] = max(colMax[j], row[j]) }
      }
      for i in 0..<n {
        let row = z + i * n
        for j in columns { sums[j] += Double(exp(row[j] - colMax[j])) }
      }
      for j in columns { colLse[j] = colMax[j] + Float(log(sums[j])) }
    }
    var loss = 0.0
    for i in 0..<n { loss += Double(rowLse[i]) + Double(colLse[i]) - 2 * Double(z[i * n + i]) }
    loss /= 2 * Double(n)
    // logits -> dlogits in place; sums[i] = row i's share of ds = sum dlogits * logits.
    let half = 1 / (2 * Float(n))
    Parallel.forRanges(n, grain: grain) { rows in
      for i in rows {
        let row = z + i * n
        var rowDs = 0.0
        for j in 0..<n {
          let l = row[j]
          var g = exp(l - rowLse[i]) + exp(l - colLse[j])
          if i == j { g -= 2 }
          g *= half
          rowDs += Double(g) * Double(l)
          row[j] = g
        }
        sums[i] = rowDs
      }
    }
    var ds = 0.0
    for i in 0..<n { ds += sums[i] }
    // dI (local rows) = e^s dlogits[local rows] T, times the worker scale.
    try featureGradient(z + localStart * n, texts: texts, n: n, d: d, localCount: localCount, scale: e * scale,
                        into: dImages, products: scratch.products)
    // d/ds of e^s * (I T^T) is the logits themselves: ds computed above.
    return Result(loss: loss, dLogitScale: ds, dLogitBias: 0)
  }

  /// SigLIP: logits = e^s I T^T + b, labels +1 on the diagonal, -1 elsewhere;
  /// loss = -sum log sigmoid(label * logit) / n. dlogit = -label * sigmoid(-label * logit) / n.
  static func sigmoid(images: UnsafePointer<Float>, texts: UnsafePointer<Float>, n: Int, d: Int,
                      logitScale: Float, logitBias: Float, localStart: Int, localCount: Int, scale: Float,
                      dImages: UnsafeMutablePointer<Float>, scratch: Scratch) throws(LiftError) -> Result {
    let e = Float(exp(Double(logitScale)))
    let z = scratch.logits
    try logits(images: images, texts: texts, n: n, d: d, scale: e, into: z, products: scratch.products)
    var loss = 0.0, ds = 0.0, db = 0.0
    let invN = 1 / Double(n)
    for i in 0..<n {
      for j in 0..<n {
        let raw = Double(z[i * n + j])
        let logit = raw + Double(logitBias)
        let label: Double = i == j ? 1 : -1
        let m = label * logit
        // -log sigmoid(m) = softplus(-m), computed stably.
        loss += max(-m, 0) + log1p(exp(-abs(m)))
        let sig = 1 / (1 + exp(m))  // sigmoid(-m)
        let g = -label * sig * invN
        ds += g * raw
        db += g
        z[i * n + j] = Float(g)
      }
    }
    try featureGradient(z + localStart * n, texts: texts, n: n, d: d, localCount: localCount, scale: e * scale,
                        into: dImages, products: scratch.products)
    return Result(loss: loss * invN, dLogitScale: ds, dLogitBias: db)
  }
}
