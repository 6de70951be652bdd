import Glibc
import XCTest
@testable import Lift

/// Importing pretrained encoders: a model written out in each naming scheme (by this test's own
/// writers, from the schemes' documented names) imports back to the same encoder; detection,
/// config files, register and class-position folding, and errors naming the tensor or option.
/// (Independent numpy forwards of each scheme's semantics are in the Python tests.)
final class ImportTests: XCTestCase {
  typealias Tensors = [(String, [Int], [Float])]

  /// A small model with the options a scheme needs, random everywhere (LayerScale too).
  func sourceModel(_ configure: (inout ModelConfig) -> Void) throws -> Model {
    var c = ModelConfig(imageSize: 16, channels: 3, patch: 4, width: 32, depth: 2, heads: 2, mlpRatio: 2, headLayers: 2,
                        textDim: 8)
    configure(&c)
    let model = try Model(config: c, seed: 9)
    var rng = TestRNG(3)
    for t in model.layout.tensors where t.name.hasPrefix("visual.") {
      for i in 0..<t.count { model.parameters[t.offset + i] += 0.2 * rng.float() }
    }
    return model
  }

  func values(_ model: Model, _ name: String) -> [Float] {
    let t = model.layout.find(name)!
    return Array(UnsafeBufferPointer(start: model.parameters + t.offset, count: t.count))
  }

  func write(_ tensors: Tensors, to path: String) throws { try ForeignExport.write(tensors, to: path) }

  func writeJSON(_ text: String, to path: String) {
    let f = fopen(path, "w")!
    fputs(text, f)
    fclose(f)
  }

  /// The tower's blocks in a scheme: per block (liblift suffix -> scheme name).
  func blockTensors(_ m: Model, prefix: (Int) -> String, names: [String: String], splitQKV: [String]?) -> Tensors {
    var out: Tensors = []
    let w = m.config.width
    for i in 0..<m.config.depth {
      let ours = "visual.transformer.resblocks.\(i)."
      for t in m.layout.tensors where t.name.hasPrefix(ours) {
        let suffix = String(t.name.dropFirst(ours.count))
        let v = values(m, t.name)
        if let split = splitQKV, suffix.hasPrefix("attn.in_proj") {
          let kind = suffix.hasSuffix("weight") ? "weight" : "bias"
          for (k, name) in split.enumerated() {
            let part = v.count / 3
            out.append((prefix(i) + name + "." + kind, kind == "weight" ? [w, w] : [w], Array(v[k * part..<(k + 1) * part])))
          }
          continue
        }
        out.append((prefix(i) + names[suffix]!, t.shape, v))
      }
    }
    return out
  }

  func checkSameEncoder(_ a: Model, _ b: Model, file: StaticString = #filePath, line: UInt = #line) throws {
    // Same head, so the embeddings must agree.
    for t in a.layout.tensors where !t.name.hasPrefix("visual.") {
      let u = b.layout.find(t.name)!
      (b.parameters + u.offset).update(from: a.parameters + t.offset, count: t.count)
    }
    var rng = TestRNG(11)
    let c = a.config, n = 3
    let images = rng.floats(n * c.channels * c.imageSize * c.imageSize)
    var ea = [Float](repeating: 0, count: n * c.textDim), eb = ea
    try images.withUnsafeBufferPointer { (p) throws(LiftError) in
      try a.encode(.float32NCHW(p.baseAddress!), count: n, into: &ea)
      try b.encode(.float32NCHW(p.baseAddress!), count: n, into: &eb)
    }
    for i in 0..<ea.count { XCTAssertEqual(ea[i], eb[i], accuracy: 2e-5, "embedding element \(i)", file: file, line: line) }
  }

  // MARK: Schemes

