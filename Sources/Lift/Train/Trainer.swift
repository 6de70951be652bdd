import CLiftABI
import Glibc

/// What one optimiser update did.
public struct StepStats: Equatable {
  /// Loss of the batch (before the update).
  public var loss: Double
  /// Learning rate the update used.
  public var learningRate: Double
  /// exp(logit_scale) after the update (the temperature's inverse), and the logit bias.
  public var logitScale: Double
  public var logitBias: Double
  /// Global gradient norm before clipping.
  public var gradNorm: Double
  /// Updates applied so far, this one included.
  public var step: Int
}

/// What a step trains on: images, or (with the whole image tower frozen) the pooled features
/// the tower makes of them, rows of `model.config.width` floats (see `Model.features`).
public enum StepInput {
  case images(ImageInput)
  case features(UnsafePointer<Float>)

  func advanced(byImages n: Int, config: ModelConfig) -> StepInput {
    switch self {
    case .images(let images): .images(images.advanced(byImages: n, config: config))
    case .features(let rows): .features(rows + n * config.width)
    }
  }
}

/// Trains a `Model` against fixed text embeddings.
///
/// Buffers: gradients and the two AdamW moments are each one contiguous float buffer laid out
/// like the parameters (`model.layout`), so an external driver can all-reduce the gradient in
/// one call. Activations live in a workspace sized for `config.batchCapacity` images, allocated
/// once. With locking (`config.unlockedGroups`), frozen groups cost no memory: their part of
/// the three buffers is never written (mapped on demand, it stays unbacked) and the workspace
/// keeps no activations for them.
///
/// Two ways to drive it:
/// - `step(images:texts:batch:)`: forward, loss, backward, update. Batches larger than the
///   capacity are split into micro-batches with cached features (OpenCLIP accum_freq): the
///   gradient equals that of the whole batch. With the whole tower frozen,
///   `step(features:texts:batch:)` takes the images' pooled features instead (computed once
///   by `Model.features`) and runs only the head: the same step, without the tower's cost.
/// - the split form for external (e.g. multi-worker) drivers: `forward` -> `loss` (given every
///   worker's features) -> `backward` -> (all-reduce `gradients`) -> `apply`. The one-call step
///   runs exactly this sequence, so both give bit-identical results.
///
/// Thread safety: all methods take the model's lock.
public final class Trainer: @unchecked Sendable {  // every method takes the model's lock
  public let model: Model
  public let config: TrainConfig
  public var gradients: UnsafeMutablePointer<Float> { gradientBuffer.pointer }
  public var firstMoment: UnsafeMutablePointer<Float> { firstMomentBuffer.pointer }
  public var secondMoment: UnsafeMutablePointer<Float> { secondMomentBuffer.pointer }
  private let gradientBuffer, firstMomentBuffer, secondMomentBuffer: ZeroedFloats
  /// Scratch of the gradient norm (AdamW.globalNorm).
  private let normPartials: UnsafeMutablePointer<Double>
  /// Updates applied so far.
  public internal(set) var step: Int = 0
  /// Seeded generator whose state travels with checkpoints (for drivers' shuffling).
  public internal(set) var rng: Xoshiro256
  /// User metadata of the checkpoint this trainer was loaded from.
  public internal(set) var userMetadata: [String: String] = [:]

  let workspace: Workspace
  private let lossScratch: Objectives.Scratch
  /// Unit-norm text embeddings of the current (global) batch; grows, never shrinks.
  private var texts: GrowableFloats
  /// Feature gradients and cached features for one-call steps; grow, never shrink.
  var featureGrads: GrowableFloats
  var cachedFeatures: GrowableFloats
  /// Global-batch features and texts gathered by data-parallel steps; grow, never shrink.
  var gatheredFeatures: GrowableFloats
  var gatheredTexts: GrowableFloats
  /// Batch size of the training forward whose activations the workspace holds (nil: none).
  private var forwardBatch: Int?
  /// Loss of the last `loss` call, reported by `apply`.
  private var lastLoss: Double = .nan

