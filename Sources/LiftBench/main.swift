// lift-bench: training-step throughput of liblift against the machine's sgemm ceiling.
//
// With no arguments it runs every configuration, each in a child process (so peak RSS is per
// configuration), and prints one JSON line per configuration:
//   step time (median of the timed steps after warm-up), images/s, achieved GFLOP/s (matrix
//   products of forward + backward, see FlopCount), the OpenBLAS sgemm GFLOP/s on a large square
//   problem measured in the same process, their ratio, and peak RSS.
// Options: --steps N (timed steps, default 7), --warmup N (default 2), --only NAME[:BATCH].
import CBLAS
import Glibc
import Lift

struct BenchCase {
  let preset: String
  let batch: Int
  var name: String { "\(preset):\(batch)" }
}

let defaultCases = [BenchCase(preset: "ViT-Ti/16", batch: 32), BenchCase(preset: "ViT-S/16", batch: 32)]

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
    let s = String(cString: line)
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

func runCase(_ bc: BenchCase, steps: Int, warmup: Int) throws {
  var config = try ModelConfig.preset(bc.preset, textDim: 4096)
  config.objective = .contrastive
  var tc = TrainConfig()
  tc.batchCapacity = bc.batch
  tc.warmupSteps = 1
  tc.totalSteps = 1_000_000
  let model = try Model(config: config, seed: 1)
  let trainer = try Trainer(model: model, config: tc, seed: 1)
  var rng = Xoshiro256(seed: 2)
  let pixels = bc.batch * config.channels * config.imageSize * config.imageSize
  var images = [UInt8](repeating: 0, count: pixels)
  for i in 0..<pixels { images[i] = UInt8(truncatingIfNeeded: rng.next()) }
  var texts = [Float](repeating: 0, count: bc.batch * config.textDim)
  for i in 0..<texts.count { texts[i] = Float(rng.normal()) }
  let gemm = sgemmGflops()
  var times: [Double] = []
  var lastLoss = 0.0
  for s in 0..<(warmup + steps) {
    let t0 = now()
    let stats = try images.withUnsafeBufferPointer { try trainer.step(images: .uint8NHWC($0.baseAddress!), texts: texts, batch: bc.batch) }
    let dt = now() - t0
    lastLoss = stats.loss
    if s >= warmup { times.append(dt) }
    if s == warmup - 1 { Profile.reset() }
  }
  let step = median(times)
  let flops = FlopCount.trainingStep(config, batch: bc.batch)
  let achieved = flops / step / 1e9
  func r(_ x: Double, _ digits: Double = 1000) -> Double { (x * digits).rounded() / digits }
  print("""
    {"config": "\(bc.preset)", "batch": \(bc.batch), "image_size": \(config.imageSize), "text_dim": \(config.textDim), \
    "objective": "contrastive", "threads": \(Parallel_workers()), "steps_timed": \(steps), \
    "step_s_median": \(r(step, 10000)), "step_s_min": \(r(times.min()!, 10000)), "step_s_max": \(r(times.max()!, 10000)), \
    "images_per_s": \(r(Double(bc.batch) / step, 100)), "gflop_per_step": \(r(flops / 1e9, 10)), \
    "achieved_gflops": \(r(achieved, 10)), "sgemm_gflops": \(r(gemm, 10)), "ratio": \(r(achieved / gemm)), \
    "peak_rss_mb": \(peakRSS() / 1_048_576), "final_loss": \(r(lastLoss, 10000))}
    """)
  if Profile.enabled {
    let phases = Profile.report().map { "\"\($0.0)\": \(r($0.1 / Double(steps), 10000))" }.joined(separator: ", ")
    print("{\"config\": \"\(bc.preset)\", \"profile_s_per_step\": {\(phases)}}")
  }
  fflush(stdout)
}

func Parallel_workers() -> Int { liftWorkerCount }

// MARK: main
var args = Array(CommandLine.arguments.dropFirst())
var steps = 7, warmup = 2
var only: String?
while !args.isEmpty {
  let a = args.removeFirst()
  switch a {
  case "--steps": steps = Int(args.removeFirst()) ?? steps
  case "--warmup": warmup = Int(args.removeFirst()) ?? warmup
  case "--only": only = args.removeFirst()
  case "-h", "--help":
    print("usage: lift-bench [--steps N] [--warmup N] [--only PRESET:BATCH]")
    exit(0)
  default:
    fputs("unknown argument \(a)\n", stderr)
    exit(2)
  }
}

if let only {
  let parts = only.split(separator: ":")
  let bc = BenchCase(preset: String(parts[0]), batch: parts.count > 1 ? Int(parts[1]) ?? 32 : 32)
  do { try runCase(bc, steps: steps, warmup: warmup) } catch {
    fputs("lift-bench: \(error)\n", stderr)
    exit(1)
  }
  exit(0)
}

// Each configuration in its own process, so peak RSS belongs to it alone.
var status: Int32 = 0
for bc in defaultCases {
  var pid = pid_t()
  let argv = [CommandLine.arguments[0], "--only", bc.name, "--steps", String(steps), "--warmup", String(warmup)]
  var cargs = argv.map { strdup($0) } + [nil]
  let rc = posix_spawn(&pid, "/proc/self/exe", nil, nil, &cargs, environ)
  cargs.forEach { free($0) }
  guard rc == 0 else { fputs("lift-bench: cannot spawn: \(rc)\n", stderr); exit(1) }
  var ws: Int32 = 0
  waitpid(pid, &ws, 0)
  if ws != 0 { status = 1 }
}
exit(status)
