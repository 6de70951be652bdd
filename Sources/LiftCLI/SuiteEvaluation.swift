import ArgumentParser
import Glibc
import Lift

/// `lift eval --suite ...`: the options that locate a benchmark and its texts.
struct SuiteOptions: ParsableArguments {
  @Option(name: .long, help: "Benchmark suite: imagenet (any class-folder set), coco, flickr30k, sugarcrepe or captions.") var suite: String?
  @Option(name: .long, help: "The suite's image folder (imagenet: the folder of class folders; coco: the folder holding val2017/ and annotations/).") var root: String?
  @Option(name: .long, help: "Annotations: flickr30k's split JSON or CSV, sugarcrepe's folder of subset files, the captions JSONL/CSV, imagenet's label file for a flat folder, coco's captions JSON (default root/annotations/captions_val2017.json).") var annotations: String?
  @Option(name: .long, help: "imagenet: class names (imagenet_class_index.json, a JSON list or object, or TSV lines '<folder>\\t<name>'; default: the folder names).") var classes: String?
  @Option(name: .long, help: "imagenet: prompt templates, a file with one template per line ({} marks the class name) or a built-in set: lift (default), simple, openai.") var templates: String?
  @Option(name: .long, parsing: .unconditional, help: "Retrieval: use each image's first N captions (0: all).") var captionsPerImage = 0
  @Option(name: .long, help: "flickr30k: the split to evaluate.") var split = "test"
  @Option(name: .long, help: "Write every distinct text the suite needs here (JSON lines {\"text\": ...}) and stop.") var listTexts: String?
  @Option(name: .long, help: "Store(s) of the texts' embeddings with a text column (liblift HDF5).") var texts: [String] = []
  @Option(name: .long, help: "Image-embedding cache (HDF5): read, and updated with the images encoded.") var imageCache: String?
  @Option(name: .long, parsing: .unconditional, help: "Resize the short side to N pixels before the centre crop (256 for 224-pixel models reproduces timm's and LIFT's evaluation; default: the model's size).") var resize: Int?
  @Option(name: .long, parsing: .unconditional, help: "Images encoded per batch.") var batch = 128
  @Option(name: .long, parsing: .unconditional, help: "Threads decoding images.") var decodeThreads = 1

  func validate() throws {
    guard captionsPerImage >= 0, captionsPerImage <= 1 << 20 else { throw ValidationError("--captions-per-image must be in [0, 1048576]") }
    if let resize { guard resize >= 1, resize <= 1 << 16 else { throw ValidationError("--resize must be in [1, 65536]") } }
    guard batch >= 1, batch <= 1 << 16 else { throw ValidationError("--batch must be in [1, 65536]") }
    guard decodeThreads >= 1, decodeThreads <= 256 else { throw ValidationError("--decode-threads must be in [1, 256]") }
  }
}

enum SuiteEvaluation {
  static func run(_ o: SuiteOptions, model: String?, precision: String?, filter: ResampleFilter, json: String?, overwrite: Bool,
                  checks: InputChecks) throws {
    let suite = try open(o)
    if let listPath = o.listTexts {
      guard o.texts.isEmpty else { throw CLIError("--list-texts writes the texts to embed; --texts reads them once embedded: give one") }
      return try writeTexts(suite.texts, to: listPath, overwrite: overwrite)
    }
    guard let model else { throw CLIError("--model is needed to evaluate (only --list-texts works without it)") }
    guard !o.texts.isEmpty else {
      throw CLIError("--texts is needed: list the suite's texts with --list-texts FILE, embed them with the model's text model "
                     + "(python3 -m liblift.embed FILE --model DIR --out STORE.h5), then pass --texts STORE.h5")
    }
    let m = try loadModel(model, precision: precision)
    try checks.files(o.texts, as: .store)
    try checks.existingFile(o.imageCache, as: .store)
    var options = SuiteRunner.Options()
    options.encoding.filter = filter
    options.encoding.resize = o.resize
    options.encoding.batch = o.batch
    options.encoding.decodeThreads = o.decodeThreads
    options.imageCache = o.imageCache
    var pacer = ProgressPacer()
    let result = try cli { () throws(LiftError) in
      let store = try EmbeddingStore(paths: o.texts)
      return try SuiteRunner.run(suite, model: m, texts: store, options: options) { done, total in
        if pacer.due(last: done == total) { Console.progress("\(o.suite!): encoded \(done)/\(total) images") }
      }
    }
    Console.clearProgress()
    if let json {
      try checkOutput(json, overwrite: overwrite)
      try writeFileAtomically(json, result.json.serialized + "\n")
    }
    Console.out(result.table)
    Console.line("\(fixed(result.seconds, 1)) s, \(fixed(Double(result.images) / max(result.seconds, 1e-9), 1)) images/s")
  }

  static func open(_ o: SuiteOptions) throws -> BenchmarkSuite {
    guard let name = o.suite.flatMap(BenchmarkSuite.Name.init(rawValue:)) else {
      throw CLIError("--suite must be one of \(BenchmarkSuite.Name.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(o.suite ?? "")')")
    }
    guard let root = o.root else { throw CLIError("--suite needs --root, the suite's image folder") }
    var at = BenchmarkSuite.Location(root: root)
    at.annotations = o.annotations
    at.classes = o.classes
    at.templates = o.templates
    at.captionsPerImage = o.captionsPerImage
    at.split = o.split
    if name != .imagenet && (o.classes != nil || o.templates != nil) { throw CLIError("--classes and --templates are for --suite imagenet") }
    return try cli { () throws(LiftError) in try BenchmarkSuite.open(name, at: at) }
  }

  /// One JSON object {"text": ...} per line, written atomically.
  static func writeTexts(_ texts: [String], to path: String, overwrite: Bool) throws {
    try checkOutput(path, overwrite: overwrite)
    var out = ""
    for t in texts { out += JSON.object([("text", .string(t))]).serialized + "\n" }
    try writeFileAtomically(path, out)
    Console.line("wrote \(texts.count) texts to \(path): embed them with the model's text model into a store with a text column, then pass it as --texts")
  }
}