  /// The lowest layer group that trains (ParameterLayout.group; 0 = everything): groups below
  /// it are frozen by `config.unlockedGroups`.
  public let lowestTrainedGroup: Int
  /// Where the trained tensors begin in the parameter buffer (they form its suffix).
  public let trainedOffset: Int
  static func lowestTrainedGroup(_ layout: ParameterLayout, config: TrainConfig) -> Int {
    config.unlockedGroups.map { max(layout.towerGroups - $0, 0) } ?? 0
  }

  /// The tensors that train under `config`'s locking (a suffix of the layout's).
  static func trainedTensors(_ layout: ParameterLayout, config: TrainConfig) -> [TensorInfo] {
    let start = layout.offset(ofGroup: lowestTrainedGroup(layout, config: config))
    return layout.tensors.filter { $0.offset >= start }
  }

  /// The tensors that train (a suffix of model.layout.tensors).
  public var trainedTensors: [TensorInfo] { Trainer.trainedTensors(model.layout, config: config) }

  /// Whether the whole tower is frozen, so that the head can train on pooled features.
  public var towerFrozen: Bool { lowestTrainedGroup == model.layout.towerGroups }

  public init(model: Model, config: TrainConfig, seed: UInt64 = 0) throws(LiftError) {
    try config.validate()
    self.model = model
    self.config = config
    self.rng = Xoshiro256(seed: seed)
    let count = model.layout.totalCount
    lowestTrainedGroup = Trainer.lowestTrainedGroup(model.layout, config: config)
    trainedOffset = model.layout.offset(ofGroup: lowestTrainedGroup)
    try Trainer.requireMemory(model: model, config: config, lowestTrainedGroup: lowestTrainedGroup,
                              trainedCount: count - trainedOffset)
    gradientBuffer = try ZeroedFloats(count, what: "gradients")
    firstMomentBuffer = try ZeroedFloats(count, what: "AdamW first moment")
    secondMomentBuffer = try ZeroedFloats(count, what: "AdamW second moment")
    workspace = try Workspace(config: model.config, capacity: config.batchCapacity, training: true,
                              parameterCount: model.layout.totalCount, lowestTrainedGroup: lowestTrainedGroup)
    lossScratch = try Objectives.Scratch(capacity: config.batchCapacity)
    normPartials = try allocateElements(AdamW.normScratchCount(count), of: Double.self, what: "gradient-norm partial sums")
    do {
      texts = try GrowableFloats(config.batchCapacity * model.config.textDim, what: "text embeddings")
    } catch {
      normPartials.deallocate()
      throw error
    }
    do {
      featureGrads = try GrowableFloats(config.batchCapacity * model.config.textDim, what: "feature gradients")
      cachedFeatures = try GrowableFloats(0, what: "cached features")
      gatheredFeatures = try GrowableFloats(0, what: "gathered features")
      gatheredTexts = try GrowableFloats(0, what: "gathered text embeddings")
    } catch {
      texts.release()
      normPartials.deallocate()
      throw error
    }
  }

  /// Checks what a trainer will allocate and touch against the memory budget, before anything
  /// is: the encoder workspace for the batch capacity, the loss's capacity^2 logits, the text
  /// embeddings and feature gradients, and the gradients and AdamW moments of the trained tensors.
  private static func requireMemory(model: Model, config: TrainConfig, lowestTrainedGroup: Int,
                                    trainedCount: Int) throws(LiftError) {
    let capacity = config.batchCapacity, floats = MemoryLayout<Float>.stride
    let plan = Workspace.Plan(config: model.config, capacity: capacity, training: true,
                              parameterCount: model.layout.totalCount, lowestTrainedGroup: lowestTrainedGroup)
    try MemoryBudget.require([("encoder workspace", plan.bytes),
                              ("loss logits", Objectives.Scratch.bytes(capacity: capacity)),
                              ("text embeddings and feature gradients", 2 * capacity * model.config.textDim * floats),
                              ("gradients and AdamW moments", 3 * trainedCount * floats)],
                             for: "a trainer of batch capacity \(capacity) (batch_capacity)")
  }

