import ArgumentParser
import Glibc
import Lift

@main
struct LiftCLI: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lift",
    abstract: "Train and evaluate LIFT image encoders (images aligned to fixed caption embeddings).",
    version: liftVersion,
    subcommands: [Train.self, Eval.self, Encode.self, Build.self, Info.self, Export.self, Check.self, PrepareFashionMNIST.self],
    defaultSubcommand: nil)

  /// Runs the command; every error is one line on stderr (the parser's usage block is left to
  /// --help), with the parser's exit status (64 for usage errors, 1 otherwise).
  static func main() {
    // The HDF5 files lift writes are known to it: later runs open them without a check.
    WrittenFiles.observe { path, version in KnownFiles.remember(path, version, kind: KnownFiles.written) }
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch {
      let code = exitCode(for: error)
      if code == .success {
        print(fullMessage(for: error))  // --help, --version
        Glibc.exit(0)
      }
      let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? ""
      if !message.isEmpty { writeError("Error: \(message)\(code.rawValue == 64 ? " (see --help)" : "")\n") }
      Glibc.exit(code.rawValue)
    }
  }
}

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Evaluate a model on its data (zero-shot, retrieval, compositional pairs) or on a benchmark suite.",
    discussion: "Data (--data): zero-shot needs classes and labels in the data; compositional accuracy needs compositional/* pairs.\n\n"
      + "Suites (--suite imagenet|coco|flickr30k|sugarcrepe|captions, read from their published layouts under --root): "
      + "list the texts the suite needs (--list-texts texts.jsonl), embed them with the text model the image model was "
      + "trained against (e.g. python3 -m liblift.embed texts.jsonl --model DIR --out texts.h5), then evaluate with "
      + "--texts texts.h5. Layouts and metrics: docs/evaluation.md.")

  @Option(name: .long, help: "Model weights or training checkpoint (safetensors).") var model: String?
  @Option(name: .long, help: "Data: liblift dataset files, tar shards, or an image folder (as lift train --data).") var data: [String] = []
  @Option(name: .long, help: "Caption embedding store(s) keyed by sample (data other than liblift datasets).") var embeddings: [String] = []
  @Option(name: .long, help: "Index file (CSV/JSONL) of an image folder.") var index: String?
  @OptionGroup var suite: SuiteOptions
  @Option(name: .long, help: "Resampling filter: bicubic or bilinear.") var filter = "bicubic"
  @Option(name: .long, help: "Matrix-product precision: fp32 or bf16 (default: the model file's).") var precision: String?
  @Option(name: .long, help: "Also write the results here as JSON.") var json: String?
  @Flag(name: .long, help: "Replace the --json (or --list-texts) file if it exists.") var overwrite = false
  @Flag(name: .long, help: "Skip retrieval (--data).") var noRetrieval = false
  @OptionGroup var inputs: InputCheckOptions

  func run() throws {
    if let json { try checkOutput(json, overwrite: overwrite) }
    let checks = try inputs.checks()
    if suite.suite != nil {
      guard data.isEmpty, embeddings.isEmpty, index == nil else { throw CLIError("--suite reads its own layout: drop --data, --embeddings and --index") }
      return try SuiteEvaluation.run(suite, model: model, precision: precision, filter: try parseFilter(filter), json: json,
                                     overwrite: overwrite, checks: checks)
    }
    guard let model else { throw CLIError("--model is needed") }
    guard !data.isEmpty else { throw CLIError("give --data (the model's evaluation data) or --suite (a benchmark)") }
    let m = try loadModel(model, precision: precision)
    try checks.data(data, index: index)
    try checks.files(embeddings, as: .store)
    let source = try cli { () throws(LiftError) in
      try DataSources.open(DataSources.Request(paths: data, embeddings: embeddings, index: index))
    }
    let result = try Evaluation.run(model: m, source: source, filter: try parseFilter(filter), retrieval: !noRetrieval)
    if let json {
      try checkOutput(json, overwrite: overwrite)  // again: it may have appeared meanwhile
      try writeFileAtomically(json, result.json.serialized + "\n")
    }
    Console.out(result.table)
  }
}

