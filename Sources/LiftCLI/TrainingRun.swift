import ArgumentParser
import Glibc
import Lift

/// One `lift train` run: data, model, the step loop with progress, logging, checkpoints,
/// interruption and evaluation.
struct TrainingRun {
  let s: TrainSettings

  init(settings: TrainSettings) { s = settings }

  var checkpointPath: String { s.out + "/checkpoint.safetensors" }

  func execute() throws {
    var trainPaths = s.data, evalPaths = s.evalData
    if s.usesDefaultData {
      let (train, test) = try Defaults.fashionMNIST(dataDir: s.dataDir, captions: s.captions, quiet: s.quiet)
      trainPaths = [train]
      if evalPaths.isEmpty { evalPaths = [test] }
    }
    let train = try cli { () throws(LiftError) in try ImageDataset(paths: trainPaths) }
    let evalSet = evalPaths.isEmpty ? nil : try cli { () throws(LiftError) in try ImageDataset(paths: evalPaths) }

    try makeDirectories(s.out)
    if exists(checkpointPath) && !s.resume && !s.restart {
      throw CLIError("'\(s.out)' already holds a run (\(checkpointPath)); pass --resume to continue it or --restart to replace it")
    }
    if s.resume && !exists(checkpointPath) { throw CLIError("--resume: '\(checkpointPath)' does not exist") }

    // Model and trainer: fresh, or exactly as checkpointed.
    let trainer: Trainer
    var position = DataLoader.Position(epoch: 0, batch: 0)
    var trainSeconds = 0.0, waitSeconds = 0.0
    if s.resume {
      let (t, meta) = try cli { () throws(LiftError) in try Trainer.load(path: checkpointPath, batchCapacity: s.microBatch) }
      guard meta["identity"] == s.identity.serialized else {
        throw CLIError("'\(checkpointPath)' was made with other data settings (\(meta["identity"] ?? "none")); resume with the same --data, --batch-size, --seed and augmentation")
      }
      guard let e = meta["epoch"].flatMap({ Int($0) }), let b = meta["batch"].flatMap({ Int($0) }) else {
        throw CLIError("'\(checkpointPath)' lacks the data position (not written by lift train)")
      }
      trainer = t
      position = DataLoader.Position(epoch: e, batch: b)
      trainSeconds = meta["train_seconds"].flatMap { Double($0) } ?? 0
      waitSeconds = meta["wait_seconds"].flatMap { Double($0) } ?? 0
      guard trainer.model.config.textDim == train.textDim else {
        throw CLIError("the checkpoint's model makes \(trainer.model.config.textDim)-d embeddings but the data has \(train.textDim)-d captions")
      }
    } else {
      var config = s.model
      config.textDim = train.textDim
      let model = try cli { () throws(LiftError) in try Model(config: config, seed: s.seed) }
      let perEpoch = EpochPlan(count: train.count, globalBatch: s.batchSize).batchesPerEpoch
      let total = s.steps ?? max(1, Int((s.epochs * Double(perEpoch)).rounded(.up)))
      var tc = TrainConfig()
      tc.learningRate = s.lr
      tc.weightDecay = s.weightDecay
      tc.beta2 = s.beta2
      tc.gradClip = s.clip
      tc.totalSteps = total
      tc.warmupSteps = min(s.warmup ?? min(500, total / 10), total)
      tc.batchCapacity = s.microBatch
      trainer = try cli { () throws(LiftError) in try Trainer(model: model, config: tc, seed: s.seed) }
    }
    let model = trainer.model
    let config = model.config
    var options = DataLoader.Options(batchSize: s.batchSize, imageSize: config.imageSize, channels: config.channels)
    options.seed = s.seed
    if s.augment { options.augment = Preprocess.Augment(scale: s.cropScale...1) }
    let loader = try cli { () throws(LiftError) in try DataLoader(dataset: train, options: options, start: position) }
    let log = try LineLog(path: s.out + "/metrics.jsonl")
    let total = trainer.config.totalSteps
    let perEpoch = loader.batchesPerEpoch

    if !s.quiet {
      let params = model.layout.parameterCount
      Console.line("model \(describe(config)), \(params) parameters; \(train.count) training images, batch \(s.batchSize), \(perEpoch) steps/epoch, \(total) steps")
      if s.resume { Console.line("resuming \(checkpointPath) at step \(trainer.step) (epoch \(position.epoch), batch \(position.batch))") }
    }

    signal(SIGINT) { _ in interrupted = 1 }
    defer { signal(SIGINT, SIG_DFL) }
    let startStep = trainer.step, startSeconds = trainSeconds
    var lastShown = 0.0
    var windowImages = 0, windowSeconds = 0.0
    var stats: StepStats? = nil
    var stoppedEarly = false
    while trainer.step < total {
      let t0 = now()
      let batch = try cli { () throws(LiftError) in try loader.next() }
      let wait = loader.lastWaitSeconds
      stats = try cli { () throws(LiftError) in
        try trainer.step(images: .uint8NHWC(UnsafePointer(batch.images)), texts: batch.texts, batch: batch.count)
      }
      let dt = now() - t0
      trainSeconds += dt
      waitSeconds += wait
      windowImages += batch.count
      windowSeconds += dt
      let step = trainer.step
      position = loader.nextPosition
      let epochFloat = Double(step) / Double(perEpoch)
      if step % s.logEvery == 0 || step == total {
        log.write(.object([
          ("step", .number(Double(step))), ("epoch", .number(epochFloat)), ("loss", .number(stats!.loss)),
          ("lr", .number(stats!.learningRate)), ("logit_scale", .number(stats!.logitScale)),
          ("grad_norm", .number(stats!.gradNorm)), ("images_per_s", .number(Double(windowImages) / windowSeconds)),
          ("data_wait_fraction", .number(waitSeconds / trainSeconds)), ("train_seconds", .number(trainSeconds)),
        ]))
      }
      if !s.quiet && (now() - lastShown > (Console.isTerminal ? 0.25 : 15) || step == total) {
        let rate = Double(windowImages) / windowSeconds
        let eta = Double(total - step) * (trainSeconds - startSeconds) / Double(max(step - startStep, 1))
        Console.progress("step \(step)/\(total)  epoch \(fixed(epochFloat, 2))  \(fixed(rate, 0)) img/s  wait \(percent(waitSeconds / trainSeconds))  loss \(fixed(stats!.loss, 4))  lr \(sci(stats!.learningRate))  scale \(fixed(stats!.logitScale, 1))  ETA \(formatDuration(eta))")
        lastShown = now()
        windowImages = 0
        windowSeconds = 0
      }
      let checkpointDue = s.checkpointEvery.map { step % $0 == 0 } ?? (position.batch == 0)
      if checkpointDue && step < total {
        try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds)
      }
      if let every = s.evalEvery, step % every == 0, step < total, let evalSet {
        try evaluate(model, evalSet, step: step, log: log, final: false)
      }
      if interrupted != 0 {
        try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds)
        Console.line("interrupted at step \(step): checkpoint saved to \(checkpointPath); continue with --resume")
        throw ExitCode(130)
      }
      if let limit = s.timeLimit, trainSeconds >= limit {
        stoppedEarly = true
        Console.line("time limit of \(fixed(limit, 0)) s reached at step \(step)/\(total)")
        break
      }
    }
    try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds)
    try cli { () throws(LiftError) in try model.save(path: s.out + "/model.safetensors") }
    if !s.quiet {
      Console.line("trained \(trainer.step) steps in \(fixed(trainSeconds, 1)) s (\(fixed(Double(trainer.step * s.batchSize) / max(trainSeconds, 1e-9), 0)) img/s, data wait \(percent(waitSeconds / max(trainSeconds, 1e-9))) of step time)\(stoppedEarly ? ", stopped early" : ""); model: \(s.out)/model.safetensors")
    }
    if Profile.enabled {
      let steps = Double(max(trainer.step - startStep, 1))
      Console.line("profile (ms per step): " + Profile.report().map { "\($0.0) \(fixed($0.1 / steps * 1000, 2))" }.joined(separator: ", "))
    }
    if let evalSet { try evaluate(model, evalSet, step: trainer.step, log: log, final: true) }
  }

  func saveCheckpoint(_ trainer: Trainer, position: DataLoader.Position, trainSeconds: Double, waitSeconds: Double) throws {
    try cli { () throws(LiftError) in
      try trainer.save(path: checkpointPath, userMetadata: [
        ("epoch", String(position.epoch)), ("batch", String(position.batch)), ("train_seconds", String(trainSeconds)),
        ("wait_seconds", String(waitSeconds)), ("identity", s.identity.serialized),
      ])
    }
  }

  func evaluate(_ model: Model, _ dataset: ImageDataset, step: Int, log: LineLog, final: Bool) throws {
    let result = try Evaluation.run(model: model, dataset: dataset, retrieval: final, progress: !s.quiet)
    log.write(.object([("step", .number(Double(step))), ("eval", result.json)]))
    if final {
      try writeFileAtomically(s.out + "/eval.json", result.json.serialized + "\n")
      Console.out(result.table)
    } else if let z = result.zeroShot {
      Console.line("step \(step): zero-shot top-1 \(percent(z.top1)), top-5 \(percent(z.top5))")
    }
  }
}

func describe(_ c: ModelConfig) -> String {
  "ViT \(c.imageSize)px/\(c.patch) width \(c.width) depth \(c.depth) heads \(c.heads), \(c.headLayers)-layer head -> \(c.textDim)-d, \(c.objective.name)"
}
