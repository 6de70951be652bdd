import Dispatch

/// Cosine similarity and top-k selection over dense row-major float32 matrices.
public enum Similarity {
  /// out (n x m) = cosine similarity between rows of a (n x d) and rows of b (m x d):
  /// one product of the raw vectors, then a rescale by the inverse norms. A zero or non-finite row
  /// is a value error naming `aName`/`bName` and the row.
  public static func cosine(_ a: UnsafePointer<Float>, n: Int, _ b: UnsafePointer<Float>, m: Int, d: Int,
                            into out: UnsafeMutablePointer<Float>,
                            aName: String = "a", bName: String = "b") throws(LiftError) {
    guard n > 0, m > 0 else { return }
    _ = try checkedCount(Int64(n), Int64(m), "the \(n) x \(m) similarity matrix")
    let inverseNorms = try allocateFloats(n + m, what: "\(n + m) row norms")
    defer { inverseNorms.deallocate() }
    try fillInverseNorms(a, rows: n, d: d, into: inverseNorms, name: aName)
    try fillInverseNorms(b, rows: m, d: d, into: inverseNorms + n, name: bName)
    try MatMul().product(transA: false, transB: true, m: n, n: m, k: d, Matrix(a, ld: d), Matrix(b, ld: d),
                         Matrix(out, ld: m))
    scaleRowsAndColumns(out, n: n, m: m, rowScale: inverseNorms, columnScale: inverseNorms + n)
  }

  /// inverse[i] = 1 / |x_i| for each of `rows` rows; throws for a zero or non-finite row.
  static func fillInverseNorms(_ x: UnsafePointer<Float>, rows: Int, d: Int,
                               into inverse: UnsafeMutablePointer<Float>, name: String,
                               firstRow: Int64 = 0) throws(LiftError) {
    for i in 0..<rows {
      let row = x + i * d
      if let c = VectorOps.firstNonFinite(row, d) {
        throw .value("\(name) row \(firstRow + Int64(i)) has a non-finite value \(row[c]) at column \(c)")
      }
      let norm = VectorOps.norm(row, d)
      guard norm > 0 else { throw .value("\(name) row \(firstRow + Int64(i)) is all zeros: its cosine similarity is undefined") }
      inverse[i] = 1 / norm
    }
  }

  /// out[i, j] *= rowScale[i] * columnScale[j].
  static func scaleRowsAndColumns(_ out: UnsafeMutablePointer<Float>, n: Int, m: Int,
                                  rowScale: UnsafePointer<Float>, columnScale: UnsafePointer<Float>) {
    for i in 0..<n {
      let row = out + i * m
      let r = rowScale[i]
      var j = 0
      while j + 16 <= m {
        let raw = UnsafeMutableRawPointer(row + j)
        let c = UnsafeRawPointer(columnScale + j).loadUnaligned(as: SIMD16<Float>.self)
        raw.storeBytes(of: raw.loadUnaligned(as: SIMD16<Float>.self) * c * r, as: SIMD16<Float>.self)
        j += 16
      }
      while j < m { row[j] *= columnScale[j] * r; j += 1 }
    }
  }

  /// For each of the n rows of scores (n x m): the k largest entries, best first (ties to the
  /// lower column). Either output (n x k) may be nil. Requires 1 <= k <= m; NaN is a value error.
  public static func topK(_ scores: UnsafePointer<Float>, n: Int, m: Int, k: Int,
                          indices: UnsafeMutablePointer<Int64>?, values: UnsafeMutablePointer<Float>?) throws(LiftError) {
    guard k >= 1, k <= m else { throw .argument("k must be in [1, \(m)] (got \(k))") }
    for i in 0..<n where VectorOps.firstNonFinite(scores + i * m, m) != nil {
      for j in 0..<m where scores[i * m + j].isNaN { throw .value("scores row \(i) column \(j) is NaN") }
    }
    let count = try checkedCount(Int64(n), Int64(k), "top-k results")
    let work = try allocateFloats(count, what: "\(n) x \(k) top-k results")
    defer { work.deallocate() }
    let workIdx = try allocateElements(count, of: Int64.self, what: "\(n) x \(k) top-k results")
    defer { workIdx.deallocate() }
    // Rows split over the workers (each row's heap is its own).
    Parallel.forRanges(n, grain: n * m >= 1 << 18 ? max(1, 4096 / max(1, m / 256)) : n) { rows in
      for i in rows {
        var heap = TopKHeap(scores: work + i * k, indices: workIdx + i * k, k: k)
        let row = scores + i * m
        for j in 0..<m { heap.offer(row[j], Int64(j)) }
        heap.sortDescending()
      }
    }
    indices?.update(from: workIdx, count: n * k)
    values?.update(from: work, count: n * k)
  }
}