  func testTimmWithRegistersInThePositionTable() throws {
    let dir = TempDir()
    let m = try sourceModel { c in
      c.patchBias = true; c.lnPre = false; c.layerScale = true; c.registers = 2; c.finalNorm = .pooled; c.layerNormEps = 1e-6
    }
    let w = 32, r = 2
    // timm's default: pos_embed holds rows for the class token and the registers; a register's
    // position folds into its token. Split our registers into (token - 0.1, position 0.1).
    let pos = values(m, "visual.positional_embedding"), reg = values(m, "visual.register_tokens")
    let regPos = [Float](repeating: 0.1, count: r * w)
    var tensors: Tensors = [
      ("patch_embed.proj.weight", [w, 3, 4, 4], values(m, "visual.conv1.weight")),
      ("patch_embed.proj.bias", [w], values(m, "visual.conv1.bias")),
      ("cls_token", [1, 1, w], values(m, "visual.class_embedding")),
      ("reg_token", [1, r, w], zip(reg, regPos).map { $0 - $1 }),
      ("pos_embed", [1, 1 + r + 16, w], Array(pos[0..<w]) + regPos + Array(pos[w...])),
      ("fc_norm.weight", [w], values(m, "visual.ln_post.weight")), ("fc_norm.bias", [w], values(m, "visual.ln_post.bias")),
      ("head.weight", [5, w], [Float](repeating: 0, count: 5 * w)), ("head.bias", [5], [Float](repeating: 0, count: 5)),
    ]
    tensors += blockTensors(m, prefix: { "blocks.\($0)." }, names: [
      "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias", "attn.in_proj_weight": "attn.qkv.weight",
      "attn.in_proj_bias": "attn.qkv.bias", "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
      "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias", "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
      "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias", "ls_1.gamma": "ls1.gamma", "ls_2.gamma": "ls2.gamma",
    ], splitQKV: nil)
    try write(tensors, to: dir.file("model.safetensors"))
    writeJSON(#"{"architecture": "vit_small_test", "global_pool": "avg", "model_args": {"num_heads": 2},"#
              + #" "pretrained_cfg": {"input_size": [3, 16, 16], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]}}"#,
              to: dir.file("config.json"))
    let (imported, source) = try Model.importing(path: dir.file("model.safetensors"), options: ImportOptions(textDim: 8))
    XCTAssertEqual(source.scheme, .timm)
    XCTAssertEqual(source.ignored.sorted(), ["head.bias", "head.weight"])
    XCTAssertEqual(imported.config.imageMean, [0.4, 0.5, 0.6])
    var expected = m.config
    expected.imageMean = [0.4, 0.5, 0.6]; expected.imageStd = [0.2, 0.3, 0.4]
    XCTAssertEqual(imported.config, expected)
    try checkSameEncoder(m, imported)
  }

