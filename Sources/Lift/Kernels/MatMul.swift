import CDNNL
import Glibc

/// Element type of a matrix-product operand.
enum ElementType: UInt8 {
  case f32
  /// bfloat16: the upper half of a float32 (8 exponent bits, 8 significant bits).
  case bf16

  var byteSize: Int { self == .f32 ? 4 : 2 }
  var dnnl: dnnl_data_type_t { self == .f32 ? dnnl_f32 : dnnl_bf16 }
}

/// The elements of a matrix: float32 or bfloat16.
enum MatrixElements {
  case f32(UnsafeMutablePointer<Float>)
  case bf16(UnsafeMutablePointer<BFloat16>)
}

/// A row-major matrix as stored: first element, element type, and leading dimension (elements
/// from one row to the next).
struct Matrix {
  let base: UnsafeMutableRawPointer
  let type: ElementType
  let ld: Int

  init(_ p: UnsafeMutablePointer<Float>, ld: Int) { base = UnsafeMutableRawPointer(p); type = .f32; self.ld = ld }
  init(_ p: UnsafePointer<Float>, ld: Int) { self.init(UnsafeMutablePointer(mutating: p), ld: ld) }
  init(_ p: UnsafeMutablePointer<BFloat16>, ld: Int) { base = UnsafeMutableRawPointer(p); type = .bf16; self.ld = ld }
  init(_ elements: MatrixElements, ld: Int) {
    switch elements {
    case .f32(let p): self.init(p, ld: ld)
    case .bf16(let p): self.init(p, ld: ld)
    }
  }
  private init(base: UnsafeMutableRawPointer, type: ElementType, ld: Int) { self.base = base; self.type = type; self.ld = ld }

  /// The same matrix starting at element (row, column).
  func at(row: Int, column: Int) -> Matrix {
    Matrix(base: base + (row * ld + column) * type.byteSize, type: type, ld: ld)
  }
}

/// Matrix products on oneDNN's matmul primitives, planned once per shape and executed on
/// liblift's own workers.
///
/// C (m x n) = op(A) op(B) [+ bias row] [+ C], op = transpose when asked, A and B float32 or
/// bfloat16 (the product of two bfloat16 values is exact in float32; sums accumulate in float32),
/// C float32 or bfloat16 (rounded to nearest even once, at the end).
///
/// Why oneDNN: it selects its kernels from the CPU it runs on (AVX-512, AVX512-BF16, AMX), and
/// on the encoder's shapes its float32 matmul is as fast as or faster than OpenBLAS's sgemm
/// (Debian's OpenBLAS 0.3.21 also falls back to its slowest generic kernels on CPUs newer than
/// itself); Debian's OpenBLAS has no bfloat16 product at all. `lift-bench --products` measures
/// both on every product shape of a step. Every product of liblift runs here.
///
/// Threading: each product is split into parts over liblift's workers (rows of C, or columns
/// when C is wide; split-k with per-worker partials for weight gradients), and each part runs
/// one single-threaded primitive. Debian's oneDNN threads with OpenMP; running its primitives
/// with one OpenMP thread means no OpenMP team is ever started, so no pool thread spins beside
/// liblift's workers, and the result depends only on the worker count (deterministic).
///
/// A cache belongs to one owner (a workspace) whose calls are serialised: plans hold the
/// oneDNN memory objects they are executed with, and each part of a split product has its own
/// plan. Creating a plan allocates (primitive, JIT kernel, scratchpad); executing one does not.
final class MatMul {
  /// Per-worker partial products of split-k weight gradients.
  let scratch: UnsafeMutablePointer<Float>?
  let scratchCapacity: Int
  private var plans: [MatMulPlan.Key: MatMulPlan] = [:]

  /// `scratch` must hold `scratchCapacity` floats and outlive the cache.
  init(scratch: UnsafeMutablePointer<Float>? = nil, scratchCapacity: Int = 0) {
    self.scratch = scratch
    self.scratchCapacity = scratch == nil ? 0 : scratchCapacity
  }

  /// Products with fewer multiply-adds than this run as one part.
  static let splitThreshold = 4e6

