import Glibc

/// The image encoder's weights: a ViT image tower plus LIFT's projection head (and the
/// objective's logit scale / bias), in one contiguous float buffer described by `layout`.
public final class Model: @unchecked Sendable {  // every operation takes `lock`
  public let config: ModelConfig
  public let layout: ParameterLayout
  /// layout.totalCount floats; padding between tensors is zero.
  public let parameters: UnsafeMutablePointer<Float>
  /// Serialises every operation on the model and on trainers that share it.
  let lock = Lock()
  /// Inference workspace for `encode`, created on first use.
  private var encodeWorkspace: Workspace?

  /// A freshly initialised model; the same seed gives the same weights.
  public init(config: ModelConfig, seed: UInt64) throws(LiftError) {
    try config.validate()
    self.config = config
    self.layout = ParameterLayout(config, withLogitBias: config.objective == .sigmoid)
    self.parameters = try allocateFloats(layout.totalCount, what: "model parameters")
    parameters.initialize(repeating: 0, count: layout.totalCount)
    Initializer.initialize(self, seed: seed)
  }

  /// A model whose weights will be filled in by the caller (loading).
  init(uninitialized config: ModelConfig) throws(LiftError) {
    try config.validate()
    self.config = config
    self.layout = ParameterLayout(config, withLogitBias: config.objective == .sigmoid)
    self.parameters = try allocateFloats(layout.totalCount, what: "model parameters")
    parameters.initialize(repeating: 0, count: layout.totalCount)
  }

  /// NUL-terminated tensor names for the C interface, made on first request.
  lazy var cNames: [UnsafeMutablePointer<CChar>] = layout.tensors.map { strdup($0.name)! }

  deinit {
    parameters.deallocate()
    if !cNames.isEmpty { cNames.forEach { free($0) } }
  }

  /// The storage of a tensor by name.
  public func tensor(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
    layout.find(name).map { UnsafeMutableBufferPointer(start: parameters + $0.offset, count: $0.count) }
  }

  /// Images per forward pass when encoding without a given chunk: as many as make about 12,600
  /// tokens (64 images of a 224 px /16 model; 2,520 of a 28 px /14 one), which keeps the
  /// inference workspace near the same size for every model while small images still make
  /// products large enough to run near the machine's rate.
  public var encodeChunk: Int { max(1, 64 * 197 / config.tokens) }

  /// Unit-norm image embeddings (count x textDim) of `count` images, in chunks of at most
  /// `chunk` images (default `encodeChunk`), without saving activations. A non-finite
  /// embedding is a value error.
  public func encode(_ images: ImageInput, count: Int, chunk: Int? = nil,
                     into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    let d = config.textDim
    try inChunks(images, count: count, chunk: chunk) { (ws, part, n, start) throws(LiftError) in
      try Encoder.forward(self, images: part, batch: n, ws: ws)
      try Validation.checkEmbeddings(ws, count: n, firstIndex: start)
      (out + start * d).update(from: ws.embeddings, count: n * d)
    }
  }

  /// Pooled features (count x width) of `count` images: the image tower's output and the
  /// head's input, which is all a head-only step needs when the tower is frozen
  /// (`Trainer.step(features:...)`). Chunked like `encode`. A non-finite feature is a value error.
  public func features(_ images: ImageInput, count: Int, chunk: Int? = nil,
                       into out: UnsafeMutablePointer<Float>) throws(LiftError) {
    let w = config.width
    try inChunks(images, count: count, chunk: chunk) { (ws, part, n, start) throws(LiftError) in
      Encoder.roundWeights(self, ws: ws, fromGroup: 0)
      try Encoder.forwardTower(self, images: part, batch: n, ws: ws)
      if let j = VectorOps.firstNonFinite(ws.pooled, n * w) {
        throw .value("the pooled feature of image \(start + j / w) is not finite")
      }
      (out + start * w).update(from: ws.pooled, count: n * w)
    }
  }

  /// Runs `body(workspace, images, n, first)` on consecutive chunks of at most `chunk` checked
  /// images, under the lock, with the inference workspace (grown when too small).
  private func inChunks(_ images: ImageInput, count: Int, chunk requested: Int?,
                        _ body: (Workspace, ImageInput, Int, Int) throws(LiftError) -> Void) throws(LiftError) {
    let chunk = requested ?? encodeChunk
    try lock.withLock { () throws(LiftError) in
      guard count >= 0 else { throw .argument("image count must be >= 0 (got \(count))") }
      guard chunk >= 1 else { throw .argument("chunk must be >= 1") }
      if encodeWorkspace == nil || encodeWorkspace!.capacity < min(chunk, max(count, 1)) {
        encodeWorkspace = nil
        let capacity = min(chunk, max(count, 1))
        let plan = Workspace.Plan(config: config, capacity: capacity, training: false, parameterCount: layout.totalCount,
                                  lowestTrainedGroup: 0)
        try MemoryBudget.require([("encoder workspace", plan.bytes)], for: "encoding \(capacity) images at a time")
        encodeWorkspace = try Workspace(config: config, capacity: capacity, training: false,
                                        parameterCount: layout.totalCount)
      }
      let ws = encodeWorkspace!
      var start = 0
      while start < count {
        let n = min(ws.capacity, count - start)
        let part = images.advanced(byImages: start, config: config)
        try Validation.checkImages(part, count: n, config: config, firstIndex: start)
        try body(ws, part, n, start)
        start += n
      }
    }
  }

