/// Activation and scratch buffers of the encoder for batches of up to `capacity` images,
/// carved out of one allocation made when the workspace is created: nothing is allocated
/// during a forward or backward pass.
///
/// Shapes (N = capacity * tokens, W = width, F = hidden, D = textDim, L = depth, H = heads):
/// training workspaces keep, per block, what backward needs: xhat1, xhat2 (N x W), rstd1,
/// rstd2 (N), qkv (N x 3W), attention output (N x W), attention log-sum-exp (capacity*H*tokens)
/// and the MLP pre-activation (N x F). Inference workspaces keep one of each, reused per block.
final class Workspace {
  let config: ModelConfig
  let capacity: Int
  let training: Bool
  private let storage: UnsafeMutablePointer<Float>
  let floatCount: Int

  // Forward.
  let patches: UnsafeMutablePointer<Float>      // (capacity*P) x patchDim
  let patchTokens: UnsafeMutablePointer<Float>  // (capacity*P) x W; also dPatch in backward
  let x: UnsafeMutablePointer<Float>            // N x W residual stream
  let h: UnsafeMutablePointer<Float>            // N x W LayerNorm output / ln_post output
  let g: UnsafeMutablePointer<Float>            // N x F GELU output
  let xhatPre: UnsafeMutablePointer<Float>?, rstdPre: UnsafeMutablePointer<Float>?
  let xhat1: [UnsafeMutablePointer<Float>], rstd1: [UnsafeMutablePointer<Float>]
  let xhat2: [UnsafeMutablePointer<Float>], rstd2: [UnsafeMutablePointer<Float>]
  let qkv: [UnsafeMutablePointer<Float>]
  let attnOut: [UnsafeMutablePointer<Float>]
  let lse: [UnsafeMutablePointer<Float>]
  let fc: [UnsafeMutablePointer<Float>]
  let xhatPost: UnsafeMutablePointer<Float>?, rstdPost: UnsafeMutablePointer<Float>?
  let pooled: UnsafeMutablePointer<Float>       // capacity x W
  let headOut: [UnsafeMutablePointer<Float>]    // per head layer: capacity x D pre-activation z
  let headAct: [UnsafeMutablePointer<Float>]    // per head layer l >= 1: GELU(z_{l-1})
  let norms: UnsafeMutablePointer<Float>        // capacity: |f| of each feature row
  let embeddings: UnsafeMutablePointer<Float>   // capacity x D, unit rows
  let attnScratch: UnsafeMutablePointer<Float>  // workers x Attention.scratchPerWorker

  // Backward (training only; point at a dummy otherwise).
  let dx: UnsafeMutablePointer<Float>           // N x W
  let dh: UnsafeMutablePointer<Float>           // N x W
  let dqkv: UnsafeMutablePointer<Float>         // N x 3W
  let dAttn: UnsafeMutablePointer<Float>        // N x W
  let dg: UnsafeMutablePointer<Float>           // N x F
  let dHead: UnsafeMutablePointer<Float>        // 2 x capacity x max(D, W)
  let partials: UnsafeMutablePointer<Float>     // workers x max(2W, 3W, F, D): per-worker column sums
  let ones: UnsafeMutablePointer<Float>         // N ones, for column sums
  /// Matrix-product plans of this workspace's shapes; its split-k scratch is
  /// (workers - 1) x the largest block/patch weight (training only).
  let products: MatMul

