import ArgumentParser
import Synchronization
import Glibc
import Lift

/// One `lift train` run: data, model, the step loop with progress, logging, checkpoints,
/// interruption and evaluation. With an MPI world every rank runs this with the same settings:
/// each reads its part of every global batch and steps through the collectives; rank 0 alone
/// builds the default data, prints, logs, checkpoints and evaluates.
struct TrainingRun {
  let s: TrainSettings
  let world: MPIWorld?
  let leader: Bool

  init(settings: TrainSettings, world: MPIWorld?) {
    self.world = world
    leader = (world?.rank ?? 0) == 0
    var s = settings
    if !leader { s.quiet = true }
    self.s = s
  }

  var checkpointPath: String { s.out + "/checkpoint.safetensors" }

  func execute() throws {
    var trainPaths = s.data, evalPaths = s.evalData
    if s.usesDefaultData {
      // Rank 0 builds the files on first use while the others wait.
      if leader { _ = try Defaults.fashionMNIST(dataDir: s.dataDir, captions: s.captions, checks: s.checks, quiet: s.quiet) }
      try world?.barrier()
      let (train, test) = try Defaults.fashionMNIST(dataDir: s.dataDir, captions: s.captions, checks: s.checks, quiet: s.quiet)
      trainPaths = [train]
      if evalPaths.isEmpty { evalPaths = [test] }
    }
    // Rank 0 checks the inputs for all (they share the files) while the others wait.
    if leader { try checkInputs(train: trainPaths, eval: evalPaths) }
    try world?.barrier()
    let train = try cli { () throws(LiftError) in
      try DataSources.open(DataSources.Request(paths: trainPaths, embeddings: s.embeddings, index: s.index))
    }
    guard train.sampleCount >= 1 else { throw CLIError("the training data (\(trainPaths.joined(separator: ", "))) holds no images") }
    let evalSet = evalPaths.isEmpty ? nil : try cli { () throws(LiftError) in
      try DataSources.open(DataSources.Request(paths: evalPaths, embeddings: s.evalEmbeddings.isEmpty ? s.embeddings : s.evalEmbeddings))
    }
    let streamed = train.shardSampleCounts != nil
    let identity = s.identity(streamRanks: streamed ? world?.size ?? 1 : nil).serialized

    let ranks = world?.size ?? 1
    if leader {
      try makeDirectories(s.out)
      removeStaleTemporaryFiles(in: s.out)
    }
    try world?.barrier()
    if exists(checkpointPath) && !s.resume && !s.restart {
      throw CLIError("'\(s.out)' already holds a run (\(checkpointPath)); pass --resume to continue it or --restart to replace it")
    }
    if s.resume && !exists(checkpointPath) {
      throw CLIError("--resume: '\(checkpointPath)' does not exist\(ranks > 1 ? " (with several machines, --out must be on a file system they share)" : "")")
    }
    // Each rank's part of a global batch is at most ceil(batch / ranks) images; every part of
    // every batch (the smallest batch of an epoch included) must hold at least one.
    let batchesPerEpoch = DataLoader.batchesPerEpoch(source: train, batchSize: s.batchSize)
    let smallestBatch = streamed ? min(s.batchSize, Int(train.sampleCount)) : Int(train.sampleCount) / batchesPerEpoch
    guard smallestBatch >= ranks else {
      throw CLIError("\(ranks) ranks need global batches of at least \(ranks) images (the smallest batch of an epoch holds \(smallestBatch))")
    }
    let capacity = min(s.microBatch, (s.batchSize + ranks - 1) / ranks)

    // Model and trainer: fresh, or exactly as checkpointed.
    let trainer: Trainer
    var position = DataLoader.Position(epoch: 0, batch: 0)
    var trainSeconds = 0.0, waitSeconds = 0.0
    if s.resume {
      let (t, meta) = try cli { () throws(LiftError) in try Trainer.load(path: checkpointPath, batchCapacity: capacity) }
      guard meta["identity"] == identity else {
        throw CLIError("'\(checkpointPath)' was made with other data settings (\(meta["identity"] ?? "none")); resume with the same --data, --embeddings, --batch-size, --seed and augmentation\(streamed ? ", and as many ranks (tar shards and image folders are streamed per rank)" : "")")
      }
      guard let e = meta["epoch"].flatMap({ Int($0) }), let b = meta["batch"].flatMap({ Int($0) }) else {
        throw CLIError("'\(checkpointPath)' lacks the data position (not written by lift train)")
      }
      trainer = t
      position = DataLoader.Position(epoch: e, batch: b)
      trainSeconds = meta["train_seconds"].flatMap { Double($0) } ?? 0
      waitSeconds = meta["wait_seconds"].flatMap { Double($0) } ?? 0
      guard trainSeconds.isFinite, trainSeconds >= 0, trainSeconds < 1e12, waitSeconds.isFinite, waitSeconds >= 0,
            waitSeconds <= trainSeconds else {
        throw CLIError("'\(checkpointPath)' records impossible times (train_seconds \(trainSeconds), wait_seconds \(waitSeconds))")
      }
      if s.lockingGiven && (t.config.unlockedGroups != s.unlockedGroups || t.config.layerDecay != s.layerDecay) {
        throw CLIError("'\(checkpointPath)' was trained with other locking or layer decay; resume keeps the run's own (drop those options)")
      }
      if s.precisionGiven && t.model.config.precision != s.model.precision {
        throw CLIError("'\(checkpointPath)' trains in \(t.model.config.precision.name); resume keeps it (drop --precision \(s.model.precision.name))")
      }
      guard trainer.model.config.textDim == train.textDim else {
        throw CLIError("the checkpoint's model makes \(trainer.model.config.textDim)-d embeddings but the data has \(train.textDim)-d captions")
      }
    } else {
      var config = s.model
      config.textDim = train.textDim
      let tc = try s.trainConfig(batchesPerEpoch: batchesPerEpoch, batchCapacity: capacity)
      let model: Model
      if let initPath = s.initPath, var o = s.importOptions {
        o.textDim = train.textDim
        o.seed = s.seed
        let options = o
        let (imported, source) = try cli { () throws(LiftError) in try Model.importing(path: initPath, options: options) }
        if leader && !s.quiet {
          Console.line("initialised from \(initPath) (\(source.scheme.rawValue)\(source.configFile.map { ", config " + $0 } ?? ""))")
        }
        model = imported
      } else {
        model = try cli { () throws(LiftError) in try Model(config: config, seed: s.seed) }
      }
      trainer = try cli { () throws(LiftError) in try Trainer(model: model, config: tc, seed: s.seed) }
    }
    let model = trainer.model
    let config = model.config
    var options = s.loaderOptions(size: config.imageSize, channels: config.channels)
    options.rank = world?.rank ?? 0
    options.workers = ranks
    // A fully locked tower without augmentation: its features are computed once, and each step
    // trains the head on them (the loader then reads no pixels). Needs indexed images (a dataset).
    var cache: FeatureCache? = nil
    if trainer.towerFrozen && !s.augment && s.featureCache != .off {
      if let dataset = train as? ImageDataset {
        cache = try makeFeatureCache(model, dataset)
      } else if leader && !s.quiet {
        Console.line("image tower frozen: features are cached for liblift datasets only; the tower runs every step")
      }
    }
    options.pixels = cache == nil
    let loader = try cli { () throws(LiftError) in try DataLoader(source: train, options: options, start: position) }
    // The log continues from the checkpoint: lines past its step (written after it, then lost
    // with the process) go, so no step appears twice; a new run starts a new log.
    if leader { try trimLog(s.out + "/metrics.jsonl", toStep: s.resume ? trainer.step : nil) }
    let log: LineLog? = leader ? try LineLog(path: s.out + "/metrics.jsonl") : nil
    let total = trainer.config.totalSteps
    let perEpoch = loader.batchesPerEpoch

    if !s.quiet {
      let params = model.layout.parameterCount
      Console.line("data: \(train.summary)")
      Console.line("model \(describe(config)), \(params) parameters; \(train.sampleCount) training images, batch \(s.batchSize), \(perEpoch) steps/epoch, \(total) steps")
      if let world { Console.line("data-parallel over \(world.size) MPI ranks, LIFT_NUM_THREADS=\(getenv("LIFT_NUM_THREADS").map { String(cString: $0) } ?? "all cores") per rank, \(capacity) images per rank per forward") }
      if s.resume { Console.line("resuming \(checkpointPath) at step \(trainer.step) (epoch \(position.epoch), batch \(position.batch))") }
    }

    // SIGINT (Ctrl-C), or SIGUSR1 which Open MPI's mpirun forwards to every rank: checkpoint and
    // stop at the end of the step.
    signal(SIGINT) { _ in interrupted.store(1, ordering: .relaxed) }
    signal(SIGUSR1) { _ in interrupted.store(1, ordering: .relaxed) }
    defer { signal(SIGINT, SIG_DFL); signal(SIGUSR1, SIG_DFL) }
    let end = min(total, s.stopAt ?? total)
    let startStep = trainer.step, startSeconds = trainSeconds
    var pacer = ProgressPacer()
    var windowImages = 0, windowSeconds = 0.0
    var stats: StepStats? = nil
    var stoppedEarly = false
    var lastBad: DataLoader.BadSamples? = nil
    while trainer.step < end {
      let t0 = now()
      let batch = try cli { () throws(LiftError) in try loader.next() }
      lastBad = batch.badSamples
      let wait = loader.lastWaitSeconds
      stats = try cli { () throws(LiftError) in
        let input = try cache.map { (c) throws(LiftError) in StepInput.features(try c.rows(for: batch.indices)) }
          ?? .images(.uint8NHWC(UnsafePointer(batch.images)))
        if let world {
          return try trainer.stepDistributed(input, texts: batch.texts, localBatch: batch.count, communicator: world)
        }
        return try trainer.step(input, texts: batch.texts, batch: batch.count)
      }
      let dt = now() - t0
      trainSeconds += dt
      waitSeconds += wait
      windowImages += batch.globalCount
      windowSeconds += dt
      let step = trainer.step
      position = loader.nextPosition
      let epochFloat = Double(step) / Double(perEpoch)
      if step % s.logEvery == 0 || step == total {
        log?.write(.object([
          ("step", .number(Double(step))), ("epoch", .number(epochFloat)), ("loss", .number(stats!.loss)),
          ("lr", .number(stats!.learningRate)), ("logit_scale", .number(stats!.logitScale)),
          ("grad_norm", .number(stats!.gradNorm)), ("images_per_s", .number(Double(windowImages) / windowSeconds)),
          ("data_wait_fraction", .number(waitSeconds / trainSeconds)), ("train_seconds", .number(trainSeconds)),
          ("bad_samples", .number(Double(batch.badSamples.total))),
        ] + badSampleDetail(batch.badSamples)))
      }
      if !s.quiet && pacer.due(last: step == total) {
        let rate = Double(windowImages) / windowSeconds
        let eta = Double(total - step) * (trainSeconds - startSeconds) / Double(max(step - startStep, 1))
        Console.progress("step \(step)/\(total)  epoch \(fixed(epochFloat, 2))  \(fixed(rate, 0)) img/s  wait \(percent(waitSeconds / trainSeconds))  loss \(fixed(stats!.loss, 4))  lr \(sci(stats!.learningRate))  scale \(fixed(stats!.logitScale, 1))  ETA \(formatDuration(eta))")
        windowImages = 0
        windowSeconds = 0
      }
      let checkpointDue = s.checkpointEvery.map { step % $0 == 0 } ?? (position.batch == 0)
      if checkpointDue && step < end {
        try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds, identity: identity)
      }
      if evaluationDue(afterStep: step, of: total), step < end, let evalSet {
        if let log { try evaluate(model, evalSet, step: step, log: log, final: false) }
        try world?.barrier()
      }
      // Every rank must take the same decision: a signal or the time limit on any rank stops all.
      var stop = (interrupt: interrupted.load(ordering: .relaxed) != 0, time: s.timeLimit.map { trainSeconds >= $0 } ?? false)
      if let world {
        let agreed = try world.any([stop.interrupt, stop.time])
        stop = (agreed[0], agreed[1])
      }
      if stop.interrupt {
        try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds, identity: identity)
        if leader { Console.line("interrupted at step \(step): checkpoint saved to \(checkpointPath); continue with --resume") }
        throw ExitCode(130)
      }
      if stop.time {
        stoppedEarly = true
        if !s.quiet { Console.line("time limit of \(fixed(s.timeLimit ?? 0, 0)) s reached at step \(step)/\(total)") }
        break
      }
    }
    stoppedEarly = stoppedEarly || trainer.step < total
    try saveCheckpoint(trainer, position: position, trainSeconds: trainSeconds, waitSeconds: waitSeconds, identity: identity)
    guard leader, let log else {
      try world?.barrier()  // sleeps while rank 0 saves and evaluates
      return
    }
    defer { try? world?.barrier() }
    try cli { () throws(LiftError) in try model.save(path: s.out + "/model.safetensors") }
    if !s.quiet {
      Console.line("trained \(trainer.step) steps in \(fixed(trainSeconds, 1)) s (\(fixed(Double(trainer.step * s.batchSize) / max(trainSeconds, 1e-9), 0)) img/s, data wait \(percent(waitSeconds / max(trainSeconds, 1e-9))) of step time)\(stoppedEarly ? ", stopped early" : ""); model: \(s.out)/model.safetensors")
    }
    if let bad = lastBad, bad.total > 0 {
      Console.line("left out \(bad.total) of \(bad.seen) samples read that could not be used: \(bad.description)")
    }
    if Profile.enabled {
      let steps = Double(max(trainer.step - startStep, 1))
      Console.line("profile (ms per step): " + Profile.report().map { "\($0.0) \(fixed($0.1 / steps * 1000, 2))" }.joined(separator: ", "))
    }
    if let evalSet { try evaluate(model, evalSet, step: trainer.step, log: log, final: true) }
  }

  /// Reads the HDF5 inputs from outside in a separate process first (`InputChecks`): the data,
  /// its embedding stores and an existing --feature-cache file.
  func checkInputs(train: [String], eval: [String]) throws {
    try s.checks.data(train, index: s.index)
    try s.checks.files(s.embeddings, as: .store)
    try s.checks.data(eval, index: nil)
    try s.checks.files(s.evalEmbeddings, as: .store)
    if case .file(let path) = s.featureCache { try s.checks.existingFile(path, as: .featureCache) }
  }

  /// The pooled features of every training image under the frozen tower, computed (by all
  /// ranks, each its share) or read from --feature-cache's file, with a progress line.
  func makeFeatureCache(_ model: Model, _ train: ImageDataset) throws -> FeatureCache {
    var path: String? = nil
    if case .file(let p) = s.featureCache { path = p }
    let t0 = now()
    var pacer = ProgressPacer()
    let (cache, computed) = try cli { () throws(LiftError) in
      try FeatureCache.make(model: model, dataset: train, path: path, communicator: world) { done, total in
        if !s.quiet && pacer.due(last: done == total) {
          Console.progress("image tower frozen: pooled features of \(done)/\(total) images, \(fixed(Double(done) / max(now() - t0, 1e-9), 0)) img/s")
        }
      }
    }
    if !s.quiet {
      let what = "\(cache.count) x \(cache.width) pooled features (\(fixed(Double(cache.count * cache.width) / 262_144, 1)) MiB)"
      Console.line(computed ? "image tower frozen: computed \(what) in \(fixed(now() - t0, 1)) s\(path.map { ", kept in " + $0 } ?? ""); the head trains on them"
                            : "image tower frozen: read \(what) from \(path ?? "")")
    }
    return cache
  }

  /// Whether to evaluate after `step` of `total` (besides the final evaluation): every
  /// --eval-every steps (0: never), by default at 1/5, 2/5, 3/5 and 4/5 of the run, so the
  /// zero-shot curve of liblift.plot has five points. Each costs ~1 s on Fashion-MNIST's 10,000
  /// test images (zero-shot only; retrieval is left to the final one): 4-5 s added to the default
  /// job (100-160 s of training), and not counted in its training time.
  func evaluationDue(afterStep step: Int, of total: Int) -> Bool {
    guard let every = s.evalEvery else { return (1..<5).contains { $0 * total / 5 == step } }
    return every > 0 && step % every == 0
  }

  /// Rank 0 writes (atomically: a temporary file renamed into place); the other ranks return.
  func saveCheckpoint(_ trainer: Trainer, position: DataLoader.Position, trainSeconds: Double, waitSeconds: Double,
                      identity: String) throws {
    guard leader else { return }
    try cli { () throws(LiftError) in
      try trainer.save(path: checkpointPath, userMetadata: [
        ("epoch", String(position.epoch)), ("batch", String(position.batch)), ("train_seconds", String(trainSeconds)),
        ("wait_seconds", String(waitSeconds)), ("identity", identity),
      ])
    }
  }

  func evaluate(_ model: Model, _ source: SampleSource, step: Int, log: LineLog, final: Bool) throws {
    let result = try Evaluation.run(model: model, source: source, filter: s.filter, retrieval: final, progress: !s.quiet)
    log.write(.object([("step", .number(Double(step))), ("eval", result.json)]))
    if final {
      try writeFileAtomically(s.out + "/eval.json", result.json.serialized + "\n")
      Console.out(result.table)
    } else if let z = result.zeroShot {
      Console.line("step \(step): zero-shot top-1 \(percent(z.top1)), top-5 \(percent(z.top5))")
    }
  }
}

