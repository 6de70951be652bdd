import Glibc
import LiftKernelsC

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
    let bc1 = 1 - pow(config.beta1, Double(t)), bc2 = 1 - pow(config.beta2, Double(t))
    var constants = lk_adamw_constants(beta1: Float(config.beta1), beta2: Float(config.beta2), eps: Float(config.eps),
                                       inv_sqrt_bc2: Float(1 / bc2.squareRoot()), grad_scale: gradScale)
    let headGroup = layout.towerGroups, tensors = layout.tensors
    // The trained tensors are a suffix of the buffer; one pass over it, split evenly between the
    // workers, each walking the tensors its range overlaps. Tensor i owns [offset_i, offset_i+1)
    // (its padding too: a zero gradient keeps zero padding at zero).
    let start = layout.offset(ofGroup: lowestGroup)
    guard start < layout.totalCount else { return }
    let first = tensors.firstIndex { $0.offset == start }!
    Parallel.forRanges(layout.totalCount - start, grain: 1 << 15) { r in
      var lo = start + r.lowerBound
      let hi = start + r.upperBound
      var index = first
      while index + 1 < tensors.count && tensors[index + 1].offset <= lo { index += 1 }
      while lo < hi {
        let tensor = tensors[index]
        let end = min(hi, index + 1 < tensors.count ? tensors[index + 1].offset : layout.totalCount)
        let group = layout.group(ofOffset: tensor.offset)
        let lr = config.layerDecay == 1 ? baseLR : baseLR * pow(config.layerDecay, Double(headGroup - group))
        lk_adamw_update(&constants, Float(lr / bc1), Float(1 - lr * (tensor.decays ? config.weightDecay : 0)),
                        params + lo, grads + lo, m + lo, v + lo, end - lo)
        lo = end
        index += 1
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
