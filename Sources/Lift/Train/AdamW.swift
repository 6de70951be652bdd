import Glibc

/// AdamW with decoupled weight decay, as torch.optim.AdamW computes it (step t counts from 1),
/// on the gradient scaled by `gradScale` (the clipping coefficient), zeroing the gradient as it
/// goes (one pass over parameters, gradient and moments):
///   g = gradScale * g
///   p *= 1 - lr * wd                      (wd = 0 for tensors with fewer than 2 dimensions)
///   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
///   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// Tensors of layer groups below `lowestGroup` are frozen (skipped: no update, no decay); with
/// layer decay, group g (ParameterLayout.group) learns at lr * layerDecay^(head group - g).
enum AdamW {
  static func update(layout: ParameterLayout, params: UnsafeMutablePointer<Float>, grads: UnsafeMutablePointer<Float>,
                     gradScale: Float, m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, step t: Int,
                     lr baseLR: Double, config: TrainConfig, lowestGroup: Int = 0) {
    let b1 = Float(config.beta1), b2 = Float(config.beta2)
    let bc1 = 1 - pow(config.beta1, Double(t)), bc2 = 1 - pow(config.beta2, Double(t))
    let invSqrtBc2 = Float(1 / bc2.squareRoot())
    let eps = Float(config.eps)
    let headGroup = layout.towerGroups
    for (index, tensor) in layout.tensors.enumerated() {
      let group = layout.group(ofOffset: tensor.offset)
      if group < lowestGroup { continue }
      let lr = config.layerDecay == 1 ? baseLR : baseLR * pow(config.layerDecay, Double(headGroup - group))
      let stepSize = Float(lr / bc1)
      let decay = Float(1 - lr * (tensor.decays ? config.weightDecay : 0))
      let o = tensor.offset
      // The tensor and the padding after it (zero gradient keeps zero padding at zero).
      let end = index + 1 < layout.tensors.count ? layout.tensors[index + 1].offset : layout.totalCount
      Parallel.forRanges(end - o, grain: 1 << 15) { r in
        let p = params + o, g = grads + o, mm = m + o, vv = v + o
        let vb1 = Vec16(repeating: b1), vb2 = Vec16(repeating: b2), vdecay = Vec16(repeating: decay)
        let v1b1 = Vec16(repeating: 1 - b1), v1b2 = Vec16(repeating: 1 - b2)
        let vstep = Vec16(repeating: stepSize), vbc = Vec16(repeating: invSqrtBc2), veps = Vec16(repeating: eps)
        let vscale = Vec16(repeating: gradScale)
        var i = r.lowerBound
        while i + 16 <= r.upperBound {
          let gi = g.vload(i) * vscale
          g.vstore(Vec16(), i)
          let mi = mm.vload(i) * vb1 + v1b1 * gi
          let vi = vv.vload(i) * vb2 + v1b2 * gi * gi
          mm.vstore(mi, i)
          vv.vstore(vi, i)
          let denom = vi.squareRoot() * vbc + veps
          p.vstore(p.vload(i) * vdecay - vstep * mi / denom, i)
          i += 16
        }
        while i < r.upperBound {
          let gi = g[i] * gradScale
          g[i] = 0
          let mi = mm[i] * b1 + (1 - b1) * gi
          let vi = vv[i] * b2 + (1 - b2) * gi * gi
          mm[i] = mi
          vv[i] = vi
          p[i] = p[i] * decay - stepSize * mi / (vi.squareRoot() * invSqrtBc2 + eps)
          i += 1
        }
      }
    }
  }

  /// Floats per block of `globalNorm`.
  static let normBlock = 4096

  /// Doubles of scratch `globalNorm` needs for a buffer of `count` floats.
  static func normScratchCount(_ count: Int) -> Int { count / normBlock + 1 }

  /// Euclidean norm of g[0..<count] when g[0..<start] is zero, reading from the block that
  /// holds `start` on: the squares of each block of `normBlock` floats (aligned to g[0]) summed in
  /// float32 lanes, then the blocks' sums added in order in double. The order depends on
  /// neither `start` nor the number of workers, so the result is bit-identical to the norm of
  /// the whole buffer. `partials` holds normScratchCount(count) doubles.
  static func globalNorm(_ g: UnsafePointer<Float>, from start: Int = 0, count: Int,
                         partials: UnsafeMutablePointer<Double>) -> Double {
    let first = start / normBlock, blocks = (count + normBlock - 1) / normBlock - first
    guard blocks > 0 else { return 0 }
    Parallel.forRanges(blocks, grain: 16) { r in
      for b in r {
        let lo = (first + b) * normBlock, hi = min(lo + normBlock, count)
        var acc = Vec16()
        var j = lo
        while j + 16 <= hi { let x = g.vload(j); acc.addProduct(x, x); j += 16 }
        var s = Double(acc.sum())
        while j < hi { s += Double(g[j]) * Double(g[j]); j += 1 }
        partials[b] = s
      }
    }
    var sum = 0.0
    for b in 0..<blocks { sum += partials[b] }
    return sum.squareRoot()
  }

  /// g *= factor over a whole buffer.
  static func scaleBuffer(_ g: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
    Parallel.forRanges(count, grain: 1 << 16) { r in VectorOps.scale(g + r.lowerBound, r.count, by: factor) }
  }
}
