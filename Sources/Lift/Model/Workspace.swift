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

  /// `lowestTrainedGroup` (training only): groups below it are frozen and keep nothing.
  init(config c: ModelConfig, capacity: Int, training: Bool, parameterCount: Int,
       lowestTrainedGroup: Int = 0) throws(LiftError) {
    self.config = c
    self.capacity = capacity
    self.training = training
    let lowest = training ? max(lowestTrainedGroup, 0) : c.depth + 2
    self.lowestTrainedGroup = lowest
    // Block i is in group min(i + 1, depth).
    let firstSaved = min(max(lowest - 1, 0), c.depth)
    firstSavedBlock = firstSaved
    let savesPre = lowest == 0, towerTrains = lowest <= c.depth
    let bf16 = c.precision == .bf16
    if bf16 { try OneDNN.requireBFloat16() }
    let n = capacity * c.tokens, w = c.width, f = c.hidden, d = c.textDim
    let np = capacity * c.patches
    let workers = Parallel.workers
    // Sizes in floats, in allocation order; every buffer is rounded up to 16 floats. A buffer
    // of product inputs takes half the floats in bf16.
    var sizes: [Int] = []
    func take(_ count: Int) -> Int { sizes.append((count + 15) / 16 * 16); return sizes.count - 1 }
    func takeOperand(_ count: Int) -> Int { take(bf16 ? (count + 1) / 2 : count) }
    func takeHalves(_ count: Int) -> Int { bf16 ? take((count + 1) / 2) : -1 }
    let iPatches = takeOperand(np * c.patchDim), iPatchTokens = take(np * w), iX = take(n * w), iH = takeOperand(n * w)
    let iG = takeOperand(n * f)
    let iXhatPre = savesPre ? take(n * w) : -1, iRstdPre = savesPre ? take(n) : -1
    let blocks = 0..<c.depth
    // Kept per saved block, -1 for the others.
    func saved(_ count: Int) -> [Int] { blocks.map { $0 >= firstSaved ? take(count) : -1 } }
    // One buffer per saved block; the blocks that keep nothing share one (allocated if any).
    func perBlock(_ count: Int, operand: Bool = false) -> [Int] {
      let shared = firstSaved > 0 ? (operand ? takeOperand(count) : take(count)) : -1
      return blocks.map { $0 >= firstSaved ? (operand ? takeOperand(count) : take(count)) : shared }
    }
    let iXhat1 = saved(n * w), iRstd1 = saved(n), iXhat2 = saved(n * w), iRstd2 = saved(n)
    let iQkv = perBlock(n * 3 * w, operand: true), iAttn = perBlock(n * w, operand: true)
    let iLse = perBlock(capacity * c.heads * c.tokens), iFc = perBlock(n * f, operand: true)
    let iBranch1 = c.layerScale ? perBlock(n * w) : [], iBranch2 = c.layerScale ? perBlock(n * w) : []
    let iXhatPost = towerTrains ? take(n * w) : -1, iRstdPost = towerTrains ? take(n) : -1
    let iPooled = take(capacity * w)
    let iHeadOut = (0..<c.headLayers).map { _ in take(capacity * d) }
    let iHeadAct = (0..<c.headLayers).map { _ in takeOperand(capacity * d) }
    let iNorms = take(capacity), iEmb = take(capacity * d)
    let attentionShape = Attention.Shape(batch: capacity, tokens: c.tokens, width: w, heads: c.heads, bf16: bf16)
    let iAttnScratch = take(workers * attentionShape.scratchPerWorker)
    let bn = towerTrains ? n : 1
    let iDx = take(bn * w), iDh = take(bn * w), iDqkv = take(bn * 3 * w), iDAttn = takeOperand(bn * w), iDg = take(bn * f)
    let iDHead = take(training ? 2 * capacity * max(d, w) : 1)
    let iPartials = take(workers * max(3 * w, f, d))
    let gemmScratchCount = towerTrains ? (workers - 1) * max(3 * w * w, f * w, w * c.patchDim) : 0
    let iGemmScratch = take(gemmScratchCount)
    let iWeights16 = takeHalves(parameterCount)
    let iStage16 = towerTrains ? takeHalves(n * max(3 * w, f, c.patchDim)) : -1
    let iResidual16 = towerTrains ? takeHalves(n * w) : -1
    let iHeadIn16 = takeHalves(capacity * w)
    let iHeadGrad16 = training ? takeHalves(capacity * d) : -1
    var offsets: [Int] = []
    var total = 0
    for s in sizes { offsets.append(total); total += s }
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
    patches = operand(iPatches); patchTokens = at(iPatchTokens); x = at(iX); h = operand(iH); g = operand(iG)
    xhatPre = opt(iXhatPre); rstdPre = opt(iRstdPre)
    xhat1 = iXhat1.map(opt); rstd1 = iRstd1.map(opt); xhat2 = iXhat2.map(opt); rstd2 = iRstd2.map(opt)
    qkv = iQkv.map(operand); attnOut = iAttn.map(operand); lse = iLse.map(at); fc = iFc.map(operand)
    branch1 = iBranch1.map(at); branch2 = iBranch2.map(at)
    xhatPost = opt(iXhatPost); rstdPost = opt(iRstdPost)
    pooled = at(iPooled); headOut = iHeadOut.map(at); headAct = iHeadAct.map(operand)
    norms = at(iNorms); embeddings = at(iEmb); attnScratch = at(iAttnScratch)
    dx = at(iDx); dh = at(iDh); dqkv = at(iDqkv); dAttn = operand(iDAttn); dg = at(iDg)
    dHead = at(iDHead); partials = at(iPartials)
    weights16 = halves(iWeights16); stage16 = halves(iStage16); residual16 = halves(iResidual16)
    headIn16 = halves(iHeadIn16); headGrad16 = halves(iHeadGrad16)
    products = MatMul(scratch: gemmScratchCount > 0 ? at(iGemmScratch) : nil, scratchCapacity: gemmScratchCount)
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
