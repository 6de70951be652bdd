import Glibc
import LiftKernelsC

/// Multi-head self-attention core over a fused qkv buffer, no mask (as OpenCLIP's ViT).
///
/// Layout: qkv is (B*T) x 3W row-major with q, k, v in column blocks [0,W), [W,2W), [2W,3W);
/// head h uses columns h*hd ..< (h+1)*hd of each block. The output O is (B*T) x W with head h in
/// columns h*hd ..< (h+1)*hd. Each (image, head) pair is an independent task; tasks are split
/// over liblift's workers, each running its own single-threaded product plans (`MatMul`) on
/// the strided per-head blocks in place (no packing).
///
/// Precision: in bf16, qkv, O and dO are bfloat16 and the probabilities P and the score
/// gradient dS are rounded to bfloat16 (per worker) before the products that take them; the
/// scores, softmax statistics and row sums stay float32, and dqkv is float32 until it is rounded
/// once as the in_proj backward's operand.
///
/// Kernels: on a CPU with AVX512-BF16 (every CPU bf16 runs on), each (image, head) runs a fused C
/// kernel of LiftKernelsC (all products on one register-blocked kernel, query rows in blocks,
/// softmax, gradient, rounding and bias sums in between): the bfloat16 one for even head
/// dimensions, the float32 one in fp32. Otherwise the per-head products run on oneDNN plans (or,
/// for short fp32 heads, on `SmallGemm`) with the softmax in Swift.
///
/// Forward keeps only the per-row log-sum-exp of the scaled scores (B*H*T floats); backward
/// recomputes the probabilities from q, k and it instead of storing B*H*T*T of them.
enum Attention {
  struct Shape {
    let batch, tokens, width, heads: Int
    /// Products take bfloat16 inputs.
    var bf16 = false
    var headDim: Int { width / heads }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    var tasks: Int { batch * heads }
    /// Row stride of the T x T score buffers: tokens rounded up to 16, so softmax rows load
    /// whole vectors (the padding lanes are masked, never used by the products).
    var paddedTokens: Int { (tokens + 15) / 16 * 16 }
    var operandType: ElementType { bf16 ? .bf16 : .f32 }

    /// Heads of at most this many tokens run on liblift's own register-blocked kernels
    /// (`SmallGemm`; fp32, head dims that are multiples of 16): their products are so small that
    /// oneDNN's per-call cost dominates. Measured (attention time, oneDNN vs small kernels):
    /// 5 tokens 1.7x and 17 tokens 1.3x longer on oneDNN; 50 tokens 1.2x and 197 tokens 1.5x
    /// shorter on oneDNN.
    static let smallKernelTokens = 32
    var usesSmallKernels: Bool { !bf16 && tokens <= Shape.smallKernelTokens && headDim % 16 == 0 }
    /// Runs on a fused kernel of LiftKernelsC: bf16 (`lk_attention_forward` / `_backward`,
    /// even head dimensions) or fp32 (`lk_attention_f32_forward` / `_backward`).
    var usesFusedKernel: Bool { fusedKernelAllowed && Attention.hasFusedKernel && (!bf16 || headDim % 2 == 0) }
    /// False runs the oneDNN path where the fused kernel would run (for tests).
    var fusedKernelAllowed = true

    /// The fused kernel's description of one head.
    var fusedHead: lk_attention_head {
      lk_attention_head(tokens: Int32(tokens), head_dim: Int32(headDim), scale: scale, ld_qkv: 3 * width, ld_out: width)
    }

    /// Scratch floats each worker needs: two T x Tpad float score buffers and one T vector;
    /// in bf16 also a T x Tpad bfloat16 copy of P or dS and a T x hd float output block; with
    /// the small kernels an hd x Tpad packed (transposed) operand.
    /// The fused kernel's scratch instead, in floats (a multiple of 16).
    var scratchPerWorker: Int {
      if usesFusedKernel {
        let bytes = bf16 ? lk_attention_scratch_bytes(Int32(tokens), Int32(headDim))
          : lk_attention_f32_scratch_bytes(Int32(tokens), Int32(headDim))
        return (bytes + 63) / 64 * 16
      }
      let tp = paddedTokens
      return 2 * tokens * tp + tokens + (bf16 ? (tokens * tp + 1) / 2 + tokens * headDim : 0)
        + (usesSmallKernels ? headDim * tp : 0)
    }
  }

