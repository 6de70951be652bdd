import Glibc

// Importing pretrained image encoders from safetensors files in the naming schemes people have
// on disk (README: "Pretrained encoders"). The scheme is detected from the tensor names; the
// shapes give width, depth, patch, grid and MLP size; what shapes cannot tell (heads,
// activation, normalisation statistics, pooling) comes from the config file shipped beside the
// weights, or from explicit options; anything still ambiguous is an error naming the option.

/// A naming scheme of pretrained vision transformers.
public enum ForeignScheme: String, Sendable, CaseIterable {
  /// OpenCLIP's VisionTransformer (`visual.conv1.weight`, ...), also LIFT's own files.
  case openCLIP = "openclip"
  /// timm's VisionTransformer (`patch_embed.proj.weight`, `blocks.N...`).
  case timm
  /// Hugging Face CLIPVisionModel / CLIPModel (`vision_model.embeddings...`).
  case huggingFaceCLIP = "hf-clip"
  /// Hugging Face Dinov2Model (with registers too: `embeddings.register_tokens`).
  case huggingFaceDINOv2 = "hf-dinov2"
}

/// Choices an import needs besides the weights.
public struct ImportOptions {
  /// Dimension of the text embeddings the new LIFT head maps to.
  public var textDim: Int
  public var headLayers = 2
  public var objective = ModelConfig.Objective.contrastive
  public var precision = ModelConfig.Precision.fp32
  /// Training image size; nil keeps the source's. Another size resamples the positional
  /// embedding (PositionalResampling).
  public var imageSize: Int?
  /// Attention heads, when no config file says.
  public var heads: Int?
  /// MLP activation, when no config file says.
  public var activation: ModelConfig.Activation?
  /// Pooling instead of the source's.
  public var pooling: ModelConfig.Pooling?
  /// The config file (config.json / open_clip_config.json); nil looks beside the weights.
  public var configPath: String?
  /// Seed of the new LIFT head's initialisation.
  public var seed: UInt64 = 0

  public init(textDim: Int) { self.textDim = textDim }
}

/// A foreign weights file as detected: its scheme, the architecture at the source's image size
/// and where each of liblift's tensors comes from.
public struct ForeignEncoder {
  public let path: String
  public let scheme: ForeignScheme
  /// The architecture with the source's image size (head, objective, precision from the options).
  public let config: ModelConfig
  /// The config file that was read, if any.
  public let configFile: String?
  /// Tensors of the file that are not part of the image tower (text tower, classifier, CLIP's
  /// projection, buffers) and were left out.
  public let ignored: [String]
  /// liblift tensor name -> how it is made from the file's tensors.
  let plan: [(target: String, source: ForeignSource)]
}

extension ForeignScheme {
  /// The scheme of the safetensors file at `path` (from its header's tensor names), or a format
  /// error if it is not a vision transformer liblift can import.
  public static func detect(path: String) throws(LiftError) -> ForeignScheme {
    try ForeignImport.detect(Set(SafeTensors.Reader(path: path).names), path: path)
  }
}

extension ForeignEncoder {
  /// What the weights file at `path` holds (header and config file only; no tensor data is
  /// read): its scheme and architecture, or the error an import would give.
  public static func describe(path: String, options: ImportOptions) throws(LiftError) -> ForeignEncoder {
    try ForeignImport.describe(path: path, options: options)
  }
}

/// How one liblift tensor is made from a foreign file.
enum ForeignSource {
  /// A tensor with the same elements (possibly another shape, e.g. (1, 1, W) -> (W)).
  case tensor(String)
  /// Rows of several tensors stacked (separate q, k, v -> in_proj).
  case rows([String])
  /// Zeros (a bias the source does not have).
  case zeros
  /// A positional embedding whose first `skip` rows after the class row are dropped (they
  /// belong to registers); `classRow` false: the source has no class position (zero).
  case positional(String, classRow: Bool, skip: Int)
  /// Register tokens, plus their positional rows when the source gives them positions.
  case registers(String, positional: String?)