/// The log's detail of bad samples so far (nothing while there are none): counts by kind and the
/// first samples of each kind by name.
func badSampleDetail(_ bad: DataLoader.BadSamples) -> [(String, JSON)] {
  guard bad.total > 0 else { return [] }
  let kinds = SampleProblem.allCases.filter { bad.counts[$0] != nil }
  return [("bad_by_kind", .object(kinds.map { ($0.rawValue, .number(Double(bad.counts[$0]!))) })),
          ("bad_examples", .object(kinds.map { ($0.rawValue, .array(bad.examples[$0, default: []].map { .string($0) })) }))]
}

func describe(_ c: ModelConfig) -> String {
  describeTower(c) + ", \(c.headLayers)-layer head -> \(c.textDim)-d, \(c.objective.name), \(c.precision.name)"
}

/// The image tower, with the options of pretrained families that differ from LIFT's own model.
func describeTower(_ c: ModelConfig) -> String {
  var parts = ["ViT \(c.imageSize)px/\(c.patch) width \(c.width) depth \(c.depth) heads \(c.heads)"]
  if c.pooling == .token { parts.append("class-token pooling") }
  if c.finalNorm == .pooled { parts.append("ln_post after pooling") }
  if !c.lnPre { parts.append("no ln_pre") }
  if c.patchBias { parts.append("patch bias") }
  if c.activation == .quickGELU { parts.append("QuickGELU") }
  if c.layerScale { parts.append("LayerScale") }
  if c.registers > 0 { parts.append("\(c.registers) registers") }
  if c.layerNormEps != 1e-5 { parts.append("LayerNorm eps \(c.layerNormEps)") }
  return parts.joined(separator: ", ")
}

