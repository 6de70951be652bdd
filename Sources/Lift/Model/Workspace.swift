/// Activation and scratch buffers of the encoder for batches of up to `capacity` images,
/// carved out of one allocation made when the workspace is created: nothing is allocated
/// during a forward or backward pass (product plans are made on the first pass of each shape).
///
/// Shapes (N = capacity * tokens, W = width, F = hidden, D = textDim, L = depth, H = heads):
/// training workspaces keep, per block that trains, what backward needs: xhat1, xhat2 (N x W),
/// rstd1, rstd2 (N), qkv (N x 3W), attention output (N x W), attention log-sum-exp
/// (capacity*H*tokens) and the MLP pre-activation (N x F); with LayerScale also both branch
/// outputs before their scaling (N x W each). Frozen blocks (below `lowestTrainedGroup`) and
/// inference share one set, reused block after block; a workspace whose whole tower is frozen
/// has no tower-backward buffers either.
///
/// Precision: buffers whose readers are matrix products and the kernels of autocast's bf16
/// operations (patches, LayerNorm outputs, qkv, attention outputs, the MLP pre-activation and
/// GELU outputs, dAttn) hold float32 in fp32 precision and bfloat16 in bf16 precision
/// (`MatrixElements`). In bf16, float32 gradients that feed products are rounded
/// into `stage16` first, and `weights16` holds the parameters rounded, refreshed by every forward.
final class Workspace {
  let config: ModelConfig
  let capacity: Int
  let training: Bool
  /// Layer groups below this one are frozen (ParameterLayout.group): their activations are not
  /// kept (towerGroups + 1 for inference workspaces).
  let lowestTrainedGroup: Int
  /// Blocks from this one up keep their activations (depth: none).
  let firstSavedBlock: Int
  /// Whether any tower group trains (backward goes below the head).
  var towerTrains: Bool { training && lowestTrainedGroup <= config.depth }
  var bf16: Bool { config.precision == .bf16 }
  private let storage: UnsafeMutablePointer<Float>
  let floatCount: Int

  // Forward.
  let patches: MatrixElements                   // (capacity*P) x patchDim
  let patchTokens: UnsafeMutablePointer<Float>  // (capacity*P) x W; also dPatch in backward
  let x: UnsafeMutablePointer<Float>            // N x W residual stream
  let h: MatrixElements                         // N x W LayerNorm output (ln_post's goes into x, in place)
  let g: MatrixElements                         // N x F GELU output
  let xhatPre: UnsafeMutablePointer<Float>?, rstdPre: UnsafeMutablePointer<Float>?
  /// Per block (depth entries): nil for blocks whose activations are not kept.
  let xhat1: [UnsafeMutablePointer<Float>?], rstd1: [UnsafeMutablePointer<Float>?]
  let xhat2: [UnsafeMutablePointer<Float>?], rstd2: [UnsafeMutablePointer<Float>?]
  /// Per block (depth entries; blocks that keep nothing share one buffer).
  let qkv: [MatrixElements]                     // per block N x 3W
  let attnOut: [MatrixElements]                 // per block N x W
  let lse: [UnsafeMutablePointer<Float>]
  let fc: [MatrixElements]                      // per block N x F MLP pre-activation (bias included)
  /// LayerScale only (else empty): per block, the attention and MLP branch outputs before gamma.
  let branch1: [UnsafeMutablePointer<Float>], branch2: [UnsafeMutablePointer<Float>]
  let xhatPost: UnsafeMutablePointer<Float>?, rstdPost: UnsafeMutablePointer<Float>?
  let pooled: UnsafeMutablePointer<Float>       // capacity x W
  let headOut: [UnsafeMutablePointer<Float>]    // per head layer: capacity x D pre-activation z
  let headAct: [MatrixElements]                 // per head layer l >= 1: GELU(z_{l-1})
  let norms: UnsafeMutablePointer<Float>        // capacity: |f| of each feature row
  let embeddings: UnsafeMutablePointer<Float>   // capacity x D, unit rows
  let attnScratch: UnsafeMutablePointer<Float>  // workers x Attention.scratchPerWorker

  // Backward (training only; point at a dummy otherwise).
  let dx: UnsafeMutablePointer<Float>           // N x W
  let dh: UnsafeMutablePointer<Float>           // N x W
  let dqkv: UnsafeMutablePointer<Float>         // N x 3W
  let dAttn: MatrixElements                     // N x W
  let dg: UnsafeMutablePointer<Float>           // N x F
  let dHead: UnsafeMutablePointer<Float>        // 2 x capacity x max(D, W)
  let partials: UnsafeMutablePointer<Float>     // workers x max(2W, 3W, F, D): per-worker column sums

  // bf16 precision only (nil in fp32).
  let weights16: UnsafeMutablePointer<BFloat16>?  // layout.totalCount: the parameters, rounded
  let stage16: UnsafeMutablePointer<BFloat16>?    // N x max(3W, F): a float32 gradient, rounded
  let residual16: UnsafeMutablePointer<BFloat16>? // N x W: the residual stream's gradient (or a branch's), rounded
  let headIn16: UnsafeMutablePointer<BFloat16>?   // capacity x W: pooled features, rounded
  let headGrad16: UnsafeMutablePointer<BFloat16>? // capacity x D: a head gradient, rounded