  /// The source tensor that element `j` of a target of `count` elements comes from, for a
  /// message ("tensor 'x'"; the part of a stacked or resampled target).
  func describe(element j: Int, of count: Int) -> String {
    switch self {
    case .tensor(let name): return "tensor '\(name)' (element \(j))"
    case .rows(let names):
      guard !names.isEmpty else { return "a stacked tensor" }
      return "tensor '\(names[min(j / max(count / names.count, 1), names.count - 1)])'"
    case .zeros: return "a zero bias"
    case .positional(let name, _, _): return "tensor '\(name)'"
    case .registers(let name, let positional): return "tensor '\(name)'" + (positional.map { " or '\($0)'" } ?? "")
    }
  }
}

enum ForeignImport {
  /// Reads `path`'s header and config file and works out what it holds.
  static func describe(path: String, options: ImportOptions) throws(LiftError) -> ForeignEncoder {
    let reader = try SafeTensors.Reader(path: path)
    let names = Set(reader.names)
    let scheme = try detect(names, path: path)
    let (configJSON, configFile) = try readConfig(beside: path, scheme: scheme, given: options.configPath)
    var build = ForeignBuild(reader: reader, path: path, options: options, config: configJSON)
    build.configFile = configFile
    // Hugging Face keeps the image statistics in preprocessor_config.json (image_mean, image_std).
    if scheme == .huggingFaceCLIP || scheme == .huggingFaceDINOv2 {
      let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
      let file = folder + "/preprocessor_config.json"
      if access(file, R_OK) == 0 {
        build.preprocessor = try JSON.parse(try readConfigFile(file), what: "'\(file)'")
        build.preprocessorFile = file
      }
    }
    switch scheme {
    case .openCLIP: try build.openCLIP()
    case .timm: try build.timm()
    case .huggingFaceCLIP: try build.huggingFaceCLIP()
    case .huggingFaceDINOv2: try build.huggingFaceDINOv2()
    }
    return try build.finish(scheme: scheme, configFile: configFile)
  }

  static func detect(_ names: Set<String>, path: String) throws(LiftError) -> ForeignScheme {
    if names.contains("visual.conv1.weight") { return .openCLIP }
    if names.contains("patch_embed.proj.weight") { return .timm }
    if names.contains("vision_model.embeddings.patch_embedding.weight") { return .huggingFaceCLIP }
    if names.contains("embeddings.patch_embeddings.projection.weight")
        || names.contains("dinov2.embeddings.patch_embeddings.projection.weight") { return .huggingFaceDINOv2 }
    throw .format("'\(path)' is not a vision transformer liblift can import: none of visual.conv1.weight (OpenCLIP), "
                  + "patch_embed.proj.weight (timm), vision_model.embeddings.patch_embedding.weight (Hugging Face CLIP) "
                  + "or embeddings.patch_embeddings.projection.weight (Hugging Face DINOv2)")
  }

  /// The scheme's config file: `given`, or the first of the usual names beside the weights.
  static func readConfig(beside path: String, scheme: ForeignScheme,
                         given: String?) throws(LiftError) -> (JSON?, String?) {
    var candidates: [String] = []
    if let given {
      candidates = [given]
    } else {
      let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
      let names = scheme == .openCLIP ? ["open_clip_config.json", "config.json"] : ["config.json"]
      candidates = names.map { folder + "/" + $0 }
    }
    for file in candidates {
      guard access(file, R_OK) == 0 || given != nil else { continue }
      return (try JSON.parse(try readConfigFile(file), what: "config file '\(file)'"), file)
    }
    return (nil, nil)
  }