  /// Number of plans made so far (tests: a steady-state step makes none).
  var planCount: Int { plans.count }

  /// C (m x n) = op(A) op(B) [+ bias] [+ C when `accumulate`], split over the workers by rows of
  /// C (when m >= n) or by columns, in blocks of 16.
  func product(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, _ a: Matrix, _ b: Matrix, _ c: Matrix,
               bias: UnsafePointer<Float>? = nil, accumulate: Bool = false) throws(LiftError) {
    if m == 0 || n == 0 { return }
    let work = Double(m) * Double(n) * Double(k)
    let splitRows = m >= n
    let extent = splitRows ? m : n
    let blocks = (extent + 15) / 16
    let parts = work < Self.splitThreshold ? 1 : min(Parallel.workers, blocks)
    try runParts(parts) { (part) throws(LiftError) -> MatMulPart? in
      let range = Parallel.split(blocks, parts: parts, index: part)
      let lo = range.lowerBound * 16, hi = min(extent, range.upperBound * 16)
      if lo >= hi { return nil }
      let rows = splitRows ? hi - lo : m, cols = splitRows ? n : hi - lo
      // Part of op(A): rows lo..<hi (A^T: columns of A); part of op(B): columns lo..<hi (B^T: rows of B).
      let pa = splitRows ? (transA ? a.at(row: 0, column: lo) : a.at(row: lo, column: 0)) : a
      let pb = splitRows ? b : (transB ? b.at(row: lo, column: 0) : b.at(row: 0, column: lo))
      let pc = splitRows ? c.at(row: lo, column: 0) : c.at(row: 0, column: lo)
      let key = MatMulPlan.Key(m: rows, n: cols, k: k, transA: transA, transB: transB, lda: a.ld, ldb: b.ld,
                               ldc: c.ld, typeA: a.type, typeB: b.type, typeC: c.type, bias: bias != nil,
                               accumulate: accumulate, part: part)
      return MatMulPart(plan: try plan(key), a: pa, b: pb, c: pc, bias: bias.map { splitRows ? $0 : $0 + lo })
    }
  }

  /// Makes up to `parts` parts on this thread (plans are looked up and made here; `make` returns
  /// nil for an empty part), then runs them on the workers.
  private func runParts(_ parts: Int, _ make: (Int) throws(LiftError) -> MatMulPart?) throws(LiftError) {
    try withUnsafeTemporaryAllocation(of: MatMulPart.self, capacity: parts) { (buffer) throws(LiftError) in
      let list = buffer.baseAddress!
      var used = 0
      defer { list.deinitialize(count: used) }
      for part in 0..<parts {
        guard let p = try make(part) else { continue }
        (list + used).initialize(to: p)
        used += 1
      }
      Parallel.forWorkers(used) { _, r in
        for i in r { list[i].run() }
      }
    }
  }

  /// C (m x n, float32, ldc == n) += A^T B with A (k x m) and B (k x n) and k large (weight
  /// gradients: k is the number of token rows). Splits k over the workers, each with its own
  /// m x n partial (worker 0 accumulates into C directly, the others into `scratch`), then adds
  /// the partials in worker order. Falls back to `product` when k is not the large dimension or
  /// the scratch is too small. Deterministic for a given worker count.
  func accumulateTransposed(m: Int, n: Int, k: Int, _ a: Matrix, _ b: Matrix,
                            into c: UnsafeMutablePointer<Float>) throws(LiftError) {
    let parts = min(Parallel.workers, k / 256)
    guard parts > 1, k >= 2 * max(m, n), let scratch, (parts - 1) * m * n <= scratchCapacity else {
      try product(transA: true, transB: false, m: m, n: n, k: k, a, b, Matrix(c, ld: n), accumulate: true)
      return
    }
    try runParts(parts) { (part) throws(LiftError) -> MatMulPart? in
      let rows = Parallel.split(k, parts: parts, index: part)
      let target = part == 0 ? c : scratch + (part - 1) * m * n
      let key = MatMulPlan.Key(m: m, n: n, k: rows.count, transA: true, transB: false, lda: a.ld, ldb: b.ld, ldc: n,
                               typeA: a.type, typeB: b.type, typeC: .f32, bias: false, accumulate: part == 0, part: part)
      return MatMulPart(plan: try plan(key), a: a.at(row: rows.lowerBound, column: 0),
                        b: b.at(row: rows.lowerBound, column: 0), c: Matrix(target, ld: n), bias: nil)
    }
    Parallel.forRanges(m * n, grain: 1 << 14) { r in
      for part in 1..<parts {
        let src = scratch + (part - 1) * m * n
        var i = r.lowerBound
        while i + 16 <= r.upperBound { c.vstore(c.vload(i) + src.vload(i), i); i += 16 }
        while i < r.upperBound { c[i] += src[i]; i += 1 }
      }
    }
  }

