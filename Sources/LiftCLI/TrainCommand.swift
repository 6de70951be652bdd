import ArgumentParser
import Synchronization
import Glibc
import Lift

/// Set by SIGINT / SIGUSR1 (a lock-free atomic: safe to store from a signal handler).
let interrupted = Atomic<Int32>(0)

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train an image encoder against fixed caption embeddings.",
    discussion: """
      With no data options this trains the default model on Fashion-MNIST (built from Debian's \
      dataset-fashion-mnist files on first use) and prints its zero-shot accuracy on the test set. \
      Every option can also come from a JSON file (--config) whose keys are the option names \
      (e.g. {"batch-size": 256}); options on the command line win. Ctrl-C saves a checkpoint and \
      stops; --resume continues from it exactly.

      Data-parallel: start it with Open MPI's mpirun (e.g. mpirun -n 4 lift train ..., or \
      --hostfile for several machines sharing the data and --out folders). Every rank reads its \
      part of each global batch of --batch-size images; the result equals one process. Rank 0 \
      prints, logs, checkpoints and evaluates; an error on any rank stops the whole job; \
      kill -USR1 <mpirun pid> stops all ranks with a checkpoint. LIFT_NUM_THREADS defaults to \
      the machine's cores divided by its ranks.
      """)

  @Option(name: .long, help: "Training data (default: Fashion-MNIST train): liblift dataset files, webdataset tar shards (files, a folder, or a pattern such as 'shards/{00000..00099}.tar'), or an image folder (the LIFT layout images/<shard>/<key>.<ext>); the kind is detected.") var data: [String] = []
  @Option(name: .long, help: "Caption embedding store(s) keyed by sample, for --data that is not a liblift dataset.") var embeddings: [String] = []
  @Option(name: .long, help: "Index file (CSV with an 'image' column, or JSONL) of the --data image folder.") var index: String?
  @Option(name: .long, help: "Evaluation data, any kind --data takes (default: Fashion-MNIST test when training on it).") var evalData: [String] = []
  @Option(name: .long, help: "Embedding store(s) of --eval-data (default: --embeddings).") var evalEmbeddings: [String] = []
  @Option(name: .long, help: "Resampling filter: bicubic (OpenCLIP's and pretrained encoders', default) or bilinear.") var filter: String?
  @Option(name: .long, parsing: .unconditional, help: "Stop when more than this fraction of the samples read could not be used (default 0.01).") var maxBadFraction: Double?
  @Option(name: .long, parsing: .unconditional, help: "Threads decoding images (default 1, the loader's own thread).") var decodeThreads: Int?
  @Option(name: .long, parsing: .unconditional, help: "Images with more pixels are skipped as decompression bombs (default 89478485).") var maxPixels: Int?
  @Flag(inversion: .prefixedNo, help: "Decode large JPEGs at 1/2, 1/4 or 1/8 scale when the crop allows (default on).") var reducedDecode: Bool?
  @Option(name: .long, parsing: .unconditional, help: "Tar shards and image folders: samples shuffled together in each rank's stream (default 5000).") var shuffleBlock: Int?
  @Option(name: .long, help: "JSON file of option values.") var config: String?
  @Option(name: .long, help: "Folder for the default dataset (default: data).") var dataDir: String?
  @Option(name: .long, help: "Fashion-MNIST caption embeddings (default: fashion-mnist-captions.h5 from $LIFT_ASSETS, the installed share/liblift, ./assets or the checkout).") var captions: String?
  @Option(name: .long, help: "Run folder: metrics.jsonl, checkpoint.safetensors, model.safetensors, eval.json (default: runs/fashion-mnist).") var out: String?
  @Option(name: .long, help: "Model preset (ViT-Ti/16, ViT-S/16, ViT-B/16, ViT-XS/7-28, ViT-XS/14-28, ViT-XS/4-32; default ViT-XS/14-28).") var preset: String?
  @Option(name: .customLong("init"), help: "Start from a pretrained image encoder: safetensors in OpenCLIP, timm, Hugging Face CLIP or DINOv2 names (detected), with the config file beside it (heads, activation, pooling). Its architecture is kept; --heads, --activation, --image-size (resamples the positions) and --pool fill in or override; the LIFT head is new.") var initPath: String?
  @Option(name: .long, help: "MLP activation: gelu or quick_gelu (OpenAI CLIP weights).") var activation: String?
  @Flag(name: .long, help: "Freeze the image tower; only the LIFT head trains (LiT).") var lockImage = false
  @Option(name: .long, parsing: .unconditional, help: "Freeze the image tower except its last N layer groups (the embeddings, each block, the last block with ln_post); the head always trains. OpenCLIP's --lock-image-unlocked-groups N+1.") var lockUnlockedGroups: Int?
  @Option(name: .long, parsing: .unconditional, help: "Layer-wise learning-rate decay in (0, 1] (BEiT/MAE fine-tuning; default 1, off).") var layerDecay: Double?
  @Option(name: .long, help: "With the whole tower locked and augmentation off, each image's pooled feature is computed once and only the head runs per step: 'memory' (default), an HDF5 file to keep them in (reused by later runs with the same tower and data), or 'off' (run the tower every step).") var featureCache: String?
  @Option(name: .long, parsing: .unconditional, help: "Override: image size.") var imageSize: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: patch size.") var patch: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: width.") var width: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: depth.") var depth: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: heads.") var heads: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: MLP ratio.") var mlpRatio: Int?
  @Option(name: .long, parsing: .unconditional, help: "Override: projection head layers.") var headLayers: Int?
  @Option(name: .long, help: "Pooling: avg or tok.") var pool: String?
  @Option(name: .long, help: "Objective: contrastive, cosine or sigmoid.") var objective: String?
  @Option(name: .long, help: "Matrix-product precision: fp32, or bf16 (bfloat16 inputs, float32 accumulation; needs AVX512-BF16 or AMX). Default fp32; a resumed run keeps its own.") var precision: String?
  @Option(name: .long, parsing: .unconditional, help: "Images per step (default 256).") var batchSize: Int?
  @Option(name: .long, parsing: .unconditional, help: "Largest forward pass; bigger batches accumulate (default: the batch size).") var microBatch: Int?
  @Option(name: .long, parsing: .unconditional, help: "Epochs to train (default 7); --steps wins if given.") var epochs: Double?
  @Option(name: .long, parsing: .unconditional, help: "Optimiser steps to train.") var steps: Int?
  @Option(name: .long, parsing: .unconditional, help: "Peak learning rate (default 1e-3).") var lr: Double?
  @Option(name: .long, parsing: .unconditional, help: "Warm-up steps (default: 10% of the run, at most 500).") var warmup: Int?
  @Option(name: .long, parsing: .unconditional, help: "AdamW weight decay (default 0.2).") var weightDecay: Double?
  @Option(name: .long, parsing: .unconditional, help: "AdamW beta2 (default 0.98).") var beta2: Double?
  @Option(name: .long, parsing: .unconditional, help: "Gradient-norm clip, 0 = off (default 1.0).") var clip: Double?
  @Option(name: .long, parsing: .unconditional, help: "Seed for initialisation, shuffling and caption choice (default 0).") var seed: Int?
  @Flag(inversion: .prefixedNo, help: "Random-resized-crop + flip augmentation (default: off).") var augment: Bool?
  @Option(name: .long, parsing: .unconditional, help: "Smallest crop area fraction with augmentation (default 0.5).") var cropScale: Double?
  @Option(name: .long, parsing: .unconditional, help: "Image mean for normalisation, one per channel (comma-separated).") var imageMean: String?
  @Option(name: .long, parsing: .unconditional, help: "Image std for normalisation, one per channel (comma-separated).") var imageStd: String?
  @Option(name: .long, parsing: .unconditional, help: "Save a checkpoint every N steps (default: every epoch).") var checkpointEvery: Int?
  @Option(name: .long, parsing: .unconditional, help: "Also evaluate (zero-shot) every N steps; 0 = only at the end (default: at 1/5, 2/5, 3/5 and 4/5 of the run).") var evalEvery: Int?
  @Option(name: .long, parsing: .unconditional, help: "Log to metrics.jsonl every N steps (default 10).") var logEvery: Int?
  @Option(name: .long, parsing: .unconditional, help: "Stop after this many seconds of training (checkpoint saved).") var timeLimit: Double?
  @Option(name: .long, parsing: .unconditional, help: "Stop after this step (checkpoint saved; --resume continues the schedule).") var stopAt: Int?
  @Flag(name: .long, help: "Continue the run in --out from its checkpoint.") var resume = false
  @Flag(name: .long, help: "Start a new run even if --out has a checkpoint (it is replaced).") var restart = false
  @Flag(name: .long, help: "No progress line.") var quiet = false
  @OptionGroup var inputs: InputCheckOptions

  mutating func run() throws {
    guard MPIWorld.launchedByMPI else {
      try TrainingRun(settings: try TrainSettings(self), world: nil).execute()
      return
    }
    // Under Open MPI's mpirun: data-parallel over every rank. The cores of a machine are shared
    // by its ranks unless LIFT_NUM_THREADS says otherwise (set before liblift's first kernel).
    let world = try MPIWorld()
    if getenv("LIFT_NUM_THREADS") == nil {
      let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
      setenv("LIFT_NUM_THREADS", String(max(1, cores / max(world.localSize, 1))), 1)
    }
    do {
      try TrainingRun(settings: try TrainSettings(self), world: world).execute()
      world.finalize()
    } catch let code as ExitCode {
      world.finalize()
      throw code
    } catch {
      // Any failure on any rank stops the whole job: the others may be waiting in a collective.
      Console.line("lift train: rank \(world.rank) of \(world.size): \(error)")
      world.abort(1)
    }
  }
}

