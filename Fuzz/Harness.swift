// libFuzzer harnesses for liblift's readers. One binary holds every target; LIFT_FUZZ_TARGET
// picks which one LLVMFuzzerTestOneInput feeds (Fuzz/run sets it). Each input is handed to the
// reader the way a user's file or argument would reach it; any LiftError is a pass, anything
// that ends the process (a Swift trap, a signal) is a finding.
import ArgumentParser
import Glibc
@testable import Lift


enum FuzzTarget: String, CaseIterable {
  /// safetensors files: Model.load, Trainer.load, and the import of pretrained encoders.
  case safetensors
  /// The JSON reader and the model / train config decoders fed by it; the same bytes as a CSV
  /// index file of an image folder.
  case json
  /// Embedding stores (HDF5): open, shape, read the rows, look a key up; the same file as a feature cache
  /// (lift train --feature-cache) of 8 x 4 features with fingerprint "fuzz".
  case store
  /// Image-caption datasets (HDF5): open, read the images, caption rows, labels, class prompts.
  case dataset
  /// The variable-length strings of stores and datasets (keys, captions, class names, pair
  /// types). libhdf5 1.10 itself crashes and hangs on some corrupted string heaps (found by this
  /// target, inside H5HG_read); Fuzz/run counts those apart from liblift's own findings.
  case strings
  /// webdataset tar shards: the header walk (ustar, GNU long names, pax), grouping by key, and
  /// reading each sample's image and embedding member as the loader does.
  case tar
  /// Encoded images (JPEG, PNG, WebP, anything): the header, a full decode, and the loader's
  /// per-sample work (decode at full and reduced scale + centre view and a crop, bicubic).
  case image
  /// Benchmark suites' annotation files (lift eval --suite): the same bytes as COCO's captions
  /// JSON, a Flickr30k split (JSON or CSV), a SugarCrepe subset, a captions JSONL, an ImageNet
  /// label file and class table, and a templates file, over a folder holding two images.
  case suite
  /// The `lift` command line: arguments (separated by newlines or NUL bytes) through the
  /// command's parser and the checks of `lift train`'s settings; bytes after a 0x01 byte become
  /// a --config JSON file.
  case cli
  /// The untrusted open (LIFT_OPEN_UNTRUSTED) of HDF5 and safetensors files: the check in a
  /// child process (the shipped lift-file-check helper loading the release liblift.so), then,
  /// only if it passed, the full read in this process. The host must never crash: every input
  /// that crashes or hangs libhdf5 has to be refused by the child first. Seeds: the store,
  /// dataset and strings corpora.
  case untrusted
}

let target: FuzzTarget = {
  let name = getenv("LIFT_FUZZ_TARGET").map { String(cString: $0) } ?? ""
  guard let t = FuzzTarget(rawValue: name) else {
    fputs("LIFT_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue))\n", stderr)
    exit(2)
  }
  return t
}()

/// Inputs that are files go through one file per process in memory-backed storage.
let scratchPath: String = {
  let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
  return "\(dir)/lift-fuzz-\(getpid())"
}()