struct Encode: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Write the image embeddings of a dataset, tar shards or image folder to an embedding store (HDF5).")

  @Option(name: .long, help: "Model weights or training checkpoint.") var model: String
  @Option(name: .long, help: "Data: liblift dataset files, tar shards, or an image folder (as lift train --data).") var data: [String]
  @Option(name: .long, help: "Caption embedding store(s) keyed by sample, if the data needs one to be read.") var embeddings: [String] = []
  @Option(name: .long, help: "Index file (CSV/JSONL) of an image folder.") var index: String?
  @Option(name: .long, help: "Resampling filter: bicubic or bilinear.") var filter = "bicubic"
  @Option(name: .long, help: "Matrix-product precision: fp32 or bf16 (default: the model file's).") var precision: String?
  @Option(name: .long, help: "Output embedding store (HDF5).") var out: String
  @Flag(name: .long, help: "Replace --out if it exists.") var overwrite = false
  @Option(name: .long, help: "float16 or float32.") var dtype = "float16"
  @OptionGroup var inputs: InputCheckOptions

  func run() throws {
    guard dtype == "float16" || dtype == "float32" else { throw CLIError("--dtype must be float16 or float32") }
    try checkOutput(out, overwrite: overwrite)
    let checks = try inputs.checks()
    let m = try loadModel(model, precision: precision)
    try checks.data(data, index: index)
    try checks.files(embeddings, as: .store)
    let source = try cli { () throws(LiftError) in
      try DataSources.open(DataSources.Request(paths: data, embeddings: embeddings, index: index))
    }
    let encoded = try Evaluation.encodeAll(model: m, source: source, batch: 256, filter: try parseFilter(filter),
                                           progress: true, what: "")
    let d = m.config.textDim
    let writer = try cli { () throws(LiftError) in
      try EmbeddingStoreWriter(path: out, dim: Int64(d), dtype: dtype == "float16" ? LIFT_DTYPE_FLOAT16 : LIFT_DTYPE_FLOAT32,
                               keys: true, overwrite: overwrite)
    }
    // Keys: the samples' own (file names, tar keys), or their index in the data.
    for chunk in stride(from: 0, to: encoded.kept.count, by: 1024) {
      let rows = Array(encoded.kept[chunk..<min(chunk + 1024, encoded.kept.count)])
      var block = [Float](repeating: 0, count: rows.count * d)
      for (k, row) in rows.enumerated() { for j in 0..<d { block[k * d + j] = encoded.images.row(row)[j] } }
      let keys = rows.map { Array((encoded.keys[$0].isEmpty ? String($0) : encoded.keys[$0]).utf8) }
      try block.withUnsafeBufferPointer { (b) in
        try cli { () throws(LiftError) in try writer.append(b.baseAddress!, rows: Int64(rows.count), keys: keys) }
      }
    }
    try cli { () throws(LiftError) in try writer.finish() }
    Console.clearProgress()
    let skipped = encoded.bad.total > 0 ? "; left out \(encoded.bad.total) that could not be read: \(encoded.bad.description)" : ""
    Console.line("wrote \(encoded.kept.count) embeddings (\(d)-d, \(dtype)) to \(out); keys are the samples' keys (or indices)\(skipped)")
  }
}

