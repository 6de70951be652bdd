import CLiftABI
import Glibc

// C entry points of models (see Include/lift.h).

extension ModelConfig {
  init(c: lift_model_config) throws(LiftError) {
    guard let pooling = Pooling(rawValue: c.pool) else { throw .argument("model config: pool must be 0 (avg) or 1 (token), got \(c.pool)") }
    guard let objective = Objective(rawValue: c.objective) else {
      throw .argument("model config: objective must be 0, 1 or 2, got \(c.objective)")
    }
    guard let precision = Precision(rawValue: c.precision) else {
      throw .argument("model config: precision must be 0 (fp32) or 1 (bf16), got \(c.precision)")
    }
    let channels = Int(c.channels)
    guard channels == 1 || channels == 3 else { throw .argument("model config: channels must be 1 or 3 (got \(channels))") }
    let mean = withUnsafeBytes(of: c.image_mean) { Array($0.bindMemory(to: Float.self).prefix(channels)) }
    let std = withUnsafeBytes(of: c.image_std) { Array($0.bindMemory(to: Float.self).prefix(channels)) }
    self.init(imageSize: Int(c.image_size), channels: channels, patch: Int(c.patch), width: Int(c.width),
              depth: Int(c.depth), heads: Int(c.heads), mlpRatio: Int(c.mlp_ratio), headLayers: Int(c.head_layers),
              textDim: Int(c.text_dim), pooling: pooling, objective: objective, imageMean: mean, imageStd: std,
              precision: precision)
    guard let activation = Activation(rawValue: c.activation) else {
      throw .argument("model config: activation must be 0 (gelu) or 1 (quick_gelu), got \(c.activation)")
    }
    guard let finalNorm = FinalNorm(rawValue: c.final_norm) else {
      throw .argument("model config: final_norm must be 0 (tokens) or 1 (pooled), got \(c.final_norm)")
    }
    for (name, flag) in [("patch_bias", c.patch_bias), ("no_ln_pre", c.no_ln_pre), ("layer_scale", c.layer_scale)]
      where flag != 0 && flag != 1 {
      throw .argument("model config: \(name) must be 0 or 1, got \(flag)")
    }
    patchBias = c.patch_bias == 1
    lnPre = c.no_ln_pre == 0
    self.activation = activation
    layerScale = c.layer_scale == 1
    registers = Int(c.registers)
    self.finalNorm = finalNorm
    layerNormEps = c.layer_norm_eps == 0 ? 1e-5 : c.layer_norm_eps
    try validate()
  }

  var c: lift_model_config {
    var out = lift_model_config().sized
    out.image_size = Int32(imageSize); out.channels = Int32(channels); out.patch = Int32(patch)
    out.width = Int32(width); out.depth = Int32(depth); out.heads = Int32(heads); out.mlp_ratio = Int32(mlpRatio)
    out.head_layers = Int32(headLayers); out.text_dim = Int32(textDim); out.pool = pooling.rawValue
    out.objective = objective.rawValue
    out.precision = precision.rawValue
    out.patch_bias = patchBias ? 1 : 0
    out.no_ln_pre = lnPre ? 0 : 1
    out.activation = activation.rawValue
    out.layer_scale = layerScale ? 1 : 0
    out.registers = Int32(registers)
    out.final_norm = finalNorm.rawValue
    out.layer_norm_eps = layerNormEps
    withUnsafeMutableBytes(of: &out.image_mean) { raw in
      for (i, v) in imageMean.enumerated() { raw.storeBytes(of: v, toByteOffset: 4 * i, as: Float.self) }
    }
    withUnsafeMutableBytes(of: &out.image_std) { raw in
      for (i, v) in imageStd.enumerated() { raw.storeBytes(of: v, toByteOffset: 4 * i, as: Float.self) }
    }
    return out
  }
}

/// A C image buffer as the encoder's input, after checking its length covers `count` images.
func imageInput(_ images: UnsafeRawPointer?, _ format: lift_image_format, length: Int, count: Int64,
                config: ModelConfig) throws(LiftError) -> ImageInput {
  try requireNonNegative(count, "image count")
  let perImage = Int64(config.channels * config.imageSize * config.imageSize)
  let needed = try checkedCount(count, perImage, "images")
  guard try requiredSize(length, "images_len") >= needed else {
    throw .buffer("images_len is \(length) but \(count) images of \(config.channels)x\(config.imageSize)x\(config.imageSize) need \(needed) elements")
  }
  let p = try requiredRaw(images, "images")
  switch format {
  case LIFT_IMAGE_F32_NCHW: return .float32NCHW(p.assumingMemoryBound(to: Float.self))
  case LIFT_IMAGE_U8_NHWC: return .uint8NHWC(p.assumingMemoryBound(to: UInt8.self))
  default: throw .argument("unknown image format \(format.rawValue)")
  }
}