  /// Whether this CPU runs the fused bf16 kernel (AVX512-BF16).
  static var hasFusedKernel: Bool { BF16.hasVectorKernels }

  /// The per-head products, as plan keys (the part is set per worker).
  private enum Product: Int, CaseIterable {
    /// S = Q K^T (T x T over hd), into a score buffer.
    case scores
    /// O = E V (T x hd over T), into the output (fp32) or the worker's output block (bf16).
    case values
    /// dV = P^T dO, into dqkv.
    case valueGradient
    /// dP = dO V^T, into a score buffer.
    case probabilityGradient
    /// dQ = dS K, into dqkv.
    case queryGradient
    /// dK = dS^T Q, into dqkv.
    case keyGradient

    func key(_ s: Shape) -> MatMulPlan.Key {
      let t = s.tokens, hd = s.headDim, tp = s.paddedTokens, w = s.width, type = s.operandType
      func key(_ m: Int, _ n: Int, _ k: Int, _ ta: Bool, _ tb: Bool, _ lda: Int, _ ldb: Int, _ ldc: Int) -> MatMulPlan.Key {
        MatMulPlan.Key(m: m, n: n, k: k, transA: ta, transB: tb, lda: lda, ldb: ldb, ldc: ldc, typeA: type, typeB: type,
                       typeC: .f32, bias: false, accumulate: false, part: 0)
      }
      switch self {
      case .scores: return key(t, t, hd, false, true, 3 * w, 3 * w, tp)
      case .values: return key(t, hd, t, false, false, tp, 3 * w, s.bf16 ? hd : w)
      case .valueGradient: return key(t, hd, t, true, false, tp, w, 3 * w)
      case .probabilityGradient: return key(t, t, hd, false, true, w, 3 * w, tp)
      case .queryGradient: return key(t, hd, t, false, false, tp, 3 * w, 3 * w)
      case .keyGradient: return key(t, hd, t, true, false, tp, 3 * w, 3 * w)
      }
    }
  }

  /// Plans of every per-head product for each of `parts` workers: plans[product * parts + worker]
  /// (none with the small kernels).
  @discardableResult
  private static func withPlans<R>(_ s: Shape, parts: Int, products: MatMul,
                                   _ body: (UnsafeBufferPointer<MatMulPlan>) -> R) throws(LiftError) -> R {
    if s.usesSmallKernels { return body(UnsafeBufferPointer(start: nil, count: 0)) }
    return try products.withPlans(kinds: Product.allCases.count, parts: parts, key: { Product(rawValue: $0)!.key(s) }, body)
  }

  /// The per-head products of one worker, on its oneDNN plans or on the small kernels (whose
  /// float32 operands are the same pointers; transposed right-hand operands are packed first).
  private struct HeadProducts {
    let shape: Shape
    let plans: UnsafeBufferPointer<MatMulPlan>
    let parts, worker: Int
    /// hd x Tpad, for K^T or V^T (small kernels only).
    let packed: UnsafeMutablePointer<Float>

    func plan(_ p: Product) -> MatMulPlan { plans[p.rawValue * parts + worker] }
    func f(_ p: UnsafeRawPointer) -> UnsafePointer<Float> { p.assumingMemoryBound(to: Float.self) }

    /// S (T x Tpad) = Q K^T.
    func scores(_ q: UnsafeRawPointer, _ k: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>) {
      let s = shape, t = s.tokens, tp = s.paddedTokens, w3 = 3 * s.width
      guard s.usesSmallKernels else { return plan(.scores).execute(a: q, b: k, c: c) }
      SmallGemm.packTransposed(f(k), rows: t, cols: s.headDim, ldSrc: w3, scale: 1, into: packed, ldDst: tp)
      SmallGemm.product(m: t, n: tp, k: s.headDim, f(q), aRow: w3, aCol: 1, packed, ldb: tp, c, ldc: tp)
    }

