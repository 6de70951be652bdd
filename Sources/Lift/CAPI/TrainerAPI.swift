import CLiftABI
import Glibc

// C entry points of trainers (see Include/lift.h).

extension TrainConfig {
  init(c: lift_train_config) throws(LiftError) {
    self.init()
    learningRate = c.learning_rate
    beta1 = c.beta1
    beta2 = c.beta2
    eps = c.eps
    weightDecay = c.weight_decay
    gradClip = c.grad_clip
    let maxSteps = Int64(TrainConfig.maxSteps)
    guard c.warmup_steps >= 0, c.warmup_steps <= maxSteps, c.total_steps >= 1, c.total_steps <= maxSteps else {
      throw .argument("train config: warm-up steps must be in [0, \(maxSteps)] and total steps in [1, \(maxSteps)] (got \(c.warmup_steps), \(c.total_steps))")
    }
    warmupSteps = Int(c.warmup_steps)
    totalSteps = Int(c.total_steps)
    guard c.batch_capacity >= 1, c.batch_capacity <= 1 << 20 else {
      throw .argument("train config: batch capacity must be in [1, 1048576] (got \(c.batch_capacity))")
    }
    batchCapacity = Int(c.batch_capacity)
    guard c.lock_image == 0 || c.lock_image == 1, c.unlocked_groups >= 0 else {
      throw .argument("train config: lock_image must be 0 or 1 and unlocked_groups >= 0 (got \(c.lock_image), \(c.unlocked_groups))")
    }
    unlockedGroups = c.lock_image == 1 ? Int(c.unlocked_groups) : nil
    layerDecay = c.layer_decay == 0 ? 1 : c.layer_decay
    try validate()
  }

  var c: lift_train_config {
    lift_train_config(struct_size: lift_train_config.knownSize, learning_rate: learningRate, beta1: beta1, beta2: beta2, eps: eps, weight_decay: weightDecay,
                      grad_clip: gradClip, warmup_steps: Int64(warmupSteps), total_steps: Int64(totalSteps),
                      batch_capacity: Int64(batchCapacity), lock_image: unlockedGroups == nil ? 0 : 1,
                      unlocked_groups: Int32(unlockedGroups ?? 0), layer_decay: layerDecay)
  }
}

extension StepStats {
  var c: lift_step_stats {
    lift_step_stats(struct_size: lift_step_stats.knownSize, loss: loss, learning_rate: learningRate, logit_scale: logitScale, logit_bias: logitBias,
                    grad_norm: gradNorm, step: Int64(step))
  }
}

@_cdecl("lift_train_config_default")
public func cLiftTrainConfigDefault(_ out: UnsafeMutablePointer<lift_train_config>?) -> lift_status {
  capi { () throws(LiftError) in try requiredStruct(out, "out").pointee = TrainConfig().c }
}

@_cdecl("lift_trainer_create")
public func cLiftTrainerCreate(_ modelHandle: OpaquePointer?, _ config: UnsafePointer<lift_train_config>?, _ seed: UInt64,
                               _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let model = try object(modelHandle, as: Model.self, "model")
    let trainer = try Trainer(model: model, config: try TrainConfig(c: try requiredStruct(config, "config")), seed: seed)
    out.pointee = makeHandle(trainer)
  }
}

@_cdecl("lift_trainer_load")
public func cLiftTrainerLoad(_ path: UnsafePointer<CChar>?, _ batchCapacity: Int64, _ flags: UInt32,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    try requireNonNegative(batchCapacity, "batch_capacity")
    guard batchCapacity <= 1 << 20 else { throw .argument("batch_capacity must be <= 1048576") }
    let path = try requiredString(path, "path")
    try checkUntrusted(path, kind: .model, flags: flags)
    let (trainer, _) = try Trainer.load(path: path, batchCapacity: batchCapacity > 0 ? Int(batchCapacity) : nil)
    out.pointee = makeHandle(trainer)
  }
}

@_cdecl("lift_trainer_save")
public func cLiftTrainerSave(_ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                             _ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ values: UnsafePointer<UnsafePointer<CChar>?>?,
                             _ count: Int) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let path = try requiredString(path, "path")
    let n = try requiredSize(count, "n_metadata")
    var metadata: [(String, String)] = []
    if n > 0 {
      let keys = try required(keys, "keys"), values = try required(values, "values")
      for i in 0..<n {
        metadata.append((try requiredString(keys[i], "keys[\(i)]"), try requiredString(values[i], "values[\(i)]")))
      }
    }
    try trainer.save(path: path, userMetadata: metadata)
  }
}

