/// Forward and backward of the image encoder: ViT tower (OpenCLIP VisionTransformer semantics)
/// + LIFT projection head + L2 normalisation. One function per stage, over the buffers of a
/// `Workspace`; parameter gradients accumulate (+=) into a buffer laid out like the parameters.
///
/// Notation: B images, T = 1 + R + P tokens (class token, R registers, then patches
/// row-major), W width, H heads, F = mlp_ratio * W, D text_dim, N = B * T token rows.
///
/// Options of other model families (ModelConfig): a patch-embedding bias, no ln_pre,
/// QuickGELU, LayerScale (x = x + gamma * branch), registers, and ln_post on the pooled feature
/// instead of on every token; LayerNorm eps from the config.
///
/// Precision (the workspace's): in bf16 every matrix product takes bfloat16 operands: the
/// weights' rounded copy, activations that kernels write rounded (`MatrixElements`), and float32
/// gradients rounded into a staging buffer just before their products (`Pass.operand`). Arithmetic
/// outside the products (residual stream, LayerNorm, softmax, the activation, bias and parameter
/// gradients) is float32. The stages, forward beside backward, are in EncoderPass.swift.
enum Encoder {
  /// The weights as product operands: the parameters (fp32) or their rounded copy (bf16).
  struct ProductWeights {
    let values: UnsafeMutablePointer<Float>
    let rounded: UnsafeMutablePointer<BFloat16>?

    /// The tensor at `offset` as a matrix with rows of `ld` elements.
    func callAsFunction(_ offset: Int, ld: Int) -> Matrix {
      if let rounded { return Matrix(rounded + offset, ld: ld) }
      return Matrix(values + offset, ld: ld)
    }
  }

  // MARK: Forward

  /// Runs the encoder on `batch` images; afterwards ws.embeddings (B x D) holds unit-norm image
  /// embeddings and, for training workspaces, every activation backward needs is saved.
  /// In bf16 it first rounds the current parameters into ws.weights16 (backward uses that copy).
  static func forward(_ model: Model, images: ImageInput, batch: Int, ws: Workspace) throws(LiftError) {
    roundWeights(model, ws: ws, fromGroup: 0)
    try forwardTower(model, images: images, batch: batch, ws: ws)
    try forwardHead(model, batch: batch, ws: ws)
  }

  /// The head on pooled features already in ws.pooled (B x W), as the second half of `forward`:
  /// ws.embeddings gets the unit-norm embeddings. In bf16 it rounds the head's parameters first.
  static func forward(model: Model, pooledBatch batch: Int, ws: Workspace) throws(LiftError) {
    roundWeights(model, ws: ws, fromGroup: model.layout.towerGroups)
    try forwardHead(model, batch: batch, ws: ws)
  }

  /// bf16 only: rounds the parameters of groups >= `fromGroup` into ws.weights16.
  static func roundWeights(_ model: Model, ws: Workspace, fromGroup group: Int) {
    guard let rounded = ws.weights16 else { return }
    let start = model.layout.offset(ofGroup: group), count = model.layout.totalCount - start
    Profile.measure(.precision) { BF16.convertParallel(model.parameters + start, rounded + start, count: count) }
  }

  /// The image tower: patch embedding, blocks, final norm and pooling into ws.pooled (B x W)
  /// (the features the head maps to embeddings). Expects ws.weights16 rounded in bf16.
  static func forwardTower(_ model: Model, images: ImageInput, batch: Int, ws: Workspace) throws(LiftError) {
    var pass = Pass(model, ws: ws, batch: batch)
    try pass.embedForward(images)
    for i in 0..<model.config.depth {
      try pass.attentionForward(i)
      try pass.mlpForward(i)
    }
    pass.poolForward()
  }

  /// Head and L2 normalisation: ws.pooled (B x W) to ws.embeddings (B x D).
  static func forwardHead(_ model: Model, batch: Int, ws: Workspace) throws(LiftError) {
    var pass = Pass(model, ws: ws, batch: batch)
    try pass.headForward()
  }

  /// Row by row, image b's tokens: x[b, 0] = class + pos[0]; x[b, 1 + r] = register r (no
  /// position); x[b, 1 + R + i] = patchTokens[b, i] + pos[1 + i].
  static func assembleTokens(_ patchTokens: UnsafePointer<Float>, classEmbedding: UnsafePointer<Float>,
                             positional: UnsafePointer<Float>, registers: UnsafePointer<Float>?, registerCount: Int,
                             batch: Int, tokens t: Int, width w: Int, into x: UnsafeMutablePointer<Float>) {
    let prefix = 1 + registerCount, patches = t - prefix
    Parallel.forRanges(batch * t, grain: max(1, 8192 / w)) { r in
      for row in r {
        let b = row / t, tok = row % t, dst = x + row * w
        if tok > 0 && tok < prefix {
          dst.update(from: registers! + (tok - 1) * w, count: w)
          continue
        }
        let src = tok == 0 ? classEmbedding : patchTokens + (b * patches + tok - prefix) * w
        let pos = positional + (tok == 0 ? 0 : tok - prefix + 1) * w
        for j in 0..<w { dst[j] = src[j] + pos[j] }
      }
    }
  }

