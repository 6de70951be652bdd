// lift-bench: training-step throughput of liblift against the machine's matrix-product ceiling.
//
// With no arguments it runs every configuration (ViT-Ti/16 and ViT-S/16 at batch 32, in fp32 and,
// where the CPU has bfloat16 dot products, bf16), each in a child process (so peak RSS is per
// configuration), and prints one JSON line per configuration:
//   step time (median of the timed steps after warm-up), images/s, achieved GFLOP/s (matrix
//   products of forward + backward, see FlopCount), the ceiling: liblift's own product (oneDNN,
//   split over the workers as a step splits it) on a 4096^3 problem in the step's precision,
//   measured in the same process, their ratio, OpenBLAS sgemm on the same problem for reference
//   (its own threads, one per core), and peak RSS. LIFT_PROFILE=1 adds a per-phase breakdown.
// Options: --steps N (timed steps, default 7), --warmup N (default 2), --precision fp32|bf16|all,
// --only NAME[:BATCH], --text-dim N (caption embedding width, default 4096; the default job's
// model is ViT-XS/14-28 at batch 256 with --text-dim 384), --unlocked-groups N (lock the tower but its last N layer groups, as
// lift train --lock-unlocked-groups; 0 = head only; achieved GFLOP/s and the ratio are then
// null: compare images/s), --cached-features (with the whole tower locked: the head-only step on
// pooled features computed once, as lift train does then; also reports how fast the tower makes
// those features, the one-time cost per image), and --products (GFLOP/s of every product shape of a step: OpenBLAS sgemm
// with its own threads, and liblift's oneDNN float32 and bfloat16 products on its workers).
import CBLAS
import Glibc
import Lift

struct BenchCase {
  let preset: String
  let batch: Int
  var textDim = 4096
  var name: String { "\(preset):\(batch)" }
}

let defaultCases = [BenchCase(preset: "ViT-Ti/16", batch: 32), BenchCase(preset: "ViT-S/16", batch: 32)]

/// Median GFLOP/s of liblift's own product on an n^3 problem in `precision` (the step's ceiling).
func productCeiling(_ precision: ModelConfig.Precision, n: Int = 4096) throws -> Double {
  let shape = ProductBenchmark.Shape(label: "square", m: n, n: n, k: n, transA: false, transB: false)
  return try ProductBenchmark.gflops(shape, backend: precision == .bf16 ? .oneDNNBFloat16 : .oneDNNFloat32)
}

func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Peak resident set size of this process in bytes (VmHWM).
func peakRSS() -> Int {
  guard let f = fopen("/proc/self/status", "r") else { return -1 }
  defer { fclose(f) }
  var line = [CChar](repeating: 0, count: 256)
  while fgets(&line, 256, f) != nil {
    let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if s.hasPrefix("VmHWM:") {
      let kb = s.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? -1
      return kb * 1024
    }
  }
  return -1
}

/// Median sgemm GFLOP/s on an n x n x n product (the ceiling the step is compared with).
func sgemmGflops(n: Int = 4096, repeats: Int = 5) -> Double {
  let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
  let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
  let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
  defer { a.deallocate(); b.deallocate(); c.deallocate() }
  for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.1; c[i] = 0 }
  var times: [Double] = []
  for r in 0...repeats {
    let t0 = now()
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, c, Int32(n))
    if r > 0 { times.append(now() - t0) }
  }
  return 2 * Double(n * n * n) / median(times) / 1e9
}