/// Every training option resolved from: command line, then --config JSON, then the defaults.
struct TrainSettings {
  var data: [String]
  var embeddings: [String]
  var index: String?
  var evalData: [String]
  var evalEmbeddings: [String]
  /// How images become model inputs, and how bad samples are handled (DataLoader.Options).
  var filter: ResampleFilter
  var maxBadFraction: Double
  var decodeThreads: Int
  var maxPixels: Int64
  var reducedDecode: Bool
  var shuffleBlock: Int
  var dataDir: String
  var captions: String?
  var out: String
  var model: ModelConfig
  var batchSize: Int
  var microBatch: Int
  var epochs: Double
  var steps: Int?
  var lr: Double
  var warmup: Int?
  var weightDecay: Double
  var beta2: Double
  var clip: Double
  var seed: UInt64
  var augment: Bool
  var cropScale: Double
  var checkpointEvery: Int?
  var evalEvery: Int?
  var logEvery: Int
  var timeLimit: Double?
  var stopAt: Int?
  var resume: Bool
  var restart: Bool
  var quiet: Bool
  var usesDefaultData: Bool
  /// Whether --precision was given (a resumed run must then match it).
  var precisionGiven = false
  /// --init: the pretrained encoder and how to import it (its text dimension comes from the data).
  var initPath: String?
  var importOptions: ImportOptions?
  /// Locking and layer decay (TrainConfig.unlockedGroups, layerDecay); whether either was given.
  var unlockedGroups: Int?
  var layerDecay = 1.0
  var lockingGiven = false
  /// --feature-cache: where the pooled features of a fully locked tower are kept.
  enum FeatureCacheMode: Equatable { case memory, off, file(String) }
  var featureCache = FeatureCacheMode.memory
  /// Which input files are read in a separate process before they are opened.
  var checks: InputChecks