  func testHuggingFaceCLIPSplitsQKVAndReadsConfig() throws {
    let dir = TempDir()
    let m = try sourceModel { c in c.activation = .quickGELU; c.pooling = .token; c.finalNorm = .pooled }
    let v = "vision_model.", w = 32
    var tensors: Tensors = [
      (v + "embeddings.patch_embedding.weight", [w, 3, 4, 4], values(m, "visual.conv1.weight")),
      (v + "embeddings.class_embedding", [w], values(m, "visual.class_embedding")),
      (v + "embeddings.position_embedding.weight", [17, w], values(m, "visual.positional_embedding")),
      (v + "pre_layrnorm.weight", [w], values(m, "visual.ln_pre.weight")), (v + "pre_layrnorm.bias", [w], values(m, "visual.ln_pre.bias")),
      (v + "post_layernorm.weight", [w], values(m, "visual.ln_post.weight")), (v + "post_layernorm.bias", [w], values(m, "visual.ln_post.bias")),
      ("text_model.embeddings.token_embedding.weight", [10, 4], [Float](repeating: 1, count: 40)),
      ("visual_projection.weight", [4, w], [Float](repeating: 1, count: 4 * w)),
      ("logit_scale", [], [2.6]),
    ]
    tensors += blockTensors(m, prefix: { v + "encoder.layers.\($0)." }, names: [
      "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias", "attn.out_proj.weight": "self_attn.out_proj.weight",
      "attn.out_proj.bias": "self_attn.out_proj.bias", "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
      "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias", "mlp.c_proj.weight": "mlp.fc2.weight",
      "mlp.c_proj.bias": "mlp.fc2.bias",
    ], splitQKV: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])
    try write(tensors, to: dir.file("model.safetensors"))
    // Without a config file the activation and head count are unknown: errors naming the
    // options; given both, the import works.
    var options = ImportOptions(textDim: 8)
    XCTAssertThrowsError(try Model.importing(path: dir.file("model.safetensors"), options: options)) { e in
      XCTAssertTrue((e as! LiftError).message.contains("pass the activation"), (e as! LiftError).message)
    }
    options.activation = .quickGELU
    XCTAssertThrowsError(try Model.importing(path: dir.file("model.safetensors"), options: options)) { e in
      XCTAssertTrue((e as! LiftError).message.contains("pass heads"), (e as! LiftError).message)
    }
    options.heads = 2
    try checkSameEncoder(m, try Model.importing(path: dir.file("model.safetensors"), options: options).model)
    writeJSON(#"{"model_type": "clip", "vision_config": {"num_attention_heads": 2, "hidden_act": "quick_gelu","#
              + #" "layer_norm_eps": 1e-5, "image_size": 16, "patch_size": 4}}"#, to: dir.file("config.json"))
    let (imported, source) = try Model.importing(path: dir.file("model.safetensors"), options: ImportOptions(textDim: 8))
    XCTAssertEqual(source.scheme, .huggingFaceCLIP)
    XCTAssertEqual(imported.config, m.config)
    try checkSameEncoder(m, imported)
  }

  func testDINOv2WithRegistersAndLayerScale() throws {
    let dir = TempDir()
    let m = try sourceModel { c in
      c.patchBias = true; c.lnPre = false; c.layerScale = true; c.registers = 4; c.pooling = .token; c.layerNormEps = 1e-6
      c.imageMean = imageNetMean; c.imageStd = imageNetStd
    }
    let w = 32
    var tensors: Tensors = [
      ("embeddings.patch_embeddings.projection.weight", [w, 3, 4, 4], values(m, "visual.conv1.weight")),
      ("embeddings.patch_embeddings.projection.bias", [w], values(m, "visual.conv1.bias")),
      ("embeddings.cls_token", [1, 1, w], values(m, "visual.class_embedding")),
      ("embeddings.mask_token", [1, w], [Float](repeating: 0, count: w)),
      ("embeddings.register_tokens", [1, 4, w], values(m, "visual.register_tokens")),
      ("embeddings.position_embeddings", [1, 17, w], values(m, "visual.positional_embedding")),
      ("layernorm.weight", [w], values(m, "visual.ln_post.weight")), ("layernorm.bias", [w], values(m, "visual.ln_post.bias")),
    ]
    tensors += blockTensors(m, prefix: { "encoder.layer.\($0)." }, names: [
      "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias", "attn.out_proj.weight": "attention.output.dense.weight",
      "attn.out_proj.bias": "attention.output.dense.bias", "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
      "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias", "mlp.c_proj.weight": "mlp.fc2.weight",
      "mlp.c_proj.bias": "mlp.fc2.bias", "ls_1.gamma": "layer_scale1.lambda1", "ls_2.gamma": "layer_scale2.lambda1",
    ], splitQKV: ["attention.attention.query", "attention.attention.key", "attention.attention.value"])
    try write(tensors, to: dir.file("model.safetensors"))
    writeJSON(#"{"model_type": "dinov2", "num_attention_heads": 2, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}"#,
              to: dir.file("config.json"))
    let (imported, source) = try Model.importing(path: dir.file("model.safetensors"), options: ImportOptions(textDim: 8))
    XCTAssertEqual(source.scheme, .huggingFaceDINOv2)
    XCTAssertEqual(imported.config, m.config)
    try checkSameEncoder(m, imported)
  }

