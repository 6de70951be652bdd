import ArgumentParser
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
  @Option(name: .long, parsing: .unconditional, help: "Seconds a file may take.") var timeout: Double = 120
  @Flag(name: .long, help: .hidden) var inProcess = false
  @Option(name: .long, parsing: .unconditional, help: .hidden) var memoryLimit: UInt64 = 0
  @Option(name: .long, parsing: .unconditional, help: .hidden) var kind: Int32 = FileCheck.Expected.any.rawValue

  func run() throws {
    if inProcess {
      // Ends with the process waiting for it, as lift-file-check does.
      FileCheck.endWithParent()
      guard paths.count == 1 else { throw CLIError("--in-process takes one file") }
      guard let expected = FileCheck.Expected(rawValue: kind) else { throw CLIError("--kind \(kind) is not a file kind") }
      FileCheck.limitMemory(memoryLimit)
      let outcome = Result { () throws(LiftError) in try FileCheck.readAll(paths[0], expecting: expected) }
      Console.out(FileCheck.verdictLine(outcome))
      if case .failure = outcome { throw ExitCode(1) }
      return
    }
    guard timeout.isFinite, timeout > 0, timeout <= 86400 else { throw CLIError("--timeout must be in (0, 86400] seconds") }
    var failed = 0
    for path in paths {
      let (ok, message) = Check.inChild(path, timeout: timeout)
      Console.out("\(path): \(message)")
      if !ok { failed += 1 }
    }
    if failed > 0 { throw ExitCode(1) }
  }

  /// Reads `path` in full in a child process (this program, `check --in-process`, under the
  /// memory budget); (passed, one-line verdict).
  static func inChild(_ path: String, timeout: Double) -> (Bool, String) {
    let verdict = FileCheck.isolated(command: command(path, .any), timeout: timeout)
    switch verdict {
    case .passed(let summary): return (true, "ok: \(summary)")
    case .invalid(let e): return (false, "unusable: \(e.message)")
    default: return (false, FileCheck.error(of: verdict, path: path)?.message ?? "")
    }
  }

  /// The argv of a child `lift` that reads `path` in full as `kind` under the memory budget.
  static func command(_ path: String, _ kind: FileCheck.Expected) -> [String] {
    ["/proc/self/exe", "check", "--in-process", "--memory-limit", String(MemoryBudget.bytes), "--kind", String(kind.rawValue),
     "--", path]
  }
}
