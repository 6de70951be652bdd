
extension EmbeddingStore {
  /// For each of the nq queries (nq x dim), the k store rows with the highest cosine similarity,
  /// best first (ties to the lower row), streaming the store in blocks of bounded size.
  /// Outputs are nq x k; either may be nil. A zero or non-finite store row is a value error.
  public func search(queries: UnsafePointer<Float>, count nq: Int, k: Int,
                     indices: UnsafeMutablePointer<Int64>?, scores: UnsafeMutablePointer<Float>?) throws(LiftError) {
    guard k >= 1, Int64(k) <= rows else { throw .argument("k must be in [1, \(rows)] (got \(k))") }
    guard nq > 0 else { return }
    let d = Int(dim)
    let resultCount = try checkedCount(Int64(nq), Int64(k), "search results")
    // Unit-norm queries, so one product per block gives q . x and the cosine is that / |x|.
    let unitQueries = try allocateFloats(try checkedCount(Int64(nq), Int64(d), "queries"), what: "\(nq) unit queries")
    defer { unitQueries.deallocate() }
    let inverse = try allocateFloats(nq, what: "\(nq) query norms")
    defer { inverse.deallocate() }
    try Similarity.fillInverseNorms(queries, rows: nq, d: d, into: inverse, name: "query")
    for q in 0..<nq {
      (unitQueries + q * d).update(from: queries + q * d, count: d)
      VectorOps.scale(unitQueries + q * d, d, by: inverse[q])
    }
    let blockRows = Int(max(1, min(rows, Int64(bufferBytes) / (dim * 4))))
    let block = try allocateFloats(blockRows * d, what: "a block of \(blockRows) store rows")
    defer { block.deallocate() }
    let blockInverse = try allocateFloats(blockRows, what: "block norms")
    defer { blockInverse.deallocate() }
    let blockScores = try allocateFloats(try checkedCount(Int64(nq), Int64(blockRows), "block scores"),
                                         what: "\(nq) x \(blockRows) block scores")
    defer { blockScores.deallocate() }
    let heapScores = try allocateFloats(resultCount, what: "\(nq) x \(k) search results")
    defer { heapScores.deallocate() }
    let heapIndices = try allocateElements(resultCount, of: Int64.self, what: "\(nq) x \(k) search results")
    defer { heapIndices.deallocate() }
    let products = MatMul()
    var heaps = (0..<nq).map { TopKHeap(scores: heapScores + $0 * k, indices: heapIndices + $0 * k, k: k) }
    var start: Int64 = 0
    while start < rows {
      let n = Int(min(Int64(blockRows), rows - start))
      try readRaw(range: start, count: Int64(n), into: block)
      try Similarity.fillInverseNorms(block, rows: n, d: d, into: blockInverse, name: "store", firstRow: start)
      try products.product(transA: false, transB: true, m: nq, n: n, k: d, Matrix(unitQueries, ld: d), Matrix(block, ld: d),
                           Matrix(blockScores, ld: n))
      for q in 0..<nq {
        let row = blockScores + q * n
        for j in 0..<n { heaps[q].offer(row[j] * blockInverse[j], start + Int64(j)) }
      }
      start += Int64(n)
    }
    for q in 0..<nq { heaps[q].sortDescending() }
    indices?.update(from: heapIndices, count: nq * k)
    scores?.update(from: heapScores, count: nq * k)
  }
}