@_cdecl("lift_trainer_metadata")
public func cLiftTrainerMetadata(_ handle: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?,
                                 _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let key = try requiredString(key, "key")
    guard let value = trainer.userMetadata[key] else { throw .notFound("the checkpoint has no user metadata '\(key)'") }
    try copyCString(Array(value.utf8), into: buffer, capacity: capacity, length: length, what: "metadata '\(key)'")
  }
}

@_cdecl("lift_trainer_free")
public func cLiftTrainerFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_trainer_model")
public func cLiftTrainerModel(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try required(out, "out").pointee = makeHandle(trainer.model)
  }
}

@_cdecl("lift_trainer_get_config")
public func cLiftTrainerGetConfig(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<lift_train_config>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try requiredStruct(out, "out").pointee = trainer.config.c
  }
}

@_cdecl("lift_trainer_step_count")
public func cLiftTrainerStepCount(_ handle: OpaquePointer?, _ step: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try required(step, "step").pointee = Int64(trainer.model.lock.withLock { trainer.step })
  }
}

@_cdecl("lift_trainer_random")
public func cLiftTrainerRandom(_ handle: OpaquePointer?, _ value: UnsafeMutablePointer<UInt64>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try required(value, "value").pointee = trainer.nextRandom()
  }
}

@_cdecl("lift_trainer_step")
public func cLiftTrainerStep(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                             _ imagesLen: Int, _ texts: UnsafePointer<Float>?, _ textsLen: Int, _ batch: Int64,
                             _ stats: UnsafeMutablePointer<lift_step_stats>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let stats = try optionalStruct(stats, "stats")
    try requirePositive(batch, "batch")
    let config = trainer.model.config
    let input = try imageInput(images, format, length: imagesLen, count: batch, config: config)
    try requireLength(textsLen, rows: batch, cols: config.textDim, "texts")
    let result = try trainer.step(images: input, texts: try required(texts, "texts"), batch: Int(batch))
    stats?.pointee = result.c
  }
}

@_cdecl("lift_trainer_step_features")
public func cLiftTrainerStepFeatures(_ handle: OpaquePointer?, _ features: UnsafePointer<Float>?, _ featuresLen: Int,
                                     _ texts: UnsafePointer<Float>?, _ textsLen: Int, _ batch: Int64,
                                     _ stats: UnsafeMutablePointer<lift_step_stats>?) -> lift_status {
  capi { () throws(LiftError) in
    let a = try FeatureStepArguments(handle, features, featuresLen, texts, textsLen, batch, "batch", stats)
    a.stats?.pointee = try a.trainer.step(features: a.features, texts: a.texts, batch: Int(batch)).c
  }
}

/// The checked arguments of the steps on pooled features: batch x width features and
/// batch x text_dim texts.
private struct FeatureStepArguments {
  let trainer: Trainer
  let stats: SizedOutput<lift_step_stats>?
  let features: UnsafePointer<Float>
  let texts: UnsafePointer<Float>

  init(_ handle: OpaquePointer?, _ features: UnsafePointer<Float>?, _ featuresLen: Int, _ texts: UnsafePointer<Float>?,
       _ textsLen: Int, _ batch: Int64, _ batchName: String,
       _ stats: UnsafeMutablePointer<lift_step_stats>?) throws(LiftError) {
    trainer = try object(handle, as: Trainer.self, "trainer")
    self.stats = try optionalStruct(stats, "stats")
    try requirePositive(batch, batchName)
    let config = trainer.model.config
    try requireLength(featuresLen, rows: batch, cols: config.width, "features")
    try requireLength(textsLen, rows: batch, cols: config.textDim, "texts")
    self.features = try required(features, "features")
    self.texts = try required(texts, "texts")
  }
}

@_cdecl("lift_trainer_forward")
public func cLiftTrainerForward(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                                _ imagesLen: Int, _ batch: Int64, _ features: UnsafeMutablePointer<Float>?,
                                _ featuresLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try requirePositive(batch, "batch")
    let config = trainer.model.config
    let input = try imageInput(images, format, length: imagesLen, count: batch, config: config)
    try requireLength(featuresLen, rows: batch, cols: config.textDim, "features")
    let out = try required(features, "features")
    let result = try trainer.forward(input, batch: Int(batch))
    out.update(from: result, count: Int(batch) * config.textDim)
  }
}

