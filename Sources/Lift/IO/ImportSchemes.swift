// The four naming schemes of ForeignImport: tensor names, what the shapes say, what the config
// file says, and each scheme's semantics expressed as ModelConfig options.

/// OpenAI CLIP's image statistics (OpenCLIP's and Hugging Face CLIP's defaults).
let openAIMean: [Float] = [0.481_454_66, 0.457_827_5, 0.408_210_73]
let openAIStd: [Float] = [0.268_629_54, 0.261_302_58, 0.275_777_11]
/// ImageNet's (DINOv2, most timm models).
let imageNetMean: [Float] = [0.485, 0.456, 0.406]
let imageNetStd: [Float] = [0.229, 0.224, 0.225]

extension ForeignBuild {
  /// OpenCLIP: `visual.` + conv1, class_embedding, positional_embedding, ln_pre,
  /// transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ls_1, ln_2, mlp.c_fc,
  /// mlp.c_proj, ls_2}, ln_post, proj. Config: open_clip_config.json (model_cfg.vision_cfg
  /// head_width, pool_type, final_ln_after_pool; model_cfg.quick_gelu; preprocess_cfg), or a
  /// LIFT file's own lift.model_config.
  mutating func openCLIP() throws(LiftError) {
    let v = "visual."
    let (conv, w, channels, patch) = try patchEmbedding(v + "conv1.weight")
    let pos = try shape(v + "positional_embedding")
    guard pos.count == 2, pos[1] == w, let grid = Self.squareRoot(pos[0] - 1) else {
      throw .shape("'\(path)': visual.positional_embedding has shape \(pos); expected (1 + G*G, \(w))")
    }
    let depth = try depth(v + "transformer.resblocks.")
    let hidden = depth > 0 ? try dimension(v + "transformer.resblocks.0.mlp.c_fc.weight", 0) : 4 * w
    // A LIFT file describes itself; an OpenCLIP config gives head_width and quick_gelu.
    var liftConfig: ModelConfig? = nil
    if let text = reader.metadata["lift.model_config"] {
      liftConfig = try ModelConfig(json: try JSON.parse(Array(text.utf8), what: "'\(path)': lift.model_config"), source: path)
    }
    var heads = liftConfig?.heads
    if heads == nil, config != nil {
      heads = w / (try integer(["model_cfg", "vision_cfg", "head_width"]) ?? 64)
    }
    var activation = liftConfig?.activation
    if activation == nil, config != nil {
      activation = try bool(["model_cfg", "quick_gelu"]) == true ? .quickGELU : .gelu
    }
    guard let act = options.activation ?? activation else {
      throw .argument("'\(path)': OpenCLIP weights without open_clip_config.json do not say whether they use QuickGELU "
                      + "(OpenAI's) or GELU; pass the activation (lift train --activation quick_gelu|gelu)")
    }
    let configMean = try floats(["preprocess_cfg", "mean"], count: channels)
    let configStd = try floats(["preprocess_cfg", "std"], count: channels)
    let mean = liftConfig?.imageMean ?? configMean ?? (channels == 3 ? openAIMean : [0.5])
    let std = liftConfig?.imageStd ?? configStd ?? (channels == 3 ? openAIStd : [0.5])
    try begin(width: w, channels: channels, patch: patch, grid: grid, depth: depth, hidden: hidden,
              heads: try self.heads(fromConfig: heads, width: w, hint: "open_clip_config.json: model_cfg.vision_cfg.head_width"),
              activation: act, mean: mean, std: std)
    model!.lnPre = has(v + "ln_pre.weight")
    model!.layerScale = has(v + "transformer.resblocks.0.ls_1.gamma")
    let configPool = try string(["model_cfg", "vision_cfg", "pool_type"])
    let poolType = liftConfig.map { $0.pooling == .average ? "avg" : "tok" } ?? configPool ?? "tok"
    guard poolType == "tok" || poolType == "avg" else {
      throw .format("'\(path)': pool_type '\(poolType)' is not supported (tok or avg)")
    }
    model!.pooling = poolType == "avg" ? .average : .token
    let poolsBeforeNorm = try bool(["model_cfg", "vision_cfg", "final_ln_after_pool"]) == true
    if liftConfig?.finalNorm == .pooled || poolsBeforeNorm {
      model!.finalNorm = .pooled
    }
    if let liftConfig {
      model!.patchBias = liftConfig.patchBias; model!.registers = liftConfig.registers
      model!.layerNormEps = liftConfig.layerNormEps
    }
    // Tensors, checked and planned.
    plan.append(("visual.conv1.weight", .tensor(try take(v + "conv1.weight", conv))))
    if model!.patchBias { plan.append(("visual.conv1.bias", .tensor(try take(v + "conv1.bias", [w])))) }
    plan.append(("visual.class_embedding", .tensor(try take(v + "class_embedding", [w]))))
    plan.append(("visual.positional_embedding", .positional(try take(v + "positional_embedding", pos), classRow: true, skip: 0)))
    if model!.registers > 0 {
      plan.append(("visual.register_tokens", .registers(try take(v + "register_tokens", [model!.registers, w]), positional: nil)))
    }
    if model!.lnPre {
      plan += [("visual.ln_pre.weight", .tensor(try take(v + "ln_pre.weight", [w]))),
               ("visual.ln_pre.bias", .tensor(try take(v + "ln_pre.bias", [w])))]
    }
    for i in 0..<depth {
      let p = v + "transformer.resblocks.\(i)."
      let ls = model!.layerScale ? [p + "ls_1.gamma", p + "ls_2.gamma"] : []
      try block(i, w: w, f: hidden, ln1: p + "ln_1", qkvWeights: [p + "attn.in_proj_weight"],
                qkvBiases: [p + "attn.in_proj_bias"], out: p + "attn.out_proj", ln2: p + "ln_2", fc1: p + "mlp.c_fc",
                fc2: p + "mlp.c_proj", ls: ls)
    }
    plan += [("visual.ln_post.weight", .tensor(try take(v + "ln_post.weight", [w]))),
             ("visual.ln_post.bias", .tensor(try take(v + "ln_post.bias", [w])))]
    // Not the tower: the text tower, CLIP's projection after pooling, logit scale/bias, and a
    // LIFT file's own head.
    ignoredPrefixes = ["visual.proj", "logit_scale", "logit_bias", "mlp_projector.", "transformer.", "token_embedding.",
                       "positional_embedding", "ln_final.", "text_projection", "text.", "attn_mask"]
  }