  deinit {
    normPartials.deallocate()
    texts.release()
    featureGrads.release()
    cachedFeatures.release()
    gatheredFeatures.release()
    gatheredTexts.release()
  }

  var textDim: Int { model.config.textDim }

  // MARK: Split form

  /// Training forward of `batch` (1...capacity) images; returns their unit-norm embeddings
  /// (batch x textDim, valid until the next call) and keeps the activations for `backward`.
  public func forward(_ images: ImageInput, batch: Int) throws(LiftError) -> UnsafePointer<Float> {
    try model.lock.withLock { () throws(LiftError) in try forwardLocked(.images(images), batch: batch) }
  }

  private func forwardLocked(_ input: StepInput, batch: Int) throws(LiftError) -> UnsafePointer<Float> {
    guard batch >= 1, batch <= config.batchCapacity else {
      throw .argument("batch must be in [1, \(config.batchCapacity)] (the trainer's batch capacity); got \(batch)")
    }
    forwardBatch = nil
    switch input {
    case .images(let images):
      try Validation.checkImages(images, count: batch, config: model.config, firstIndex: 0)
      try Encoder.forward(model, images: images, batch: batch, ws: workspace)
    case .features(let rows):
      guard towerFrozen else {
        throw .state("training on pooled features needs the whole image tower frozen (unlocked groups 0, lock_image)")
      }
      let count = batch * model.config.width
      if let j = VectorOps.firstNonFinite(rows, count) {
        throw .value("the pooled features have a non-finite value at row \(j / model.config.width), column \(j % model.config.width)")
      }
      workspace.pooled.update(from: rows, count: count)
      try Encoder.forward(model: model, pooledBatch: batch, ws: workspace)
    }
    try Validation.checkEmbeddings(workspace, count: batch, firstIndex: 0)
    forwardBatch = batch
    return UnsafePointer(workspace.embeddings)
  }

  /// Loss of a global batch of n pairs and its gradient with respect to this worker's images.
  ///
  /// `images` (n x D) are the unit-norm embeddings of every worker, in global order; `rawTexts`
  /// (n x D) the matching text embeddings (normalised here). Writes dLoss/dI for rows
  /// [localStart, localStart + localCount) into `dLocal` (localCount x D), scaled by
  /// `workerCount` so that averaging the workers' gradient buffers gives the exact gradient of
  /// the global loss; adds the logit scale/bias gradients to `gradients`. A non-finite loss is
  /// a value error and changes nothing.
  public func loss(images: UnsafePointer<Float>, texts rawTexts: UnsafePointer<Float>, count n: Int,
                   localStart: Int, localCount: Int, workerCount: Int,
                   dLocal: UnsafeMutablePointer<Float>) throws(LiftError) -> Double {
    try model.lock.withLock { () throws(LiftError) in
      try lossLocked(images: images, texts: rawTexts, count: n, localStart: localStart, localCount: localCount,
                     workerCount: workerCount, dLocal: dLocal)
    }
  }