  /// Plans of `kinds` products for each of `parts` workers, made on this thread, for kernels
  /// that run their own products on the workers: plans[kind * parts + part], where kind's key
  /// is key(kind) with its part set.
  func withPlans<R>(kinds: Int, parts: Int, key: (Int) -> MatMulPlan.Key,
                    _ body: (UnsafeBufferPointer<MatMulPlan>) -> R) throws(LiftError) -> R {
    try withUnsafeTemporaryAllocation(of: MatMulPlan.self, capacity: kinds * parts) { (buffer) throws(LiftError) in
      let list = buffer.baseAddress!
      var made = 0
      defer { list.deinitialize(count: made) }
      for kind in 0..<kinds {
        var k = key(kind)
        for part in 0..<parts {
          k.part = part
          (list + made).initialize(to: try plan(k))
          made += 1
        }
      }
      return body(UnsafeBufferPointer(buffer))
    }
  }

  /// Plans kept at most; a cache that would grow beyond starts afresh (callers that vary their
  /// shapes without end, e.g. a loss over ever-different batch sizes, stay bounded).
  static let maxPlans = 256

  private func plan(_ key: MatMulPlan.Key) throws(LiftError) -> MatMulPlan {
    if let p = plans[key] { return p }
    if plans.count >= Self.maxPlans { plans.removeAll() }
    let p = try MatMulPlan(key)
    plans[key] = p
    return p
  }
}

/// One part of a split product, ready to run on a worker.
private struct MatMulPart {
  let plan: MatMulPlan
  let a, b, c: Matrix
  let bias: UnsafePointer<Float>?

  func run() { plan.execute(a: a.base, b: b.base, c: c.base, bias: bias) }
}

/// One single-threaded oneDNN matmul primitive for one shape, with the memory objects and the
/// scratchpad it is executed with.
final class MatMulPlan {
  struct Key: Hashable {
    var m, n, k: Int
    var transA, transB: Bool
    var lda, ldb, ldc: Int
    var typeA, typeB, typeC: ElementType
    var bias, accumulate: Bool
    /// Which part of a split product: parts never share a plan (its memory objects).
    var part: Int
  }

  private var primitive: dnnl_primitive_t?
  private var stream: dnnl_stream_t?
  private var memories: [dnnl_memory_t?] = []
  /// src, weights, dst, then bias and scratchpad when the plan has them: the arguments every
  /// execution passes (their memory objects are `memories`, in the same order).
  private let arguments: UnsafeMutablePointer<dnnl_exec_arg_t>
  private var argumentCount = 0
  private let hasBias: Bool
  private var scratchpad: UnsafeMutableRawPointer?

  init(_ key: Key) throws(LiftError) {
    arguments = .allocate(capacity: 5)
    hasBias = key.bias
    // On failure deinit releases whatever was made.
    try OneDNN.singleThreaded { () throws(LiftError) in try create(key) }
  }

