import Glibc

/// Model weights and training checkpoints as safetensors files.
///
/// Model file: every tensor of the layout under its PyTorch name, float32, with metadata
///   "format": "pt", "lift.kind": "model", "lift.version", "lift.model_config" (JSON).
/// Training checkpoint: the same tensors plus "optimizer.exp_avg.<name>" and
///   "optimizer.exp_avg_sq.<name>" for every tensor that trains (frozen tensors, see
///   TrainConfig.unlockedGroups, have no optimiser state; loading ignores theirs), and metadata "lift.kind": "training",
///   "lift.train_config" (JSON), "lift.step", "lift.rng_state" (four hex words) and any
///   caller-supplied "user.<key>" entries. A training checkpoint is also a valid model file.
enum Checkpoint {
  static let modelKind = "model"
  static let trainingKind = "training"

  static func modelEntries(_ model: Model, buffer: UnsafePointer<Float>, prefix: String = "") -> [SafeTensors.Entry] {
    model.layout.tensors.map { SafeTensors.Entry(name: prefix + $0.name, shape: $0.shape, data: buffer + $0.offset) }
  }

  static func baseMetadata(_ model: Model, kind: String) -> [(String, String)] {
    [("format", "pt"), ("lift.kind", kind), ("lift.version", liftVersion),
     ("lift.model_config", model.config.json.serialized)]
  }

  /// Checks that `reader` holds every tensor of `layout` (with the name prefix) as float32 of the
  /// layout's shape, before anything is allocated for them: the file's own size then bounds
  /// the memory a crafted config can ask for.
  static func checkTensors(_ reader: SafeTensors.Reader, _ tensors: [TensorInfo], prefix: String = "") throws(LiftError) {
    for t in tensors {
      guard let stored = reader.tensors[prefix + t.name] else {
        throw .format("'\(reader.path)' has no tensor '\(prefix + t.name)'")
      }
      guard stored.dtype == "F32" else {
        throw .format("'\(reader.path)': tensor '\(prefix + t.name)' is \(stored.dtype); expected F32")
      }
      guard stored.shape == t.shape else {
        throw .shape("'\(reader.path)': tensor '\(prefix + t.name)' has shape \(stored.shape); the model expects \(t.shape)")
      }
    }
  }

  /// Index of the first non-finite value of any of `tensors` in `buffer`, as an error.
  static func requireFinite(_ buffer: UnsafePointer<Float>, _ tensors: [TensorInfo], prefix: String = "",
                            path: String) throws(LiftError) {
    for t in tensors {
      if let j = VectorOps.firstNonFinite(buffer + t.offset, t.count) {
        throw .value("'\(path)': tensor '\(prefix + t.name)' has a non-finite value at element \(j)")
      }
    }
  }

  /// Largest step count a checkpoint may record.
  static let maxStep = TrainConfig.maxSteps

  /// Reads `tensors` (optionally with a name prefix) from `reader` into `buffer`.
  static func readTensors(_ reader: SafeTensors.Reader, _ tensors: [TensorInfo], prefix: String = "",
                          into buffer: UnsafeMutablePointer<Float>) throws(LiftError) {
    for t in tensors {
      try reader.read(prefix + t.name, shape: t.shape, into: buffer + t.offset)
    }
  }

  /// The model config stored in a file's metadata.
  static func modelConfig(_ reader: SafeTensors.Reader) throws(LiftError) -> ModelConfig {
    guard let text = reader.metadata["lift.model_config"] else {
      throw .format("'\(reader.path)' has no lift.model_config metadata (not written by liblift)")
    }
    let json = try JSON.parse(Array(text.utf8), what: "'\(reader.path)' lift.model_config")
    return try ModelConfig(json: json, source: "'\(reader.path)' lift.model_config")
  }
}

extension Model {
  /// Writes the weights (atomically) as a safetensors file loadable with PyTorch names.
  public func save(path: String) throws(LiftError) {
    try lock.withLock { () throws(LiftError) in
      try SafeTensors.write(path: path, entries: Checkpoint.modelEntries(self, buffer: parameters),
                            metadata: Checkpoint.baseMetadata(self, kind: Checkpoint.modelKind))
    }
  }