  /// timm VisionTransformer: patch_embed.proj (with bias unless pre-norm), cls_token,
  /// reg_token, pos_embed (class and register slots unless no_embed_class), norm_pre,
  /// blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma},
  /// norm or fc_norm, head. Config: config.json (architecture, model_args, global_pool,
  /// pretrained_cfg mean/std/input_size).
  mutating func timm() throws(LiftError) {
    let (conv, w, channels, patch) = try patchEmbedding("patch_embed.proj.weight")
    guard has("cls_token") else { throw .format("'\(path)': a timm ViT without a class token is not supported") }
    let registers = has("reg_token") ? try dimension("reg_token", 1) : 0
    let pos = try shape("pos_embed")
    guard pos.count == 3, pos[0] == 1, pos[2] == w else { throw .shape("'\(path)': pos_embed has shape \(pos)") }
    // The class and register tokens have positions (timm's default) or not (no_embed_class).
    let inputSize = config?["pretrained_cfg"]?["input_size"]?.array?.last?.int.flatMap { (1...(1 << 20)).contains($0) ? $0 : nil }
    let embedsPrefix: Bool
    if let size = inputSize, size % patch == 0 {
      embedsPrefix = pos[1] != (size / patch) * (size / patch)
    } else {
      embedsPrefix = Self.squareRoot(pos[1] - 1 - registers) != nil
    }
    guard let grid = Self.squareRoot(pos[1] - (embedsPrefix ? 1 + registers : 0)) else {
      throw .shape("'\(path)': pos_embed has \(pos[1]) rows, which fit no square patch grid")
    }
    let depth = try depth("blocks.")
    let hidden = depth > 0 ? try dimension("blocks.0.mlp.fc1.weight", 0) : 4 * w
    if depth > 0, try shape("blocks.0.mlp.fc2.weight") != [w, hidden] {
      throw .format("'\(path)': a gated MLP (SwiGLU) is not supported")
    }
    let architecture = try string(["architecture"]) ?? ""
    let configHeads = try integer(["model_args", "num_heads"]) ?? Self.timmHeads(architecture: architecture)
    let actLayer = try string(["model_args", "act_layer"])
    let act: ModelConfig.Activation = architecture.contains("quickgelu") || actLayer == "quick_gelu" ? .quickGELU : .gelu
    let mean = try floats(["pretrained_cfg", "mean"], count: channels) ?? [Float](repeating: 0.5, count: channels)
    let std = try floats(["pretrained_cfg", "std"], count: channels) ?? [Float](repeating: 0.5, count: channels)
    try begin(width: w, channels: channels, patch: patch, grid: grid, depth: depth, hidden: hidden,
              heads: try heads(fromConfig: configHeads, width: w, hint: "config.json: model_args.num_heads or a standard architecture name"),
              activation: act, mean: mean, std: std)
    model!.patchBias = has("patch_embed.proj.bias")
    model!.lnPre = has("norm_pre.weight")
    model!.layerScale = has("blocks.0.ls1.gamma")
    model!.registers = registers
    // timm's own LayerNorm eps is 1e-6 (1e-5 in its CLIP towers); liblift's export records it.
    model!.layerNormEps = try number(["layer_norm_eps"]).map(Float.init) ?? (architecture.contains("clip") ? 1e-5 : 1e-6)
    let fcNorm = has("fc_norm.weight")
    model!.finalNorm = fcNorm ? .pooled : .tokens
    let pool = try string(["global_pool"]) ?? (fcNorm ? "avg" : "token")
    guard pool == "token" || pool == "avg" else { throw .format("'\(path)': global_pool '\(pool)' is not supported (token or avg)") }
    model!.pooling = pool == "avg" ? .average : .token

    plan.append(("visual.conv1.weight", .tensor(try take("patch_embed.proj.weight", conv))))
    if model!.patchBias { plan.append(("visual.conv1.bias", .tensor(try take("patch_embed.proj.bias", [w])))) }
    plan.append(("visual.class_embedding", .tensor(try take("cls_token", [1, 1, w]))))
    _ = try take("pos_embed", pos)
    plan.append(("visual.positional_embedding", .positional("pos_embed", classRow: embedsPrefix, skip: embedsPrefix ? registers : 0)))
    if registers > 0 {
      plan.append(("visual.register_tokens", .registers(try take("reg_token", [1, registers, w]),
                                                        positional: embedsPrefix ? "pos_embed" : nil)))
    }
    if model!.lnPre {
      plan += [("visual.ln_pre.weight", .tensor(try take("norm_pre.weight", [w]))),
               ("visual.ln_pre.bias", .tensor(try take("norm_pre.bias", [w])))]
    }
    for i in 0..<depth {
      let p = "blocks.\(i)."
      let ls = model!.layerScale ? [p + "ls1.gamma", p + "ls2.gamma"] : []
      try block(i, w: w, f: hidden, ln1: p + "norm1", qkvWeights: [p + "attn.qkv.weight"], qkvBiases: [p + "attn.qkv.bias"],
                out: p + "attn.proj", ln2: p + "norm2", fc1: p + "mlp.fc1", fc2: p + "mlp.fc2", ls: ls)
    }
    let norm = fcNorm ? "fc_norm" : "norm"
    plan += [("visual.ln_post.weight", .tensor(try take(norm + ".weight", [w]))),
             ("visual.ln_post.bias", .tensor(try take(norm + ".bias", [w])))]
    ignoredPrefixes = ["head.", "head_drop."]
  }