  private func lossLocked(images: UnsafePointer<Float>, texts rawTexts: UnsafePointer<Float>, count n: Int,
                          localStart: Int, localCount: Int, workerCount: Int,
                          dLocal: UnsafeMutablePointer<Float>) throws(LiftError) -> Double {
    let d = textDim
    guard n >= 1 else { throw .argument("the batch must hold at least one pair (got \(n))") }
    if model.config.objective == .contrastive && n < 2 {
      throw .argument("the contrastive loss needs a batch of at least 2 pairs (got \(n))")
    }
    guard localStart >= 0, localCount >= 0, localStart <= n, localCount <= n - localStart else {
      throw .argument("local rows [\(localStart), \(localStart) + \(localCount)) are outside the batch of \(n)")
    }
    guard workerCount >= 1 else { throw .argument("worker count must be >= 1 (got \(workerCount))") }
    _ = try checkedCount(Int64(n), Int64(d), "batch features")
    try Validation.checkRows(images, rows: n, cols: d, name: "image embeddings")
    try Validation.checkRows(rawTexts, rows: n, cols: d, name: "text embeddings")
    try texts.reserve(n * d)
    try lossScratch.reserve(n)
    for i in 0..<n {
      let dst = texts.pointer + i * d
      dst.update(from: rawTexts + i * d, count: d)
      VectorOps.normalize(dst, d)
    }
    let result = try Profile.measure(.loss) { () throws(LiftError) in try Objectives.compute(
      model.config.objective, images: images, texts: texts.pointer, n: n, d: d, logitScale: model.logitScale,
      logitBias: model.logitBias, localStart: localStart, localCount: localCount,
      featureGradScale: Float(workerCount), dImages: dLocal, scratch: lossScratch) }
    guard result.loss.isFinite else {
      throw .value("the loss is not finite (\(result.loss)); no gradient was added")
    }
    if model.config.objective != .cosine {
      gradients[model.layout.logitScale] += Float(result.dLogitScale)
    }
    if let bias = model.layout.logitBias { gradients[bias] += Float(result.dLogitBias) }
    lastLoss = result.loss
    return result.loss
  }

  /// Backward of the last `forward` (which must have had `batch` images) given dLoss/d(its
  /// embeddings) (batch x D); adds the parameter gradients into `gradients`.
  public func backward(_ dEmbeddings: UnsafePointer<Float>, batch: Int) throws(LiftError) {
    try model.lock.withLock { () throws(LiftError) in try backwardLocked(dEmbeddings, batch: batch) }
  }

  private func backwardLocked(_ dEmbeddings: UnsafePointer<Float>, batch: Int) throws(LiftError) {
    guard let saved = forwardBatch else {
      throw .state("backward needs a preceding forward (none is pending)")
    }
    guard saved == batch else {
      throw .argument("backward got a batch of \(batch) but the pending forward had \(saved)")
    }
    if let j = VectorOps.firstNonFinite(dEmbeddings, batch * textDim) {
      throw .value("the feature gradient has a non-finite value at row \(j / textDim), column \(j % textDim)")
    }
    try Encoder.backward(model, dEmbeddings: dEmbeddings, batch: batch, ws: workspace, grads: gradients,
                         lowestGroup: lowestTrainedGroup)
    forwardBatch = nil
  }

  /// Clips the accumulated gradient to the global norm, applies one AdamW update with the
  /// scheduled learning rate, clamps logit_scale to [0, ln 100] and zeroes the gradient.
  /// A non-finite gradient refuses the update: parameters and moments are untouched, the
  /// gradient is zeroed, the step count does not advance, and a value error says so.
  public func apply() throws(LiftError) -> StepStats {
    try model.lock.withLock { () throws(LiftError) in try applyLocked() }
  }

  private func applyLocked() throws(LiftError) -> StepStats {
    try Profile.measure(.optimizer) { () throws(LiftError) in try applyUpdate() }
  }