  /// The bytes of a config file: a regular file of at most 16 MiB.
  static func readConfigFile(_ path: String) throws(LiftError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw .io("cannot open config file '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw .io("config file '\(path)' is not a regular file") }
    guard st.st_size <= 1 << 24 else { throw .format("config file '\(path)' is larger than 16 MiB") }
    var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    while done < bytes.count {
      let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
      if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { break }
    }
    guard done == bytes.count else { throw .io("cannot read config file '\(path)'") }
    return bytes
  }
}

/// Builds a ForeignEncoder: the architecture from shapes and config, and the plan, checking
/// every tensor it uses and refusing tensors it does not understand.
struct ForeignBuild {
  let reader: SafeTensors.Reader
  let path: String
  let options: ImportOptions
  let config: JSON?
  /// The config file's path (for messages).
  var configFile: String?
  /// Hugging Face's preprocessor_config.json and its path, if present.
  var preprocessor: JSON?
  var preprocessorFile: String?
  var plan: [(target: String, source: ForeignSource)] = []
  var used: Set<String> = []
  /// Prefixes and names of tensors outside the image tower, left out on purpose.
  var ignoredPrefixes: [String] = []
  var model: ModelConfig?

  init(reader: SafeTensors.Reader, path: String, options: ImportOptions, config: JSON?) {
    self.reader = reader
    self.path = path
    self.options = options
    self.config = config
  }

  // MARK: Shapes

  func shape(_ name: String) throws(LiftError) -> [Int] {
    guard let t = reader.tensors[name] else { throw .format("'\(path)' lacks tensor '\(name)'") }
    return t.shape
  }

  func has(_ name: String) -> Bool { reader.tensors[name] != nil }

  /// The patch embedding's shape (W, C, p, p) and its parts, each at least 1.
  func patchEmbedding(_ name: String) throws(LiftError) -> (shape: [Int], width: Int, channels: Int, patch: Int) {
    let s = try shape(name)
    guard s.count == 4, s[2] == s[3], s.allSatisfy({ $0 >= 1 }) else {
      throw .shape("'\(path)': tensor '\(name)' has shape \(s); expected (width, channels, patch, patch)")
    }
    return (s, s[0], s[1], s[2])
  }

  /// Dimension `index` of tensor `name` (a format error if the tensor has fewer dimensions).
  func dimension(_ name: String, _ index: Int) throws(LiftError) -> Int {
    let s = try shape(name)
    guard index < s.count else { throw .shape("'\(path)': tensor '\(name)' has shape \(s); expected at least \(index + 1) dimensions") }
    return s[index]
  }

  /// Checks that `name` exists with `expected` shape and marks it used.
  mutating func take(_ name: String, _ expected: [Int]) throws(LiftError) -> String {
    let actual = try shape(name)
    guard actual == expected else {
      throw .shape("'\(path)': tensor '\(name)' has shape \(actual); expected \(expected)")
    }
    used.insert(name)
    return name
  }