    /// O (T x hd, row stride ldc) = E V.
    func values(_ e: UnsafeRawPointer, _ v: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>, ldc: Int) {
      let s = shape
      guard s.usesSmallKernels else { return plan(.values).execute(a: e, b: v, c: c) }
      SmallGemm.product(m: s.tokens, n: s.headDim, k: s.tokens, f(e), aRow: s.paddedTokens, aCol: 1, f(v),
                        ldb: 3 * s.width, c, ldc: ldc)
    }

    /// dV = P^T dO.
    func valueGradient(_ p: UnsafeRawPointer, _ dO: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>) {
      let s = shape
      guard s.usesSmallKernels else { return plan(.valueGradient).execute(a: p, b: dO, c: c) }
      SmallGemm.product(m: s.tokens, n: s.headDim, k: s.tokens, f(p), aRow: 1, aCol: s.paddedTokens, f(dO),
                        ldb: s.width, c, ldc: 3 * s.width)
    }

    /// dP (T x Tpad) = dO V^T.
    func probabilityGradient(_ dO: UnsafeRawPointer, _ v: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>) {
      let s = shape, t = s.tokens, tp = s.paddedTokens
      guard s.usesSmallKernels else { return plan(.probabilityGradient).execute(a: dO, b: v, c: c) }
      SmallGemm.packTransposed(f(v), rows: t, cols: s.headDim, ldSrc: 3 * s.width, scale: 1, into: packed, ldDst: tp)
      SmallGemm.product(m: t, n: tp, k: s.headDim, f(dO), aRow: s.width, aCol: 1, packed, ldb: tp, c, ldc: tp)
    }

    /// dQ = dS K.
    func queryGradient(_ dS: UnsafeRawPointer, _ k: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>) {
      let s = shape
      guard s.usesSmallKernels else { return plan(.queryGradient).execute(a: dS, b: k, c: c) }
      SmallGemm.product(m: s.tokens, n: s.headDim, k: s.tokens, f(dS), aRow: s.paddedTokens, aCol: 1, f(k),
                        ldb: 3 * s.width, c, ldc: 3 * s.width)
    }

    /// dK = dS^T Q.
    func keyGradient(_ dS: UnsafeRawPointer, _ q: UnsafeRawPointer, into c: UnsafeMutablePointer<Float>) {
      let s = shape
      guard s.usesSmallKernels else { return plan(.keyGradient).execute(a: dS, b: q, c: c) }
      SmallGemm.product(m: s.tokens, n: s.headDim, k: s.tokens, f(dS), aRow: 1, aCol: s.paddedTokens, f(q),
                        ldb: 3 * s.width, c, ldc: 3 * s.width)
    }
  }

  /// One worker's scratch: float scores / probabilities `p` and score gradients `dp` (T x Tpad),
  /// a T vector, and in bf16 the rounded copy of P or dS (T x Tpad) and an output block (T x hd).
  private struct WorkerScratch {
    let p, dp, vector: UnsafeMutablePointer<Float>
    let rounded: UnsafeMutablePointer<BFloat16>?
    let output: UnsafeMutablePointer<Float>?
    /// hd x Tpad packed operand of the small kernels (after the bf16 buffers, which they exclude).
    let packed: UnsafeMutablePointer<Float>

    init(_ scratch: UnsafeMutablePointer<Float>, worker: Int, shape s: Shape) {
      let t = s.tokens, tp = s.paddedTokens
      p = scratch + worker * s.scratchPerWorker
      dp = p + t * tp
      vector = dp + t * tp
      rounded = s.bf16 ? UnsafeMutableRawPointer(vector + t).assumingMemoryBound(to: BFloat16.self) : nil
      output = s.bf16 ? vector + t + (t * tp + 1) / 2 : nil
      packed = vector + t
    }

    /// P (or dS) as a product operand: itself, or rounded into `rounded` (whole padded rows).
    func operand(_ x: UnsafeMutablePointer<Float>, rows: Int, ld: Int) -> UnsafeRawPointer {
      guard let rounded else { return UnsafeRawPointer(x) }
      BF16.convert(x, rounded, count: rows * ld)
      return UnsafeRawPointer(rounded)
    }
  }