  private func applyUpdate() throws(LiftError) -> StepStats {
    let layout = model.layout
    guard step < Checkpoint.maxStep else {
      zeroGradientsLocked()
      throw .state("the trainer has taken \(step) steps, the most a checkpoint can record; the update was skipped")
    }
    // Frozen gradients are zero: the norm read from the trained suffix on is the global norm,
    // bit for bit (its summation order does not depend on where the suffix starts).
    let norm = AdamW.globalNorm(gradients, from: trainedOffset, count: layout.totalCount, partials: normPartials)
    guard norm.isFinite else {
      zeroGradientsLocked()
      throw .value("the gradient is not finite (norm \(norm)); the update was skipped and the gradient zeroed")
    }
    // torch.nn.utils.clip_grad_norm_: g *= min(1, clip / (norm + 1e-6)), fused into the update.
    let coef = config.gradClip > 0 ? Float(min(1, config.gradClip / (norm + 1e-6))) : 1
    let lr = config.learningRate(atStep: step)
    AdamW.update(layout: layout, params: model.parameters, grads: gradients, gradScale: coef, m: firstMoment,
                 v: secondMoment, step: step + 1, lr: lr, config: config, lowestGroup: lowestTrainedGroup)
    let s = layout.logitScale
    model.parameters[s] = min(max(model.parameters[s], 0), Float(log(100.0)))
    step += 1
    return StepStats(loss: lastLoss, learningRate: lr, logitScale: Double(exp(model.logitScale)),
                     logitBias: Double(model.logitBias), gradNorm: norm, step: step)
  }

  /// Next value of the trainer's RNG.
  public func nextRandom() -> UInt64 {
    model.lock.withLock { rng.next() }
  }

  public func zeroGradients() {
    model.lock.withLock { zeroGradientsLocked() }
  }

  private func zeroGradientsLocked() {
    // From the start of the norm's block that holds the trained suffix (so that block's frozen
    // part, which the norm reads, is zero whatever an external driver wrote there).
    let start = trainedOffset / AdamW.normBlock * AdamW.normBlock
    let g = gradients + start
    Parallel.forRanges(model.layout.totalCount - start, grain: 1 << 16) { r in
      (g + r.lowerBound).update(repeating: 0, count: r.count)
    }
  }

  // MARK: One-call step

  /// One optimiser step on `batch` image/text pairs (texts: batch x D raw embeddings).
  /// Batches above the capacity run as micro-batches with cached features; the gradient is
  /// that of the whole batch. On any error nothing is updated and the gradient is zeroed.
  public func step(images: ImageInput, texts rawTexts: UnsafePointer<Float>, batch: Int) throws(LiftError) -> StepStats {
    try model.lock.withLock { () throws(LiftError) in
      try stepLocked(.images(images), texts: rawTexts, batch: batch, communicator: nil)
    }
  }

  /// The step of `step(images:...)` on the images' pooled features (batch x width, from
  /// `Model.features`); only for a trainer whose whole tower is frozen (`towerFrozen`). The
  /// update equals that of the image step up to float rounding.
  public func step(features: UnsafePointer<Float>, texts rawTexts: UnsafePointer<Float>, batch: Int) throws(LiftError) -> StepStats {
    try step(.features(features), texts: rawTexts, batch: batch)
  }

  /// `step(images:...)` or `step(features:...)`.
  public func step(_ input: StepInput, texts rawTexts: UnsafePointer<Float>, batch: Int) throws(LiftError) -> StepStats {
    try model.lock.withLock { () throws(LiftError) in
      try stepLocked(input, texts: rawTexts, batch: batch, communicator: nil)
    }
  }

  /// The step of `step` and `stepDistributed`: this worker's gradient of the (global) batch,
  /// with a communicator the average over the workers, then the update. On any error nothing is
  /// updated and the gradient is zeroed.
  func stepLocked(_ input: StepInput, texts rawTexts: UnsafePointer<Float>, batch: Int,
                  communicator comm: Communicator?) throws(LiftError) -> StepStats {
    guard batch >= 1 else { throw .argument("batch must be >= 1 (got \(batch))") }
    do throws(LiftError) {
      try accumulateLocked(input, texts: rawTexts, batch: batch, communicator: comm)
      if let comm, comm.size > 1 {
        // Only what trains: frozen groups (a prefix of the buffer) have no gradient.
        let start = trainedOffset, count = model.layout.totalCount - start
        try Profile.measure(.allReduce) { () throws(LiftError) in try comm.allReduceSum(gradients + start, count: count) }
        AdamW.scaleBuffer(gradients + start, count: count, by: 1 / Float(comm.size))
      }
      return try applyLocked()
    } catch {
      forwardBatch = nil
      zeroGradientsLocked()
      throw error
    }
  }