  /// Number of blocks: indices N of names `prefix` + "N." present, which must be 0..<depth.
  func depth(_ prefix: String) throws(LiftError) -> Int {
    var indices = Set<Int>()
    for name in reader.names where name.hasPrefix(prefix) {
      let rest = name.dropFirst(prefix.count)
      if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]), i >= 0, i < 4096 { indices.insert(i) }
    }
    guard indices.count == (indices.max().map { $0 + 1 } ?? 0) else {
      throw .format("'\(path)': the blocks under '\(prefix)' are not numbered 0..<\(indices.count)")
    }
    return indices.count
  }

  static func squareRoot(_ n: Int) -> Int? {
    guard n > 0 else { return nil }
    let r = Int(Double(n).squareRoot().rounded())
    return r * r == n ? r : nil
  }

  // MARK: Config values

  // Each accessor gives nil for a key the config file does not have (or has as null), the
  // value when it has the expected type and range, and a format error naming the file and the
  // key otherwise: a value liblift cannot use is never silently replaced by a default.

  /// The value at `path`, nil when a key on the way is absent or the value is null; an error
  /// when a key on the way holds something other than an object.
  private func value(_ path: [String], in json: JSON?, file: String?) throws(LiftError) -> JSON? {
    var v = json
    for (depth, key) in path.enumerated() {
      guard let current = v else { return nil }
      guard case .object = current else {
        throw invalid(Array(path[..<depth]), "an object", file: file, got: current)
      }
      v = current[key]
    }
    if case .null? = v { return nil }
    return v
  }

  private func invalid(_ path: [String], _ expected: String, file: String?, got: JSON) -> LiftError {
    .format("config file '\(file ?? "(none)")' of '\(self.path)': \(path.joined(separator: ".")) must be \(expected), got \(got.serialized)")
  }

  /// A finite number.
  func number(_ path: [String]) throws(LiftError) -> Double? {
    guard let v = try value(path, in: config, file: configFile) else { return nil }
    guard let n = v.number, n.isFinite else { throw invalid(path, "a number", file: configFile, got: v) }
    return n
  }

  /// A whole number in [1, 2^20] (sizes, counts).
  func integer(_ path: [String]) throws(LiftError) -> Int? {
    guard let v = try value(path, in: config, file: configFile) else { return nil }
    guard let n = v.int, n >= 1, n <= 1 << 20 else { throw invalid(path, "a whole number in [1, 1048576]", file: configFile, got: v) }
    return n
  }

  func bool(_ path: [String]) throws(LiftError) -> Bool? {
    guard let v = try value(path, in: config, file: configFile) else { return nil }
    guard let b = v.bool else { throw invalid(path, "true or false", file: configFile, got: v) }
    return b
  }

  func string(_ path: [String]) throws(LiftError) -> String? {
    guard let v = try value(path, in: config, file: configFile) else { return nil }
    guard let s = v.string else { throw invalid(path, "a string", file: configFile, got: v) }
    return s
  }

  /// One finite number per image channel (`count`).
  func floats(_ path: [String], count: Int) throws(LiftError) -> [Float]? {
    try floats(path, count: count, in: config, file: configFile)
  }

  /// A number or a list of numbers: one per channel, or one for all (repeated, as torchvision's
  /// Normalize broadcasts it).
  private func floats(_ path: [String], count: Int, in json: JSON?, file: String?) throws(LiftError) -> [Float]? {
    guard let v = try value(path, in: json, file: file) else { return nil }
    let items = v.array ?? [v]
    let values = items.compactMap { $0.number.flatMap { $0.isFinite ? Float($0) : nil } }
    guard values.count == items.count, values.count == count || values.count == 1 else {
      throw invalid(path, "one number, or a list of \(count) (one per channel of the \(count)-channel patch embedding; "
                    + "edit the file to match the weights)", file: file, got: v)
    }
    return values.count == count ? values : [Float](repeating: values[0], count: count)
  }

  /// Image mean and std from Hugging Face's preprocessor_config.json, else `fallback`.
  func huggingFaceStatistics(channels: Int, fallback: ([Float], [Float])) throws(LiftError) -> ([Float], [Float]) {
    (try floats(["image_mean"], count: channels, in: preprocessor, file: preprocessorFile) ?? fallback.0,
     try floats(["image_std"], count: channels, in: preprocessor, file: preprocessorFile) ?? fallback.1)
  }

  /// Heads: the option, the config's value, or an error saying which option to pass.
  func heads(fromConfig value: Int?, width: Int, hint: String) throws(LiftError) -> Int {
    if let h = options.heads { return h }
    if let value { return value }
    throw .argument("'\(path)': the number of attention heads is not in its tensors and no config file says (\(hint)); "
                    + "pass heads (lift train --heads N)")
  }

  // MARK: Common architecture

  /// Starts the model config from the patch embedding and positional grid.
  mutating func begin(width: Int, channels: Int, patch: Int, grid: Int, depth: Int, hidden: Int, heads: Int,
                      activation: ModelConfig.Activation, mean: [Float], std: [Float]) throws(LiftError) {
    guard hidden % width == 0 else {
      throw .format("'\(path)': MLP hidden size \(hidden) is not a multiple of the width \(width) (not supported)")
    }
    var c = ModelConfig(imageSize: grid * patch, channels: channels, patch: patch, width: width, depth: depth, heads: heads,
                        mlpRatio: hidden / width, headLayers: options.headLayers, textDim: options.textDim,
                        objective: options.objective, imageMean: mean, imageStd: std, precision: options.precision)
    c.activation = options.activation ?? activation
    model = c
  }

  // MARK: Finish

  mutating func finish(scheme: ForeignScheme, configFile: String?) throws(LiftError) -> ForeignEncoder {
    guard var c = model else { throw .internal("import of '\(path)' made no model config") }
    if let p = options.pooling { c.pooling = p }
    do { try c.validate() } catch { throw .format("'\(path)': \(error.message)") }
    var ignored: [String] = []
    for name in reader.names where !used.contains(name) {
      guard ignoredPrefixes.contains(where: { name == $0 || (name.hasPrefix($0) && $0.hasSuffix(".")) }) else {
        throw .format("'\(path)': tensor '\(name)' is not part of the \(scheme.rawValue) vision transformer liblift imports "
                      + "(an option it does not support)")
      }
      ignored.append(name)
    }
    return ForeignEncoder(path: path, scheme: scheme, config: c, configFile: configFile, ignored: ignored, plan: plan)
  }

  /// One residual block: checks the shapes of its tensors (named by the source: LayerNorms,
  /// Linears and LayerScales by prefix, the fused or separate q/k/v projections by full name)
  /// and adds their plan entries. A fused projection without a bias gets a zero bias.
  mutating func block(_ i: Int, w: Int, f: Int, ln1: String, qkvWeights: [String], qkvBiases: [String], out: String,
                      ln2: String, fc1: String, fc2: String, ls: [String]) throws(LiftError) {
    for ln in [ln1, ln2] { _ = try take(ln + ".weight", [w]); _ = try take(ln + ".bias", [w]) }
    let rows = qkvWeights.count == 3 ? w : 3 * w
    for name in qkvWeights { _ = try take(name, [rows, w]) }
    for name in qkvBiases where has(name) || qkvWeights.count == 3 { _ = try take(name, [rows]) }
    _ = try take(out + ".weight", [w, w]); _ = try take(out + ".bias", [w])
    _ = try take(fc1 + ".weight", [f, w]); _ = try take(fc1 + ".bias", [f])
    _ = try take(fc2 + ".weight", [w, f]); _ = try take(fc2 + ".bias", [w])
    for g in ls { _ = try take(g, [w]) }

    let p = "visual.transformer.resblocks.\(i)."
    plan += [(p + "ln_1.weight", .tensor(ln1 + ".weight")), (p + "ln_1.bias", .tensor(ln1 + ".bias"))]
    if qkvWeights.count == 3 {
      plan += [(p + "attn.in_proj_weight", .rows(qkvWeights)), (p + "attn.in_proj_bias", .rows(qkvBiases))]
    } else {
      plan += [(p + "attn.in_proj_weight", .tensor(qkvWeights[0])),
               (p + "attn.in_proj_bias", has(qkvBiases[0]) ? .tensor(qkvBiases[0]) : .zeros)]
    }
    plan += [(p + "attn.out_proj.weight", .tensor(out + ".weight")), (p + "attn.out_proj.bias", .tensor(out + ".bias")),
             (p + "ln_2.weight", .tensor(ln2 + ".weight")), (p + "ln_2.bias", .tensor(ln2 + ".bias")),
             (p + "mlp.c_fc.weight", .tensor(fc1 + ".weight")), (p + "mlp.c_fc.bias", .tensor(fc1 + ".bias")),
             (p + "mlp.c_proj.weight", .tensor(fc2 + ".weight")), (p + "mlp.c_proj.bias", .tensor(fc2 + ".bias"))]
    if ls.count == 2 { plan += [(p + "ls_1.gamma", .tensor(ls[0])), (p + "ls_2.gamma", .tensor(ls[1]))] }
  }
}