  /// O = softmax(scale * Q K^T) V per (image, head); lse[(b*H + h)*T + i] = log-sum-exp of row i.
  /// The softmax normalisation is applied to O's rows (T x hd) rather than to the T x T
  /// probabilities. qkv and out are bfloat16 when the shape says bf16.
  static func forward(qkv: MatrixElements, shape s: Shape, out: MatrixElements,
                      lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>,
                      products: MatMul) throws(LiftError) {
    if s.usesFusedKernel {
      switch (qkv, out) {
      case (.bf16(let q16), .bf16(let o16)): return fusedForward(qkv: q16, shape: s, out: o16, lse: lse, scratch: scratch)
      case (.f32(let q32), .f32(let o32)): return fusedForward(qkv: q32, shape: s, out: o32, lse: lse, scratch: scratch)
      default: break
      }
    }
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens, e = s.operandType.byteSize
    let extent = RowExtent(count: t)
    let parts = min(Parallel.workers, s.tasks)
    let qkvBase = Matrix(qkv, ld: 3 * w).base, outBase = Matrix(out, ld: w).base
    try withPlans(s, parts: parts, products: products) { plans in
      Parallel.forWorkers(s.tasks) { worker, tasks in
        let ws = WorkerScratch(scratch, worker: worker, shape: s)
        let heads = HeadProducts(shape: s, plans: plans, parts: parts, worker: worker, packed: ws.packed)
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          let q = qkvBase + (b * t * 3 * w + h * hd) * e, k = q + w * e, v = q + 2 * w * e
          // S = Q K^T (T x Tpad; the padding columns are masked), E = exp(scale * S - max).
          heads.scores(q, k, into: ws.p)
          for i in 0..<t {
            let (logSum, inverse) = expRow(ws.p + i * tp, extent, scale: s.scale)
            lse?[task * t + i] = logSum
            ws.vector[i] = inverse
          }
          // O = E V, then each row divided by its sum (and rounded in bf16).
          let eOperand = ws.operand(ws.p, rows: t, ld: tp)
          let oFirst = b * t * w + h * hd
          if let block = ws.output {
            heads.values(eOperand, v, into: block, ldc: hd)
            // bf16: the output is bfloat16 (a product input).
            let rounded = outBase.assumingMemoryBound(to: BFloat16.self) + oFirst
            for i in 0..<t {
              let row = BFloat16Writer(pointer: rounded + i * w), src = block + i * hd, inv = Vec16(repeating: ws.vector[i])
              var j = 0
              while j + 16 <= hd { row.store(src.vload(j) * inv, at: j); j += 16 }
              while j < hd { row.store(src[j] * ws.vector[i], at: j); j += 1 }
            }
          } else {
            let o = outBase.assumingMemoryBound(to: Float.self) + oFirst
            heads.values(eOperand, v, into: o, ldc: w)
            for i in 0..<t { VectorOps.scale(o + i * w, hd, by: ws.vector[i]) }
          }
        }
      }
    }
  }

  /// Gradients of the forward above: given dO (B*T x W), returns dqkv (B*T x 3W) as the in_proj
  /// backward's product operand and adds its column sums (the in_proj bias gradient) into dBias
  /// (3W). qkv, out and dOut are bfloat16 when the shape says bf16; dqkv is then rounded into
  /// `rounded` (B*T x 3W; the fused kernel writes it there directly, the other kernels write
  /// float32 `dqkv` first), else it is float32 in `dqkv`. `partials` holds workers * 3W floats.
  @discardableResult
  static func backward(qkv: MatrixElements, out: MatrixElements, lse: UnsafePointer<Float>,
                       dOut: MatrixElements, shape s: Shape, dqkv: UnsafeMutablePointer<Float>,
                       rounded: UnsafeMutablePointer<BFloat16>?, dBias: UnsafeMutablePointer<Float>,
                       partials: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                       products: MatMul) throws(LiftError) -> Matrix {
    let w = s.width, rows = s.batch * s.tokens
    if s.usesFusedKernel, let rounded, case .bf16(let q16) = qkv, case .bf16(let o16) = out, case .bf16(let d16) = dOut {
      fusedBackward(qkv: q16, out: o16, lse: lse, dOut: d16, shape: s, dqkv: rounded, partials: partials, scratch: scratch)
    } else if s.usesFusedKernel, rounded == nil, case .f32(let q32) = qkv, case .f32(let o32) = out,
              case .f32(let d32) = dOut {
      fusedBackward(qkv: q32, out: o32, lse: lse, dOut: d32, shape: s, dqkv: dqkv, partials: partials, scratch: scratch)
    } else {
      try unfusedBackward(qkv: qkv, out: out, lse: lse, dOut: dOut, shape: s, dqkv: dqkv, partials: partials,
                          scratch: scratch, products: products)
    }
    for worker in 0..<min(Parallel.workers, s.tasks) {
      let sums = partials + worker * 3 * w
      for j in 0..<(3 * w) { dBias[j] += sums[j] }
    }
    guard let rounded else { return Matrix(dqkv, ld: 3 * w) }
    if !s.usesFusedKernel { BF16.convertParallel(dqkv, rounded, count: rows * 3 * w) }
    return Matrix(rounded, ld: 3 * w)
  }

  /// Element offsets of one (image b, head h) task: its q columns in qkv (k and v are W and 2W
  /// further; dqkv alike), its columns of O and dO, its log-sum-exp rows, and its columns of the
  /// bias sums (q's; k's and v's W and 2W further).
  private struct HeadOffsets {
    let qkv, out, lse, bias: Int
  }

  /// Runs `body(head, offsets, scratch, bias sums)` for every (image, head) task, split over the
  /// workers, each with its own fused-kernel scratch and, when `partials` is given, its own zeroed
  /// 3W bias sums there.
  private static func forEachFusedHead(_ s: Shape, scratch: UnsafeMutablePointer<Float>,
                                       partials: UnsafeMutablePointer<Float>?,
                                       _ body: (UnsafePointer<lk_attention_head>, HeadOffsets, UnsafeMutableRawPointer,
                                                UnsafeMutablePointer<Float>?) -> Void) {
    let t = s.tokens, w = s.width, hd = s.headDim
    _ = withUnsafePointer(to: s.fusedHead) { head in
      Parallel.forWorkers(s.tasks) { worker, tasks in
        let sums = partials.map { $0 + worker * 3 * w }
        sums?.initialize(repeating: 0, count: 3 * w)
        let space = UnsafeMutableRawPointer(scratch + worker * s.scratchPerWorker)
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          body(head, HeadOffsets(qkv: b * t * 3 * w + h * hd, out: b * t * w + h * hd, lse: task * t, bias: h * hd),
               space, sums)
        }
      }
    }
  }

  private static func fusedForward(qkv: UnsafeMutablePointer<BFloat16>, shape s: Shape,
                                   out: UnsafeMutablePointer<BFloat16>, lse: UnsafeMutablePointer<Float>?,
                                   scratch: UnsafeMutablePointer<Float>) {
    let w = s.width
    forEachFusedHead(s, scratch: scratch, partials: nil) { head, at, space, _ in
      let q = qkv + at.qkv
      lk_attention_forward(head, q, q + w, q + 2 * w, out + at.out, lse.map { $0 + at.lse }, space)
    }
  }

  private static func fusedForward(qkv: UnsafeMutablePointer<Float>, shape s: Shape, out: UnsafeMutablePointer<Float>,
                                   lse: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
    let w = s.width
    forEachFusedHead(s, scratch: scratch, partials: nil) { head, at, space, _ in
      let q = qkv + at.qkv
      lk_attention_f32_forward(head, q, q + w, q + 2 * w, out + at.out, lse.map { $0 + at.lse }, space)
    }
  }

  /// Each worker's bias sums go to its row of `partials` (3W floats).
  private static func fusedBackward(qkv: UnsafeMutablePointer<BFloat16>, out: UnsafeMutablePointer<BFloat16>,
                                    lse: UnsafePointer<Float>, dOut: UnsafeMutablePointer<BFloat16>, shape s: Shape,
                                    dqkv: UnsafeMutablePointer<BFloat16>, partials: UnsafeMutablePointer<Float>,
                                    scratch: UnsafeMutablePointer<Float>) {
    let w = s.width
    forEachFusedHead(s, scratch: scratch, partials: partials) { head, at, space, sums in
      let q = qkv + at.qkv, dq = dqkv + at.qkv, bias = sums! + at.bias
      lk_attention_backward(head, q, q + w, q + 2 * w, out + at.out, dOut + at.out, lse + at.lse, dq, dq + w, dq + 2 * w,
                            3 * w, bias, bias + w, bias + 2 * w, space)
    }
  }

  private static func fusedBackward(qkv: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                                    lse: UnsafePointer<Float>, dOut: UnsafeMutablePointer<Float>, shape s: Shape,
                                    dqkv: UnsafeMutablePointer<Float>, partials: UnsafeMutablePointer<Float>,
                                    scratch: UnsafeMutablePointer<Float>) {
    let w = s.width
    forEachFusedHead(s, scratch: scratch, partials: partials) { head, at, space, sums in
      let q = qkv + at.qkv, dq = dqkv + at.qkv, bias = sums! + at.bias
      lk_attention_f32_backward(head, q, q + w, q + 2 * w, out + at.out, dOut + at.out, lse + at.lse, dq, dq + w,
                                dq + 2 * w, 3 * w, bias, bias + w, bias + 2 * w, space)
    }
  }

  /// The backward on oneDNN plans or the small kernels: float32 dqkv, per-worker bias sums in `partials`.
  private static func unfusedBackward(qkv: MatrixElements, out: MatrixElements, lse: UnsafePointer<Float>,
                                      dOut: MatrixElements, shape s: Shape, dqkv: UnsafeMutablePointer<Float>,
                                      partials: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                      products: MatMul) throws(LiftError) {
    let t = s.tokens, w = s.width, hd = s.headDim, tp = s.paddedTokens, e = s.operandType.byteSize
    let extent = RowExtent(count: t)
    let parts = min(Parallel.workers, s.tasks)
    let qkvBase = Matrix(qkv, ld: 3 * w).base, dOutBase = Matrix(dOut, ld: w).base
    try withPlans(s, parts: parts, products: products) { plans in
      Parallel.forWorkers(s.tasks) { worker, tasks in
        let biasSums = partials + worker * 3 * w
        biasSums.initialize(repeating: 0, count: 3 * w)
        let ws = WorkerScratch(scratch, worker: worker, shape: s)
        let heads = HeadProducts(shape: s, plans: plans, parts: parts, worker: worker, packed: ws.packed)
        let p = ws.p, dp = ws.dp, rowDot = ws.vector
        for task in tasks {
          let b = task / s.heads, h = task % s.heads
          let q = qkvBase + (b * t * 3 * w + h * hd) * e
          let k = q + w * e, v = q + 2 * w * e
          let first = b * t * w + h * hd
          let dO = dOutBase + first * e
          let dq = dqkv + b * t * 3 * w + h * hd
          let dk = dq + w, dv = dq + 2 * w
          // P = exp(scale * Q K^T - lse); dV = P^T dO; dP = dO V^T
          heads.scores(q, k, into: p)
          for i in 0..<t { expShifted(p + i * tp, extent, scale: s.scale, by: lse[task * t + i]) }
          heads.valueGradient(ws.operand(p, rows: t, ld: tp), dO, into: dv)
          heads.probabilityGradient(dO, v, into: dp)
          // dS = scale * P * (dP - rowsum(dO * O))   (rowsum(dP * P) == rowsum(dO * O))
          for i in 0..<t { rowDot[i] = dot(dOut.advanced(by: first + i * w), out.advanced(by: first + i * w), hd) }
          for i in 0..<t { softmaxGrad(p + i * tp, dp + i * tp, extent, rowDot[i], s.scale) }
          // dQ = dS K ; dK = dS^T Q   (dS is in dp)
          let dS = ws.operand(dp, rows: t, ld: tp)
          heads.queryGradient(dS, k, into: dq)
          heads.keyGradient(dS, q, into: dk)
          for block in 0..<3 {
            let sums = biasSums + block * w + h * hd, column = dq + block * w
            for i in 0..<t { addRow(column + i * 3 * w, into: sums, hd) }
          }
        }
      }
    }
  }

  /// <x, y> over n values (float32 accumulation).
  @inline(__always)
  static func dot(_ x: MatrixElements, _ y: MatrixElements, _ n: Int) -> Float {
    var acc = Vec16()
    var j = 0
    while j + 16 <= n { acc.addProduct(x.loadVector(j), y.loadVector(j)); j += 16 }
    var s = acc.sum()
    while j < n { s += x.loadValue(j) * y.loadValue(j); j += 1 }
    return s
  }

  /// acc[0..<n] += x[0..<n].
  @inline(__always)
  static func addRow(_ x: UnsafePointer<Float>, into acc: UnsafeMutablePointer<Float>, _ n: Int) {
    var j = 0
    while j + 16 <= n { acc.vstore(acc.vload(j) + x.vload(j), j); j += 16 }
    while j < n { acc[j] += x[j]; j += 1 }
  }

  /// Where the valid entries of a score row end: rows hold `count` valid floats inside a
  /// padded stride (a multiple of 16), so the last vector is loaded whole and its lanes beyond
  /// `count` are masked instead of handled one by one.
  struct RowExtent {
    let count: Int
    /// Start of the last (possibly partial) vector.
    let last: Int
    /// Lanes of the last vector that are padding.
    let padding: SIMDMask<SIMD16<Int32>>

    init(count: Int) {
      self.count = count
      last = (count - 1) / 16 * 16
      let valid = count - last
      padding = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .>= SIMD16<Int32>(repeating: Int32(valid))
    }
  }

  /// x[j] = exp(scale * (x[j] - max)) in place (unnormalised softmax of the scaled row), padding
  /// lanes set to 0; returns (log-sum-exp of the scaled row, 1 / sum). scale > 0.
  @inline(__always)
  static func expRow(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent, scale: Float) -> (Float, Float) {
    let lastVector = x.vload(e.last).replacing(with: -.infinity, where: e.padding)
    var vmax = lastVector
    var j = 0
    while j < e.last { vmax = lanesMax(vmax, x.vload(j)); j += 16 }
    let m = vmax.max()
    let mv = Vec16(repeating: m), sv = Vec16(repeating: scale)
    var vsum = Vec16()
    j = 0
    while j < e.last {
      let v = MathApprox.exp((x.vload(j) - mv) * sv)
      x.vstore(v, j)
      vsum += v
      j += 16
    }
    let v = MathApprox.exp((lastVector - mv) * sv).replacing(with: 0, where: e.padding)
    x.vstore(v, e.last)
    vsum += v
    let sum = vsum.sum()
    return (m * scale + log(sum), 1 / sum)
  }

  /// x[j] = exp(scale * x[j] - shift) for the valid entries, 0 in the padding lanes.
  @inline(__always)
  static func expShifted(_ x: UnsafeMutablePointer<Float>, _ e: RowExtent, scale: Float, by shift: Float) {
    let sv = Vec16(repeating: shift), sc = Vec16(repeating: scale)
    var j = 0
    while j < e.last { x.vstore(MathApprox.exp(x.vload(j) * sc - sv), j); j += 16 }
    x.vstore(MathApprox.exp(x.vload(e.last) * sc - sv).replacing(with: 0, where: e.padding), e.last)
  }

  /// dp[j] = scale * p[j] * (dp[j] - rowDot) (p is 0 in the padding lanes, so dp becomes 0).
  @inline(__always)
  static func softmaxGrad(_ p: UnsafePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ e: RowExtent,
                          _ rowDot: Float, _ scale: Float) {
    let d = Vec16(repeating: rowDot), sc = Vec16(repeating: scale)
    var j = 0
    while j <= e.last { dp.vstore(sc * p.vload(j) * (dp.vload(j) - d), j); j += 16 }
  }
}