  init(_ c: Train) throws {
    var file: JSON = .object([])
    if let path = c.config {
      file = try cli { () throws(LiftError) in try JSON.parse(try readFileLift(path), what: "config file '\(path)'") }
      guard case .object(let members) = file else { throw CLIError("config file '\(path)' must hold a JSON object") }
      let known: Set<String> = ["data", "embeddings", "index", "eval-data", "eval-embeddings", "filter", "max-bad-fraction",
                                "decode-threads", "max-pixels", "reduced-decode", "shuffle-block", "data-dir", "captions", "out", "preset", "image-size", "patch", "width", "depth",
                                "heads", "mlp-ratio", "head-layers", "pool", "objective", "precision", "init", "activation", "lock-image", "lock-unlocked-groups", "layer-decay", "feature-cache", "batch-size", "micro-batch", "epochs",
                                "steps", "lr", "warmup", "weight-decay", "beta2", "clip", "seed", "augment", "crop-scale",
                                "image-mean", "image-std", "checkpoint-every", "eval-every", "log-every", "time-limit", "stop-at",
                                "untrusted-data", "trust-inputs"]
      for (k, _) in members where !known.contains(k) {
        throw CLIError("config file '\(path)': unknown option '\(k)'")
      }
    }
    func str(_ v: String?, _ key: String) throws -> String? {
      if let v { return v }
      guard let j = file[key] else { return nil }
      guard let s = j.string else { throw CLIError("config '\(key)' must be a string") }
      return s
    }
    func int(_ v: Int?, _ key: String) throws -> Int? {
      if let v { return v }
      guard let j = file[key] else { return nil }
      guard let n = j.int else { throw CLIError("config '\(key)' must be an integer") }
      return n
    }
    func num(_ v: Double?, _ key: String) throws -> Double? {
      if let v { return v }
      guard let j = file[key] else { return nil }
      guard let n = j.number else { throw CLIError("config '\(key)' must be a number") }
      return n
    }
    func bool(_ v: Bool?, _ key: String) throws -> Bool? {
      if let v { return v }
      guard let j = file[key] else { return nil }
      if let b = j.bool { return b }
      // "on" / "off": the values of the option this flag replaced, in existing configs.
      guard let s = j.string, s == "on" || s == "off" else { throw CLIError("config '\(key)' must be true or false") }
      return s == "on"
    }
    func list(_ v: [String], _ key: String) throws -> [String] {
      if !v.isEmpty { return v }
      guard let j = file[key] else { return [] }
      if let s = j.string { return [s] }
      guard let a = j.array?.compactMap(\.string), a.count == j.array?.count else { throw CLIError("config '\(key)' must be a list of paths") }
      return a
    }
    func floats(_ text: String?, _ key: String) throws -> [Float]? {
      guard let text = try str(text, key) else { return nil }
      let parts = text.split(separator: ",").map { Float($0.trimmingSpaces) }
      guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else { throw CLIError("--\(key) must be comma-separated numbers") }
      return parts.map { $0! }
    }
    data = try list(c.data, "data")
    embeddings = try list(c.embeddings, "embeddings")
    index = try str(c.index, "index")
    evalData = try list(c.evalData, "eval-data")
    evalEmbeddings = try list(c.evalEmbeddings, "eval-embeddings")
    let filterName = try str(c.filter, "filter") ?? "bicubic"
    guard let f = ResampleFilter(rawValue: filterName) else { throw CLIError("--filter must be bicubic or bilinear (got '\(filterName)')") }
    filter = f
    maxBadFraction = try num(c.maxBadFraction, "max-bad-fraction") ?? 0.01
    guard maxBadFraction.isFinite, maxBadFraction >= 0, maxBadFraction <= 1 else { throw CLIError("--max-bad-fraction must be in [0, 1]") }
    decodeThreads = try int(c.decodeThreads, "decode-threads") ?? 1
    guard decodeThreads >= 1, decodeThreads <= 256 else { throw CLIError("--decode-threads must be in [1, 256]") }
    maxPixels = Int64(try int(c.maxPixels, "max-pixels") ?? Int(ImageDecoder.defaultMaxPixels))
    guard maxPixels >= 1 else { throw CLIError("--max-pixels must be >= 1") }
    reducedDecode = try bool(c.reducedDecode, "reduced-decode") ?? true
    shuffleBlock = try int(c.shuffleBlock, "shuffle-block") ?? 5000
    guard shuffleBlock >= 1, shuffleBlock <= 1 << 24 else { throw CLIError("--shuffle-block must be in [1, 16777216]") }
    guard index == nil || !data.isEmpty else { throw CLIError("--index goes with --data (the image folder it lists)") }
    usesDefaultData = data.isEmpty
    dataDir = try str(c.dataDir, "data-dir") ?? "data"
    captions = try str(c.captions, "captions")
    out = try str(c.out, "out") ?? "runs/fashion-mnist"
    let presetName = try str(c.preset, "preset") ?? "ViT-XS/14-28"
    // The text dimension comes from the data; fixed when the dataset is opened.
    var m = try cli { () throws(LiftError) in try ModelConfig.preset(presetName, textDim: 1) }
    if let v = try int(c.imageSize, "image-size") { m.imageSize = v }
    if let v = try int(c.patch, "patch") { m.patch = v }
    if let v = try int(c.width, "width") { m.width = v }
    if let v = try int(c.depth, "depth") { m.depth = v }
    if let v = try int(c.heads, "heads") { m.heads = v }
    if let v = try int(c.mlpRatio, "mlp-ratio") { m.mlpRatio = v }
    if let v = try int(c.headLayers, "head-layers") { m.headLayers = v }
    if let v = try str(c.pool, "pool") {
      guard let p = ["avg": ModelConfig.Pooling.average, "tok": .token][v] else { throw CLIError("--pool must be avg or tok (got '\(v)')") }
      m.pooling = p
    }
    if let v = try str(c.objective, "objective") {
      guard let o = ModelConfig.Objective(name: v) else { throw CLIError("--objective must be contrastive, cosine or sigmoid (got '\(v)')") }
      m.objective = o
    }
    if let v = try str(c.precision, "precision") {
      guard let p = ModelConfig.Precision(name: v) else { throw CLIError("--precision must be fp32 or bf16 (got '\(v)')") }
      m.precision = p
      precisionGiven = true
    }
    if let v = try floats(c.imageMean, "image-mean") { m.imageMean = v }
    if let v = try floats(c.imageStd, "image-std") { m.imageStd = v }
    if let v = try str(c.activation, "activation") {
      guard let a = ModelConfig.Activation(name: v) else { throw CLIError("--activation must be gelu or quick_gelu (got '\(v)')") }
      m.activation = a
    }
    let lockImage = c.lockImage || file["lock-image"]?.bool == true
    let unlocked = try int(c.lockUnlockedGroups, "lock-unlocked-groups")
    guard !(lockImage && unlocked != nil) else { throw CLIError("--lock-image and --lock-unlocked-groups exclude each other") }
    if let unlocked { guard unlocked >= 0, unlocked <= 1024 else { throw CLIError("--lock-unlocked-groups must be in [0, 1024]") } }
    unlockedGroups = lockImage ? 0 : unlocked
    layerDecay = try num(c.layerDecay, "layer-decay") ?? 1
    guard layerDecay.isFinite, layerDecay > 0, layerDecay <= 1 else { throw CLIError("--layer-decay must be in (0, 1] (got \(layerDecay))") }
    lockingGiven = unlockedGroups != nil || layerDecay != 1
    switch try str(c.featureCache, "feature-cache") {
    case nil, "memory": featureCache = .memory
    case "off": featureCache = .off
    case let path?:
      guard !path.isEmpty else { throw CLIError("--feature-cache must be memory, off or a file path") }
      featureCache = .file(path)
    }
    initPath = try str(c.initPath, "init")
    if let initPath {
      importOptions = try Self.importOptions(c, model: m, initPath: initPath, file: file)
    }
    // Checked now, before any data is built or read, and on --resume too (where the checkpoint's
    // model is used instead); the text dimension stays 1 until the data gives it. With --init
    // the import checks its own architecture.
    if initPath == nil { try cli { () throws(LiftError) in try m.validate() } }
    model = m
    batchSize = try int(c.batchSize, "batch-size") ?? 256
    microBatch = try int(c.microBatch, "micro-batch") ?? batchSize
    epochs = try num(c.epochs, "epochs") ?? 7
    steps = try int(c.steps, "steps")
    lr = try num(c.lr, "lr") ?? 1e-3
    warmup = try int(c.warmup, "warmup")
    weightDecay = try num(c.weightDecay, "weight-decay") ?? 0.2
    beta2 = try num(c.beta2, "beta2") ?? 0.98
    clip = try num(c.clip, "clip") ?? 1.0
    let seedValue = try int(c.seed, "seed") ?? 0
    guard seedValue >= 0 else { throw CLIError("--seed must be >= 0") }
    seed = UInt64(seedValue)
    augment = try bool(c.augment, "augment") ?? false
    cropScale = try num(c.cropScale, "crop-scale") ?? 0.5
    if case .file(let path) = featureCache, unlockedGroups != 0 || augment {
      throw CLIError("--feature-cache '\(path)' keeps the pooled features of a fully locked tower: it needs --lock-image "
                     + "and no --augment")
    }
    checkpointEvery = try int(c.checkpointEvery, "checkpoint-every")
    evalEvery = try int(c.evalEvery, "eval-every")
    logEvery = try int(c.logEvery, "log-every") ?? 10
    timeLimit = try num(c.timeLimit, "time-limit")
    stopAt = try int(c.stopAt, "stop-at")
    var inputs = c.inputs
    inputs.untrustedData = try bool(inputs.untrustedData ? true : nil, "untrusted-data") ?? false
    inputs.trustInputs = try bool(inputs.trustInputs ? true : nil, "trust-inputs") ?? false
    checks = try inputs.checks()
    resume = c.resume
    restart = c.restart
    quiet = c.quiet
    let maxSteps = TrainConfig.maxSteps
    guard batchSize >= 1, batchSize <= 1 << 20 else { throw CLIError("--batch-size must be in [1, 1048576]") }
    guard microBatch >= 1, microBatch <= batchSize else { throw CLIError("--micro-batch must be in [1, batch size]") }
    guard epochs.isFinite, epochs > 0, epochs <= 1e6 else { throw CLIError("--epochs must be in (0, 1e6] (got \(epochs))") }
    if let steps { guard steps >= 1, steps <= maxSteps else { throw CLIError("--steps must be in [1, \(maxSteps)]") } }
    if let stopAt { guard stopAt >= 1, stopAt <= maxSteps else { throw CLIError("--stop-at must be in [1, \(maxSteps)]") } }
    if let warmup { guard warmup >= 0, warmup <= maxSteps else { throw CLIError("--warmup must be in [0, \(maxSteps)]") } }
    guard logEvery >= 1, logEvery <= maxSteps else { throw CLIError("--log-every must be in [1, \(maxSteps)]") }
    if let checkpointEvery {
      guard checkpointEvery >= 1, checkpointEvery <= maxSteps else { throw CLIError("--checkpoint-every must be in [1, \(maxSteps)]") }
    }
    if let evalEvery { guard evalEvery >= 0, evalEvery <= maxSteps else { throw CLIError("--eval-every must be in [0, \(maxSteps)]") } }
    if let timeLimit { guard timeLimit.isFinite, timeLimit >= 0 else { throw CLIError("--time-limit must be a finite number of seconds") } }
    for (name, value) in [("lr", lr), ("weight-decay", weightDecay), ("beta2", beta2), ("clip", clip), ("crop-scale", cropScale)]
      where !value.isFinite {
      throw CLIError("--\(name) must be finite (got \(value))")
    }
    guard lr >= 0, lr <= 10 else { throw CLIError("--lr must be in [0, 10] (got \(lr))") }
    guard weightDecay >= 0, weightDecay <= 10 else { throw CLIError("--weight-decay must be in [0, 10] (got \(weightDecay))") }
    guard beta2 >= 0, beta2 < 1 else { throw CLIError("--beta2 must be in [0, 1) (got \(beta2))") }
    guard clip >= 0, clip <= 1e6 else { throw CLIError("--clip must be in [0, 1000000], 0 = off (got \(clip))") }
    guard cropScale > 0, cropScale <= 1 else { throw CLIError("--crop-scale must be in (0, 1]") }
    guard !(resume && restart) else { throw CLIError("--resume and --restart exclude each other") }
  }

