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
/// gradients rounded into a staging buffer just before their products (`operand`). Everything
/// else (residual stream, LayerNorm, softmax, GELU, bias and parameter gradients) is float32.
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

  /// A float32 matrix (rows x cols, dense) as a product operand: itself in fp32, rounded into
  /// `staging` in bf16 (staging is nil exactly in fp32).
  static func operand(_ values: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                      staging: UnsafeMutablePointer<BFloat16>?) -> Matrix {
    guard let staging else { return Matrix(values, ld: cols) }
    Profile.measure(.precision) { BF16.convertParallel(values, staging, count: rows * cols) }
    return Matrix(staging, ld: cols)
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
    let c = model.config, l = model.layout
    let w = c.width, t = c.tokens, n = batch * t, np = batch * c.patches, f = c.hidden
    let par = model.parameters, mm = ws.products
    let weights = ProductWeights(values: par, rounded: ws.weights16)

    // Patch embedding: one product of the patch matrix with conv1 as a (W x C*p*p) matrix.
    Profile.measure(.patchify) {
      Patchify.run(images, config: c, batch: batch, into: ws.patches)
    }
    try Profile.measure(.gemmForward) { () throws(LiftError) in
      try Linear.forward(ws.patches.matrix(ld: c.patchDim), rows: np, inFeatures: c.patchDim, outFeatures: w,
                         weight: weights(l.conv1, ld: c.patchDim), bias: l.conv1Bias.map { par + $0 },
                         Matrix(ws.patchTokens, ld: w), products: mm)
    }
    Profile.measure(.elementwiseForward) {
      assembleTokens(ws.patchTokens, classEmbedding: par + l.classEmbedding, positional: par + l.positionalEmbedding,
                     registers: l.registerTokens.map { par + $0 }, registerCount: c.registers, batch: batch, tokens: t,
                     width: w, into: ws.x)
    }
    if let lnPre = l.lnPre {
      Profile.measure(.layerNormForward) {
        LayerNorm.forward(ws.x, rows: n, cols: w, gamma: par + lnPre.weight, beta: par + lnPre.bias, eps: c.layerNormEps,
                          y: .f32(ws.x), xhat: ws.xhatPre, rstd: ws.rstdPre)
      }
    }

    let shape = Attention.Shape(batch: batch, tokens: t, width: w, heads: c.heads, bf16: ws.bf16)
    for (i, blk) in l.blocks.enumerated() {
      let qkv = ws.qkv[i], out = ws.attnOut[i], lse = ws.lse[i], fc = ws.fc[i]
      // x = x + out_proj(attention(in_proj(ln_1(x))))
      Profile.measure(.layerNormForward) {
        LayerNorm.forward(ws.x, rows: n, cols: w, gamma: par + blk.ln1Weight, beta: par + blk.ln1Bias, eps: c.layerNormEps,
                          y: ws.h, xhat: ws.xhat1[i], rstd: ws.rstd1[i])
      }
      try Profile.measure(.gemmForward) { () throws(LiftError) in
        try Linear.forward(ws.h.matrix(ld: w), rows: n, inFeatures: w, outFeatures: 3 * w,
                           weight: weights(blk.inWeight, ld: w), bias: par + blk.inBias, qkv.matrix(ld: 3 * w), products: mm)
      }
      try Profile.measure(.attentionForward) { () throws(LiftError) in
        try Attention.forward(qkv: qkv, shape: shape, out: out, lse: lse, scratch: ws.attnScratch, products: mm)
      }
      try residualBranch(gamma: blk.layerScale1.map { par + $0 }, branch: ws.perBlockBranch(ws.branch1, i), ws: ws, rows: n) {
        (target, accumulate) throws(LiftError) in
        try Linear.forward(out.matrix(ld: w), rows: n, inFeatures: w, outFeatures: w, weight: weights(blk.outWeight, ld: w),
                           bias: par + blk.outBias, Matrix(target, ld: w), accumulate: accumulate, products: mm)
      }
      // x = x + c_proj(GELU(c_fc(ln_2(x))))
      Profile.measure(.layerNormForward) {
        LayerNorm.forward(ws.x, rows: n, cols: w, gamma: par + blk.ln2Weight, beta: par + blk.ln2Bias, eps: c.layerNormEps,
                          y: ws.h, xhat: ws.xhat2[i], rstd: ws.rstd2[i])
      }
      try Profile.measure(.gemmForward) { () throws(LiftError) in
        try Linear.forward(ws.h.matrix(ld: w), rows: n, inFeatures: w, outFeatures: f, weight: weights(blk.fcWeight, ld: w),
                           bias: par + blk.fcBias, fc.matrix(ld: f), products: mm)
      }
      Profile.measure(.geluForward) { GELU.forward(fc, ws.g, count: n * f, activation: c.activation) }
      try residualBranch(gamma: blk.layerScale2.map { par + $0 }, branch: ws.perBlockBranch(ws.branch2, i), ws: ws, rows: n) {
        (target, accumulate) throws(LiftError) in
        try Linear.forward(ws.g.matrix(ld: f), rows: n, inFeatures: f, outFeatures: w, weight: weights(blk.projWeight, ld: f),
                           bias: par + blk.projBias, Matrix(target, ld: w), accumulate: accumulate, products: mm)
      }
    }
    // ln_post, in place (the residual stream is not needed afterwards): on every token before
    // pooling, or on the pooled features.
    switch c.finalNorm {
    case .tokens:
      Profile.measure(.layerNormForward) {
        LayerNorm.forward(ws.x, rows: n, cols: w, gamma: par + l.lnPostWeight, beta: par + l.lnPostBias,
                          eps: c.layerNormEps, y: .f32(ws.x), xhat: ws.xhatPost, rstd: ws.rstdPost)
      }
      Profile.measure(.elementwiseForward) {
        pool(ws.x, batch: batch, tokens: t, prefix: c.prefixTokens, width: w, pooling: c.pooling, into: ws.pooled)
      }
    case .pooled:
      Profile.measure(.elementwiseForward) {
        pool(ws.x, batch: batch, tokens: t, prefix: c.prefixTokens, width: w, pooling: c.pooling, into: ws.pooled)
      }
      Profile.measure(.layerNormForward) {
        LayerNorm.forward(ws.pooled, rows: batch, cols: w, gamma: par + l.lnPostWeight, beta: par + l.lnPostBias,
                          eps: c.layerNormEps, y: .f32(ws.pooled), xhat: ws.xhatPost, rstd: ws.rstdPost)
      }
    }
  }

  /// Head and L2 normalisation: ws.pooled (B x W) to ws.embeddings (B x D).
  static func forwardHead(_ model: Model, batch: Int, ws: Workspace) throws(LiftError) {
    let c = model.config
    let weights = ProductWeights(values: model.parameters, rounded: ws.weights16)
    try Profile.measure(.gemmForward) { () throws(LiftError) in
      try headForward(model, batch: batch, ws: ws, weights: weights)
    }
    Profile.measure(.elementwiseForward) {
      normalizeRows(ws.headOut[c.headLayers - 1], rows: batch, cols: c.textDim, norms: ws.norms, into: ws.embeddings)
    }
  }

  /// One residual branch, x += branch(...): without LayerScale (`gamma` nil) the branch's last
  /// product accumulates into x directly; with it, the product writes `branch` (kept for
  /// backward), then x += gamma * branch. `product(target, accumulate)` runs the product.
  static func residualBranch(gamma: UnsafePointer<Float>?, branch: UnsafeMutablePointer<Float>?, ws: Workspace, rows: Int,
                             _ product: (UnsafeMutablePointer<Float>, Bool) throws(LiftError) -> Void) throws(LiftError) {
    guard let gamma, let branch else {
      try Profile.measure(.gemmForward) { () throws(LiftError) in try product(ws.x, true) }
      return
    }
    try Profile.measure(.gemmForward) { () throws(LiftError) in try product(branch, false) }
    Profile.measure(.elementwiseForward) {
      LayerScale.addScaled(branch, gamma: gamma, into: ws.x, rows: rows, cols: ws.config.width)
    }
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

  /// z_0 = pooled W_0^T + b_0; z_l = GELU(z_{l-1}) W_l^T + b_l.
  static func headForward(_ model: Model, batch: Int, ws: Workspace, weights: ProductWeights) throws(LiftError) {
    let c = model.config, l = model.layout, d = c.textDim
    for (i, layer) in l.head.enumerated() {
      let input: Matrix
      if i == 0 {
        input = operand(ws.pooled, rows: batch, cols: c.width, staging: ws.headIn16)
      } else {
        GELU.forward(.f32(ws.headOut[i - 1]), ws.headAct[i], count: batch * d)
        input = ws.headAct[i].matrix(ld: d)
      }
      let inFeatures = i == 0 ? c.width : d
      try Linear.forward(input, rows: batch, inFeatures: inFeatures, outFeatures: d,
                         weight: weights(layer.weight, ld: inFeatures), bias: model.parameters + layer.bias,
                         Matrix(ws.headOut[i], ld: d), products: ws.products)
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
    let c = model.config, l = model.layout
    let w = c.width, t = c.tokens, n = batch * t, np = batch * c.patches, d = c.textDim, f = c.hidden
    let par = model.parameters, mm = ws.products
    let weights = ProductWeights(values: par, rounded: ws.weights16)

    // Through the L2 normalisation: df = (dE - e <e, dE>) / |f|.
    var dz = ws.dHead, dOther = ws.dHead + batch * max(d, w)
    for i in 0..<batch {
      let e = ws.embeddings + i * d, de = dEmbeddings + i * d, out = dz + i * d
      var dot: Float = 0
      for j in 0..<d { dot += e[j] * de[j] }
      let inv = ws.norms[i] > 0 ? 1 / ws.norms[i] : 0
      for j in 0..<d { out[j] = (de[j] - e[j] * dot) * inv }
    }
    // Head, last layer first.
    for i in stride(from: c.headLayers - 1, through: 0, by: -1) {
      let layer = l.head[i]
      let inF = i == 0 ? w : d
      let input = i == 0 ? (ws.headIn16.map { Matrix($0, ld: w) } ?? Matrix(ws.pooled, ld: w)) : ws.headAct[i].matrix(ld: d)
      let dzOperand = operand(dz, rows: batch, cols: d, staging: ws.headGrad16)
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.backward(dzOperand, dyValues: dz, input, rows: batch, inFeatures: inF, outFeatures: d,
                            weight: weights(layer.weight, ld: inF), dWeight: grads + layer.weight, dBias: grads + layer.bias,
                            dx: Matrix(dOther, ld: inF), products: mm)
      }
      if i > 0 { GELU.backward(ws.headOut[i - 1], dOther, dOther, count: batch * d) }
      swap(&dz, &dOther)
    }
    // dz now holds dpooled (B x W). ln_post and pooling backward into dx (N x W), unless the
    // whole tower is frozen.
    let lastTowerGroup = l.towerGroups - 1
    guard lowestGroup <= lastTowerGroup else { return }
    let prefix = c.prefixTokens
    switch c.finalNorm {
    case .tokens:
      Profile.measure(.elementwiseBackward) {
        poolBackward(dz, batch: batch, tokens: t, prefix: prefix, width: w, pooling: c.pooling, into: ws.dh)
      }
      Profile.measure(.layerNormBackward) {
        LayerNorm.backward(ws.dh, xhat: ws.xhatPost!, rstd: ws.rstdPost!, gamma: par + l.lnPostWeight, rows: n, cols: w,
                           dx: ws.dx, accumulate: false, dgamma: grads + l.lnPostWeight, dbeta: grads + l.lnPostBias,
                           partials: ws.partials)
      }
    case .pooled:
      Profile.measure(.layerNormBackward) {
        LayerNorm.backward(dz, xhat: ws.xhatPost!, rstd: ws.rstdPost!, gamma: par + l.lnPostWeight, rows: batch, cols: w,
                           dx: dOther, accumulate: false, dgamma: grads + l.lnPostWeight, dbeta: grads + l.lnPostBias,
                           partials: ws.partials)
      }
      Profile.measure(.elementwiseBackward) {
        poolBackward(dOther, batch: batch, tokens: t, prefix: prefix, width: w, pooling: c.pooling, into: ws.dx)
      }
    }

    let shape = Attention.Shape(batch: batch, tokens: t, width: w, heads: c.heads, bf16: ws.bf16)
    for i in stride(from: c.depth - 1, through: 0, by: -1) {
      // Block i is in group min(i + 1, depth); below the lowest trained group, stop.
      guard min(i + 1, c.depth) >= lowestGroup else { return }
      let blk = l.blocks[i]
      // MLP: x_out = x_mid + c_proj(GELU(c_fc(ln_2(x_mid)))).
      Profile.measure(.layerNormBackward) {
        LayerNorm.affine(ws.xhat2[i]!, rows: n, cols: w, gamma: par + blk.ln2Weight, beta: par + blk.ln2Bias, y: ws.h)
      }
      let dProj = branchGradient(gamma: blk.layerScale2, branch: ws.perBlockBranch(ws.branch2, i), model: model,
                                 ws: ws, rows: n, grads: grads)
      let dOutput = operand(dProj, rows: n, cols: w, staging: ws.residual16)
      // c_proj's input gradient first: the activation backward then recomputes g = GELU(fc) for
      // c_proj's weight gradient in the same pass that makes dHidden.
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.inputGradient(dOutput, rows: n, inFeatures: f, outFeatures: w, weight: weights(blk.projWeight, ld: f),
                                 dx: Matrix(ws.dg, ld: f), products: mm)
      }
      let dHidden = Profile.measure(.geluBackward) {
        GELU.backward(ws.dg, preActivation: ws.fc[i], value: ws.g, rows: n, cols: f, activation: c.activation,
                      dBias: grads + blk.fcBias, partials: ws.partials, rounded: ws.stage16)
      }
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.backward(dOutput, dyValues: dProj, ws.g.matrix(ld: f), rows: n, inFeatures: f, outFeatures: w,
                            weight: weights(blk.projWeight, ld: f), dWeight: grads + blk.projWeight,
                            dBias: grads + blk.projBias, dx: nil, products: mm)
      }
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.backward(dHidden, dyValues: ws.dg, ws.h.matrix(ld: w), rows: n, inFeatures: w, outFeatures: f,
                            weight: weights(blk.fcWeight, ld: w), dWeight: grads + blk.fcWeight, dBias: nil,
                            dx: Matrix(ws.dh, ld: w), products: mm)
      }
      Profile.measure(.layerNormBackward) {
        LayerNorm.backward(ws.dh, xhat: ws.xhat2[i]!, rstd: ws.rstd2[i]!, gamma: par + blk.ln2Weight, rows: n, cols: w,
                           dx: ws.dx, accumulate: true, dgamma: grads + blk.ln2Weight, dbeta: grads + blk.ln2Bias,
                           partials: ws.partials)
      }
      // Attention: x_mid = x_in + out_proj(attention(in_proj(ln_1(x_in)))).
      let dOutProj = branchGradient(gamma: blk.layerScale1, branch: ws.perBlockBranch(ws.branch1, i), model: model,
                                    ws: ws, rows: n, grads: grads)
      let dMid = operand(dOutProj, rows: n, cols: w, staging: ws.residual16)
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.backward(dMid, dyValues: dOutProj, ws.attnOut[i].matrix(ld: w), rows: n, inFeatures: w, outFeatures: w,
                            weight: weights(blk.outWeight, ld: w), dWeight: grads + blk.outWeight,
                            dBias: grads + blk.outBias, dx: ws.dAttn.matrix(ld: w), products: mm)
      }
      let dQKV = try Profile.measure(.attentionBackward) { () throws(LiftError) in
        try Attention.backward(qkv: ws.qkv[i], out: ws.attnOut[i], lse: ws.lse[i], dOut: ws.dAttn, shape: shape,
                               dqkv: ws.dqkv, rounded: ws.stage16, dBias: grads + blk.inBias, partials: ws.partials,
                               scratch: ws.attnScratch, products: mm)
      }
      Profile.measure(.layerNormBackward) {
        LayerNorm.affine(ws.xhat1[i]!, rows: n, cols: w, gamma: par + blk.ln1Weight, beta: par + blk.ln1Bias, y: ws.h)
      }
      try Profile.measure(.gemmBackward) { () throws(LiftError) in
        try Linear.backward(dQKV, dyValues: ws.dqkv, ws.h.matrix(ld: w), rows: n, inFeatures: w, outFeatures: 3 * w,
                            weight: weights(blk.inWeight, ld: w), dWeight: grads + blk.inWeight, dBias: nil,
                            dx: Matrix(ws.dh, ld: w), products: mm)
      }
      Profile.measure(.layerNormBackward) {
        LayerNorm.backward(ws.dh, xhat: ws.xhat1[i]!, rstd: ws.rstd1[i]!, gamma: par + blk.ln1Weight, rows: n, cols: w,
                           dx: ws.dx, accumulate: true, dgamma: grads + blk.ln1Weight, dbeta: grads + blk.ln1Bias,
                           partials: ws.partials)
      }
    }
    // ln_pre (if any), then the token assembly and the patch embedding (group 0).
    guard lowestGroup == 0 else { return }
    var dTokens = ws.dx
    if let lnPre = l.lnPre {
      Profile.measure(.layerNormBackward) {
        LayerNorm.backward(ws.dx, xhat: ws.xhatPre!, rstd: ws.rstdPre!, gamma: par + lnPre.weight, rows: n, cols: w,
                           dx: ws.dh, accumulate: false, dgamma: grads + lnPre.weight, dbeta: grads + lnPre.bias,
                           partials: ws.partials)
      }
      dTokens = ws.dh
    }
    Profile.measure(.elementwiseBackward) {
      tokensBackward(dTokens, batch: batch, tokens: t, prefix: prefix, width: w, dClass: grads + l.classEmbedding,
                     dPositional: grads + l.positionalEmbedding, dRegisters: l.registerTokens.map { grads + $0 },
                     dPatchTokens: ws.patchTokens)
      if let bias = l.conv1Bias { VectorOps.addColumnSums(ws.patchTokens, rows: np, cols: w, lda: w, into: grads + bias) }
    }
    let dPatchTokens = operand(ws.patchTokens, rows: np, cols: w, staging: ws.stage16)
    try Profile.measure(.gemmBackward) { () throws(LiftError) in
      try mm.accumulateTransposed(m: w, n: c.patchDim, k: np, dPatchTokens, ws.patches.matrix(ld: c.patchDim),
                                  into: grads + l.conv1)
    }
  }

  /// The gradient reaching a residual branch's last product, given ws.dx (the residual
  /// stream's): ws.dx itself, or with LayerScale gamma * ws.dx written into ws.dh, while
  /// dgamma += column sums of ws.dx * branch.
  static func branchGradient(gamma: Int?, branch: UnsafeMutablePointer<Float>?, model: Model, ws: Workspace, rows: Int,
                             grads: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
    guard let gamma, let branch else { return ws.dx }
    Profile.measure(.elementwiseBackward) {
      LayerScale.backward(ws.dx, branch: branch, gamma: model.parameters + gamma, dBranch: ws.dh, dGamma: grads + gamma,
                          rows: rows, cols: model.config.width, partials: ws.partials)
    }
    return ws.dh
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