  /// Loads a model file (or the model part of a training checkpoint) written by liblift.
  public static func load(path: String) throws(LiftError) -> Model {
    try load(SafeTensors.Reader(path: path))
  }

  static func load(_ reader: SafeTensors.Reader) throws(LiftError) -> Model {
    let config = try Checkpoint.modelConfig(reader)
    try Checkpoint.checkTensors(reader, ParameterLayout(config, withLogitBias: config.objective == .sigmoid).tensors)
    let model = try Model(uninitialized: config)
    try Checkpoint.readTensors(reader, model.layout.tensors, into: model.parameters)
    try Checkpoint.requireFinite(model.parameters, model.layout.tensors, path: reader.path)
    return model
  }
}

extension Trainer {
  /// Writes model weights, both AdamW moments (of the tensors that train), the step, the RNG
  /// state and the train config (atomically). `userMetadata` entries are stored as
  /// "user.<key>". Gradients are not saved: save between steps.
  public func save(path: String, userMetadata: [(String, String)] = []) throws(LiftError) {
    try model.lock.withLock { () throws(LiftError) in
      var entries = Checkpoint.modelEntries(model, buffer: model.parameters)
      for (prefix, moment) in [("optimizer.exp_avg.", firstMoment), ("optimizer.exp_avg_sq.", secondMoment)] {
        entries += trainedTensors.map { SafeTensors.Entry(name: prefix + $0.name, shape: $0.shape, data: moment + $0.offset) }
      }
      var metadata = Checkpoint.baseMetadata(model, kind: Checkpoint.trainingKind)
      let s = rng.state
      metadata += [("lift.train_config", config.json.serialized), ("lift.step", String(step)),
                   ("lift.rng_state", [s.0, s.1, s.2, s.3].map { String($0, radix: 16) }.joined(separator: ","))]
      for (k, v) in userMetadata {
        guard !k.isEmpty else { throw .argument("user metadata key is empty") }
        metadata.append(("user." + k, v))
      }
      try SafeTensors.write(path: path, entries: entries, metadata: metadata)
    }
  }

  /// Resumes from a training checkpoint: the continued run is bit-identical to one that was
  /// never interrupted. `batchCapacity` (if given) replaces the saved one: it changes memory use
  /// and the micro-batch split, so results then agree only up to float rounding.
  public static func load(path: String, batchCapacity: Int? = nil) throws(LiftError) -> (Trainer, [String: String]) {
    let reader = try SafeTensors.Reader(path: path)
    guard reader.metadata["lift.kind"] == Checkpoint.trainingKind else {
      throw .format("'\(path)' is a model file, not a training checkpoint (no optimizer state)")
    }
    guard let configText = reader.metadata["lift.train_config"],
          let stepText = reader.metadata["lift.step"], let step = Int(stepText),
          let rngText = reader.metadata["lift.rng_state"] else {
      throw .format("'\(path)' lacks lift.train_config, lift.step or lift.rng_state metadata")
    }
    guard step >= 0, step <= Checkpoint.maxStep else {
      throw .format("'\(path)': lift.step \(step) is outside [0, \(Checkpoint.maxStep)]")
    }
    let model = try Model.load(reader)
    var config = try TrainConfig(json: try JSON.parse(Array(configText.utf8), what: "'\(path)' lift.train_config"),
                                 source: "'\(path)' lift.train_config")
    if let batchCapacity { config.batchCapacity = batchCapacity }
    let trained = Trainer.trainedTensors(model.layout, config: config)
    for prefix in ["optimizer.exp_avg.", "optimizer.exp_avg_sq."] {
      try Checkpoint.checkTensors(reader, trained, prefix: prefix)
    }
    let words = rngText.split(separator: ",").compactMap { UInt64($0, radix: 16) }
    guard words.count == 4 else { throw .format("'\(path)': lift.rng_state is not four hex words") }
    let trainer = try Trainer(model: model, config: config)
    try Checkpoint.readTensors(reader, trained, prefix: "optimizer.exp_avg.", into: trainer.firstMoment)
    try Checkpoint.readTensors(reader, trained, prefix: "optimizer.exp_avg_sq.", into: trainer.secondMoment)
    // A NaN or infinite moment would write NaN into the parameters at the next step; a negative
    // second moment has no square root.
    try Checkpoint.requireFinite(trainer.firstMoment, trained, prefix: "optimizer.exp_avg.", path: path)
    try Checkpoint.requireFinite(trainer.secondMoment, trained, prefix: "optimizer.exp_avg_sq.", path: path)
    for t in trained {
      let v = trainer.secondMoment + t.offset
      if let j = (0..<t.count).first(where: { v[$0] < 0 }) {
        throw .value("'\(path)': tensor 'optimizer.exp_avg_sq.\(t.name)' has a negative value at element \(j)")
      }
    }
    trainer.step = step
    trainer.rng = Xoshiro256(state: (words[0], words[1], words[2], words[3]))
    var user: [String: String] = [:]
    for (k, v) in reader.metadata where k.hasPrefix("user.") { user[String(k.dropFirst(5))] = v }
    trainer.userMetadata = user
    return (trainer, user)
  }
}