  /// Matrix-product plans of this workspace's shapes; its split-k scratch is
  /// (workers - 1) x the largest block/patch weight (training only).
  let products: MatMul

  /// Where each buffer of a workspace goes in its one allocation (in floats), computed without
  /// allocating, so that the bytes a workspace needs can be checked against the memory budget
  /// first. Index -1: the buffer does not exist in this workspace.
  struct Plan {
    private(set) var sizes: [Int] = []
    let lowest: Int, firstSaved: Int
    var iPatches = 0, iPatchTokens = 0, iX = 0, iH = 0, iG = 0, iXhatPre = -1, iRstdPre = -1
    var iXhat1: [Int] = [], iRstd1: [Int] = [], iXhat2: [Int] = [], iRstd2: [Int] = []
    var iQkv: [Int] = [], iAttn: [Int] = [], iLse: [Int] = [], iFc: [Int] = [], iBranch1: [Int] = [], iBranch2: [Int] = []
    var iXhatPost = -1, iRstdPost = -1, iPooled = 0, iHeadOut: [Int] = [], iHeadAct: [Int] = [], iNorms = 0, iEmb = 0
    var iAttnScratch = 0, iDx = 0, iDh = 0, iDqkv = 0, iDAttn = 0, iDg = 0, iDHead = 0, iPartials = 0, iGemmScratch = 0
    var iWeights16 = -1, iStage16 = -1, iResidual16 = -1, iHeadIn16 = -1, iHeadGrad16 = -1
    private(set) var gemmScratchCount = 0

    /// Total floats (every buffer rounded up to 16 floats).
    var total: Int { sizes.reduce(0, +) }
    /// Bytes of the one allocation.
    var bytes: Int { total * MemoryLayout<Float>.stride }

    init(config c: ModelConfig, capacity: Int, training: Bool, parameterCount: Int, lowestTrainedGroup: Int) {
      lowest = training ? max(lowestTrainedGroup, 0) : c.depth + 2
      // Block i is in group min(i + 1, depth).
      firstSaved = min(max(lowest - 1, 0), c.depth)
      let savesPre = lowest == 0, towerTrains = training && lowest <= c.depth
      let bf16 = c.precision == .bf16
      let n = capacity * c.tokens, w = c.width, f = c.hidden, d = c.textDim
      let np = capacity * c.patches
      let workers = Parallel.workers
      let firstSaved = self.firstSaved
      gemmScratchCount = towerTrains ? (workers - 1) * max(3 * w * w, f * w, w * c.patchDim) : 0
      iPatches = takeOperand(np * c.patchDim, bf16); iPatchTokens = take(np * w); iX = take(n * w)
      iH = takeOperand(n * w, bf16); iG = takeOperand(n * f, bf16)
      if savesPre { iXhatPre = take(n * w); iRstdPre = take(n) }
      let blocks = 0..<c.depth
      // Kept per saved block, -1 for the others.
      func saved(_ plan: inout Plan, _ count: Int) -> [Int] { blocks.map { $0 >= firstSaved ? plan.take(count) : -1 } }
      // One buffer per saved block; the blocks that keep nothing share one (allocated if any).
      func perBlock(_ plan: inout Plan, _ count: Int, operand: Bool = false) -> [Int] {
        let shared = firstSaved > 0 ? (operand ? plan.takeOperand(count, bf16) : plan.take(count)) : -1
        return blocks.map { $0 >= firstSaved ? (operand ? plan.takeOperand(count, bf16) : plan.take(count)) : shared }
      }
      iXhat1 = saved(&self, n * w); iRstd1 = saved(&self, n); iXhat2 = saved(&self, n * w); iRstd2 = saved(&self, n)
      iQkv = perBlock(&self, n * 3 * w, operand: true); iAttn = perBlock(&self, n * w, operand: true)
      iLse = perBlock(&self, capacity * c.heads * c.tokens); iFc = perBlock(&self, n * f, operand: true)
      iBranch1 = c.layerScale ? perBlock(&self, n * w) : []; iBranch2 = c.layerScale ? perBlock(&self, n * w) : []
      if towerTrains { iXhatPost = take(n * w); iRstdPost = take(n) }
      iPooled = take(capacity * w)
      iHeadOut = (0..<c.headLayers).map { _ in take(capacity * d) }
      iHeadAct = (0..<c.headLayers).map { _ in takeOperand(capacity * d, bf16) }
      iNorms = take(capacity); iEmb = take(capacity * d)
      let attentionShape = Attention.Shape(batch: capacity, tokens: c.tokens, width: w, heads: c.heads, bf16: bf16)
      iAttnScratch = take(workers * attentionShape.scratchPerWorker)
      let bn = towerTrains ? n : 1
      iDx = take(bn * w); iDh = take(bn * w); iDqkv = take(bn * 3 * w); iDAttn = takeOperand(bn * w, bf16); iDg = take(bn * f)
      iDHead = take(training ? 2 * capacity * max(d, w) : 1)
      iPartials = take(workers * max(3 * w, f, d))
      iGemmScratch = take(gemmScratchCount)
      if bf16 {
        iWeights16 = takeHalves(parameterCount)
        if towerTrains { iStage16 = takeHalves(n * max(3 * w, f, c.patchDim)); iResidual16 = takeHalves(n * w) }
        iHeadIn16 = takeHalves(capacity * w)
        if training { iHeadGrad16 = takeHalves(capacity * d) }
      }
    }