/// Removes `NAME.tmp-PID-...` files in `folder` left by processes that no longer exist (a save
/// interrupted by kill -9): liblift's atomic writers name their temporary files that way.
func removeStaleTemporaryFiles(in folder: String) {
  guard let dir = opendir(folder) else { return }
  defer { closedir(dir) }
  while let entry = readdir(dir) {
    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let parts = name.split(separator: "-", omittingEmptySubsequences: false)
    guard let tmp = parts.firstIndex(where: { $0.hasSuffix(".tmp") }), tmp + 1 < parts.count,
          let pid = Int32(parts[tmp + 1]), pid > 0, pid != getpid() else { continue }
    if kill(pid, 0) != 0 && errno == ESRCH { unlink(folder + "/" + name) }
  }
}

/// Keeps the lines of a JSON-lines log whose "step" is at most `step` (all are dropped when
/// `step` is nil), rewriting it atomically; a missing log is fine.
func trimLog(_ path: String, toStep step: Int?) throws {
  guard exists(path) else { return }
  var kept = ""
  if let step {
    let text = String(decoding: try readFile(path), as: UTF8.self)
    for line in text.split(separator: "\n") {
      guard let json = try? JSON.parse(Array(line.utf8), what: "log line"), let s = json["step"]?.number else { continue }
      if s <= Double(step) { kept += line + "\n" }
    }
  }
  try writeFileAtomically(path, kept)
}