  /// pooled[b] = mean of the patch tokens y[b, prefix...] ('avg', LIFT's choice; the class
  /// token and registers are left out) or the class token y[b, 0] ('tok').
  static func pool(_ y: UnsafePointer<Float>, batch: Int, tokens t: Int, prefix: Int, width w: Int,
                   pooling: ModelConfig.Pooling, into pooled: UnsafeMutablePointer<Float>) {
    for b in 0..<batch {
      let dst = pooled + b * w
      switch pooling {
      case .token:
        dst.update(from: y + b * t * w, count: w)
      case .average:
        dst.initialize(repeating: 0, count: w)
        for tok in prefix..<t {
          let src = y + (b * t + tok) * w
          for j in 0..<w { dst[j] += src[j] }
        }
        let inv = 1 / Float(t - prefix)
        for j in 0..<w { dst[j] *= inv }
      }
    }
  }

  /// out[i] = f[i] / |f[i]|, norms[i] = |f[i]|. A zero row stays zero (and is caught by callers
  /// that check the norms).
  static func normalizeRows(_ f: UnsafePointer<Float>, rows: Int, cols: Int, norms: UnsafeMutablePointer<Float>,
                            into out: UnsafeMutablePointer<Float>) {
    for i in 0..<rows {
      let nrm = VectorOps.norm(f + i * cols, cols)
      norms[i] = nrm
      let inv = nrm > 0 ? 1 / nrm : 0
      for j in 0..<cols { out[i * cols + j] = f[i * cols + j] * inv }
    }
  }

  // MARK: Backward

  /// Given dEmb = dLoss/d(embeddings) (B x D), adds dLoss/d(parameters) into `grads`.
  /// Requires the training workspace of the matching forward call.
  /// Layer groups below `lowestGroup` (ParameterLayout.group) are frozen: backward computes no
  /// gradient for them and stops below the lowest group that trains.
  static func backward(_ model: Model, dEmbeddings: UnsafePointer<Float>, batch: Int, ws: Workspace,
                       grads: UnsafeMutablePointer<Float>, lowestGroup: Int = 0) throws(LiftError) {
    precondition(ws.training && lowestGroup >= ws.lowestTrainedGroup,
                 "backward needs a training workspace that kept the activations of group \(lowestGroup) up")
    let depth = model.config.depth
    var pass = Pass(model, ws: ws, batch: batch, grads: grads)
    let (dPooled, scratch) = try pass.headBackward(dEmbeddings)
    guard lowestGroup < model.layout.towerGroups else { return }
    pass.poolBackward(dPooled, scratch: scratch)
    for i in stride(from: depth - 1, through: 0, by: -1) {
      // Block i is in group min(i + 1, depth); below the lowest trained group, stop.
      guard min(i + 1, depth) >= lowestGroup else { return }
      try pass.mlpBackward(i)
      try pass.attentionBackward(i)
    }
    guard lowestGroup == 0 else { return }
    try pass.embedBackward()
  }

  static func poolBackward(_ dPooled: UnsafePointer<Float>, batch: Int, tokens t: Int, prefix: Int, width w: Int,
                           pooling: ModelConfig.Pooling, into dy: UnsafeMutablePointer<Float>) {
    let inv = 1 / Float(max(t - prefix, 1))
    for b in 0..<batch {
      for tok in 0..<t {
        let dst = dy + (b * t + tok) * w, src = dPooled + b * w
        switch pooling {
        case .token where tok == 0: dst.update(from: src, count: w)
        case .average where tok >= prefix: for j in 0..<w { dst[j] = src[j] * inv }
        default: dst.update(repeating: 0, count: w)
        }
      }
    }
  }

  /// dClass += sum_b dx[b, 0]; dRegisters[r] += sum_b dx[b, 1 + r]; dPositional[0] gets the class
  /// token's and dPositional[1 + i] patch i's sum over b; dPatchTokens[b, i] = dx[b, prefix + i].
  static func tokensBackward(_ dx: UnsafePointer<Float>, batch: Int, tokens t: Int, prefix: Int, width w: Int,
                             dClass: UnsafeMutablePointer<Float>, dPositional: UnsafeMutablePointer<Float>,
                             dRegisters: UnsafeMutablePointer<Float>?, dPatchTokens: UnsafeMutablePointer<Float>) {
    let patches = t - prefix
    // Split over tokens so each worker owns whole rows of dPositional and dRegisters.
    Parallel.forRanges(t, grain: max(1, 4096 / (w * max(batch, 1)))) { r in
      for tok in r {
        if tok > 0 && tok < prefix {
          let dreg = dRegisters! + (tok - 1) * w
          for b in 0..<batch {
            let src = dx + (b * t + tok) * w
            for j in 0..<w { dreg[j] += src[j] }
          }
          continue
        }
        let dpos = dPositional + (tok == 0 ? 0 : tok - prefix + 1) * w
        for b in 0..<batch {
          let src = dx + (b * t + tok) * w
          for j in 0..<w { dpos[j] += src[j] }
          if tok == 0 {
            for j in 0..<w { dClass[j] += src[j] }
          } else {
            (dPatchTokens + (b * patches + tok - prefix) * w).update(from: src, count: w)
          }
        }
      }
    }
  }
}