  /// Heads of timm's standard ViT sizes (64-wide heads), from the architecture name.
  static func timmHeads(architecture: String) -> Int? {
    let sizes = ["vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16]
    return sizes.first { architecture.hasPrefix($0.key + "_") }?.value
  }

  /// Hugging Face CLIPVisionModel (or the vision tower of a CLIPModel): vision_model. +
  /// embeddings.{patch_embedding, class_embedding, position_embedding}, pre_layrnorm,
  /// encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2},
  /// post_layernorm (on the pooled class token). Config: config.json (vision_config or top level).
  mutating func huggingFaceCLIP() throws(LiftError) {
    let v = "vision_model."
    let (conv, w, channels, patch) = try patchEmbedding(v + "embeddings.patch_embedding.weight")
    let pos = try shape(v + "embeddings.position_embedding.weight")
    guard pos.count == 2, pos[1] == w, let grid = Self.squareRoot(pos[0] - 1) else {
      throw .shape("'\(path)': position embedding has shape \(pos)")
    }
    let depth = try depth(v + "encoder.layers.")
    let hidden = depth > 0 ? try dimension(v + "encoder.layers.0.mlp.fc1.weight", 0) : 4 * w
    let vc: [String] = config?["vision_config"] != nil ? ["vision_config"] : []
    let act = try string(vc + ["hidden_act"]) ?? (config == nil ? nil : "quick_gelu")
    guard let activation = options.activation ?? act.flatMap({ ModelConfig.Activation(name: $0) }) else {
      throw .argument("'\(path)': the activation ('\(act ?? "unknown")') is not gelu or quick_gelu, or no config.json "
                      + "says; pass the activation (lift train --activation quick_gelu|gelu)")
    }
    let statistics = try huggingFaceStatistics(channels: channels, fallback: channels == 3 ? (openAIMean, openAIStd) : ([0.5], [0.5]))
    try begin(width: w, channels: channels, patch: patch, grid: grid, depth: depth, hidden: hidden,
              heads: try heads(fromConfig: try integer(vc + ["num_attention_heads"]), width: w,
                               hint: "config.json: num_attention_heads"),
              activation: activation,
              mean: statistics.0, std: statistics.1)
    model!.layerNormEps = Float(try number(vc + ["layer_norm_eps"]) ?? 1e-5)
    model!.pooling = .token
    model!.finalNorm = .pooled

    plan.append(("visual.conv1.weight", .tensor(try take(v + "embeddings.patch_embedding.weight", conv))))
    plan.append(("visual.class_embedding", .tensor(try take(v + "embeddings.class_embedding", [w]))))
    plan.append(("visual.positional_embedding",
                 .positional(try take(v + "embeddings.position_embedding.weight", pos), classRow: true, skip: 0)))
    plan += [("visual.ln_pre.weight", .tensor(try take(v + "pre_layrnorm.weight", [w]))),
             ("visual.ln_pre.bias", .tensor(try take(v + "pre_layrnorm.bias", [w])))]
    for i in 0..<depth {
      let p = v + "encoder.layers.\(i)."
      let qkv = ["q_proj", "k_proj", "v_proj"].map { p + "self_attn." + $0 }
      try block(i, w: w, f: hidden, ln1: p + "layer_norm1", qkvWeights: qkv.map { $0 + ".weight" },
                qkvBiases: qkv.map { $0 + ".bias" }, out: p + "self_attn.out_proj", ln2: p + "layer_norm2",
                fc1: p + "mlp.fc1", fc2: p + "mlp.fc2", ls: [])
    }
    plan += [("visual.ln_post.weight", .tensor(try take(v + "post_layernorm.weight", [w]))),
             ("visual.ln_post.bias", .tensor(try take(v + "post_layernorm.bias", [w])))]
    ignoredPrefixes = [v + "embeddings.position_ids", "text_model.", "visual_projection.", "text_projection.", "logit_scale"]
  }

  /// Hugging Face Dinov2Model (optionally under `dinov2.`, with registers as
  /// Dinov2WithRegistersModel): embeddings.{cls_token, mask_token, position_embeddings,
  /// register_tokens, patch_embeddings.projection}, encoder.layer.N.{norm1,
  /// attention.attention.{query,key,value}, attention.output.dense, layer_scale1.lambda1, norm2,
  /// mlp.fc1, mlp.fc2, layer_scale2.lambda1}, layernorm. No ln_pre; LayerScale; the class token
  /// of the final LayerNorm is the feature. Config: config.json.
  mutating func huggingFaceDINOv2() throws(LiftError) {
    let v = has("dinov2.embeddings.patch_embeddings.projection.weight") ? "dinov2." : ""
    let (conv, w, channels, patch) = try patchEmbedding(v + "embeddings.patch_embeddings.projection.weight")
    let registers = has(v + "embeddings.register_tokens") ? try dimension(v + "embeddings.register_tokens", 1) : 0
    let pos = try shape(v + "embeddings.position_embeddings")
    guard pos.count == 3, pos[0] == 1, pos[2] == w, let grid = Self.squareRoot(pos[1] - 1) else {
      throw .shape("'\(path)': position embeddings have shape \(pos)")
    }
    let depth = try depth(v + "encoder.layer.")
    if depth > 0, has(v + "encoder.layer.0.mlp.weights_in.weight") {
      throw .format("'\(path)': DINOv2's SwiGLU MLP (the giant model) is not supported")
    }
    let hidden = depth > 0 ? try dimension(v + "encoder.layer.0.mlp.fc1.weight", 0) : 4 * w
    let act = try string(["hidden_act"]) ?? "gelu"
    guard let activation = options.activation ?? ModelConfig.Activation(name: act) else {
      throw .format("'\(path)': activation '\(act)' is not supported (gelu or quick_gelu)")
    }
    let statistics = try huggingFaceStatistics(channels: channels, fallback: channels == 3 ? (imageNetMean, imageNetStd) : ([0.5], [0.5]))
    try begin(width: w, channels: channels, patch: patch, grid: grid, depth: depth, hidden: hidden,
              heads: try heads(fromConfig: try integer(["num_attention_heads"]), width: w,
                               hint: "config.json: num_attention_heads"),
              activation: activation,
              mean: statistics.0, std: statistics.1)
    model!.patchBias = true
    model!.lnPre = false
    model!.layerScale = true
    model!.registers = registers
    model!.layerNormEps = Float(try number(["layer_norm_eps"]) ?? 1e-6)
    model!.pooling = .token

    plan.append(("visual.conv1.weight", .tensor(try take(v + "embeddings.patch_embeddings.projection.weight", conv))))
    plan.append(("visual.conv1.bias", .tensor(try take(v + "embeddings.patch_embeddings.projection.bias", [w]))))
    plan.append(("visual.class_embedding", .tensor(try take(v + "embeddings.cls_token", [1, 1, w]))))
    plan.append(("visual.positional_embedding",
                 .positional(try take(v + "embeddings.position_embeddings", pos), classRow: true, skip: 0)))
    if registers > 0 {
      plan.append(("visual.register_tokens", .registers(try take(v + "embeddings.register_tokens", [1, registers, w]),
                                                        positional: nil)))
    }
    for i in 0..<depth {
      let p = v + "encoder.layer.\(i)."
      let qkv = ["query", "key", "value"].map { p + "attention.attention." + $0 }
      let ls = [p + "layer_scale1.lambda1", p + "layer_scale2.lambda1"]
      try block(i, w: w, f: hidden, ln1: p + "norm1", qkvWeights: qkv.map { $0 + ".weight" },
                qkvBiases: qkv.map { $0 + ".bias" }, out: p + "attention.output.dense", ln2: p + "norm2",
                fc1: p + "mlp.fc1", fc2: p + "mlp.fc2", ls: ls)
    }
    plan += [("visual.ln_post.weight", .tensor(try take(v + "layernorm.weight", [w]))),
             ("visual.ln_post.bias", .tensor(try take(v + "layernorm.bias", [w])))]
    ignoredPrefixes = [v + "embeddings.mask_token", "classifier."]
  }
}