extension Model {
  /// A model whose image tower is the pretrained encoder in `path` (any ForeignScheme) and whose
  /// LIFT head is new (initialised from `options.seed`). At another image size than the source's,
  /// the positional embedding is resampled to the new grid. Returns what was detected too.
  public static func importing(path: String, options: ImportOptions) throws(LiftError) -> (model: Model, source: ForeignEncoder) {
    let source = try ForeignImport.describe(path: path, options: options)
    var config = source.config
    let sourceGrid = config.gridSize
    if let size = options.imageSize {
      guard size >= config.patch, size % config.patch == 0 else {
        throw .argument("image size \(size) is not a positive multiple of the source's patch size \(config.patch)")
      }
      config.imageSize = size
    }
    try config.validate()
    let model = try Model(config: config, seed: options.seed)
    let reader = try SafeTensors.Reader(path: path)
    for (target, origin) in source.plan {
      guard let tensor = model.layout.find(target) else { throw .internal("import plan names unknown tensor '\(target)'") }
      try ForeignImport.fill(model.parameters + tensor.offset, count: tensor.count, from: origin, reader: reader,
                             config: config, sourceGrid: sourceGrid, target: target)
      if let j = VectorOps.firstNonFinite(model.parameters + tensor.offset, tensor.count) {
        throw .value("'\(path)': \(origin.describe(element: j, of: tensor.count)) holds a non-finite value (NaN or "
                     + "infinity); it would become '\(target)'")
      }
    }
    return (model, source)
  }
}