/// Checks that a caller's float buffer holds rows x cols.
func requireLength(_ length: Int, rows: Int64, cols: Int, _ name: String) throws(LiftError) {
  let needed = try checkedCount(rows, Int64(cols), name)
  guard try requiredSize(length, "\(name)_len") >= needed else {
    throw .buffer("\(name) holds \(length) floats but \(rows) x \(cols) need \(needed)")
  }
}

@_cdecl("lift_model_config_preset")
public func cLiftModelConfigPreset(_ name: UnsafePointer<CChar>?, _ textDim: Int32,
                                   _ out: UnsafeMutablePointer<lift_model_config>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try requiredStruct(out, "out")
    let config = try ModelConfig.preset(try requiredString(name, "name"), textDim: Int(textDim))
    try config.validate()
    out.pointee = config.c
  }
}

@_cdecl("lift_model_create")
public func cLiftModelCreate(_ config: UnsafePointer<lift_model_config>?, _ seed: UInt64,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let model = try Model(config: try ModelConfig(c: try requiredStruct(config, "config")), seed: seed)
    out.pointee = makeHandle(model)
  }
}

@_cdecl("lift_import_options_default")
public func cLiftImportOptionsDefault(_ out: UnsafeMutablePointer<lift_import_options>?) -> lift_status {
  capi { () throws(LiftError) in
    var o = lift_import_options()
    o.head_layers = 2
    o.activation = -1
    o.pool = -1
    try requiredStruct(out, "out").pointee = o
  }
}

extension ImportOptions {
  init(c: lift_import_options) throws(LiftError) {
    guard c.text_dim >= 1 else { throw .argument("import options: text_dim must be >= 1 (got \(c.text_dim))") }
    self.init(textDim: Int(c.text_dim))
    headLayers = Int(c.head_layers)
    guard let objective = ModelConfig.Objective(rawValue: c.objective) else {
      throw .argument("import options: objective must be 0, 1 or 2, got \(c.objective)")
    }
    guard let precision = ModelConfig.Precision(rawValue: c.precision) else {
      throw .argument("import options: precision must be 0 (fp32) or 1 (bf16), got \(c.precision)")
    }
    self.objective = objective
    self.precision = precision
    guard c.image_size >= 0, c.heads >= 0 else { throw .argument("import options: image_size and heads must be >= 0") }
    imageSize = c.image_size == 0 ? nil : Int(c.image_size)
    heads = c.heads == 0 ? nil : Int(c.heads)
    if c.activation != -1 {
      guard let a = ModelConfig.Activation(rawValue: c.activation) else {
        throw .argument("import options: activation must be -1 (from the config file), 0 or 1, got \(c.activation)")
      }
      activation = a
    }
    if c.pool != -1 {
      guard let p = ModelConfig.Pooling(rawValue: c.pool) else {
        throw .argument("import options: pool must be -1 (the source's), 0 (avg) or 1 (token), got \(c.pool)")
      }
      pooling = p
    }
    configPath = c.config_path.map { String(cString: $0) }
    seed = c.seed
  }
}

extension ForeignScheme {
  var c: lift_scheme {
    switch self {
    case .openCLIP: return LIFT_SCHEME_OPENCLIP
    case .timm: return LIFT_SCHEME_TIMM
    case .huggingFaceCLIP: return LIFT_SCHEME_HF_CLIP
    case .huggingFaceDINOv2: return LIFT_SCHEME_HF_DINOV2
    }
  }
}

@_cdecl("lift_model_import")
public func cLiftModelImport(_ path: UnsafePointer<CChar>?, _ options: UnsafePointer<lift_import_options>?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?,
                             _ scheme: UnsafeMutablePointer<lift_scheme>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let o = try ImportOptions(c: try requiredStruct(options, "options"))
    let (model, source) = try Model.importing(path: try requiredString(path, "path"), options: o)
    scheme?.pointee = source.scheme.c
    out.pointee = makeHandle(model)
  }
}

@_cdecl("lift_model_export")
public func cLiftModelExport(_ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ scheme: lift_scheme) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    guard let s = ForeignScheme.allCases.first(where: { $0.c == scheme }) else {
      throw .argument("unknown scheme \(scheme.rawValue)")
    }
    try model.export(path: try requiredString(path, "path"), scheme: s)
  }
}