    private mutating func take(_ count: Int) -> Int { sizes.append((count + 15) / 16 * 16); return sizes.count - 1 }
    /// A buffer of product inputs: half the floats in bf16.
    private mutating func takeOperand(_ count: Int, _ bf16: Bool) -> Int { take(bf16 ? (count + 1) / 2 : count) }
    private mutating func takeHalves(_ count: Int) -> Int { take((count + 1) / 2) }

    /// Float offset of every buffer.
    var offsets: [Int] {
      var offsets: [Int] = [], total = 0
      for s in sizes { offsets.append(total); total += s }
      return offsets
    }
  }

  /// `lowestTrainedGroup` (training only): groups below it are frozen and keep nothing. Callers
  /// check `Plan(...).bytes` (with what they allocate beside it) against the memory budget first.
  init(config c: ModelConfig, capacity: Int, training: Bool, parameterCount: Int,
       lowestTrainedGroup: Int = 0) throws(LiftError) {
    self.config = c
    self.capacity = capacity
    self.training = training
    if c.precision == .bf16 { try OneDNN.requireBFloat16() }
    let plan = Plan(config: c, capacity: capacity, training: training, parameterCount: parameterCount,
                    lowestTrainedGroup: lowestTrainedGroup)
    self.lowestTrainedGroup = plan.lowest
    firstSavedBlock = plan.firstSaved
    let bf16 = c.precision == .bf16
    let offsets = plan.offsets
    let total = plan.total
    floatCount = total
    storage = try allocateFloats(total, what: "encoder workspace for batch \(capacity)")
    let base = storage
    func at(_ i: Int) -> UnsafeMutablePointer<Float> { base + offsets[i] }
    func opt(_ i: Int) -> UnsafeMutablePointer<Float>? { i < 0 ? nil : at(i) }
    func operand(_ i: Int) -> MatrixElements {
      bf16 ? .bf16(UnsafeMutableRawPointer(at(i)).assumingMemoryBound(to: BFloat16.self)) : .f32(at(i))
    }
    func halves(_ i: Int) -> UnsafeMutablePointer<BFloat16>? {
      i < 0 ? nil : UnsafeMutableRawPointer(at(i)).assumingMemoryBound(to: BFloat16.self)
    }
    patches = operand(plan.iPatches); patchTokens = at(plan.iPatchTokens); x = at(plan.iX); h = operand(plan.iH); g = operand(plan.iG)
    xhatPre = opt(plan.iXhatPre); rstdPre = opt(plan.iRstdPre)
    xhat1 = plan.iXhat1.map(opt); rstd1 = plan.iRstd1.map(opt); xhat2 = plan.iXhat2.map(opt); rstd2 = plan.iRstd2.map(opt)
    qkv = plan.iQkv.map(operand); attnOut = plan.iAttn.map(operand); lse = plan.iLse.map(at); fc = plan.iFc.map(operand)
    branch1 = plan.iBranch1.map(at); branch2 = plan.iBranch2.map(at)
    xhatPost = opt(plan.iXhatPost); rstdPost = opt(plan.iRstdPost)
    pooled = at(plan.iPooled); headOut = plan.iHeadOut.map(at); headAct = plan.iHeadAct.map(operand)
    norms = at(plan.iNorms); embeddings = at(plan.iEmb); attnScratch = at(plan.iAttnScratch)
    dx = at(plan.iDx); dh = at(plan.iDh); dqkv = at(plan.iDqkv); dAttn = operand(plan.iDAttn); dg = at(plan.iDg)
    dHead = at(plan.iDHead); partials = at(plan.iPartials)
    weights16 = halves(plan.iWeights16); stage16 = halves(plan.iStage16); residual16 = halves(plan.iResidual16)
    headIn16 = halves(plan.iHeadIn16); headGrad16 = halves(plan.iHeadGrad16)
    products = MatMul(scratch: plan.gemmScratchCount > 0 ? at(plan.iGemmScratch) : nil,
                      scratchCapacity: plan.gemmScratchCount)
    // Touch every page now (first-touch costs stay out of the first step).
    storage.initialize(repeating: 0, count: total)
  }

  deinit { storage.deallocate() }

  /// Block i's LayerScale branch buffer (nil without LayerScale).
  @inline(__always) func perBlockBranch(_ list: [UnsafeMutablePointer<Float>], _ i: Int) -> UnsafeMutablePointer<Float>? {
    list.isEmpty ? nil : list[i]
  }

  var bytes: Int { floatCount * 4 }
}