  /// The optimiser's schedule and settings for a new run over epochs of `batchesPerEpoch`
  /// steps, each step reading at most `batchCapacity` images at once.
  func trainConfig(batchesPerEpoch: Int, batchCapacity: Int) throws -> TrainConfig {
    let epochSteps = (epochs * Double(batchesPerEpoch)).rounded(.up)
    guard steps != nil || epochSteps <= Double(TrainConfig.maxSteps) else {
      throw CLIError("--epochs \(epochs) of \(batchesPerEpoch) steps each exceed \(TrainConfig.maxSteps) steps")
    }
    let total = steps ?? max(1, Int(epochSteps))
    var tc = TrainConfig()
    tc.learningRate = lr
    tc.weightDecay = weightDecay
    tc.beta2 = beta2
    tc.gradClip = clip
    tc.totalSteps = total
    tc.warmupSteps = min(warmup ?? min(500, total / 10), total)
    tc.batchCapacity = batchCapacity
    tc.unlockedGroups = unlockedGroups
    tc.layerDecay = layerDecay
    try cli { () throws(LiftError) in try tc.validate() }
    return tc
  }

  /// The import of --init: architecture options that a pretrained file fixes are refused; heads,
  /// activation, image size and pooling pass through. Checked now against the file's header.
  static func importOptions(_ c: Train, model m: ModelConfig, initPath: String, file: JSON) throws -> ImportOptions {
    let fixed: [(String, Bool)] = [("preset", c.preset != nil || file["preset"] != nil), ("patch", c.patch != nil || file["patch"] != nil),
                                   ("width", c.width != nil || file["width"] != nil), ("depth", c.depth != nil || file["depth"] != nil),
                                   ("mlp-ratio", c.mlpRatio != nil || file["mlp-ratio"] != nil),
                                   ("image-mean", c.imageMean != nil || file["image-mean"] != nil),
                                   ("image-std", c.imageStd != nil || file["image-std"] != nil)]
    if let (name, _) = fixed.first(where: { $0.1 }) {
      throw CLIError("--\(name) cannot be combined with --init: the pretrained encoder fixes it")
    }
    var o = ImportOptions(textDim: 1)
    o.headLayers = m.headLayers
    o.objective = m.objective
    o.precision = m.precision
    if c.imageSize != nil || file["image-size"] != nil { o.imageSize = m.imageSize }
    if c.heads != nil || file["heads"] != nil { o.heads = m.heads }
    if c.activation != nil || file["activation"] != nil { o.activation = m.activation }
    if c.pool != nil || file["pool"] != nil { o.pooling = m.pooling }
    let options = o
    _ = try cli { () throws(LiftError) in try ForeignEncoder.describe(path: initPath, options: options) }
    return o
  }