  /// Adds to `gradients` dLoss/dparameters for this worker's `batch` pairs (OpenCLIP accum_freq
  /// with cached features):
  /// 1. features of every micro-batch of at most the capacity;
  /// 2. with a communicator, every worker's features and texts, in rank order;
  /// 3. the loss of the whole (global) batch and its gradient for this worker's rows;
  /// 4. backward: a single micro-batch uses its pending forward, several are forwarded again
  ///    (keeping activations) one by one.
  private func accumulateLocked(_ input: StepInput, texts rawTexts: UnsafePointer<Float>, batch: Int,
                                communicator comm: Communicator?) throws(LiftError) {
    let d = textDim, cap = config.batchCapacity
    try cachedFeatures.reserve(batch * d)
    try featureGrads.reserve(batch * d)
    var start = 0
    while start < batch {
      let n = min(cap, batch - start)
      let f = try forwardLocked(input.advanced(byImages: start, config: model.config), batch: n)
      (cachedFeatures.pointer + start * d).update(from: f, count: n * d)
      start += n
    }
    var features = UnsafePointer(cachedFeatures.pointer), texts = rawTexts
    var total = batch, localStart = 0, workers = 1
    if let comm {
      let counts = try comm.allGather(Int64(batch))
      guard counts.count == comm.size, counts.allSatisfy({ $0 >= 1 && $0 <= Int64(Int32.max) }) else {
        throw .argument("every rank must contribute at least one image (counts \(counts))")
      }
      guard counts[comm.rank] == Int64(batch) else {
        throw .io("the all-gather returned \(counts[comm.rank]) images for rank \(comm.rank), which has \(batch)")
      }
      total = Int(counts.reduce(0, +))
      localStart = Int(counts[..<comm.rank].reduce(0, +))
      workers = comm.size
      let globalCount = try checkedCount(Int64(total), Int64(d), "the gathered features of \(total) images")
      try gatheredFeatures.reserve(globalCount)
      try gatheredTexts.reserve(globalCount)
      let blockCounts = counts.map { $0 * Int64(d) }
      try Profile.measure(.gather) { () throws(LiftError) in
        try comm.allGatherV(cachedFeatures.pointer, count: batch * d, into: gatheredFeatures.pointer, counts: blockCounts)
        try comm.allGatherV(rawTexts, count: batch * d, into: gatheredTexts.pointer, counts: blockCounts)
      }
      features = UnsafePointer(gatheredFeatures.pointer)
      texts = UnsafePointer(gatheredTexts.pointer)
    }
    _ = try lossLocked(images: features, texts: texts, count: total, localStart: localStart, localCount: batch,
                       workerCount: workers, dLocal: featureGrads.pointer)
    if batch <= cap {
      try backwardLocked(featureGrads.pointer, batch: batch)
      return
    }
    start = 0
    while start < batch {
      let n = min(cap, batch - start)
      _ = try forwardLocked(input.advanced(byImages: start, config: model.config), batch: n)
      try backwardLocked(featureGrads.pointer + start * d, batch: n)
      start += n
    }
  }
}

/// A float buffer that grows on demand and never shrinks (so steady-state steps allocate nothing).
struct GrowableFloats {
  private(set) var pointer: UnsafeMutablePointer<Float>
  private(set) var capacity: Int
  let what: String

  init(_ capacity: Int, what: String) throws(LiftError) {
    self.capacity = max(capacity, 16)
    self.what = what
    pointer = try allocateFloats(self.capacity, what: what)
  }

  mutating func reserve(_ count: Int) throws(LiftError) {
    if count <= capacity { return }
    let bigger = try allocateFloats(count, what: what)
    pointer.deallocate()
    pointer = bigger
    capacity = count
  }

  func release() { pointer.deallocate() }
}