@_cdecl("lift_trainer_loss")
public func cLiftTrainerLoss(_ handle: OpaquePointer?, _ features: UnsafePointer<Float>?, _ texts: UnsafePointer<Float>?,
                             _ n: Int64, _ localStart: Int64, _ localCount: Int64, _ worldSize: Int64,
                             _ grad: UnsafeMutablePointer<Float>?, _ gradLen: Int,
                             _ loss: UnsafeMutablePointer<Double>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let d = trainer.model.config.textDim
    try requirePositive(n, "n")
    try requireNonNegative(localStart, "local_start")
    try requireNonNegative(localCount, "local_count")
    try requirePositive(worldSize, "world_size")
    guard localStart <= n, localCount <= n - localStart else {
      throw .argument("local rows [\(localStart), \(localStart) + \(localCount)) are outside the batch of \(n)")
    }
    _ = try checkedCount(n, Int64(d), "features")
    try requireLength(gradLen, rows: localCount, cols: d, "grad")
    let value = try trainer.loss(images: try required(features, "features"), texts: try required(texts, "texts"),
                                 count: Int(n), localStart: Int(localStart), localCount: Int(localCount),
                                 workerCount: Int(worldSize), dLocal: try required(grad, "grad"))
    loss?.pointee = value
  }
}

@_cdecl("lift_trainer_backward")
public func cLiftTrainerBackward(_ handle: OpaquePointer?, _ grad: UnsafePointer<Float>?, _ gradLen: Int,
                                 _ batch: Int64) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    try requirePositive(batch, "batch")
    try requireLength(gradLen, rows: batch, cols: trainer.model.config.textDim, "grad")
    try trainer.backward(try required(grad, "grad"), batch: Int(batch))
  }
}

@_cdecl("lift_trainer_apply")
public func cLiftTrainerApply(_ handle: OpaquePointer?, _ stats: UnsafeMutablePointer<lift_step_stats>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let stats = try optionalStruct(stats, "stats")
    let result = try trainer.apply()
    stats?.pointee = result.c
  }
}

@_cdecl("lift_trainer_zero_grad")
public func cLiftTrainerZeroGrad(_ handle: OpaquePointer?) -> lift_status {
  capi { () throws(LiftError) in try object(handle, as: Trainer.self, "trainer").zeroGradients() }
}

@_cdecl("lift_trainer_buffers")
public func cLiftTrainerBuffers(_ handle: OpaquePointer?, _ gradients: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                _ expAvg: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                _ expAvgSq: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                _ count: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    gradients?.pointee = trainer.gradients
    expAvg?.pointee = trainer.firstMoment
    expAvgSq?.pointee = trainer.secondMoment
    count?.pointee = Int64(trainer.model.layout.totalCount)
  }
}

@_cdecl("lift_trainer_step_distributed")
public func cLiftTrainerStepDistributed(_ handle: OpaquePointer?, _ images: UnsafeRawPointer?, _ format: lift_image_format,
                                        _ imagesLen: Int, _ texts: UnsafePointer<Float>?, _ textsLen: Int, _ localBatch: Int64,
                                        _ comm: UnsafePointer<lift_comm>?, _ stats: UnsafeMutablePointer<lift_step_stats>?) -> lift_status {
  capi { () throws(LiftError) in
    let trainer = try object(handle, as: Trainer.self, "trainer")
    let stats = try optionalStruct(stats, "stats")
    try requirePositive(localBatch, "local_batch")
    let config = trainer.model.config
    let input = try imageInput(images, format, length: imagesLen, count: localBatch, config: config)
    try requireLength(textsLen, rows: localBatch, cols: config.textDim, "texts")
    let communicator = try CCommunicator(try requiredStruct(comm, "comm"))
    let result = try trainer.stepDistributed(images: input, texts: try required(texts, "texts"), localBatch: Int(localBatch),
                                             communicator: communicator)
    stats?.pointee = result.c
  }
}

@_cdecl("lift_trainer_step_features_distributed")
public func cLiftTrainerStepFeaturesDistributed(_ handle: OpaquePointer?, _ features: UnsafePointer<Float>?,
                                                _ featuresLen: Int, _ texts: UnsafePointer<Float>?, _ textsLen: Int,
                                                _ localBatch: Int64, _ comm: UnsafePointer<lift_comm>?,
                                                _ stats: UnsafeMutablePointer<lift_step_stats>?) -> lift_status {
  capi { () throws(LiftError) in
    let a = try FeatureStepArguments(handle, features, featuresLen, texts, textsLen, localBatch, "local_batch", stats)
    let communicator = try CCommunicator(try requiredStruct(comm, "comm"))
    a.stats?.pointee = try a.trainer.stepDistributed(.features(a.features), texts: a.texts, localBatch: Int(localBatch),
                                                     communicator: communicator).c
  }
}
