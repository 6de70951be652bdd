import ArgumentParser
import Glibc
import Lift

/// `lift check`: reads files from untrusted sources in full, each in a child process, so that a
/// crash or hang inside libhdf5 (which liblift cannot rule out for maliciously crafted HDF5
/// metadata) ends the child, not the caller, and is reported as one line.
struct Check: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Read files in full in a separate process: is it safe to open them in-process?",
    discussion: """
      For each file (a model or checkpoint .safetensors, an embedding store or an image-caption \
      dataset .h5, tar shards or an image folder), a child process opens it and reads everything \
      liblift can read from it: every tensor, row, image (decoded), caption, label, class name \
      and string. A file passes when that ends \
      without error; a LiftError is reported as the reason the file is unusable; a crash or a \
      hang (--timeout) of the child means the file trips a fault below liblift (in libhdf5) and \
      must not be opened in-process. Exit status 0 only if every file passes.
      """)

  @Argument(help: "Files to check.") var paths: [String]
  @Option(name: .long, help: "Seconds a file may take (default 120).") var timeout: Double = 120
  @Flag(name: .long, help: .hidden) var inProcess = false

  func run() throws {
    if inProcess {
      guard paths.count == 1 else { throw CLIError("--in-process takes one file") }
      Console.out(try readEverything(paths[0]))
      return
    }
    guard timeout.isFinite, timeout > 0, timeout <= 86400 else { throw CLIError("--timeout must be in (0, 86400] seconds") }
    var failed = 0
    for path in paths {
      let (ok, message) = checkInChild(path)
      Console.out("\(path): \(message)")
      if !ok { failed += 1 }
    }
    if failed > 0 { throw ExitCode(1) }
  }

  /// Runs `lift check --in-process path` and reads its one-line verdict.
  func checkInChild(_ path: String) -> (Bool, String) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return (false, "cannot create a pipe: \(String(cString: strerror(errno)))") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    let argv = [CommandLine.arguments[0], "check", "--in-process", path]
    var cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) } }
    var pid = pid_t()
    let rc = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &cargs, environ)
    close(pipeFDs[1])
    guard rc == 0 else { close(pipeFDs[0]); return (false, "cannot start a checking process (error \(rc))") }
    // Read the child's output (bounded) until it exits or the time runs out.
    var output: [UInt8] = []
    let deadline = now() + timeout
    var status: Int32 = 0
    var finished = false
    var fds = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
    var buffer = [UInt8](repeating: 0, count: 4096)
    while now() < deadline {
      if poll(&fds, 1, 100) > 0 {
        let n = read(pipeFDs[0], &buffer, buffer.count)
        if n > 0 && output.count < 1 << 16 { output += buffer[0..<n] }
        if n <= 0 { fds.fd = -1 }
      }
      if waitpid(pid, &status, WNOHANG) == pid { finished = true; break }
    }
    close(pipeFDs[0])
    if !finished {
      kill(pid, SIGKILL)
      waitpid(pid, &status, 0)
      return (false, "reading it did not finish within \(fixed(timeout, 0)) s (a hang below liblift, in libhdf5): do not open it in-process")
    }
    let text = String(decoding: output, as: UTF8.self)
    let lastLine = text.split(separator: "\n").last.map(String.init) ?? ""
    let signal = status & 0x7f, exitStatus = (status >> 8) & 0xff
    if signal != 0 {
      return (false, "reading it crashed the checking process (signal \(signal)), a fault below liblift (in libhdf5): do not open it in-process")
    }
    return (exitStatus == 0, exitStatus == 0 ? "ok: \(lastLine)" : "unusable: \(lastLine.replacingPrefix("Error: "))")
  }

  /// Opens `path` as what it is (judged from its content) and reads all of it; returns a
  /// one-line summary.
  func readEverything(_ path: String) throws -> String {
    if DataSources.isDirectory(path) || path.contains("{") || path.lowercased().hasSuffix(".tar") {
      let text = try cli { () throws(LiftError) in try DataSources.decodeAll(path) }
      return String(text.dropFirst(path.count + 2))  // the checker prints the path itself
    }
    switch try cli({ () throws(LiftError) in try LiftFileKind.of(path: path) }) {
    case .safetensors:
      let model = try cli { () throws(LiftError) in try Model.load(path: path) }
      if let (trainer, _) = try? Trainer.load(path: path, batchCapacity: 1) {
        return "training checkpoint at step \(trainer.step), \(model.layout.parameterCount) parameters"
      }
      return "model, \(model.layout.parameterCount) parameters"
    case .dataset:
      let ds = try cli { () throws(LiftError) in try ImageDataset(paths: [path]) }
      var undecodable = DataLoader.BadSamples()
      try cli { () throws(LiftError) in
        var pixels = [UInt8](repeating: 0, count: ds.imageBytes)
        let scratch = ScratchBuffer()
        for i in 0..<ds.count {
          if ds.encoded {
            let bytes = try ds.encodedImage(i)
            let failure = bytes.withUnsafeBytes { (b) -> LiftError? in
              do throws(LiftError) {
                _ = try ImageDecoder.decode(b, header: try ImageDecoder.header(b), channels: 3, into: scratch)
                return nil
              } catch {
                return error
              }
            }
            if let failure {
              guard let problem = failure.sampleProblem else { throw failure }
              undecodable.add(problem, "image \(i): \(failure.message)")
            }
          } else {
            try [i].withUnsafeBufferPointer { (l) throws(LiftError) in
              try pixels.withUnsafeMutableBufferPointer { (p) throws(LiftError) in try ds.readPixels(l, into: p.baseAddress!) }
            }
          }
          _ = try ds.captionRows(of: i)
        }
        _ = try ds.classNames()
        _ = try ds.compositionalPairs()
        try readStore(ds.captions)
      }
      return "dataset of \(ds.count) \(ds.encoded ? "encoded " : "")images, \(ds.captions.rows) captions, \(ds.classCount) classes"
        + (undecodable.total > 0 ? "; \(undecodable.total) images do not decode (training skips them): \(undecodable.description)" : "")
    case .captions:
      let file = try cli { () throws(LiftError) in try CaptionsFile(path: path) }
      try cli { () throws(LiftError) in
        _ = try file.classNames()
        try readStore(file.captions)
      }
      return "captions file of \(file.captions.rows) captions, \(file.classCount) classes"
    case .store:
      let store = try cli { () throws(LiftError) in try EmbeddingStore(paths: [path]) }
      try cli { () throws(LiftError) in try readStore(store) }
      return "embedding store of \(store.rows) x \(store.dim)"
    case .featureCache:
      let cache = try cli { () throws(LiftError) in try FeatureCache.load(path: path) }
      return "feature cache of \(cache.count) x \(cache.width)"
    case .otherHDF5:
      throw CLIError("'\(path)' is an HDF5 file but not a liblift one (no images/pixels, images/encoded, captions/embeddings, embeddings or feature-cache features dataset)")
    case .unknown:
      throw CLIError("'\(path)' is neither safetensors nor HDF5")
    }
  }

  func readStore(_ store: EmbeddingStore) throws(LiftError) {
    try store.validate()
    for name in ["keys", "captions", "captions/text"] where (try? store.hasStrings(name)) == true {
      for r in 0..<store.rows { _ = try store.stringBytes(name, row: r) }
    }
  }
}

extension String {
  func replacingPrefix(_ prefix: String) -> String { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self }
}