  init(config c: ModelConfig, capacity: Int, training: Bool) throws(LiftError) {
    self.config = c
    self.capacity = capacity
    self.training = training
    let n = capacity * c.tokens, w = c.width, f = c.hidden, d = c.textDim
    let np = capacity * c.patches
    let perBlock = training ? c.depth : min(c.depth, 1)
    let workers = Parallel.workers
    // Sizes in allocation order; every buffer is rounded up to 16 floats.
    var sizes: [Int] = []
    func take(_ count: Int) -> Int { sizes.append((count + 15) / 16 * 16); return sizes.count - 1 }
    let iPatches = take(np * c.patchDim), iPatchTokens = take(np * w), iX = take(n * w), iH = take(n * w)
    let iG = take(n * f)
    let iXhatPre = training ? take(n * w) : -1, iRstdPre = training ? take(n) : -1
    let iXhat1 = (0..<(training ? c.depth : 0)).map { _ in take(n * w) }
    let iRstd1 = (0..<(training ? c.depth : 0)).map { _ in take(n) }
    let iXhat2 = (0..<(training ? c.depth : 0)).map { _ in take(n * w) }
    let iRstd2 = (0..<(training ? c.depth : 0)).map { _ in take(n) }
    let iQkv = (0..<perBlock).map { _ in take(n * 3 * w) }
    let iAttn = (0..<perBlock).map { _ in take(n * w) }
    let iLse = (0..<perBlock).map { _ in take(capacity * c.heads * c.tokens) }
    let iFc = (0..<perBlock).map { _ in take(n * f) }
    let iXhatPost = training ? take(n * w) : -1, iRstdPost = training ? take(n) : -1
    let iPooled = take(capacity * w)
    let iHeadOut = (0..<c.headLayers).map { _ in take(capacity * d) }
    let iHeadAct = (0..<c.headLayers).map { _ in take(capacity * d) }
    let iNorms = take(capacity), iEmb = take(capacity * d)
    let iAttnScratch = take(workers * Attention.scratchPerWorker(tokens: c.tokens, headDim: c.headDim))
    let bn = training ? n : 1
    let iDx = take(bn * w), iDh = take(bn * w), iDqkv = take(bn * 3 * w), iDAttn = take(bn * w), iDg = take(bn * f)
    let iDHead = take(training ? 2 * capacity * max(d, w) : 1)
    let iPartials = take(workers * max(3 * w, f, d))
    let iOnes = take(max(n, capacity))
    let gemmScratchCount = training ? (workers - 1) * max(3 * w * w, f * w, w * c.patchDim) : 0
    let iGemmScratch = take(gemmScratchCount)
    var offsets: [Int] = []
    var total = 0
    for s in sizes { offsets.append(total); total += s }
    floatCount = total
    storage = try allocateFloats(total, what: "encoder workspace for batch \(capacity)")
    let base = storage
    func at(_ i: Int) -> UnsafeMutablePointer<Float> { base + offsets[i] }
    func opt(_ i: Int) -> UnsafeMutablePointer<Float>? { i < 0 ? nil : at(i) }
    patches = at(iPatches); patchTokens = at(iPatchTokens); x = at(iX); h = at(iH); g = at(iG)
    xhatPre = opt(iXhatPre); rstdPre = opt(iRstdPre)
    xhat1 = iXhat1.map(at); rstd1 = iRstd1.map(at); xhat2 = iXhat2.map(at); rstd2 = iRstd2.map(at)
    qkv = iQkv.map(at); attnOut = iAttn.map(at); lse = iLse.map(at); fc = iFc.map(at)
    xhatPost = opt(iXhatPost); rstdPost = opt(iRstdPost)
    pooled = at(iPooled); headOut = iHeadOut.map(at); headAct = iHeadAct.map(at)
    norms = at(iNorms); embeddings = at(iEmb); attnScratch = at(iAttnScratch)
    dx = at(iDx); dh = at(iDh); dqkv = at(iDqkv); dAttn = at(iDAttn); dg = at(iDg)
    dHead = at(iDHead); partials = at(iPartials); ones = at(iOnes)
    products = MatMul(scratch: gemmScratchCount > 0 ? at(iGemmScratch) : nil, scratchCapacity: gemmScratchCount)
    // Touch every page now (first-touch costs stay out of the first step) and set the ones.
    storage.initialize(repeating: 0, count: total)
    ones.update(repeating: 1, count: max(n, capacity))
  }

  deinit { storage.deallocate() }

  /// Per-block buffer: training keeps one per block, inference reuses block 0's.
  @inline(__always) func perBlock(_ list: [UnsafeMutablePointer<Float>], _ i: Int) -> UnsafeMutablePointer<Float> {
    training ? list[i] : list[0]
  }

  var bytes: Int { floatCount * 4 }
}
