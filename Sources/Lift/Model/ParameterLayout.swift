/// Where each named tensor lives in the one contiguous parameter buffer (and, at the same
/// offsets, in the gradient and optimiser-moment buffers).
///
/// Names and shapes are the PyTorch state_dict keys of OpenCLIP's VisionTransformer plus LIFT's
/// `mlp_projector`; Linear weights are (out, in) row-major. Every tensor starts at a multiple of
/// 16 floats; the padding between tensors is zero and stays zero.
public struct TensorInfo: Equatable {
  public let name: String
  public let shape: [Int]
  public let offset: Int
  public var count: Int { shape.reduce(1, *) }
  /// AdamW weight decay applies to tensors with 2 or more dimensions only.
  public var decays: Bool { shape.count >= 2 }
}

public struct ParameterLayout {
  /// Offsets of one residual block's tensors.
  struct Block {
    let ln1Weight, ln1Bias, inWeight, inBias, outWeight, outBias: Int
    let ln2Weight, ln2Bias, fcWeight, fcBias, projWeight, projBias: Int
    /// LayerScale vectors of the attention and MLP branches (nil without LayerScale).
    let layerScale1, layerScale2: Int?
  }

  public let tensors: [TensorInfo]
  /// Floats in the buffer, padding included.
  public let totalCount: Int
  let conv1, classEmbedding, positionalEmbedding: Int
  let conv1Bias: Int?
  /// Register tokens (R x W), nil without registers.
  let registerTokens: Int?
  /// ln_pre (nil when the model has none).
  let lnPre: (weight: Int, bias: Int)?
  let blocks: [Block]
  let lnPostWeight, lnPostBias: Int
  /// (weight, bias) offsets of each head Linear.
  let head: [(weight: Int, bias: Int)]
  let logitScale: Int
  let logitBias: Int?

  public init(_ c: ModelConfig, withLogitBias: Bool) {
    var tensors: [TensorInfo] = []
    var offset = 0
    func add(_ name: String, _ shape: [Int]) -> Int {
      let start = offset
      tensors.append(TensorInfo(name: name, shape: shape, offset: start))
      offset += (shape.reduce(1, *) + 15) / 16 * 16
      return start
    }
    let w = c.width
    conv1 = add("visual.conv1.weight", [w, c.channels, c.patch, c.patch])
    conv1Bias = c.patchBias ? add("visual.conv1.bias", [w]) : nil
    classEmbedding = add("visual.class_embedding", [w])
    // The class token and the patches have positions; registers have none.
    positionalEmbedding = add("visual.positional_embedding", [1 + c.patches, w])
    registerTokens = c.registers > 0 ? add("visual.register_tokens", [c.registers, w]) : nil
    lnPre = c.lnPre ? (add("visual.ln_pre.weight", [w]), add("visual.ln_pre.bias", [w])) : nil
    var blocks: [Block] = []
    for i in 0..<c.depth {
      let p = "visual.transformer.resblocks.\(i)."
      blocks.append(Block(
        ln1Weight: add(p + "ln_1.weight", [w]), ln1Bias: add(p + "ln_1.bias", [w]),
        inWeight: add(p + "attn.in_proj_weight", [3 * w, w]), inBias: add(p + "attn.in_proj_bias", [3 * w]),
        outWeight: add(p + "attn.out_proj.weight", [w, w]), outBias: add(p + "attn.out_proj.bias", [w]),
        ln2Weight: add(p + "ln_2.weight", [w]), ln2Bias: add(p + "ln_2.bias", [w]),
        fcWeight: add(p + "mlp.c_fc.weight", [c.hidden, w]), fcBias: add(p + "mlp.c_fc.bias", [c.hidden]),
        projWeight: add(p + "mlp.c_proj.weight", [w, c.hidden]), projBias: add(p + "mlp.c_proj.bias", [w]),
        layerScale1: c.layerScale ? add(p + "ls_1.gamma", [w]) : nil,
        layerScale2: c.layerScale ? add(p + "ls_2.gamma", [w]) : nil))
    }
    self.blocks = blocks
    lnPostWeight = add("visual.ln_post.weight", [w])
    lnPostBias = add("visual.ln_post.bias", [w])
    var head: [(Int, Int)] = []
    for l in 0..<c.headLayers {
      let inFeatures = l == 0 ? w : c.textDim
      head.append((add("mlp_projector.projector.\(2 * l).weight", [c.textDim, inFeatures]),
                   add("mlp_projector.projector.\(2 * l).bias", [c.textDim])))
    }
    self.head = head
    logitScale = add("logit_scale", [])
    logitBias = withLogitBias ? add("logit_bias", []) : nil
    self.tensors = tensors
    self.totalCount = offset
  }

  public func find(_ name: String) -> TensorInfo? { tensors.first { $0.name == name } }

  /// Layer groups of the image tower, OpenCLIP's `lock()` grouping without its projection:
  /// 0 = the embeddings (patch embedding, class and positional embeddings, registers, ln_pre),
  /// i + 1 = block i for the blocks but the last, depth = the last block with ln_post. The LIFT
  /// head and the logit scale/bias form group depth + 1. Tensors are laid out in group order,
  /// so the tensors of groups >= g are a suffix of the buffer.
  public var towerGroups: Int { blocks.count + 1 }

  /// The group of the tensor starting at `offset` (see towerGroups).
  public func group(ofOffset offset: Int) -> Int {
    let depth = blocks.count
    if offset >= head[0].weight { return towerGroups }
    if offset >= lnPostWeight { return towerGroups - 1 }
    guard depth > 0, offset >= blocks[0].ln1Weight else { return 0 }
    let block = blocks.lastIndex { $0.ln1Weight <= offset }!
    return min(block + 1, depth)
  }

  /// Offset where the tensors of groups >= `group` begin (the buffer's end past the last).
  public func offset(ofGroup group: Int) -> Int {
    tensors.first { self.group(ofOffset: $0.offset) >= group }?.offset ?? totalCount
  }

  /// Number of real (unpadded) parameters.
  public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }
}
