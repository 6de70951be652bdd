extension Encoder {
  /// One forward or backward pass of the image tower over a workspace, stage by stage. Each
  /// stage's forward and backward sit side by side below. Shapes: B images, T tokens, N = B * T
  /// rows, W width, F MLP hidden width, P patches per image; "operand" means float32 in fp32
  /// precision and bfloat16 in bf16 (what the matrix products read).
  ///
  /// Backward stages read ws.dx (N x W, the residual stream's gradient above the stage) and
  /// leave the gradient below it there; parameter gradients accumulate into `grads`.
  /// Profiling: every kernel call is followed by `laps.lap(phase)`.
  struct Pass {
    let model: Model
    let ws: Workspace
    let batch: Int
    /// N, W, F.
    let rows: Int, width: Int, hidden: Int
    let params: UnsafeMutablePointer<Float>
    /// Backward passes only.
    let grads: UnsafeMutablePointer<Float>?
    let weights: ProductWeights
    let shape: Attention.Shape
    var laps = Profile.Laps()

    init(_ model: Model, ws: Workspace, batch: Int, grads: UnsafeMutablePointer<Float>? = nil) {
      let c = model.config
      self.model = model
      self.ws = ws
      self.batch = batch
      rows = batch * c.tokens
      width = c.width
      hidden = c.hidden
      params = model.parameters
      self.grads = grads
      weights = ProductWeights(values: model.parameters, rounded: ws.weights16)
      shape = Attention.Shape(batch: batch, tokens: c.tokens, width: c.width, heads: c.heads, bf16: ws.bf16)
    }

    var config: ModelConfig { model.config }
    var layout: ParameterLayout { model.layout }
    var products: MatMul { ws.products }
    var dParams: UnsafeMutablePointer<Float> { grads! }

    /// A float32 matrix (rows x cols, dense) as a product operand: itself in fp32, rounded into
    /// `staging` in bf16 (staging is nil exactly in fp32).
    mutating func operand(_ values: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                          staging: UnsafeMutablePointer<BFloat16>?) -> Matrix {
      guard let staging else { return Matrix(values, ld: cols) }
      BF16.convertParallel(values, staging, count: rows * cols)
      laps.lap(.precision)
      return Matrix(staging, ld: cols)
    }

    // MARK: Patch embedding and tokens

    /// x (N x W) = tokens of the images: patches (B*P x C*p*p) times conv1 as a W x C*p*p matrix
    /// (+ bias), then per image [class, registers, patches] + positional embedding, then ln_pre.
    mutating func embedForward(_ images: ImageInput) throws(LiftError) {
      let c = config, l = layout, np = batch * c.patches
      Patchify.run(images, config: c, batch: batch, into: ws.patches)
      laps.lap(.patchify)
      try Linear.forward(ws.patches.matrix(ld: c.patchDim), rows: np, inFeatures: c.patchDim, outFeatures: width,
                         weight: weights(l.conv1, ld: c.patchDim), bias: l.conv1Bias.map { params + $0 },
                         Matrix(ws.patchTokens, ld: width), products: products)
      laps.lap(.gemmForward)
      Encoder.assembleTokens(ws.patchTokens, classEmbedding: params + l.classEmbedding, positional: params + l.positionalEmbedding,
                     registers: l.registerTokens.map { params + $0 }, registerCount: c.registers, batch: batch,
                     tokens: c.tokens, width: width, into: ws.x)
      laps.lap(.elementwiseForward)
      if let lnPre = l.lnPre {
        LayerNorm.forward(ws.x, rows: rows, cols: width, gamma: params + lnPre.weight, beta: params + lnPre.bias,
                          eps: c.layerNormEps, y: .f32(ws.x), xhat: ws.xhatPre, rstd: ws.rstdPre)
        laps.lap(.layerNormForward)
      }
    }

    /// Backward of embedForward, from ws.dx: ln_pre, the token assembly (class, registers,
    /// positional embedding) and conv1's weight (and bias) gradient.
    mutating func embedBackward() throws(LiftError) {
      let c = config, l = layout, np = batch * c.patches, d = dParams
      var dTokens = ws.dx
      if let lnPre = l.lnPre {
        LayerNorm.backward(ws.dx, xhat: ws.xhatPre!, rstd: ws.rstdPre!, gamma: params + lnPre.weight, rows: rows,
                           cols: width, dx: ws.dh, accumulate: false, dgamma: d + lnPre.weight, dbeta: d + lnPre.bias,
                           partials: ws.partials)
        laps.lap(.layerNormBackward)
        dTokens = ws.dh
      }
      Encoder.tokensBackward(dTokens, batch: batch, tokens: c.tokens, prefix: c.prefixTokens, width: width,
                     dClass: d + l.classEmbedding, dPositional: d + l.positionalEmbedding,
                     dRegisters: l.registerTokens.map { d + $0 }, dPatchTokens: ws.patchTokens)
      if let bias = l.conv1Bias { VectorOps.addColumnSums(ws.patchTokens, rows: np, cols: width, lda: width, into: d + bias) }
      laps.lap(.elementwiseBackward)
      let dPatchTokens = operand(ws.patchTokens, rows: np, cols: width, staging: ws.stage16)
      try products.accumulateTransposed(m: width, n: c.patchDim, k: np, dPatchTokens, ws.patches.matrix(ld: c.patchDim),
                                        into: d + l.conv1)
      laps.lap(.gemmBackward)
    }

    // MARK: Attention branch

    /// Block i, x (N x W) += out_proj(attention(in_proj(ln_1(x)))):
    ///   h = ln_1(x)                 N x W operand (xhat1, rstd1 saved)
    ///   qkv = h W_in^T + b_in       N x 3W operand, saved
    ///   out = attention(qkv)        N x W operand (heads side by side), saved with lse (B*H*T)
    ///   x += out W_out^T + b_out    (times LayerScale gamma if the model has it)
    mutating func attentionForward(_ i: Int) throws(LiftError) {
      let blk = layout.blocks[i], qkv = ws.qkv[i], out = ws.attnOut[i], w = width
      LayerNorm.forward(ws.x, rows: rows, cols: w, gamma: params + blk.ln1Weight, beta: params + blk.ln1Bias,
                        eps: config.layerNormEps, y: ws.h, xhat: ws.xhat1[i], rstd: ws.rstd1[i])
      laps.lap(.layerNormForward)
      try Linear.forward(ws.h.matrix(ld: w), rows: rows, inFeatures: w, outFeatures: 3 * w,
                         weight: weights(blk.inWeight, ld: w), bias: params + blk.inBias, qkv.matrix(ld: 3 * w),
                         products: products)
      laps.lap(.gemmForward)
      try Attention.forward(qkv: qkv, shape: shape, out: out, lse: ws.lse[i], scratch: ws.attnScratch,
                            products: products)
      laps.lap(.attentionForward)
      try residualForward(out.matrix(ld: w), inFeatures: w, weight: blk.outWeight, bias: blk.outBias,
                          layerScale: blk.layerScale1, branch: ws.perBlockBranch(ws.branch1, i))
    }

    /// Backward of attentionForward(i), ws.dx = dL/dx above the block's attention branch:
    ///   dOut = dx' W_out (N x W operand), dW_out, db_out      (dx' = gamma * dx with LayerScale)
    ///   dqkv = attention backward (N x 3W operand), db_in summed by the kernel
    ///   dh = dqkv W_in, dW_in (h = ln_1(x) recomputed from xhat1)
    ///   dx += ln_1 backward(dh)
    mutating func attentionBackward(_ i: Int) throws(LiftError) {
      let blk = layout.blocks[i], w = width, d = dParams
      let dBranch = branchGradient(layerScale: blk.layerScale1, branch: ws.perBlockBranch(ws.branch1, i))
      let dBranchOperand = operand(dBranch, rows: rows, cols: w, staging: ws.residual16)
      try Linear.backward(dBranchOperand, dyValues: dBranch, ws.attnOut[i].matrix(ld: w), rows: rows, inFeatures: w,
                          outFeatures: w, weight: weights(blk.outWeight, ld: w), dWeight: d + blk.outWeight,
                          dBias: d + blk.outBias, dx: ws.dAttn.matrix(ld: w), products: products)
      laps.lap(.gemmBackward)
      let dQKV = try Attention.backward(qkv: ws.qkv[i], out: ws.attnOut[i], lse: ws.lse[i], dOut: ws.dAttn, shape: shape,
                                        dqkv: ws.dqkv, rounded: ws.stage16, dBias: d + blk.inBias,
                                        partials: ws.partials, scratch: ws.attnScratch, products: products)
      laps.lap(.attentionBackward)
      LayerNorm.affine(ws.xhat1[i]!, rows: rows, cols: w, gamma: params + blk.ln1Weight, beta: params + blk.ln1Bias,
                       y: ws.h)
      laps.lap(.layerNormBackward)
      try Linear.backward(dQKV, dyValues: ws.dqkv, ws.h.matrix(ld: w), rows: rows, inFeatures: w, outFeatures: 3 * w,
                          weight: weights(blk.inWeight, ld: w), dWeight: d + blk.inWeight, dBias: nil,
                          dx: Matrix(ws.dh, ld: w), products: products)
      laps.lap(.gemmBackward)
      LayerNorm.backward(ws.dh, xhat: ws.xhat1[i]!, rstd: ws.rstd1[i]!, gamma: params + blk.ln1Weight, rows: rows,
                         cols: w, dx: ws.dx, accumulate: true, dgamma: d + blk.ln1Weight, dbeta: d + blk.ln1Bias,
                         partials: ws.partials)
      laps.lap(.layerNormBackward)
    }

    // MARK: MLP branch

    /// Block i, x (N x W) += c_proj(act(c_fc(ln_2(x)))):
    ///   h = ln_2(x)                 N x W operand (xhat2, rstd2 saved)
    ///   fc = h W_fc^T + b_fc        N x F operand, saved (the pre-activation)
    ///   g = act(fc)                 N x F operand (GELU or QuickGELU)
    ///   x += g W_proj^T + b_proj    (times LayerScale gamma if the model has it)
    mutating func mlpForward(_ i: Int) throws(LiftError) {
      let blk = layout.blocks[i], fc = ws.fc[i], w = width, f = hidden
      LayerNorm.forward(ws.x, rows: rows, cols: w, gamma: params + blk.ln2Weight, beta: params + blk.ln2Bias,
                        eps: config.layerNormEps, y: ws.h, xhat: ws.xhat2[i], rstd: ws.rstd2[i])
      laps.lap(.layerNormForward)
      try Linear.forward(ws.h.matrix(ld: w), rows: rows, inFeatures: w, outFeatures: f,
                         weight: weights(blk.fcWeight, ld: w), bias: params + blk.fcBias, fc.matrix(ld: f),
                         products: products)
      laps.lap(.gemmForward)
      GELU.forward(fc, ws.g, count: rows * f, activation: config.activation)
      laps.lap(.geluForward)
      try residualForward(ws.g.matrix(ld: f), inFeatures: f, weight: blk.projWeight, bias: blk.projBias,
                          layerScale: blk.layerScale2, branch: ws.perBlockBranch(ws.branch2, i))
    }

    /// Backward of mlpForward(i), ws.dx = dL/dx above the block:
    ///   dg = dx' W_proj (N x F float32)                      (dx' = gamma * dx with LayerScale)
    ///   g = act(fc) again, dfc = dg * act'(fc) (N x F operand), db_fc, in one pass
    ///   dW_proj, db_proj from dx' and g; dh = dfc W_fc, dW_fc (h = ln_2(x) recomputed)
    ///   dx += ln_2 backward(dh)
    mutating func mlpBackward(_ i: Int) throws(LiftError) {
      let blk = layout.blocks[i], w = width, f = hidden, d = dParams
      LayerNorm.affine(ws.xhat2[i]!, rows: rows, cols: w, gamma: params + blk.ln2Weight, beta: params + blk.ln2Bias,
                       y: ws.h)
      laps.lap(.layerNormBackward)
      let dBranch = branchGradient(layerScale: blk.layerScale2, branch: ws.perBlockBranch(ws.branch2, i))
      let dBranchOperand = operand(dBranch, rows: rows, cols: w, staging: ws.residual16)
      // c_proj's input gradient first: the activation backward then recomputes g for c_proj's
      // weight gradient in the same pass that makes dfc.
      try Linear.inputGradient(dBranchOperand, rows: rows, inFeatures: f, outFeatures: w,
                               weight: weights(blk.projWeight, ld: f), dx: Matrix(ws.dg, ld: f), products: products)
      laps.lap(.gemmBackward)
      let dfc = GELU.backward(ws.dg, preActivation: ws.fc[i], value: ws.g, rows: rows, cols: f,
                              activation: config.activation, dBias: d + blk.fcBias, partials: ws.partials,
                              rounded: ws.stage16)
      laps.lap(.geluBackward)
      try Linear.backward(dBranchOperand, dyValues: dBranch, ws.g.matrix(ld: f), rows: rows, inFeatures: f,
                          outFeatures: w, weight: weights(blk.projWeight, ld: f), dWeight: d + blk.projWeight,
                          dBias: d + blk.projBias, dx: nil, products: products)
      try Linear.backward(dfc, dyValues: ws.dg, ws.h.matrix(ld: w), rows: rows, inFeatures: w, outFeatures: f,
                          weight: weights(blk.fcWeight, ld: w), dWeight: d + blk.fcWeight, dBias: nil,
                          dx: Matrix(ws.dh, ld: w), products: products)
      laps.lap(.gemmBackward)
      LayerNorm.backward(ws.dh, xhat: ws.xhat2[i]!, rstd: ws.rstd2[i]!, gamma: params + blk.ln2Weight, rows: rows,
                         cols: w, dx: ws.dx, accumulate: true, dgamma: d + blk.ln2Weight, dbeta: d + blk.ln2Bias,
                         partials: ws.partials)
      laps.lap(.layerNormBackward)
    }

    // MARK: Residual branches

    /// A residual branch's last product, x += [gamma *] (input W^T + b) with input N x inFeatures:
    /// without LayerScale the product accumulates into x; with it, the product writes `branch`
    /// (kept for backward), then x += gamma * branch.
    mutating func residualForward(_ input: Matrix, inFeatures: Int, weight: Int, bias: Int, layerScale: Int?,
                                  branch: UnsafeMutablePointer<Float>?) throws(LiftError) {
      let target = layerScale == nil ? ws.x : branch!
      try Linear.forward(input, rows: rows, inFeatures: inFeatures, outFeatures: width,
                         weight: weights(weight, ld: inFeatures), bias: params + bias, Matrix(target, ld: width),
                         accumulate: layerScale == nil, products: products)
      laps.lap(.gemmForward)
      if let layerScale, let branch {
        LayerScale.addScaled(branch, gamma: params + layerScale, into: ws.x, rows: rows, cols: width)
        laps.lap(.elementwiseForward)
      }
    }

    /// The gradient reaching a residual branch's last product, given ws.dx: ws.dx itself, or
    /// with LayerScale gamma * ws.dx written into ws.dh, while dgamma += column sums of
    /// ws.dx * branch.
    mutating func branchGradient(layerScale: Int?, branch: UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
      guard let layerScale, let branch else { return ws.dx }
      LayerScale.backward(ws.dx, branch: branch, gamma: params + layerScale, dBranch: ws.dh,
                          dGamma: dParams + layerScale, rows: rows, cols: width, partials: ws.partials)
      laps.lap(.elementwiseBackward)
      return ws.dh
    }

    // MARK: Final norm and pooling

    /// ln_post and pooling into ws.pooled (B x W): ln_post on every token (in place; the residual
    /// stream is not needed afterwards) then pooling, or pooling then ln_post on the features.
    mutating func poolForward() {
      let c = config, l = layout
      switch c.finalNorm {
      case .tokens:
        LayerNorm.forward(ws.x, rows: rows, cols: width, gamma: params + l.lnPostWeight, beta: params + l.lnPostBias,
                          eps: c.layerNormEps, y: .f32(ws.x), xhat: ws.xhatPost, rstd: ws.rstdPost)
        laps.lap(.layerNormForward)
        Encoder.pool(ws.x, batch: batch, tokens: c.tokens, prefix: c.prefixTokens, width: width, pooling: c.pooling,
                     into: ws.pooled)
        laps.lap(.elementwiseForward)
      case .pooled:
        Encoder.pool(ws.x, batch: batch, tokens: c.tokens, prefix: c.prefixTokens, width: width, pooling: c.pooling,
                     into: ws.pooled)
        laps.lap(.elementwiseForward)
        LayerNorm.forward(ws.pooled, rows: batch, cols: width, gamma: params + l.lnPostWeight,
                          beta: params + l.lnPostBias, eps: c.layerNormEps, y: .f32(ws.pooled), xhat: ws.xhatPost,
                          rstd: ws.rstdPost)
        laps.lap(.layerNormForward)
      }
    }

    /// Backward of poolForward: dPooled (B x W) to ws.dx (N x W). `scratch` holds B x W floats.
    mutating func poolBackward(_ dPooled: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
      let c = config, l = layout, d = dParams
      switch c.finalNorm {
      case .tokens:
        Encoder.poolBackward(dPooled, batch: batch, tokens: c.tokens, prefix: c.prefixTokens, width: width,
                             pooling: c.pooling, into: ws.dh)
        laps.lap(.elementwiseBackward)
        LayerNorm.backward(ws.dh, xhat: ws.xhatPost!, rstd: ws.rstdPost!, gamma: params + l.lnPostWeight, rows: rows,
                           cols: width, dx: ws.dx, accumulate: false, dgamma: d + l.lnPostWeight,
                           dbeta: d + l.lnPostBias, partials: ws.partials)
        laps.lap(.layerNormBackward)
      case .pooled:
        LayerNorm.backward(dPooled, xhat: ws.xhatPost!, rstd: ws.rstdPost!, gamma: params + l.lnPostWeight,
                           rows: batch, cols: width, dx: scratch, accumulate: false, dgamma: d + l.lnPostWeight,
                           dbeta: d + l.lnPostBias, partials: ws.partials)
        laps.lap(.layerNormBackward)
        Encoder.poolBackward(scratch, batch: batch, tokens: c.tokens, prefix: c.prefixTokens, width: width,
                             pooling: c.pooling, into: ws.dx)
        laps.lap(.elementwiseBackward)
      }
    }

    // MARK: Head

    /// The LIFT head on ws.pooled (B x W) and the L2 normalisation, into ws.embeddings (B x D):
    ///   z_0 = pooled W_0^T + b_0;  z_l = GELU(z_{l-1}) W_l^T + b_l;  e = z_last / |z_last|
    mutating func headForward() throws(LiftError) {
      let c = config, d = c.textDim
      for (i, layer) in layout.head.enumerated() {
        let input: Matrix
        if i == 0 {
          input = operand(ws.pooled, rows: batch, cols: width, staging: ws.headIn16)
        } else {
          GELU.forward(.f32(ws.headOut[i - 1]), ws.headAct[i], count: batch * d)
          laps.lap(.geluForward)
          input = ws.headAct[i].matrix(ld: d)
        }
        let inFeatures = i == 0 ? width : d
        try Linear.forward(input, rows: batch, inFeatures: inFeatures, outFeatures: d,
                           weight: weights(layer.weight, ld: inFeatures), bias: params + layer.bias,
                           Matrix(ws.headOut[i], ld: d), products: products)
        laps.lap(.gemmForward)
      }
      Encoder.normalizeRows(ws.headOut[c.headLayers - 1], rows: batch, cols: d, norms: ws.norms, into: ws.embeddings)
      laps.lap(.elementwiseForward)
    }

    /// Backward of headForward given dE = dL/d(embeddings) (B x D): the head's parameter
    /// gradients; returns dL/d(pooled) (B x W) and a free B x max(D, W) scratch buffer.
    mutating func headBackward(_ dEmbeddings: UnsafePointer<Float>) throws(LiftError)
      -> (dPooled: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
      let c = config, d = c.textDim, w = width, g = dParams
      var dz = ws.dHead, dOther = ws.dHead + batch * max(d, w)
      // Through the L2 normalisation: dz = (dE - e <e, dE>) / |z|.
      for i in 0..<batch {
        let e = ws.embeddings + i * d, de = dEmbeddings + i * d, out = dz + i * d
        var dot: Float = 0
        for j in 0..<d { dot += e[j] * de[j] }
        let inv = ws.norms[i] > 0 ? 1 / ws.norms[i] : 0
        for j in 0..<d { out[j] = (de[j] - e[j] * dot) * inv }
      }
      laps.lap(.elementwiseBackward)
      for i in stride(from: c.headLayers - 1, through: 0, by: -1) {
        let layer = layout.head[i], inFeatures = i == 0 ? w : d
        let input = i == 0 ? (ws.headIn16.map { Matrix($0, ld: w) } ?? Matrix(ws.pooled, ld: w))
          : ws.headAct[i].matrix(ld: d)
        let dzOperand = operand(dz, rows: batch, cols: d, staging: ws.headGrad16)
        try Linear.backward(dzOperand, dyValues: dz, input, rows: batch, inFeatures: inFeatures, outFeatures: d,
                            weight: weights(layer.weight, ld: inFeatures), dWeight: g + layer.weight,
                            dBias: g + layer.bias, dx: Matrix(dOther, ld: inFeatures), products: products)
        laps.lap(.gemmBackward)
        if i > 0 {
          GELU.backward(ws.headOut[i - 1], dOther, dOther, count: batch * d)
          laps.lap(.geluBackward)
        }
        swap(&dz, &dOther)
      }
      return (dz, dOther)
    }
  }
}