  /// What must match between a run and its resumption. A stream of tar shards or image folders
  /// also depends on the number of ranks (`streamRanks`); keys are added only when they apply,
  /// so runs on liblift datasets keep their identity.
  func identity(streamRanks: Int?) -> JSON {
    var members: [(String, JSON)] = [("data", .array(data.map { .string($0) })), ("batch_size", .number(Double(batchSize))),
                                     ("seed", .number(Double(seed))), ("augment", .bool(augment)), ("crop_scale", .number(cropScale))]
    if !embeddings.isEmpty { members.append(("embeddings", .array(embeddings.map { .string($0) }))) }
    if let index { members.append(("index", .string(index))) }
    if let streamRanks {
      members.append(("ranks", .number(Double(streamRanks))))
      members.append(("shuffle_block", .number(Double(shuffleBlock))))
    }
    return .object(members)
  }

  /// Loader options of this run for a model taking `size` x `size` x `channels` images.
  func loaderOptions(size: Int, channels: Int) -> DataLoader.Options {
    var o = DataLoader.Options(batchSize: batchSize, imageSize: size, channels: channels)
    o.seed = seed
    o.filter = filter
    o.maxBadFraction = maxBadFraction
    o.decodeThreads = decodeThreads
    o.maxPixels = maxPixels
    o.reducedDecode = reducedDecode
    o.shuffleBlock = shuffleBlock
    if augment { o.augment = Preprocess.Augment(scale: cropScale...1) }
    return o
  }
}


func readFileLift(_ path: String) throws(LiftError) -> [UInt8] {
  do { return try readFile(path) } catch { throw LiftError(LIFT_ERR_IO, "\(error)") }
}