/// --filter's value.
func parseFilter(_ name: String) throws -> ResampleFilter {
  guard let f = ResampleFilter(rawValue: name) else { throw CLIError("--filter must be bicubic or bilinear (got '\(name)')") }
  return f
}

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Describe a model, a checkpoint, a dataset, a captions file, an embedding store or a feature cache.",
    discussion: "What a file is comes from its content, not its name.")

  @Argument(help: "Files to describe.") var paths: [String]
  @Flag(name: .long, help: """
    Describe HDF5 files in this process. By default a separate lift process describes each one, \
    so that a file crafted to crash or hang libhdf5 cannot take this one down.
    """) var trusted = false
  @Flag(name: .long, help: .hidden) var inProcess = false

  func run() throws {
    for path in paths {
      if trusted || inProcess || !Info.isHDF5(path) {
        try describeInProcess(path)
      } else {
        try describeInChild(path)
      }
    }
  }

  /// Whether `path` is a file that is not safetensors (so libhdf5 would parse it); tar shards,
  /// folders and safetensors are read by liblift's own code.
  static func isHDF5(_ path: String) -> Bool {
    if DataSources.isDirectory(path) || path.contains("{") || path.lowercased().hasSuffix(".tar") { return false }
    return (try? LiftFileKind.isSafeTensors(path)) == false
  }

  /// `lift info --in-process PATH` in a child process (10 minutes at most), its output relayed.
  func describeInChild(_ path: String) throws {
    let timeout = 600.0
    let run = FileCheck.runChild(command: ["/proc/self/exe", "info", "--in-process", "--", path], timeout: timeout)
    if let why = run.startFailure { throw CLIError("cannot describe '\(path)' in a separate process: \(why)") }
    let text = run.text.hasSuffix("\n") ? String(run.text.dropLast()) : run.text
    if !run.finished { throw CLIError(FileCheck.error(of: .timedOut(seconds: timeout), path: path)!.message) }
    if let signal = run.signal {
      throw CLIError(FileCheck.error(of: .crashed(signal: signal, detail: ""), path: path)!.message)
    }
    guard run.exitStatus == 0 else {
      let last = text.split(separator: "\n").last.map(String.init) ?? "failed"
      throw CLIError(last.hasPrefix("Error: ") ? String(last.dropFirst(7)) : last)
    }
    Console.out(text)
  }

  /// Describes one file in this process.
  func describeInProcess(_ path: String) throws {
    if DataSources.isDirectory(path) || path.contains("{") || path.lowercased().hasSuffix(".tar") {
      Console.out(try cli { () throws(LiftError) in try DataSources.census(path) })
      return
    }
    switch try cli({ () throws(LiftError) in try LiftFileKind.of(path: path) }) {
    case .safetensors: try describeModel(path)
    case .dataset: try describeDataset(path)
    case .captions: try describeCaptions(path)
    case .store: try describeStore(path)
    case .featureCache:
      let h = try cli { () throws(LiftError) in try FeatureCache.header(path: path) }
      Console.out("\(path): feature cache of \(h.count) images x \(h.width) pooled features (fingerprint \(h.fingerprint)), "
                  + "made by lift train --feature-cache for a locked tower")
    case .otherHDF5:
      throw CLIError("'\(path)' is an HDF5 file without liblift's datasets: expected images/pixels (an image-caption dataset), "
                     + "captions/embeddings (a captions file), embeddings (an embedding store) or features (a feature cache)")
    case .unknown:
      throw CLIError("'\(path)' is not a liblift file: expected a model or checkpoint (safetensors) or a dataset, "
                     + "captions file or embedding store (HDF5)")
    }
  }

  /// A model file, or a training checkpoint (which holds a model) with its schedule and metadata,
  /// or a pretrained encoder of another family (what `lift train --init` would import).
  func describeModel(_ path: String) throws {
    let loaded: Model
    do {
      loaded = try Model.load(path: path)
    } catch {
      guard let foreign = try? ForeignScheme.detect(path: path) else {
        throw CLIError(error)
      }
      return try describeForeign(path, scheme: foreign)
    }
    let m = loaded
    Console.out("\(path): model \(describe(m.config)), \(m.layout.parameterCount) parameters, \(m.layout.tensors.count) tensors")
    guard let (t, meta) = try? Trainer.load(path: path, batchCapacity: 1) else { return }
    Console.out("  training checkpoint at step \(t.step) of \(t.config.totalSteps); lr \(t.config.learningRate), warm-up \(t.config.warmupSteps)"
                + (t.config.unlockedGroups.map { $0 == 0 ? "; image tower locked (head only)" : "; image tower locked but its last \($0) groups" } ?? "")
                + (t.config.layerDecay != 1 ? "; layer decay \(t.config.layerDecay)" : ""))
    for k in meta.keys.sorted() { Console.out("  \(k): \(meta[k]!)") }
  }

  /// A pretrained encoder: its scheme, the architecture an import gives, and what it leaves out.
  func describeForeign(_ path: String, scheme: ForeignScheme) throws {
    do {
      let source = try ForeignEncoder.describe(path: path, options: ImportOptions(textDim: 1))
      Console.out("\(path): pretrained \(scheme.rawValue) encoder\(source.configFile.map { " (config \($0))" } ?? ""): "
                  + describeTower(source.config))
      if !source.ignored.isEmpty {
        Console.out("  not imported (outside the image tower): \(source.ignored.count) tensors, e.g. \(source.ignored.prefix(3).joined(separator: ", "))")
      }
    } catch {
      Console.out("\(path): pretrained \(scheme.rawValue) encoder; lift train --init needs more: \(error.message)")
    }
  }

  func describeDataset(_ path: String) throws {
    let ds = try cli { () throws(LiftError) in try ImageDataset(paths: [path]) }
    let images = ds.encoded ? "encoded images (JPEG/PNG/WebP, each its own size)" : "images \(ds.height)x\(ds.width)x\(ds.channels)"
    Console.out("\(path): dataset of \(ds.count) \(images), \(ds.captions.rows) captions (\(ds.textDim)-d)\(ds.hasLabels ? ", labels" : "")")
    if ds.classCount > 0 {
      let names = try cli { () throws(LiftError) in try ds.classNames() }
      Console.out("  classes: \(names.joined(separator: ", "))")
    }
    if let pairs = try cli({ () throws(LiftError) in try ds.compositionalPairs() }) {
      Console.out("  compositional pairs: \(pairs.images.count) (\(Set(pairs.types).sorted().joined(separator: ", ")))")
    }
  }

  /// Caption embeddings and class prompts without images (assets/fashion-mnist-captions.h5).
  func describeCaptions(_ path: String) throws {
    let file = try cli { () throws(LiftError) in try CaptionsFile(path: path) }
    let store = file.captions
    let texts = try cli { () throws(LiftError) in try store.hasStrings("captions/text") }
    let model = try cli { () throws(LiftError) in try file.attribute("model") }
    Console.out("\(path): captions file of \(store.rows) captions (\(store.dim)-d, \(dtypeName(store.shardDtypes[0])))"
                + (texts ? " with texts" : "") + (model.map { ", embedded by \($0)" } ?? ""))
    guard file.classCount > 0 else { return }
    let names = try cli { () throws(LiftError) in try file.classNames() }
    let counts = file.classPrompts.map(\.count)
    let each = counts.min() == counts.max() ? "\(counts[0])" : "\(counts.min()!)-\(counts.max()!)"
    Console.out("  \(file.classCount) classes of \(each) prompts: \(names.joined(separator: ", "))")
  }

  func describeStore(_ path: String) throws {
    let store = try cli { () throws(LiftError) in try EmbeddingStore(paths: [path]) }
    let strings = try ["keys", "captions"].filter { name in try cli { () throws(LiftError) in try store.hasStrings(name) } }
    Console.out("\(path): embedding store of \(store.rows) x \(store.dim) (\(dtypeName(store.shardDtypes[0])))"
                + (strings.isEmpty ? "" : " with \(strings.joined(separator: " and "))"))
  }
}

