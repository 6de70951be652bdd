import Glibc

// Writing a model's image tower back in a foreign naming scheme (the inverse of Import.swift),
// with the config file that scheme's loaders read, so a tower fine-tuned here goes back to the
// ecosystem it came from. The LIFT head is not part of any of these schemes and is left out
// (`Model.save` keeps writing the whole model in OpenCLIP names).

extension Model {
  /// Writes the image tower to `path` (safetensors, float32) in `scheme`'s names, and the
  /// scheme's config file (`open_clip_config.json` or `config.json`) beside it. Options the
  /// scheme cannot express are errors naming them; where a scheme always has a tensor this
  /// model lacks, the neutral value is written (a zero patch bias, unit LayerScale).
  public func export(path: String, scheme: ForeignScheme) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      let c = config
      try ForeignExport.check(c, scheme: scheme)
      var tensors: [(String, [Int], [Float])] = []
      func v(_ name: String) -> [Float] {
        let t = layout.find(name)!
        return Array(UnsafeBufferPointer(start: parameters + t.offset, count: t.count))
      }
      func has(_ name: String) -> Bool { layout.find(name) != nil }
      let w = c.width, f = c.hidden, n = c.patches, r = c.registers
      let conv = v("visual.conv1.weight"), bias = has("visual.conv1.bias") ? v("visual.conv1.bias") : [Float](repeating: 0, count: w)
      let cls = v("visual.class_embedding"), pos = v("visual.positional_embedding")
      let regs = r > 0 ? v("visual.register_tokens") : []
      let convShape = [w, c.channels, c.patch, c.patch]
      func block(_ i: Int, _ suffix: String) -> [Float] { v("visual.transformer.resblocks.\(i)." + suffix) }
      /// Block i's fused q/k/v projection as three (name, weight, bias) parts for schemes that
      /// keep them apart.
      func splitQKV(_ i: Int, _ names: [String]) -> [(String, [Float], [Float])] {
        let weight = block(i, "attn.in_proj_weight"), bias = block(i, "attn.in_proj_bias")
        return names.enumerated().map { k, name in
          (name, Array(weight[(k * w * w)..<((k + 1) * w * w)]), Array(bias[(k * w)..<((k + 1) * w)]))
        }
      }
      func scale(_ i: Int, _ k: Int) -> [Float] {
        c.layerScale ? block(i, "ls_\(k).gamma") : [Float](repeating: 1, count: w)
      }
      switch scheme {
      case .openCLIP:
        let p = "visual."
        tensors += [(p + "conv1.weight", convShape, conv), (p + "class_embedding", [w], cls),
                    (p + "positional_embedding", [1 + n, w], pos)]
        if c.lnPre { tensors += [(p + "ln_pre.weight", [w], v(p + "ln_pre.weight")), (p + "ln_pre.bias", [w], v(p + "ln_pre.bias"))] }
        for i in 0..<c.depth {
          let q = p + "transformer.resblocks.\(i)."
          for (suffix, shape) in [("ln_1.weight", [w]), ("ln_1.bias", [w]), ("attn.in_proj_weight", [3 * w, w]),
                                  ("attn.in_proj_bias", [3 * w]), ("attn.out_proj.weight", [w, w]), ("attn.out_proj.bias", [w]),
                                  ("ln_2.weight", [w]), ("ln_2.bias", [w]), ("mlp.c_fc.weight", [f, w]), ("mlp.c_fc.bias", [f]),
                                  ("mlp.c_proj.weight", [w, f]), ("mlp.c_proj.bias", [w])] {
            tensors.append((q + suffix, shape, block(i, suffix)))
          }
          if c.layerScale { tensors += [(q + "ls_1.gamma", [w], scale(i, 1)), (q + "ls_2.gamma", [w], scale(i, 2))] }
        }
        tensors += [(p + "ln_post.weight", [w], v(p + "ln_post.weight")), (p + "ln_post.bias", [w], v(p + "ln_post.bias"))]
      case .timm:
        // Class and register positions in the table (timm's default); registers get zero rows.
        tensors += [("patch_embed.proj.weight", convShape, conv), ("patch_embed.proj.bias", [w], bias),
                    ("cls_token", [1, 1, w], cls),
                    ("pos_embed", [1, 1 + r + n, w], Array(pos[0..<w]) + [Float](repeating: 0, count: r * w) + Array(pos[w...]))]
        if r > 0 { tensors.append(("reg_token", [1, r, w], regs)) }
        if c.lnPre { tensors += [("norm_pre.weight", [w], v("visual.ln_pre.weight")), ("norm_pre.bias", [w], v("visual.ln_pre.bias"))] }
        for i in 0..<c.depth {
          let q = "blocks.\(i)."
          tensors += [(q + "norm1.weight", [w], block(i, "ln_1.weight")), (q + "norm1.bias", [w], block(i, "ln_1.bias")),
                      (q + "attn.qkv.weight", [3 * w, w], block(i, "attn.in_proj_weight")),
                      (q + "attn.qkv.bias", [3 * w], block(i, "attn.in_proj_bias")),
                      (q + "attn.proj.weight", [w, w], block(i, "attn.out_proj.weight")),
                      (q + "attn.proj.bias", [w], block(i, "attn.out_proj.bias")),
                      (q + "norm2.weight", [w], block(i, "ln_2.weight")), (q + "norm2.bias", [w], block(i, "ln_2.bias")),
                      (q + "mlp.fc1.weight", [f, w], block(i, "mlp.c_fc.weight")), (q + "mlp.fc1.bias", [f], block(i, "mlp.c_fc.bias")),
                      (q + "mlp.fc2.weight", [w, f], block(i, "mlp.c_proj.weight")), (q + "mlp.fc2.bias", [w], block(i, "mlp.c_proj.bias"))]
          if c.layerScale { tensors += [(q + "ls1.gamma", [w], scale(i, 1)), (q + "ls2.gamma", [w], scale(i, 2))] }
        }
        let norm = c.finalNorm == .pooled ? "fc_norm" : "norm"
        tensors += [(norm + ".weight", [w], v("visual.ln_post.weight")), (norm + ".bias", [w], v("visual.ln_post.bias"))]
      case .huggingFaceCLIP:
        let p = "vision_model."
        tensors += [(p + "embeddings.patch_embedding.weight", convShape, conv), (p + "embeddings.class_embedding", [w], cls),
                    (p + "embeddings.position_embedding.weight", [1 + n, w], pos),
                    (p + "pre_layrnorm.weight", [w], v("visual.ln_pre.weight")), (p + "pre_layrnorm.bias", [w], v("visual.ln_pre.bias"))]
        for i in 0..<c.depth {
          let q = p + "encoder.layers.\(i)."
          for (name, weight, bias) in splitQKV(i, ["q_proj", "k_proj", "v_proj"]) {
            tensors += [(q + "self_attn.\(name).weight", [w, w], weight), (q + "self_attn.\(name).bias", [w], bias)]
          }
          tensors += [(q + "self_attn.out_proj.weight", [w, w], block(i, "attn.out_proj.weight")),
                      (q + "self_attn.out_proj.bias", [w], block(i, "attn.out_proj.bias")),
                      (q + "layer_norm1.weight", [w], block(i, "ln_1.weight")), (q + "layer_norm1.bias", [w], block(i, "ln_1.bias")),
                      (q + "layer_norm2.weight", [w], block(i, "ln_2.weight")), (q + "layer_norm2.bias", [w], block(i, "ln_2.bias")),
                      (q + "mlp.fc1.weight", [f, w], block(i, "mlp.c_fc.weight")), (q + "mlp.fc1.bias", [f], block(i, "mlp.c_fc.bias")),
                      (q + "mlp.fc2.weight", [w, f], block(i, "mlp.c_proj.weight")), (q + "mlp.fc2.bias", [w], block(i, "mlp.c_proj.bias"))]
        }
        tensors += [(p + "post_layernorm.weight", [w], v("visual.ln_post.weight")),
                    (p + "post_layernorm.bias", [w], v("visual.ln_post.bias"))]
      case .huggingFaceDINOv2:
        tensors += [("embeddings.patch_embeddings.projection.weight", convShape, conv),
                    ("embeddings.patch_embeddings.projection.bias", [w], bias), ("embeddings.cls_token", [1, 1, w], cls),
                    ("embeddings.mask_token", [1, w], [Float](repeating: 0, count: w)),
                    ("embeddings.position_embeddings", [1, 1 + n, w], pos)]
        if r > 0 { tensors.append(("embeddings.register_tokens", [1, r, w], regs)) }
        for i in 0..<c.depth {
          let q = "encoder.layer.\(i)."
          for (name, weight, bias) in splitQKV(i, ["query", "key", "value"]) {
            tensors += [(q + "attention.attention.\(name).weight", [w, w], weight),
                        (q + "attention.attention.\(name).bias", [w], bias)]
          }
          tensors += [(q + "attention.output.dense.weight", [w, w], block(i, "attn.out_proj.weight")),
                      (q + "attention.output.dense.bias", [w], block(i, "attn.out_proj.bias")),
                      (q + "layer_scale1.lambda1", [w], scale(i, 1)), (q + "layer_scale2.lambda1", [w], scale(i, 2)),
                      (q + "norm1.weight", [w], block(i, "ln_1.weight")), (q + "norm1.bias", [w], block(i, "ln_1.bias")),
                      (q + "norm2.weight", [w], block(i, "ln_2.weight")), (q + "norm2.bias", [w], block(i, "ln_2.bias")),
                      (q + "mlp.fc1.weight", [f, w], block(i, "mlp.c_fc.weight")), (q + "mlp.fc1.bias", [f], block(i, "mlp.c_fc.bias")),
                      (q + "mlp.fc2.weight", [w, f], block(i, "mlp.c_proj.weight")), (q + "mlp.fc2.bias", [w], block(i, "mlp.c_proj.bias"))]
        }
        tensors += [("layernorm.weight", [w], v("visual.ln_post.weight")), ("layernorm.bias", [w], v("visual.ln_post.bias"))]
      }
      // The companion config files are written only once the weights are.
      try ForeignExport.write(tensors, to: path)
      try ForeignExport.writeConfig(c, scheme: scheme, beside: path)
    }
  }
}

