import Glibc

/// Throughput of matrix products as liblift runs them (split over its workers), for lift-bench:
/// the ceiling a training step is compared with, and the per-shape comparison with OpenBLAS
/// (which lift-bench times itself) that decided the back end.
public enum ProductBenchmark {
  public enum Backend: String, CaseIterable {
    /// oneDNN matmul on float32 operands (liblift's fp32 products).
    case oneDNNFloat32 = "onednn-f32"
    /// oneDNN matmul on bfloat16 operands, float32 results (liblift's bf16 products).
    case oneDNNBFloat16 = "onednn-bf16"
  }

  /// A product of a training step: C (m x n) = op(A) op(B) with op(A) m x k.
  public struct Shape {
    public let label: String
    public let m, n, k: Int
    public let transA, transB: Bool
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }

    public init(label: String, m: Int, n: Int, k: Int, transA: Bool, transB: Bool) {
      self.label = label
      self.m = m; self.n = n; self.k = k
      self.transA = transA; self.transB = transB
    }
  }

  /// The encoder's large products in one training step of `c` at `batch` (forward, input
  /// gradient and weight gradient of each Linear of a block, and of the patch embedding).
  public static func stepShapes(_ c: ModelConfig, batch: Int) -> [Shape] {
    let rows = batch * c.tokens, w = c.width, f = c.hidden
    var shapes: [Shape] = []
    for (name, inF, outF) in [("qkv", w, 3 * w), ("out_proj", w, w), ("c_fc", w, f), ("c_proj", f, w)] {
      shapes.append(Shape(label: "\(name) forward", m: rows, n: outF, k: inF, transA: false, transB: true))
      shapes.append(Shape(label: "\(name) input gradient", m: rows, n: inF, k: outF, transA: false, transB: false))
      shapes.append(Shape(label: "\(name) weight gradient", m: outF, n: inF, k: rows, transA: true, transB: false))
    }
    shapes.append(Shape(label: "patch embedding forward", m: batch * c.patches, n: w, k: c.patchDim, transA: false,
                        transB: true))
    return shapes
  }

  /// Median GFLOP/s of `shape` on `backend` over `repeats` runs after one warm-up, on
  /// deterministic operands, split over the workers as a training step splits it (weight
  /// gradients: split-k).
  public static func gflops(_ shape: Shape, backend: Backend, repeats: Int = 5) throws(LiftError) -> Double {
    let s = shape
    let aCount = s.m * s.k, bCount = s.k * s.n, cCount = s.m * s.n
    let a = try allocateFloats(aCount, what: "benchmark A"), b = try allocateFloats(bCount, what: "benchmark B")
    let c = try allocateFloats(cCount, what: "benchmark C")
    let scratchCount = (Parallel.workers - 1) * cCount
    let scratch = try allocateFloats(max(scratchCount, 1), what: "benchmark scratch")
    let a16 = UnsafeMutablePointer<BFloat16>.allocate(capacity: aCount)
    let b16 = UnsafeMutablePointer<BFloat16>.allocate(capacity: bCount)
    defer { a.deallocate(); b.deallocate(); c.deallocate(); scratch.deallocate(); a16.deallocate(); b16.deallocate() }
    for i in 0..<aCount { a[i] = Float(i % 7) * 0.1 - 0.3 }
    for i in 0..<bCount { b[i] = Float(i % 5) * 0.1 - 0.2 }
    c.initialize(repeating: 0, count: cCount)
    BF16.convertParallel(a, a16, count: aCount)
    BF16.convertParallel(b, b16, count: bCount)
    let products = MatMul(scratch: scratch, scratchCapacity: scratchCount)
    let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
    func run() throws(LiftError) {
      let am = backend == .oneDNNFloat32 ? Matrix(a, ld: lda) : Matrix(a16, ld: lda)
      let bm = backend == .oneDNNFloat32 ? Matrix(b, ld: ldb) : Matrix(b16, ld: ldb)
      if s.transA && !s.transB {
        try products.accumulateTransposed(m: s.m, n: s.n, k: s.k, am, bm, into: c)
      } else {
        try products.product(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, am, bm, Matrix(c, ld: s.n))
      }
    }
    return s.flops / (try medianSeconds(repeats: repeats, run)) / 1e9
  }

  /// Median wall time of `body` over `repeats` runs after one warm-up run.
  public static func medianSeconds<E: Error>(repeats: Int, _ body: () throws(E) -> Void) throws(E) -> Double {
    try body()
    var times: [Double] = []
    for _ in 0..<max(repeats, 1) {
      let t0 = monotonicSeconds()
      try body()
      times.append(monotonicSeconds() - t0)
    }
    times.sort()
    return times[times.count / 2]
  }

  /// The oneDNN instruction set in use and whether bf16 products are available.
  public static var isa: String { OneDNN.isaName }
  public static var hasBFloat16: Bool { OneDNN.hasBFloat16 }
}

func monotonicSeconds() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