func dtypeName(_ dtype: lift_dtype) -> String {
  dtype == LIFT_DTYPE_FLOAT16 ? "float16" : dtype == LIFT_DTYPE_FLOAT64 ? "float64" : "float32"
}

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write the model weights of a training checkpoint or model (PyTorch names, safetensors).",
    discussion: "With --scheme, only the image tower, in OpenCLIP, timm, Hugging Face CLIP or DINOv2 names, with that "
      + "scheme's config file beside it (the LIFT head belongs to none of them).")

  @Option(name: .long, help: "Training checkpoint or model file.") var checkpoint: String
  @Option(name: .long, help: "Output model file.") var out: String
  @Option(name: .long, help: "Write the image tower in this naming scheme: openclip, timm, hf-clip or hf-dinov2.") var scheme: String?
  @Flag(name: .long, help: "Replace --out if it exists.") var overwrite = false

  func run() throws {
    try checkOutput(out, overwrite: overwrite)
    let m = try cli { () throws(LiftError) in try Model.load(path: checkpoint) }
    if let scheme {
      guard let s = ForeignScheme(rawValue: scheme) else {
        throw CLIError("--scheme must be one of \(ForeignScheme.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(scheme)')")
      }
      try cli { () throws(LiftError) in try m.export(path: out, scheme: s) }
      Console.line("wrote the image tower to \(out) in \(s.rawValue) names, with its config file beside it")
      return
    }
    try cli { () throws(LiftError) in try m.save(path: out) }
    Console.line("wrote \(out) (\(m.layout.parameterCount) parameters)")
  }
}

struct PrepareFashionMNIST: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "prepare-fashion-mnist",
                                                  abstract: "Build the Fashion-MNIST dataset files from Debian's IDX files.")

  @Option(name: .long, help: "Folder for the dataset.") var dataDir = "data"
  @Option(name: .long, help: "Folder with the IDX files.") var idxDir = FashionMNIST.debianDirectory
  @Option(name: .long, help: "Caption embeddings (default: assets/fashion-mnist-captions.h5).") var captions: String?
  @OptionGroup var inputs: InputCheckOptions

  func run() throws {
    let (train, test) = try Defaults.fashionMNIST(dataDir: dataDir, captions: captions, idxDirectory: idxDir,
                                                  checks: try inputs.checks())
    Console.out("\(train)\n\(test)")
  }
}

/// Refuses an empty output path, anything but a regular file at it (a folder, device, FIFO or
/// symbolic link is never replaced), and an existing file unless --overwrite was given.
func checkOutput(_ path: String, overwrite: Bool) throws {
  guard !path.isEmpty else { throw CLIError("the output path is empty") }
  var st = stat()
  guard lstat(path, &st) == 0 else { return }
  if (st.st_mode & S_IFMT) == S_IFDIR { throw CLIError("'\(path)' is a folder; an output file was expected") }
  if (st.st_mode & S_IFMT) != S_IFREG {
    throw CLIError("'\(path)' exists and is not a regular file (a device, FIFO, socket or symbolic link): lift replaces "
                   + "only regular files")
  }
  if !overwrite { throw CLIError("'\(path)' already exists (pass --overwrite to replace it)") }
}

/// A model file, computing in `precision` ("fp32" or "bf16") when given.
func loadModel(_ path: String, precision: String?) throws -> Model {
  let m = try cli { () throws(LiftError) in try Model.load(path: path) }
  guard let precision else { return m }
  guard let p = ModelConfig.Precision(name: precision) else { throw CLIError("--precision must be fp32 or bf16 (got '\(precision)')") }
  return p == m.config.precision ? m : try cli { () throws(LiftError) in try m.converted(to: p) }
}