@_cdecl("lift_model_load")
public func cLiftModelLoad(_ path: UnsafePointer<CChar>?, _ flags: UInt32,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let path = try requiredString(path, "path")
    try checkUntrusted(path, kind: .model, flags: flags)
    out.pointee = makeHandle(try Model.load(path: path))
  }
}

@_cdecl("lift_model_save")
public func cLiftModelSave(_ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> lift_status {
  capi { () throws(LiftError) in
    try object(handle, as: Model.self, "model").save(path: try requiredString(path, "path"))
  }
}

@_cdecl("lift_model_free")
public func cLiftModelFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_model_get_config")
public func cLiftModelGetConfig(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<lift_model_config>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    try requiredStruct(out, "out").pointee = model.config.c
  }
}

@_cdecl("lift_model_parameters")
public func cLiftModelParameters(_ handle: OpaquePointer?, _ data: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                 _ count: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    data?.pointee = model.parameters
    count?.pointee = Int64(model.layout.totalCount)
  }
}

@_cdecl("lift_model_tensor_count")
public func cLiftModelTensorCount(_ handle: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    try required(count, "count").pointee = Int64(model.layout.tensors.count)
  }
}

@_cdecl("lift_model_tensor_info")
public func cLiftModelTensorInfo(_ handle: OpaquePointer?, _ index: Int64,
                                 _ info: UnsafeMutablePointer<lift_tensor_info>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    let info = try requiredStruct(info, "info")
    let tensors = model.layout.tensors
    guard index >= 0, index < Int64(tensors.count) else {
      throw .argument("tensor index \(index) is out of range: the model has \(tensors.count) tensors")
    }
    let t = tensors[Int(index)]
    var out = lift_tensor_info().sized
    out.name = UnsafePointer(model.lock.withLock { model.cNames[Int(index)] })
    out.ndim = Int32(t.shape.count)
    withUnsafeMutableBytes(of: &out.shape) { raw in
      for (i, d) in t.shape.enumerated() { raw.storeBytes(of: Int64(d), toByteOffset: 8 * i, as: Int64.self) }
    }
    out.offset = Int64(t.offset)
    out.count = Int64(t.count)
    out.decays = t.decays ? 1 : 0
    info.pointee = out
  }
}

@_cdecl("lift_model_find_tensor")
public func cLiftModelFindTensor(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                 _ index: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    let name = try requiredString(name, "name")
    let index = try required(index, "index")
    guard let i = model.layout.tensors.firstIndex(where: { $0.name == name }) else {
      throw .notFound("the model has no tensor '\(name)'")
    }
    index.pointee = Int64(i)
  }
}

@_cdecl("lift_model_encode")
public func cLiftModelEncode(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                             _ imagesLen: Int, _ count: Int64, _ out: UnsafeMutablePointer<Float>?,
                             _ outLen: Int) -> lift_status {
  perImageRows(handle, images, format, imagesLen, count, out, outLen, cols: \.textDim) { model, input, n, out throws(LiftError) in
    try model.encode(input, count: n, into: out)
  }
}

/// The checks of lift_model_encode and lift_model_features: `count` images in, `cols(config)`
/// floats per image out (outLen >= count * cols), then `run(model, images, count, out)`.
private func perImageRows(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                          _ imagesLen: Int, _ count: Int64, _ out: UnsafeMutablePointer<Float>?, _ outLen: Int,
                          cols: KeyPath<ModelConfig, Int>,
                          _ run: (Model, ImageInput, Int, UnsafeMutablePointer<Float>) throws(LiftError) -> Void) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    try requireNonNegative(count, "count")
    if count == 0 { return }
    let input = try imageInput(images, format, length: imagesLen, count: count, config: model.config)
    try requireLength(outLen, rows: count, cols: model.config[keyPath: cols], "out")
    try run(model, input, Int(count), try required(out, "out"))
  }
}

@_cdecl("lift_model_features")
public func cLiftModelFeatures(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                               _ imagesLen: Int, _ count: Int64, _ out: UnsafeMutablePointer<Float>?,
                               _ outLen: Int) -> lift_status {
  perImageRows(handle, images, format, imagesLen, count, out, outLen, cols: \.width) { model, input, n, out throws(LiftError) in
    try model.features(input, count: n, into: out)
  }
}

@_cdecl("lift_model_step_flops")
public func cLiftModelStepFlops(_ handle: OpaquePointer?, _ batch: Int64, _ flops: UnsafeMutablePointer<Double>?) -> lift_status {
  capi { () throws(LiftError) in
    let model = try object(handle, as: Model.self, "model")
    try requirePositive(batch, "batch")
    try required(flops, "flops").pointee = FlopCount.trainingStep(model.config, batch: Int(batch))
  }
}
