import ArgumentParser
import Lift

/// The options of the commands that read data (train, eval, encode, build): which input files
/// are read in full in a separate process before this one opens them.
struct InputCheckOptions: ParsableArguments {
  @Flag(name: .long, help: """
    Check every HDF5 input in a separate process before opening it, also files lift wrote or \
    checked before, and tar shards and image folders (every image decoded). By default only \
    HDF5 files lift did not write or check are.
    """) var untrustedData = false
  @Flag(name: .long, help: "Open input files without checking them in a separate process first.") var trustInputs = false

  func validate() throws {
    guard !(untrustedData && trustInputs) else { throw ValidationError("--untrusted-data and --trust-inputs exclude each other") }
  }

  /// The checks these options ask for (also from a --config file, where both may be set).
  func checks() throws -> InputChecks {
    guard !(untrustedData && trustInputs) else { throw CLIError("--untrusted-data and --trust-inputs exclude each other") }
    return InputChecks(policy: untrustedData ? .all : trustInputs ? .none : .unknownHDF5)
  }
}

/// Input files from outside, checked before they are opened in this process.
///
/// An HDF5 file is parsed by libhdf5, which can crash or loop on crafted metadata where
/// liblift's own checks cannot reach. Before such a file is opened here, a child process
/// (`lift check --in-process`, under the memory budget, `UntrustedFiles.timeout`) reads all of
/// it; a file that crashes or hangs the child is refused with a message and never opened.
/// Files lift wrote, and versions that passed a check before, are known (`KnownFiles`) and
/// opened directly. Safetensors, JSON, CSV and index files are read by liblift's own parsers
/// and opened directly; images in tar shards and folders are decoded sample by sample, and a
/// sample that fails is left out and counted.
struct InputChecks {
  enum Policy {
    /// HDF5 files lift did not write or check before (the default).
    case unknownHDF5
    /// Every HDF5 input, known or not, and image sources (--untrusted-data).
    case all
    /// Nothing (--trust-inputs).
    case none
  }

  let policy: Policy

  /// Checks the data of a `DataSources.Request` (--data with --index): liblift dataset files,
  /// or with `.all` tar shards and image folders too.
  func data(_ paths: [String], index: String?) throws {
    guard policy != .none, !paths.isEmpty else { return }
    let (kind, files) = try cli { () throws(LiftError) in
      try DataSources.detect(DataSources.Request(paths: paths, index: index))
    }
    if kind == .dataset {
      for file in files { try check(file, as: .dataset) }
    } else if policy == .all {
      for file in files { try check(file, as: .imageSource) }
    }
  }

  /// Checks each of `paths` (brace patterns expanded) as `kind`.
  func files(_ paths: [String], as kind: FileCheck.Expected) throws {
    guard policy != .none else { return }
    for pattern in paths {
      // As DataSources.open reads them: a pattern that does not expand is a literal path.
      for path in (try? DataSources.expandBraces(pattern)) ?? [pattern] { try check(path, as: kind) }
    }
  }

  /// Checks `path` as `kind` if it exists (an output that may already be there, such as a cache).
  func existingFile(_ path: String?, as kind: FileCheck.Expected) throws {
    guard let path, exists(path) else { return }
    try files([path], as: kind)
  }

  private func check(_ path: String, as kind: FileCheck.Expected) throws {
    let name = String(describing: kind)
    let version = try cli { () throws(LiftError) in try FileVersion(path: path) }
    if policy == .unknownHDF5 && KnownFiles.contains(version, kind: name) { return }
    let passed = try cli { () throws(LiftError) in try UntrustedFiles.require(path, kind: kind, command: Check.command) }
    KnownFiles.remember(path, passed, kind: name)
  }
}