// MARK: - Config <-> JSON

extension ModelConfig {
  var json: JSON {
    .object([
      ("image_size", .number(Double(imageSize))), ("channels", .number(Double(channels))),
      ("patch", .number(Double(patch))), ("width", .number(Double(width))), ("depth", .number(Double(depth))),
      ("heads", .number(Double(heads))), ("mlp_ratio", .number(Double(mlpRatio))),
      ("head_layers", .number(Double(headLayers))), ("text_dim", .number(Double(textDim))),
      ("pool", .string(pooling == .average ? "avg" : "tok")),
      ("objective", .string(objective.name)),
      ("image_mean", .array(imageMean.map { .number(Double($0)) })),
      ("image_std", .array(imageStd.map { .number(Double($0)) })),
      ("precision", .string(precision.name)),
      ("patch_bias", .bool(patchBias)), ("ln_pre", .bool(lnPre)), ("activation", .string(activation.name)),
      ("layer_scale", .bool(layerScale)), ("registers", .number(Double(registers))),
      ("final_norm", .string(finalNorm.name)), ("layer_norm_eps", .number(Double(layerNormEps))),
    ])
  }

  init(json: JSON, source: String) throws(LiftError) {
    func int(_ key: String) throws(LiftError) -> Int {
      guard let v = json[key]?.int else { throw .format("\(source): missing or non-integer '\(key)'") }
      return v
    }
    func floats(_ key: String) throws(LiftError) -> [Float] {
      guard let a = json[key]?.array else { throw .format("\(source): missing '\(key)'") }
      var out: [Float] = []
      for v in a {
        guard let n = v.number else { throw .format("\(source): '\(key)' holds a non-number") }
        out.append(Float(n))
      }
      return out
    }
    let pool: Pooling
    switch json["pool"]?.string {
    case "avg": pool = .average
    case "tok": pool = .token
    default: throw .format("\(source): 'pool' must be \"avg\" or \"tok\"")
    }
    guard let objectiveName = json["objective"]?.string, let objective = Objective(name: objectiveName) else {
      throw .format("\(source): 'objective' must be contrastive, cosine or sigmoid")
    }
    // Files written before the precision setting existed computed in fp32.
    let precisionName = json["precision"]?.string ?? "fp32"
    guard let precision = Precision(name: precisionName) else {
      throw .format("\(source): 'precision' must be fp32 or bf16 (got \"\(precisionName)\")")
    }
    self.init(imageSize: try int("image_size"), channels: try int("channels"), patch: try int("patch"),
              width: try int("width"), depth: try int("depth"), heads: try int("heads"),
              mlpRatio: try int("mlp_ratio"), headLayers: try int("head_layers"), textDim: try int("text_dim"),
              pooling: pool, objective: objective, imageMean: try floats("image_mean"), imageStd: try floats("image_std"),
              precision: precision)
    // Architecture options added later: files without them describe LIFT's own model.
    func flag(_ key: String, _ fallback: Bool) throws(LiftError) -> Bool {
      guard let v = json[key] else { return fallback }
      guard let b = v.bool else { throw .format("\(source): '\(key)' must be true or false") }
      return b
    }
    patchBias = try flag("patch_bias", false)
    lnPre = try flag("ln_pre", true)
    layerScale = try flag("layer_scale", false)
    func name(_ key: String, _ fallback: String) throws(LiftError) -> String {
      guard let v = json[key] else { return fallback }
      guard let s = v.string else { throw .format("\(source): '\(key)' must be a string") }
      return s
    }
    let activationName = try name("activation", "gelu")
    guard let activation = Activation(name: activationName) else {
      throw .format("\(source): 'activation' must be gelu or quick_gelu (got \"\(activationName)\")")
    }
    self.activation = activation
    let finalNormName = try name("final_norm", "tokens")
    guard let finalNorm = FinalNorm(name: finalNormName) else {
      throw .format("\(source): 'final_norm' must be tokens or pooled (got \"\(finalNormName)\")")
    }
    self.finalNorm = finalNorm
    if let v = json["registers"] {
      guard let r = v.int else { throw .format("\(source): 'registers' must be an integer") }
      registers = r
    }
    if let v = json["layer_norm_eps"] {
      guard let e = v.number else { throw .format("\(source): 'layer_norm_eps' must be a number") }
      layerNormEps = Float(e)
    }
    do {
      try validate()
    } catch {
      throw .format("\(source): \(error.message)")
    }
  }
}