func runCase(_ bc: BenchCase, precision: ModelConfig.Precision, steps: Int, warmup: Int, unlockedGroups: Int?,
             cachedFeatures: Bool) throws {
  var config = try ModelConfig.preset(bc.preset, textDim: bc.textDim)
  config.objective = .contrastive
  config.precision = precision
  var tc = TrainConfig()
  tc.batchCapacity = bc.batch
  tc.warmupSteps = 1
  tc.totalSteps = 1_000_000
  tc.unlockedGroups = unlockedGroups
  let model = try Model(config: config, seed: 1)
  let trainer = try Trainer(model: model, config: tc, seed: 1)
  var rng = Xoshiro256(seed: 2)
  let pixels = bc.batch * config.channels * config.imageSize * config.imageSize
  var images = [UInt8](repeating: 0, count: pixels)
  for i in 0..<pixels { images[i] = UInt8(truncatingIfNeeded: rng.next()) }
  var texts = [Float](repeating: 0, count: bc.batch * config.textDim)
  for i in 0..<texts.count { texts[i] = Float(rng.normal()) }
  let ceiling = try productCeiling(precision)
  let gemm = sgemmGflops()
  // --cached-features: the batch's pooled features, made once (best of 3 timings).
  var features = [Float](repeating: 0, count: cachedFeatures ? bc.batch * config.width : 0)
  var featureSeconds = Double.infinity
  if cachedFeatures {
    for _ in 0..<3 {
      let t0 = now()
      try images.withUnsafeBufferPointer { try model.features(.uint8NHWC($0.baseAddress!), count: bc.batch, into: &features) }
      featureSeconds = min(featureSeconds, now() - t0)
    }
  }
  var times: [Double] = []
  var lastLoss = 0.0
  for s in 0..<(warmup + steps) {
    let t0 = now()
    let stats = cachedFeatures ? try trainer.step(features: features, texts: texts, batch: bc.batch)
      : try images.withUnsafeBufferPointer { try trainer.step(images: .uint8NHWC($0.baseAddress!), texts: texts, batch: bc.batch) }
    let dt = now() - t0
    lastLoss = stats.loss
    if s >= warmup { times.append(dt) }
    if s == warmup - 1 { Profile.reset() }
  }
  let step = median(times)
  let flops = FlopCount.trainingStep(config, batch: bc.batch)
  let achieved = flops / step / 1e9
  func r(_ x: Double, _ digits: Double = 1000) -> Double { (x * digits).rounded() / digits }
  // A locked step does less than the FLOP count (the full step's): no achieved rate then.
  let locked = unlockedGroups != nil
  print("""
    {"config": "\(bc.preset)", "precision": "\(precision.name)", "batch": \(bc.batch), "image_size": \(config.imageSize), \
    "text_dim": \(config.textDim), "objective": "contrastive", "threads": \(Parallel_workers()), "isa": "\(ProductBenchmark.isa)", \
    "steps_timed": \(steps), "unlocked_groups": \(unlockedGroups.map(String.init) ?? "null"), \
    "cached_features": \(cachedFeatures)\(cachedFeatures ? ", \"feature_images_per_s\": \(r(Double(bc.batch) / featureSeconds, 100))" : ""), \
    "step_s_median": \(r(step, 10000)), "step_s_min": \(r(times.min()!, 10000)), "step_s_max": \(r(times.max()!, 10000)), \
    "images_per_s": \(r(Double(bc.batch) / step, 100)), "gflop_per_step": \(r(flops / 1e9, 10)), \
    "achieved_gflops": \(locked ? "null" : String(r(achieved, 10))), "product_ceiling_gflops": \(r(ceiling, 10)), \
    "ratio": \(locked ? "null" : String(r(achieved / ceiling))), \
    "openblas_sgemm_gflops": \(r(gemm, 10)), "openblas_core": "\(openBLASCore())", \
    "peak_rss_mb": \(peakRSS() / 1_048_576), "final_loss": \(r(lastLoss, 10000))}
    """)
  if Profile.enabled {
    let phases = Profile.report().map { "\"\($0.0)\": \(r($0.1 / Double(steps), 10000))" }.joined(separator: ", ")
    print("{\"config\": \"\(bc.preset)\", \"precision\": \"\(precision.name)\", \"profile_s_per_step\": {\(phases)}}")
  }
  fflush(nil)
}

func Parallel_workers() -> Int { liftWorkerCount }

/// Median GFLOP/s of OpenBLAS sgemm (its own threads) on a product shape.
func openBLASGflops(_ s: ProductBenchmark.Shape) -> Double {
  let a = [Float](repeating: 0.25, count: s.m * s.k), b = [Float](repeating: 0.5, count: s.k * s.n)
  var c = [Float](repeating: 0, count: s.m * s.n)
  let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
  let seconds = ProductBenchmark.medianSeconds(repeats: 5) {
    cblas_sgemm(CblasRowMajor, s.transA ? CblasTrans : CblasNoTrans, s.transB ? CblasTrans : CblasNoTrans,
                Int32(s.m), Int32(s.n), Int32(s.k), 1, a, Int32(lda), b, Int32(ldb), 0, &c, Int32(s.n))
  }
  return s.flops / seconds / 1e9
}

/// Per-shape GFLOP/s of a training step's products on every back end, one JSON line each.
func runProducts(_ bc: BenchCase) throws {
  let config = try ModelConfig.preset(bc.preset, textDim: bc.textDim)
  let backends = ProductBenchmark.Backend.allCases.filter { $0 != .oneDNNBFloat16 || ProductBenchmark.hasBFloat16 }
  for shape in ProductBenchmark.stepShapes(config, batch: bc.batch) {
    var fields = ["\"config\": \"\(bc.preset)\"", "\"batch\": \(bc.batch)", "\"product\": \"\(shape.label)\"",
                  "\"m\": \(shape.m)", "\"n\": \(shape.n)", "\"k\": \(shape.k)",
                  "\"openblas\": \((openBLASGflops(shape) * 10).rounded() / 10)"]
    for backend in backends {
      let g = try ProductBenchmark.gflops(shape, backend: backend)
      fields.append("\"\(backend.rawValue)\": \((g * 10).rounded() / 10)")
    }
    print("{" + fields.joined(separator: ", ") + "}")
    fflush(nil)
  }
}