extension ForeignImport {
  /// Writes one liblift tensor (`count` floats at `out`) from the file.
  static func fill(_ out: UnsafeMutablePointer<Float>, count: Int, from origin: ForeignSource, reader: SafeTensors.Reader,
                   config c: ModelConfig, sourceGrid: Int, target: String) throws(LiftError) {
    func elements(_ name: String) -> Int { reader.tensors[name]?.shape.reduce(1, *) ?? -1 }
    func requireCount(_ name: String, _ expected: Int) throws(LiftError) {
      guard elements(name) == expected else {
        throw .shape("'\(reader.path)': tensor '\(name)' has \(elements(name)) elements; '\(target)' needs \(expected)")
      }
    }
    switch origin {
    case .tensor(let name):
      try requireCount(name, count)
      try reader.readConverted(name, into: out)
    case .rows(let names):
      let part = count / names.count
      for (i, name) in names.enumerated() {
        try requireCount(name, part)
        try reader.readConverted(name, into: out + i * part)
      }
    case .zeros:
      out.update(repeating: 0, count: count)
    case .positional(let name, let classRow, let skip):
      let w = c.width, rows = elements(name) / w
      let source = try allocateFloats(max(rows * w, 1), what: "positional embedding of '\(reader.path)'")
      defer { source.deallocate() }
      try reader.readConverted(name, into: source)
      let first = classRow ? 1 + skip : 0
      guard rows - first == sourceGrid * sourceGrid else {
        throw .shape("'\(reader.path)': tensor '\(name)' has \(rows) rows; expected \(first) + \(sourceGrid)^2")
      }
      if classRow { out.update(from: source, count: w) } else { out.update(repeating: 0, count: w) }
      let grid = Array(UnsafeBufferPointer(start: source + first * w, count: sourceGrid * sourceGrid * w))
      let resampled = PositionalResampling.resample(grid, from: sourceGrid, to: c.gridSize, width: w)
      (out + w).update(from: resampled, count: resampled.count)
    case .registers(let name, let positional):
      try requireCount(name, count)
      try reader.readConverted(name, into: out)
      // Registers placed among the positions in the source (timm's default): their position
      // rows follow the class row and fold into the register tokens (constants either way).
      if let positional {
        let total = elements(positional)
        let rows = try allocateFloats(max(total, 1), what: "positional embedding of '\(reader.path)'")
        defer { rows.deallocate() }
        try reader.readConverted(positional, into: rows)
        let w = c.width
        for i in 0..<count { out[i] += rows[w + i] }
      }
    }
  }
}
