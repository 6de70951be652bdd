import CLiftABI

@_cdecl("lift_cosine_similarity")
public func cLiftCosineSimilarity(_ a: UnsafePointer<Float>?, _ n: Int64, _ b: UnsafePointer<Float>?, _ m: Int64,
                                  _ d: Int64, _ out: UnsafeMutablePointer<Float>?, _ outLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    try requirePositive(d, "d")
    _ = try checkedCount(n, d, "a")
    _ = try checkedCount(m, d, "b")
    let needed = try checkedCount(n, m, "out")
    guard try requiredSize(outLen, "out_len") >= needed else {
      throw .buffer("out holds \(outLen) floats but n x m = \(n) x \(m) need \(needed)")
    }
    if needed == 0 { return }
    try Similarity.cosine(try required(a, "a"), n: Int(n), try required(b, "b"), m: Int(m), d: Int(d),
                          into: try required(out, "out"))
  }
}

@_cdecl("lift_topk")
public func cLiftTopK(_ scores: UnsafePointer<Float>?, _ n: Int64, _ m: Int64, _ k: Int64,
                      _ indices: UnsafeMutablePointer<Int64>?, _ values: UnsafeMutablePointer<Float>?) -> lift_status {
  capi { () throws(LiftError) in
    try requireNonNegative(n, "n")
    guard k >= 1, k <= m else { throw .argument("k must be in [1, m = \(m)] (got \(k))") }
    _ = try checkedCount(n, m, "scores")
    _ = try checkedCount(n, k, "outputs")
    if n == 0 { return }
    try Similarity.topK(try required(scores, "scores"), n: Int(n), m: Int(m), k: Int(k),
                        indices: indices, values: values)
  }
}
