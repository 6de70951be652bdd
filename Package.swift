// swift-tools-version:6.0
// liblift: LIFT (Language-Image alignment with Fixed Text encoders) trainer as a library.
//
// Products
//   liblift.so  (`lift` dynamic library) - the C ABI declared in Include/lift.h.
//
// Build the self-contained library (Swift runtime linked statically):
//   swift build -c release -Xswiftc -static-stdlib
import Foundation
import PackageDescription

/// LIFT_VERSION_MAJOR of Include/lift.h, the version's one source: the shared library's SONAME is
/// liblift.so.<major>.
let versionMajor: String = {
  let header = Context.packageDirectory + "/Include/lift.h"
  let text = (try? String(contentsOfFile: header, encoding: .utf8)) ?? ""
  for line in text.split(separator: "\n") where line.hasPrefix("#define LIFT_VERSION_MAJOR ") {
    return String(line.split(separator: " ")[2])
  }
  fatalError("\(header) defines no LIFT_VERSION_MAJOR")
}()

// Swift kernels are compiled for Haswell-class CPUs (AVX2, FMA, F16C; x86-64-v3) on x86_64 hosts; oneDNN picks its
// own kernels (AVX-512, AVX512-BF16, AMX) at run time.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif

let package = Package(
  name: "liblift",
  products: [
    .library(name: "lift", type: .dynamic, targets: ["LiftShared"]),
    .executable(name: "lift-bench", targets: ["lift-bench"]),
    // The `lift` command (bin/lift runs it; SwiftPM cannot name an executable like the library).
    .executable(name: "lift-cli", targets: ["lift-cli"]),
    // The process lift_file_check() starts to read an untrusted file (installed beside liblift).
    .executable(name: "lift-file-check", targets: ["lift-file-check"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
  ],
  targets: [
    // The public C header, imported by Swift so the ABI types have one definition.
    .systemLibrary(name: "CLiftABI", path: "Include"),
    // OpenBLAS: only lift-bench links it, to measure oneDNN against it.
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                   providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CHDF5", pkgConfig: "hdf5",
                   providers: [.apt(["libhdf5-dev"])]),
    .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    // oneDNN (Debian's libdnnl-dev ships no pkg-config file; the module map links libdnnl).
    .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
    // Image decoders (Debian: libturbojpeg0-dev, libpng-dev, libwebp-dev) behind a C shim, so that
    // libpng's longjmp and every decoder error path stay in C.
    // DWARF 4: valgrind 3.19 (Debian 12, the examples' memcheck) cannot read clang's default DWARF 5.
    .target(
      name: "LiftCodecs",
      path: "Sources/LiftCodecs",
      cSettings: [.unsafeFlags(["-gdwarf-4"])],
      linkerSettings: [.linkedLibrary("turbojpeg"), .linkedLibrary("png16"), .linkedLibrary("webp")]
    ),
    // Kernels written with AVX512-BF16 intrinsics (the fused bf16 attention core); each function is
    // compiled for that instruction set alone and called only after a run-time CPU check.
    .target(
      name: "LiftKernelsC",
      path: "Sources/LiftKernelsC",
      cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-gdwarf-4"])]
    ),
    // dladdr and pipe2, which Swift's Glibc module does not declare.
    .target(name: "LiftSystemC", path: "Sources/LiftSystemC", cSettings: [.unsafeFlags(["-gdwarf-4"])],
            linkerSettings: [.linkedLibrary("dl")]),
    .target(
      name: "Lift",
      dependencies: ["CLiftABI", "CHDF5", "CZlib", "CDNNL", "LiftCodecs", "LiftKernelsC", "LiftSystemC"],
      swiftSettings: cpuFlags
    ),
    // liblift.so: the C ABI only (version script), SONAME liblift.so.<major>.
    .target(
      name: "LiftShared",
      dependencies: ["Lift"],
      path: "Sources/LiftShared",
      exclude: ["lift.map"],
      linkerSettings: [.unsafeFlags(["-use-ld=lld", "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/LiftShared/lift.map",
                                     "-Xlinker", "-soname=liblift.so.\(versionMajor)"])]
    ),
    .executableTarget(name: "lift-bench", dependencies: ["Lift", "CBLAS"], path: "Sources/LiftBench",
                      swiftSettings: cpuFlags),
    .executableTarget(name: "lift-cli", dependencies: ["Lift", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                      path: "Sources/LiftCLI", swiftSettings: cpuFlags),
    .executableTarget(name: "lift-file-check", path: "Sources/LiftFileCheck", cSettings: [.unsafeFlags(["-gdwarf-4"])],
                      linkerSettings: [.linkedLibrary("dl")]),
    .testTarget(name: "LiftTests", dependencies: ["Lift"], swiftSettings: cpuFlags),
  ],
  swiftLanguageModes: [.v6]
)
