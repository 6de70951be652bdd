/// Resampling of a learned positional embedding to another patch grid, for a pretrained
/// encoder trained at a different image size: each of the W channels is an image of g x g
/// positions, resized to n x n with separable bicubic interpolation (Keys kernel, a = -0.5),
/// antialiased when shrinking (the kernel widens by the scale), sample centres at half pixels:
/// what timm's resample_abs_pos_embed does (torch's interpolate with mode 'bicubic' and
/// antialias=True, the same arithmetic as Pillow's BICUBIC). The class token's row (and any
/// other prefix row) is kept as it is. Computed in double precision.
enum PositionalResampling {
  /// For each output index: the first input index and the weights of the inputs from there.
  struct Taps {
    let start: [Int]
    let weights: [[Double]]

    init(inSize: Int, outSize: Int) {
      let scale = Double(inSize) / Double(outSize)
      let filterScale = max(scale, 1)
      let support = 2 * filterScale
      var start: [Int] = [], weights: [[Double]] = []
      for i in 0..<outSize {
        let center = scale * (Double(i) + 0.5)
        let lo = max(Int(center - support + 0.5), 0)
        let hi = min(Int(center + support + 0.5), inSize)
        var w = (lo..<hi).map { Taps.cubic((Double($0) - center + 0.5) / filterScale) }
        let sum = w.reduce(0, +)
        if sum != 0 { w = w.map { $0 / sum } }
        start.append(lo)
        weights.append(w)
      }
      self.start = start
      self.weights = weights
    }

    /// Keys' cubic convolution kernel with a = -0.5.
    static func cubic(_ x: Double) -> Double {
      let a = -0.5, t = abs(x)
      if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
      if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
      return 0
    }
  }

  /// The (from x from) grid of `width`-vectors in `grid` (row-major positions, W channels per
  /// position) resampled to (to x to).
  static func resample(_ grid: [Float], from: Int, to: Int, width w: Int) -> [Float] {
    if from == to { return grid }
    let taps = Taps(inSize: from, outSize: to)
    // Rows first (along x), then columns (along y), in double.
    var horizontal = [Double](repeating: 0, count: from * to * w)
    for y in 0..<from {
      for x in 0..<to {
        let out = (y * to + x) * w
        for (k, weight) in taps.weights[x].enumerated() {
          let src = (y * from + taps.start[x] + k) * w
          for c in 0..<w { horizontal[out + c] += weight * Double(grid[src + c]) }
        }
      }
    }
    var result = [Float](repeating: 0, count: to * to * w)
    var accumulator = [Double](repeating: 0, count: w)
    for y in 0..<to {
      for x in 0..<to {
        for c in 0..<w { accumulator[c] = 0 }
        for (k, weight) in taps.weights[y].enumerated() {
          let src = ((taps.start[y] + k) * to + x) * w
          for c in 0..<w { accumulator[c] += weight * horizontal[src + c] }
        }
        let out = (y * to + x) * w
        for c in 0..<w { result[out + c] = Float(accumulator[c]) }
      }
    }
    return result
  }
}