func withFile(_ data: UnsafePointer<UInt8>, _ size: Int, _ body: (String) throws(LiftError) -> Void) {
  let fd = open(scratchPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
  guard fd >= 0 else { return }
  var done = 0
  while done < size {
    let n = write(fd, data + done, size - done)
    if n <= 0 { break }
    done += n
  }
  close(fd)
  do { try body(scratchPath) } catch {}
}

func fuzzSafeTensors(_ path: String) throws(LiftError) {
  // Loading is the attack surface (the header, metadata, configs, tensors); what a loaded model
  // computes is the same code as for any model.
  _ = try? Model.load(path: path)
  _ = try? Trainer.load(path: path, batchCapacity: 1)
  // As a pretrained encoder of another scheme: detection, shapes, the plan, then the import
  // itself when the model it describes is small (a header may legitimately ask for gigabytes).
  var options = ImportOptions(textDim: 4)
  options.heads = 1
  options.activation = .gelu
  let source = try ForeignEncoder.describe(path: path, options: options)
  guard ParameterLayout(source.config, withLogitBias: false).totalCount <= 1 << 22 else { return }
  _ = try Model.importing(path: path, options: options)
}

func fuzzJSON(_ bytes: [UInt8]) throws(LiftError) {
  _ = try? IndexFile.csvRows(bytes, path: "input")  // image folders' CSV index files
  let json = try JSON.parse(bytes, what: "input")
  _ = json.serialized
  _ = try? ModelConfig(json: json, source: "input")
  _ = try? TrainConfig(json: json, source: "input")
}

func fuzzStore(_ path: String) throws(LiftError) {
  _ = try? FeatureCache.load(path: path)
  let store = try EmbeddingStore(paths: [path], options: EmbeddingStore.Options())
  _ = try? store.rows(forKey: Array("a.jpg".utf8))  // the key index (or the keys, indexed in memory)
  let rows = min(store.rows, 64), d = Int(store.dim)
  guard rows > 0, d <= 4096 else { return }
  var buffer = [Float](repeating: 0, count: Int(rows) * d)
  try buffer.withUnsafeMutableBufferPointer { (b) throws(LiftError) in
    try store.read(range: 0, count: rows, into: b.baseAddress!, capacity: b.count)
  }
}

func fuzzDataset(_ path: String) throws(LiftError) {
  let ds = try ImageDataset(paths: [path])
  if ds.encoded {
    let pipeline = ImagePipeline(size: 8, channels: 3, filter: .bicubic, maxPixels: 1 << 20)
    var out = [UInt8](repeating: 0, count: 8 * 8 * 3)
    for i in 0..<min(ds.count, 16) {
      let bytes = try ds.encodedImage(i)
      try? bytes.withUnsafeBytes { (b) throws(LiftError) in
        try out.withUnsafeMutableBufferPointer { (o) throws(LiftError) in
          try pipeline.render(b, what: "image", choose: { _, _ in (.centre, false) }, into: o.baseAddress!)
        }
      }
      _ = try ds.captionRows(of: i)
    }
    return
  }
  let n = min(ds.count, 16)
  guard n > 0, ds.imageBytes <= 1 << 20 else { return }
  let list = (0..<n).map { $0 }
  var pixels = [UInt8](repeating: 0, count: Int(n) * ds.imageBytes)
  try list.withUnsafeBufferPointer { (l) throws(LiftError) in
    try pixels.withUnsafeMutableBufferPointer { (p) throws(LiftError) in try ds.readPixels(l, into: p.baseAddress!) }
  }
  for i in 0..<n { _ = try ds.captionRows(of: i) }
  if ds.hasLabels {
    var labels = [Int64](repeating: 0, count: Int(n))
    try list.withUnsafeBufferPointer { (l) throws(LiftError) in
      try labels.withUnsafeMutableBufferPointer { (o) throws(LiftError) in try ds.readLabels(l, into: o.baseAddress!) }
    }
  }
}

func fuzzStrings(_ path: String) throws(LiftError) {
  if let store = try? EmbeddingStore(paths: [path], options: EmbeddingStore.Options()) {
    for name in ["keys", "captions"] where try store.hasStrings(name) {
      for r in 0..<min(store.rows, 64) { _ = try store.stringBytes(name, row: r) }
    }
  }
  let ds = try ImageDataset(paths: [path])
  _ = try ds.classNames()
  _ = try ds.compositionalPairs()
}

func fuzzCommandLine(_ bytes: [UInt8]) {
  let split = bytes.firstIndex(of: 1)
  let argumentBytes = split.map { bytes[..<$0] } ?? bytes[...]
  var arguments = argumentBytes.split(omittingEmptySubsequences: false) { $0 == 0 || $0 == 10 }
    .map { String(decoding: $0, as: UTF8.self) }
  if let split {
    let config = Array(bytes[(split + 1)...])
    config.withUnsafeBufferPointer { b in withFile(b.baseAddress ?? UnsafePointer(bitPattern: 1)!, b.count) { _ in } }
    arguments += ["--config", scratchPath]
  }
  do {
    let command = try LiftCLI.parseAsRoot(arguments)
    // `lift train` resolves and range-checks every setting, then the model and optimiser
    // configs, before it touches any data; that is the surface an option reaches.
    guard let train = command as? Train else { return }
    let settings = try TrainSettings(train)
    var model = settings.model
    model.textDim = 64
    try model.validate()
    _ = try settings.trainConfig(batchesPerEpoch: 1000, batchCapacity: settings.microBatch)
  } catch {}
}

func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) throws(LiftError) {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  let header = try ImageDecoder.header(bytes)
  // At most 2^22 pixels: a declared size is legitimate up to the limit, but fuzzing is about
  // the decoders' handling of damaged data, not about decoding large images.
  let limit: Int64 = 1 << 22
  _ = try? ImageDecoder.decode(bytes, header: header, channels: 1, maxPixels: limit, into: ScratchBuffer())
  var out = [UInt8](repeating: 0, count: 24 * 24 * 3)
  for (reduced, view) in [(false, Preprocess.View.centre), (true, .crop(x: 0, y: 0, width: header.width, height: header.height))] {
    let pipeline = ImagePipeline(size: 24, channels: 3, filter: .bicubic, reducedDecode: reduced, maxPixels: limit)
    try? out.withUnsafeMutableBufferPointer { (o) throws(LiftError) in
      try pipeline.render(bytes, what: "input", choose: { _, _ in (view, reduced) }, into: o.baseAddress!)
    }
  }
}