  private func create(_ key: Key) throws(LiftError) {
    let engine = try OneDNN.engine()
    func check(_ status: dnnl_status_t, _ what: String) throws(LiftError) {
      if status != dnnl_success {
        throw .internal("oneDNN \(what) failed (status \(status.rawValue)) for a \(key.typeA)x\(key.typeB)->\(key.typeC) "
                             + "product \(key.m)x\(key.k) by \(key.k)x\(key.n)")
      }
    }
    // op(A) is m x k: stored k x m (column stride lda) when transposed.
    var aDesc = dnnl_memory_desc_t(), bDesc = dnnl_memory_desc_t(), cDesc = dnnl_memory_desc_t()
    var biasDesc = dnnl_memory_desc_t()
    try check(OneDNN.describe(&aDesc, rows: key.m, cols: key.k, type: key.typeA, ld: key.lda, transposed: key.transA),
              "source description")
    try check(OneDNN.describe(&bDesc, rows: key.k, cols: key.n, type: key.typeB, ld: key.ldb, transposed: key.transB),
              "weights description")
    try check(OneDNN.describe(&cDesc, rows: key.m, cols: key.n, type: key.typeC, ld: key.ldc, transposed: false),
              "destination description")
    if key.bias {
      try check(OneDNN.describe(&biasDesc, rows: 1, cols: key.n, type: .f32, ld: key.n, transposed: false), "bias description")
    }
    var opDesc = dnnl_matmul_desc_t()
    let described = key.bias ? dnnl_matmul_desc_init(&opDesc, &aDesc, &bDesc, &biasDesc, &cDesc)
                             : dnnl_matmul_desc_init(&opDesc, &aDesc, &bDesc, nil, &cDesc)
    try check(described, "matmul description")
    var attr: dnnl_primitive_attr_t?
    try check(dnnl_primitive_attr_create(&attr), "attribute creation")
    defer { dnnl_primitive_attr_destroy(attr) }
    try check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode")
    if key.accumulate {
      var ops: dnnl_post_ops_t?
      try check(dnnl_post_ops_create(&ops), "post-op creation")
      defer { dnnl_post_ops_destroy(ops) }
      try check(dnnl_post_ops_append_sum(ops, 1), "sum post-op")
      try check(dnnl_primitive_attr_set_post_ops(attr, ops), "post-ops")
    }
    var pd: dnnl_primitive_desc_t?
    try withUnsafePointer(to: &opDesc) { (op) throws(LiftError) in
      try check(dnnl_primitive_desc_create(&pd, op, attr, engine, nil), "primitive description")
    }
    defer { dnnl_primitive_desc_destroy(pd) }
    try check(dnnl_primitive_create(&primitive, pd), "primitive creation")
    try check(dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)), "stream creation")

    var descriptions = [aDesc, bDesc, cDesc]
    var kinds = [Int32(DNNL_ARG_SRC), Int32(DNNL_ARG_WEIGHTS), Int32(DNNL_ARG_DST)]
    if key.bias { descriptions.append(biasDesc); kinds.append(Int32(DNNL_ARG_BIAS)) }
    if let scratchDesc = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0),
       case let bytes = dnnl_memory_desc_get_size(scratchDesc), bytes > 0 {
      guard let raw = aligned_alloc(64, (bytes + 63) / 64 * 64) else {
        throw .memory("cannot allocate \(bytes) bytes of matrix-product scratch")
      }
      scratchpad = raw
      descriptions.append(scratchDesc.pointee)
      kinds.append(Int32(DNNL_ARG_SCRATCHPAD))
    }
    for (i, var desc) in descriptions.enumerated() {
      var memory: dnnl_memory_t?
      // Operand handles are set before every execution; the scratchpad's once, here.
      let handle = kinds[i] == Int32(DNNL_ARG_SCRATCHPAD) ? scratchpad : nil
      try check(dnnl_memory_create(&memory, &desc, engine, handle), "memory object")
      memories.append(memory)
      arguments[i] = dnnl_exec_arg_t(arg: kinds[i], memory: memory)
    }
    argumentCount = descriptions.count
  }

  /// Runs the product on the calling thread. Cannot fail once the plan exists: the shapes,
  /// types and scratchpad were fixed and checked when it was made.
  func execute(a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutableRawPointer, bias: UnsafePointer<Float>? = nil) {
    dnnl_memory_set_data_handle(memories[0], UnsafeMutableRawPointer(mutating: a))
    dnnl_memory_set_data_handle(memories[1], UnsafeMutableRawPointer(mutating: b))
    dnnl_memory_set_data_handle(memories[2], c)
    if hasBias { dnnl_memory_set_data_handle(memories[3], UnsafeMutableRawPointer(mutating: bias)) }
    OneDNN.singleThreaded {
      _ = dnnl_primitive_execute(primitive, stream, Int32(argumentCount), arguments)
    }
  }

  deinit {
    for m in memories { dnnl_memory_destroy(m) }
    if let primitive { dnnl_primitive_destroy(primitive) }
    if let stream { dnnl_stream_destroy(stream) }
    free(scratchpad)
    arguments.deallocate()
  }
}

