import Glibc
import Lift

/// Where the default dataset and its captions live.
enum Defaults {
  static let captionsAsset = "fashion-mnist-captions.h5"

  /// The Fashion-MNIST captions file: --captions, $LIFT_ASSETS, the data folder of an installed
  /// `lift` (<prefix>/bin/lift -> <prefix>/share/liblift/), ./assets, or the assets folder of the
  /// checkout this binary was built in (.build/<config>/lift-cli -> assets/).
  static func captionsPath(_ given: String?) throws -> String {
    if let given {
      guard exists(given) else { throw CLIError("captions file '\(given)' does not exist") }
      return given
    }
    var candidates: [String] = []
    if let env = getenv("LIFT_ASSETS") { candidates.append(String(cString: env) + "/" + captionsAsset) }
    let exe = executableDirectory()
    if let exe { candidates.append(exe + "/../share/liblift/" + captionsAsset) }
    candidates.append("assets/" + captionsAsset)
    if let exe {
      candidates.append(exe + "/../../assets/" + captionsAsset)
      candidates.append(exe + "/../../../assets/" + captionsAsset)
    }
    for c in candidates where exists(c) { return c }
    throw CLIError("cannot find \(captionsAsset) (looked in \(candidates.joined(separator: ", "))); pass --captions")
  }

  static func executableDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = path.lastIndex(of: "/") else { return nil }
    return String(path[..<slash])
  }

  /// The default dataset: Fashion-MNIST from Debian's files, built into dataDir on first use.
  /// The captions file is checked (`checks`) before it is read.
  static func fashionMNIST(dataDir: String, captions: String?, idxDirectory: String = FashionMNIST.debianDirectory,
                           checks: InputChecks, quiet: Bool = false) throws -> (train: String, test: String) {
    let folder = dataDir + "/fashion-mnist"
    let train = folder + "/train.h5", test = folder + "/test.h5"
    if exists(train) && exists(test) { return (train, test) }
    guard exists(idxDirectory + "/train-images-idx3-ubyte.gz") else {
      throw CLIError("Fashion-MNIST is not installed (\(idxDirectory) is missing); run: apt-get install -y dataset-fashion-mnist")
    }
    let captionsPath = try captionsPath(captions)
    try checks.files([captionsPath], as: .captions)
    try makeDirectories(folder)
    if !quiet { Console.line("building the Fashion-MNIST dataset in \(folder) from \(idxDirectory) ...") }
    let start = now()
    _ = try cli { () throws(LiftError) in
      try FashionMNIST.build(idxDirectory: idxDirectory, captionsPath: captionsPath, outDirectory: folder, overwrite: true)
    }
    if !quiet { Console.line("built \(train) and \(test) in \(fixed(now() - start, 1)) s") }
    return (train, test)
  }
}