  /// A LIFT model file is OpenCLIP-named and describes itself; importing it at another image
  /// size resamples the positional grid (4 x 4 -> 6 x 6) and keeps everything else.
  func testLiftFileImportsAndResamples() throws {
    let dir = TempDir()
    let m = try sourceModel { c in c.activation = .quickGELU }
    try m.save(path: dir.file("lift.safetensors"))
    let (same, source) = try Model.importing(path: dir.file("lift.safetensors"), options: ImportOptions(textDim: 8))
    XCTAssertEqual(source.scheme, .openCLIP)
    XCTAssertTrue(source.ignored.contains("logit_scale"))
    XCTAssertEqual(same.config, m.config)
    try checkSameEncoder(m, same)
    var options = ImportOptions(textDim: 8)
    options.imageSize = 24
    let (bigger, _) = try Model.importing(path: dir.file("lift.safetensors"), options: options)
    XCTAssertEqual(bigger.config.gridSize, 6)
    let pos = values(bigger, "visual.positional_embedding"), old = values(m, "visual.positional_embedding")
    XCTAssertEqual(Array(pos[0..<32]), Array(old[0..<32]), "the class position is kept")
    let grid = Array(old[32...])
    XCTAssertEqual(Array(pos[32...]), PositionalResampling.resample(grid, from: 4, to: 6, width: 32))
    XCTAssertEqual(values(bigger, "visual.transformer.resblocks.1.mlp.c_fc.weight"),
                   values(m, "visual.transformer.resblocks.1.mlp.c_fc.weight"))
  }

  // MARK: Errors

  func testBadFilesNameTheTensorOrOption() throws {
    let dir = TempDir()
    let m = try sourceModel { _ in }
    try m.save(path: dir.file("lift.safetensors"))
    let reader = try SafeTensors.Reader(path: dir.file("lift.safetensors"))
    var tensors: Tensors = []
    for name in reader.names {
      let t = reader.tensors[name]!
      var v = [Float](repeating: 0, count: t.shape.reduce(1, *))
      try v.withUnsafeMutableBufferPointer { (p) throws(LiftError) in try reader.readConverted(name, into: p.baseAddress!) }
      tensors.append((name, t.shape, v))
    }
    func expectError(_ edit: (inout Tensors) -> Void, _ fragment: String,
                     line: UInt = #line) throws {
      var copy = tensors
      edit(&copy)
      let path = dir.file("edited.safetensors")
      try write(copy, to: path)
      var options = ImportOptions(textDim: 8)
      options.heads = 2; options.activation = .gelu
      XCTAssertThrowsError(try Model.importing(path: path, options: options), line: line) { e in
        XCTAssertTrue((e as! LiftError).message.contains(fragment), (e as! LiftError).message, line: line)
      }
    }
    let fc = "visual.transformer.resblocks.1.mlp.c_fc.bias"
    try expectError({ $0.removeAll { $0.0 == fc } }, fc)
    try expectError({ t in t = t.map { $0.0 == fc ? ($0.0, [3], [1, 2, 3]) : $0 } }, fc)
    try expectError({ $0.append(("visual.transformer.resblocks.0.attn.ln_q.weight", [32], [Float](repeating: 1, count: 32))) },
                    "visual.transformer.resblocks.0.attn.ln_q.weight")
    // Without the LIFT metadata and a config file, the activation must be given.
    var plain = tensors
    plain.removeAll { $0.0.hasPrefix("mlp_projector") }
    try write(plain, to: dir.file("openclip.safetensors"))
    var options = ImportOptions(textDim: 8)
    options.heads = 2
    XCTAssertThrowsError(try Model.importing(path: dir.file("openclip.safetensors"), options: options)) { e in
      XCTAssertTrue((e as! LiftError).message.contains("activation"), (e as! LiftError).message)
    }
    try write([("weights", [2], [1, 2])], to: dir.file("other.safetensors"))
    XCTAssertThrowsError(try Model.importing(path: dir.file("other.safetensors"), options: options)) { e in
      XCTAssertTrue((e as! LiftError).message.contains("not a vision transformer"), (e as! LiftError).message)
    }
  }
}