/// oneDNN's engine and the OpenMP setting its primitives run under.
enum OneDNN {
  /// oneDNN engines may be used by several threads at once (creating primitives is thread-safe).
  nonisolated(unsafe) private static let cpuEngine: Result<dnnl_engine_t, LiftError> = {
    var engine: dnnl_engine_t?
    let status = dnnl_engine_create(&engine, dnnl_cpu, 0)
    guard status == dnnl_success, let engine else {
      return .failure(.internal("oneDNN cannot create its CPU engine (status \(status.rawValue))"))
    }
    return .success(engine)
  }()

  static func engine() throws(LiftError) -> dnnl_engine_t { try cpuEngine.get() }

  /// Runs `body` with this thread's OpenMP thread count at 1 (restored afterwards), so oneDNN
  /// plans primitives for one thread and never starts an OpenMP team.
  @inline(__always)
  static func singleThreaded<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
    let previous = omp_get_max_threads()
    if previous != 1 { omp_set_num_threads(1) }
    defer { if previous != 1 { omp_set_num_threads(previous) } }
    return try body()
  }

  /// Describes op(M) (rows x cols), stored row-major with leading dimension `ld`, or as its
  /// transpose (stored cols x rows) when `transposed`.
  static func describe(_ desc: inout dnnl_memory_desc_t, rows: Int, cols: Int, type: ElementType, ld: Int,
                       transposed: Bool) -> dnnl_status_t {
    var dims: (Int64, Int64) = (Int64(rows), Int64(cols))
    var strides: (Int64, Int64) = transposed ? (1, Int64(ld)) : (Int64(ld), 1)
    return withUnsafeMutableBytes(of: &dims) { d in
      withUnsafeMutableBytes(of: &strides) { s in
        dnnl_memory_desc_init_by_strides(&desc, 2, d.baseAddress!.assumingMemoryBound(to: Int64.self), type.dnnl,
                                         s.baseAddress!.assumingMemoryBound(to: Int64.self))
      }
    }
  }

  /// Throws an unsupported-feature error unless `hasBFloat16`.
  static func requireBFloat16() throws(LiftError) {
    guard hasBFloat16 else {
      throw .unsupported("bf16 precision needs a CPU with bfloat16 dot products (AVX512-BF16 or AMX), which this one "
                         + "lacks (oneDNN ISA \(isaName)); use fp32")
    }
  }

  /// oneDNN's name for the instruction set it uses here.
  static var isaName: String {
    switch dnnl_get_effective_cpu_isa() {
    case dnnl_cpu_isa_sse41: return "sse41"
    case dnnl_cpu_isa_avx: return "avx"
    case dnnl_cpu_isa_avx2: return "avx2"
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni"
    case dnnl_cpu_isa_avx512_core: return "avx512_core"
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni"
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16"
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx"
    default: return "0x" + String(dnnl_get_effective_cpu_isa().rawValue, radix: 16)
    }
  }

  /// Whether oneDNN may use bfloat16 dot-product instructions (AVX512-BF16 or AMX) here.
  /// DNNL_MAX_CPU_ISA lowers what it reports (e.g. "AVX512_CORE" to test the error path).
  static var hasBFloat16: Bool {
    let isa = dnnl_get_effective_cpu_isa().rawValue
    let bf16 = dnnl_cpu_isa_avx512_core_bf16.rawValue
    return isa & bf16 == bf16
  }
}