enum ForeignExport {
  /// Refuses options the scheme cannot express.
  static func check(_ c: ModelConfig, scheme: ForeignScheme) throws(LiftError) {
    func refuse(_ what: String) throws(LiftError) -> Never {
      throw .argument("the \(scheme.rawValue) scheme cannot express \(what); export in another scheme (timm expresses every option)")
    }
    switch scheme {
    case .openCLIP:
      if c.patchBias { try refuse("a patch-embedding bias") }
      if c.registers > 0 { try refuse("register tokens") }
      if c.layerNormEps != 1e-5 { try refuse("LayerNorm eps \(c.layerNormEps) (OpenCLIP uses 1e-5)") }
    case .timm:
      break
    case .huggingFaceCLIP:
      if c.patchBias { try refuse("a patch-embedding bias") }
      if !c.lnPre { try refuse("a tower without ln_pre") }
      if c.layerScale { try refuse("LayerScale") }
      if c.registers > 0 { try refuse("register tokens") }
      if c.pooling != .token { try refuse("average pooling (its pooled output is the class token)") }
    case .huggingFaceDINOv2:
      if c.lnPre { try refuse("ln_pre") }
      if c.pooling != .token || c.finalNorm != .tokens { try refuse("pooling other than the final LayerNorm's class token") }
    }
    if c.channels != 3 && scheme != .openCLIP && scheme != .timm { try refuse("\(c.channels)-channel images") }
  }