// MARK: main
/// A line on stderr (through write(2): the C `stderr` global is shared mutable state).
func printError(_ message: String) {
  let line = message.hasSuffix("\n") ? message : message + "\n"
  line.utf8CString.withUnsafeBufferPointer { _ = write(2, $0.baseAddress!, $0.count - 1) }
}

/// The kernel set OpenBLAS picked for this CPU.
func openBLASCore() -> String {
  guard let name = openblas_get_corename() else { return "?" }
  return String(decoding: UnsafeBufferPointer(start: name, count: strlen(name)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

var args = Array(CommandLine.arguments.dropFirst())
var steps = 7, warmup = 2
var only: String?
var precisionArgument = "all"
var products = false
var unlockedGroups: Int?
var cachedFeatures = false
var textDim = 4096
while !args.isEmpty {
  let a = args.removeFirst()
  func value(_ flag: String) -> String {
    guard !args.isEmpty else { printError("lift-bench: \(flag) needs a value\n"); exit(2) }
    return args.removeFirst()
  }
  switch a {
  case "--steps": steps = Int(value(a)) ?? steps
  case "--warmup": warmup = Int(value(a)) ?? warmup
  case "--only": only = value(a)
  case "--precision": precisionArgument = value(a)
  case "--products": products = true
  case "--unlocked-groups": unlockedGroups = Int(value(a))
  case "--cached-features": cachedFeatures = true
  case "--text-dim":
    guard let d = Int(value(a)), d >= 1 else { printError("lift-bench: --text-dim needs a positive integer\n"); exit(2) }
    textDim = d
  case "-h", "--help":
    print("usage: lift-bench [--steps N] [--warmup N] [--precision fp32|bf16|all] [--only PRESET:BATCH] [--text-dim N] [--unlocked-groups N] [--cached-features] [--products]")
    exit(0)
  default:
    printError("lift-bench: unknown argument \(a)\n")
    exit(2)
  }
}
if cachedFeatures {
  guard unlockedGroups ?? 0 == 0 else { printError("lift-bench: --cached-features needs the whole tower locked (--unlocked-groups 0)\n"); exit(2) }
  unlockedGroups = 0
}
let precisions: [ModelConfig.Precision]
switch precisionArgument {
case "all": precisions = ProductBenchmark.hasBFloat16 ? [.fp32, .bf16] : [.fp32]
default:
  guard let p = ModelConfig.Precision(name: precisionArgument) else {
    printError("lift-bench: --precision must be fp32, bf16 or all\n")
    exit(2)
  }
  precisions = [p]
}
func parseCase(_ text: String, textDim: Int) -> BenchCase {
  let parts = text.split(separator: ":")
  return BenchCase(preset: String(parts[0]), batch: parts.count > 1 ? Int(parts[1]) ?? 32 : 32, textDim: textDim)
}
let cases = only.map { [parseCase($0, textDim: textDim)] }
  ?? defaultCases.map { BenchCase(preset: $0.preset, batch: $0.batch, textDim: textDim) }

if products {
  do {
    for bc in cases { try runProducts(bc) }
  } catch {
    printError("lift-bench: \(error)\n")
    exit(1)
  }
  exit(0)
}

if only != nil, precisions.count == 1 {
  do {
    try runCase(cases[0], precision: precisions[0], steps: steps, warmup: warmup, unlockedGroups: unlockedGroups,
                cachedFeatures: cachedFeatures)
  } catch {
    printError("lift-bench: \(error)\n")
    exit(1)
  }
  exit(0)
}

// Each configuration in its own process, so peak RSS belongs to it alone.
var status: Int32 = 0
for bc in cases {
  for precision in precisions {
    var pid = pid_t()
    let argv = [CommandLine.arguments[0], "--only", bc.name, "--precision", precision.name, "--steps", String(steps),
                "--warmup", String(warmup), "--text-dim", String(textDim)] + (unlockedGroups.map { ["--unlocked-groups", String($0)] } ?? [])
      + (cachedFeatures ? ["--cached-features"] : [])
    var cargs = argv.map { strdup($0) } + [nil]
    let rc = posix_spawn(&pid, "/proc/self/exe", nil, nil, &cargs, environ)
    cargs.forEach { free($0) }
    guard rc == 0 else { printError("lift-bench: cannot spawn: \(rc)\n"); exit(1) }
    var ws: Int32 = 0
    waitpid(pid, &ws, 0)
    if ws != 0 { status = 1 }
  }
}
exit(status)