func fuzzTar(_ path: String) throws(LiftError) {
  let source = try TarShardSource(paths: [path], store: nil)
  let refs = try source.listShard(0)
  let arena = try ByteArena()
  let texts = try allocateFloats(max(refs.count, 1) * source.textDim, what: "texts")
  defer { texts.deallocate() }
  _ = try source.fetch(Array(refs.prefix(64)), images: true, into: arena, texts: texts) { _, n in n - 1 }
  _ = try DataSources.census(path)
}

/// A folder the suites' annotations may name: val2017/ with two (empty) image files, which
/// exist (so parsing goes past the existence check) and are never decoded here.
let suiteRoot: String = {
  let root = scratchPath + "-suite"
  mkdir(root, 0o700)
  mkdir(root + "/val2017", 0o700)
  for name in ["000000000139.jpg", "a.png"] { close(open(root + "/val2017/" + name, O_WRONLY | O_CREAT, 0o600)) }
  return root
}()

func fuzzSuite(_ path: String) throws(LiftError) {
  var at = BenchmarkSuite.Location(root: suiteRoot)
  at.annotations = path
  for name in [BenchmarkSuite.Name.coco, .flickr30k, .captions] {
    at.root = name == .coco ? suiteRoot : suiteRoot + "/val2017"
    _ = (try? BenchmarkSuite.open(name, at: at))?.texts
  }
  at.root = suiteRoot + "/val2017"
  _ = (try? BenchmarkSuite.open(.sugarcrepe, at: at))?.texts
  _ = (try? BenchmarkSuite.open(.imagenet, at: at))?.texts          // the input as a label file
  at.classes = path
  _ = (try? BenchmarkSuite.open(.imagenet, at: at))?.texts          // ... and as the class table
  _ = try? PromptTemplates.load(path)
}

/// The untrusted path's tallies, printed at exit (Fuzz/run reports them).
nonisolated(unsafe) var untrustedTally = (checked: 0, passed: 0, refused: 0, unsafe: 0)

/// The checking process as LIFT_OPEN_UNTRUSTED starts it: the helper with the library it loads
/// (LIFT_FUZZ_HELPER and LIFT_FUZZ_LIBRARY, set by Fuzz/run; this binary links Lift statically,
/// so the library cannot be found from it), the file, its kind and the memory budget.
func untrustedCommand(_ path: String, _ kind: FileCheck.Expected) throws(LiftError) -> [String] {
  guard let helper = getenv("LIFT_FUZZ_HELPER"), let library = getenv("LIFT_FUZZ_LIBRARY") else {
    throw .argument("LIFT_FUZZ_HELPER and LIFT_FUZZ_LIBRARY must name lift-file-check and liblift.so")
  }
  return [String(cString: helper), String(cString: library), path, String(kind.rawValue), String(MemoryBudget.bytes)]
}

func fuzzUntrusted(_ path: String) throws(LiftError) {
  if untrustedTally.checked == 0 {
    atexit {
      let t = untrustedTally
      fputs("untrusted path: \(t.checked) files checked, \(t.passed) passed and read in-process, \(t.refused) refused "
            + "(\(t.unsafe) of them crashed or hung the checking process)\n", stderr)
    }
  }
  // Each input is a new file to the check (the same path is rewritten with the same size within
  // one mtime tick, which the per-version cache is documented not to tell apart).
  UntrustedFiles.forgetAll()
  untrustedTally.checked += 1
  do {
    try UntrustedFiles.require(path, kind: .any, command: untrustedCommand)
  } catch {
    untrustedTally.refused += 1
    if error.status == LIFT_ERR_UNSAFE { untrustedTally.unsafe += 1 }
    return
  }
  untrustedTally.passed += 1
  _ = try FileCheck.readAll(path)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  switch target {
  case .safetensors: withFile(data, size, fuzzSafeTensors)
  case .json: try? fuzzJSON(Array(UnsafeBufferPointer(start: data, count: size)))
  case .store: withFile(data, size, fuzzStore)
  case .dataset: withFile(data, size, fuzzDataset)
  case .strings: withFile(data, size, fuzzStrings)
  case .image: try? fuzzImage(data, size)
  case .tar: withFile(data, size, fuzzTar)
  case .suite: withFile(data, size, fuzzSuite)
  case .cli: fuzzCommandLine(Array(UnsafeBufferPointer(start: data, count: size)))
  case .untrusted: withFile(data, size, fuzzUntrusted)
  }
  return 0
}