  /// Writes named float32 tensors as safetensors: their values are copied into one buffer that
  /// the entries point into while the file is written.
  static func write(_ tensors: [(String, [Int], [Float])], to path: String) throws(LiftError) {
    let total = tensors.reduce(0) { $0 + $1.2.count }
    let storage = try allocateFloats(max(total, 1), what: "tensors for '\(path)'")
    defer { storage.deallocate() }
    var entries: [SafeTensors.Entry] = []
    var offset = 0
    for (name, shape, values) in tensors {
      (storage + offset).update(from: values, count: values.count)
      entries.append(SafeTensors.Entry(name: name, shape: shape, data: storage + offset))
      offset += values.count
    }
    try SafeTensors.write(path: path, entries: entries, metadata: [("format", "pt")])
  }

  /// The scheme's config file beside the weights, with what its loaders (and liblift's import)
  /// need: heads, activation, pooling, final norm, LayerNorm eps, image statistics and size.
  static func writeConfig(_ c: ModelConfig, scheme: ForeignScheme, beside path: String) throws(LiftError) {
    let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
    let mean = JSON.array(c.imageMean.map { .number(Double($0)) }), std = JSON.array(c.imageStd.map { .number(Double($0)) })
    let act = JSON.string(c.activation.name), eps = JSON.number(Double(c.layerNormEps))
    let json: JSON, name: String
    switch scheme {
    case .openCLIP:
      name = "open_clip_config.json"
      var vision: [(String, JSON)] = [("image_size", .number(Double(c.imageSize))), ("layers", .number(Double(c.depth))),
                                      ("width", .number(Double(c.width))), ("patch_size", .number(Double(c.patch))),
                                      ("head_width", .number(Double(c.headDim))), ("mlp_ratio", .number(Double(c.mlpRatio))),
                                      ("pool_type", .string(c.pooling == .token ? "tok" : "avg")),
                                      ("final_ln_after_pool", .bool(c.finalNorm == .pooled)), ("no_ln_pre", .bool(!c.lnPre))]
      if c.layerScale { vision.append(("ls_init_value", .number(1))) }
      json = .object([("model_cfg", .object([("quick_gelu", .bool(c.activation == .quickGELU)), ("vision_cfg", .object(vision))])),
                      ("preprocess_cfg", .object([("mean", mean), ("std", std)]))])
    case .timm:
      name = "config.json"
      var args: [(String, JSON)] = [("img_size", .number(Double(c.imageSize))), ("patch_size", .number(Double(c.patch))),
                                    ("embed_dim", .number(Double(c.width))), ("depth", .number(Double(c.depth))),
                                    ("num_heads", .number(Double(c.heads))), ("mlp_ratio", .number(Double(c.mlpRatio))),
                                    ("reg_tokens", .number(Double(c.registers))), ("pre_norm", .bool(c.lnPre)),
                                    ("fc_norm", .bool(c.finalNorm == .pooled)), ("num_classes", .number(0))]
      if c.layerScale { args.append(("init_values", .number(1))) }
      if c.activation == .quickGELU { args.append(("act_layer", .string("quick_gelu"))) }
      json = .object([("architecture", .string("vit_liblift_export")), ("num_classes", .number(0)),
                      ("global_pool", .string(c.pooling == .token ? "token" : "avg")), ("model_args", .object(args)),
                      ("layer_norm_eps", eps),
                      ("pretrained_cfg", .object([("input_size", .array([.number(Double(c.channels)), .number(Double(c.imageSize)),
                                                                          .number(Double(c.imageSize))])),
                                                  ("mean", mean), ("std", std), ("num_classes", .number(0))]))])
    case .huggingFaceCLIP:
      name = "config.json"
      json = .object([("model_type", .string("clip_vision_model")), ("hidden_size", .number(Double(c.width))),
                      ("intermediate_size", .number(Double(c.hidden))), ("num_hidden_layers", .number(Double(c.depth))),
                      ("num_attention_heads", .number(Double(c.heads))), ("patch_size", .number(Double(c.patch))),
                      ("image_size", .number(Double(c.imageSize))), ("hidden_act", act), ("layer_norm_eps", eps),
                      ("num_channels", .number(Double(c.channels)))])
    case .huggingFaceDINOv2:
      name = "config.json"
      json = .object([("model_type", .string(c.registers > 0 ? "dinov2_with_registers" : "dinov2")),
                      ("hidden_size", .number(Double(c.width))), ("num_hidden_layers", .number(Double(c.depth))),
                      ("num_attention_heads", .number(Double(c.heads))), ("mlp_ratio", .number(Double(c.mlpRatio))),
                      ("patch_size", .number(Double(c.patch))), ("image_size", .number(Double(c.imageSize))),
                      ("hidden_act", act), ("layer_norm_eps", eps), ("num_register_tokens", .number(Double(c.registers))),
                      ("layerscale_value", .number(1))])
    }
    try writeAtomically(json, to: folder + "/" + name)
    if scheme == .huggingFaceCLIP || scheme == .huggingFaceDINOv2 {
      try writeAtomically(.object([("image_mean", mean), ("image_std", std)]), to: folder + "/preprocessor_config.json")
    }
  }

  /// Writes `json` to `file` as the library's other writers do: a temporary file, fsync,
  /// rename, fsync of the folder.
  static func writeAtomically(_ json: JSON, to file: String) throws(LiftError) {
    try FileSystem.requireReplaceable(file)
    let temporary = "\(file).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io("cannot create '\(temporary)': \(String(cString: strerror(errno)))") }
    do throws(LiftError) {
      try SafeTensors.writeAll(fd, Array(json.serialized.utf8), temporary)
      guard fsync(fd) == 0 else { throw LiftError.io("cannot fsync '\(temporary)': \(String(cString: strerror(errno)))") }
      close(fd)
      guard rename(temporary, file) == 0 else { throw LiftError.io("cannot rename '\(temporary)' to '\(file)': \(String(cString: strerror(errno)))") }
    } catch {
      close(fd)
      unlink(temporary)
      throw error
    }
    try FileSystem.fsyncDirectory(of: file)
  }
}