extension ModelConfig.Objective {
  public var name: String {
    switch self {
    case .contrastive: return "contrastive"
    case .cosine: return "cosine"
    case .sigmoid: return "sigmoid"
    }
  }

  public init?(name: String) {
    switch name {
    case "contrastive": self = .contrastive
    case "cosine": self = .cosine
    case "sigmoid": self = .sigmoid
    default: return nil
    }
  }
}

extension TrainConfig {
  var json: JSON {
    .object([
      ("learning_rate", .number(learningRate)), ("beta1", .number(beta1)), ("beta2", .number(beta2)),
      ("eps", .number(eps)), ("weight_decay", .number(weightDecay)),
      ("warmup_steps", .number(Double(warmupSteps))), ("total_steps", .number(Double(totalSteps))),
      ("grad_clip", .number(gradClip)), ("batch_capacity", .number(Double(batchCapacity))),
      ("unlocked_groups", unlockedGroups.map { .number(Double($0)) } ?? .null), ("layer_decay", .number(layerDecay)),
    ])
  }

  init(json: JSON, source: String) throws(LiftError) {
    func number(_ key: String) throws(LiftError) -> Double {
      guard let v = json[key]?.number else { throw .format("\(source): missing '\(key)'") }
      return v
    }
    func int(_ key: String) throws(LiftError) -> Int {
      guard let v = json[key]?.int else { throw .format("\(source): missing or non-integer '\(key)'") }
      return v
    }
    self.init()
    learningRate = try number("learning_rate")
    beta1 = try number("beta1")
    beta2 = try number("beta2")
    eps = try number("eps")
    weightDecay = try number("weight_decay")
    warmupSteps = try int("warmup_steps")
    totalSteps = try int("total_steps")
    gradClip = try number("grad_clip")
    batchCapacity = try int("batch_capacity")
    // Checkpoints from before locking existed trained everything.
    if let v = json["unlocked_groups"], v != .null {
      guard let k = v.int else { throw .format("\(source): 'unlocked_groups' must be an integer or null") }
      unlockedGroups = k
    }
    if let v = json["layer_decay"] {
      guard let d = v.number else { throw .format("\(source): 'layer_decay' must be a number") }
      layerDecay = d
    }
    do {
      try validate()
    } catch {
      throw .format("\(source): \(error.message)")
    }
  }
}