  /// A copy of this model that computes in `precision` (same weights).
  public func converted(to precision: ModelConfig.Precision) throws(LiftError) -> Model {
    var c = config
    c.precision = precision
    let copy = try Model(uninitialized: c)
    lock.withLock { copy.parameters.update(from: parameters, count: layout.totalCount) }
    return copy
  }

  @inline(__always) func p(_ offset: Int) -> UnsafeMutablePointer<Float> { parameters + offset }

  var logitScale: Float { parameters[layout.logitScale] }
  var logitBias: Float { layout.logitBias.map { parameters[$0] } ?? 0 }
}


/// Weight initialisation: PyTorch's defaults for the module types OpenCLIP and LIFT use, drawn
/// from one xoshiro256** stream seeded by the caller (same distributions as PyTorch, not the
/// same numbers), in layout order:
/// - conv1.weight, out_proj.weight, Linear weights (c_fc, c_proj, projector): U(-1/sqrt(fan_in), +)
///   (kaiming_uniform with a = sqrt 5); c_fc, c_proj and projector biases: U(-1/sqrt(fan_in), +)
/// - in_proj_weight: Xavier-uniform U(-sqrt(6 / (W + 3W)), +); in_proj_bias, out_proj.bias: 0
/// - class_embedding, positional_embedding: N(0, 1) * W^-0.5 (OpenCLIP)
/// - LayerNorm weight 1, bias 0
/// - options of other model families (drawn only when present, so LIFT's own model initialises
///   as before): conv1.bias U(-1/sqrt(C*p*p), +) as Conv2d; register tokens N(0, 1) * W^-0.5;
///   LayerScale vectors 1
/// - logit_scale: ln(1 / 0.07) (contrastive, cosine) or ln 10 (sigmoid); logit_bias: -10.
enum Initializer {
  static func initialize(_ model: Model, seed: UInt64) {
    var rng = Xoshiro256(seed: seed)
    let c = model.config, l = model.layout, w = c.width
    func uniform(_ offset: Int, _ count: Int, bound: Float) {
      let p = model.p(offset)
      for i in 0..<count { p[i] = Float((rng.unit() * 2 - 1) * Double(bound)) }
    }
    func normal(_ offset: Int, _ count: Int, std: Float) {
      let p = model.p(offset)
      for i in 0..<count { p[i] = Float(rng.normal()) * std }
    }
    func fill(_ offset: Int, _ count: Int, _ value: Float) { model.p(offset).update(repeating: value, count: count) }
    func fanIn(_ n: Int) -> Float { 1 / Float(n).squareRoot() }

    uniform(l.conv1, w * c.patchDim, bound: fanIn(c.patchDim))
    if let bias = l.conv1Bias { uniform(bias, w, bound: fanIn(c.patchDim)) }
    normal(l.classEmbedding, w, std: fanIn(w))
    normal(l.positionalEmbedding, (1 + c.patches) * w, std: fanIn(w))
    if let registers = l.registerTokens { normal(registers, c.registers * w, std: fanIn(w)) }
    if let lnPre = l.lnPre { fill(lnPre.weight, w, 1) }
    for b in l.blocks {
      if let ls = b.layerScale1 { fill(ls, w, 1) }
      if let ls = b.layerScale2 { fill(ls, w, 1) }
      fill(b.ln1Weight, w, 1)
      uniform(b.inWeight, 3 * w * w, bound: (6 / Float(4 * w)).squareRoot())
      uniform(b.outWeight, w * w, bound: fanIn(w))
      fill(b.ln2Weight, w, 1)
      uniform(b.fcWeight, c.hidden * w, bound: fanIn(w))
      uniform(b.fcBias, c.hidden, bound: fanIn(w))
      uniform(b.projWeight, w * c.hidden, bound: fanIn(c.hidden))
      uniform(b.projBias, w, bound: fanIn(c.hidden))
    }
    fill(l.lnPostWeight, w, 1)
    for (i, h) in l.head.enumerated() {
      let inFeatures = i == 0 ? w : c.textDim
      uniform(h.weight, c.textDim * inFeatures, bound: fanIn(inFeatures))
      uniform(h.bias, c.textDim, bound: fanIn(inFeatures))
    }
    model.parameters[l.logitScale] = c.objective == .sigmoid ? Float(log(10.0)) : Float(log(1 / 0.07))
    if let bias = l.logitBias { model.parameters[bias] = -10 }
  }
}
