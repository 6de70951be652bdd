import XCTest
@testable import Lift

/// bf16 precision against fp32 on the same weights and data.
///
/// Tolerances: bf16 keeps 8 significant bits, so each rounded product input is off by at most
/// 2^-9 (0.2 %) of itself. A product of K such inputs accumulates K independent rounding errors
/// of random sign, so its relative error is about 2^-9 * sqrt(2) ~ 0.3 % for products without
/// cancellation; a few such errors compound through the blocks of forward and backward.
/// Measured on this test's model: whole gradient 0.5 % (relative L2 distance), every tensor
/// <= 0.9 %, embeddings 0.15-0.2 %. The bounds (2 %, 3 %, 1 %) leave a 3-5x margin. The tests
/// also require a distance well above float32 rounding, so a bf16 mode that silently ran in
/// fp32 would fail.
final class PrecisionTests: XCTestCase {
  override func setUpWithError() throws {
    try XCTSkipUnless(OneDNN.hasBFloat16, "this CPU has no bfloat16 dot products")
  }

  /// A model big enough for products of a realistic length (K up to 256).
  func config(_ precision: ModelConfig.Precision) -> ModelConfig {
    ModelConfig(imageSize: 32, channels: 3, patch: 8, width: 64, depth: 2, heads: 2, mlpRatio: 4, headLayers: 2,
                textDim: 32, precision: precision)
  }

  func gradient(_ precision: ModelConfig.Precision, images: [Float], texts: [Float], batch: Int) throws
    -> (loss: Double, gradient: [Float], layout: ParameterLayout) {
    var tc = TrainConfig()
    tc.batchCapacity = batch
    let trainer = try Trainer(model: try Model(config: config(precision), seed: 11), config: tc)
    let loss = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: true)
    return (loss, Array(UnsafeBufferPointer(start: trainer.gradients, count: trainer.model.layout.totalCount)),
            trainer.model.layout)
  }

  func relativeDistance(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
    var diff = 0.0, norm = 0.0
    for (x, y) in zip(a, b) { diff += Double(x - y) * Double(x - y); norm += Double(y) * Double(y) }
    return (diff / max(norm, 1e-30)).squareRoot()
  }

  func testGradientsAgreeWithFloat32() throws {
    var rng = TestRNG(21)
    let batch = 8
    let images = rng.floats(batch * 3 * 32 * 32), texts = rng.floats(batch * 32)
    let reference = try gradient(.fp32, images: images, texts: texts, batch: batch)
    let mixed = try gradient(.bf16, images: images, texts: texts, batch: batch)
    XCTAssertEqual(mixed.loss, reference.loss, accuracy: 1e-2 * abs(reference.loss))
    let whole = relativeDistance(mixed.gradient[...], reference.gradient[...])
    XCTAssertLessThan(whole, 2e-2, "whole gradient")
    XCTAssertGreaterThan(whole, 1e-5, "bf16 gave float32 results")
    for tensor in reference.layout.tensors where tensor.count > 1 {
      let range = tensor.offset..<(tensor.offset + tensor.count)
      let d = relativeDistance(mixed.gradient[range], reference.gradient[range])
      XCTAssertLessThan(d, 3e-2, tensor.name)
    }
  }

  func testEmbeddingsAgreeWithFloat32() throws {
    var rng = TestRNG(22)
    let count = 5
    let images = rng.floats(count * 3 * 32 * 32)
    var out32 = [Float](repeating: 0, count: count * 32), out16 = out32
    let m32 = try Model(config: config(.fp32), seed: 3), m16 = try Model(config: config(.bf16), seed: 3)
    try images.withUnsafeBufferPointer { p in
      try m32.encode(.float32NCHW(p.baseAddress!), count: count, into: &out32)
      try m16.encode(.float32NCHW(p.baseAddress!), count: count, into: &out16)
    }
    for i in 0..<count {
      let d = relativeDistance(out16[(i * 32)..<((i + 1) * 32)], out32[(i * 32)..<((i + 1) * 32)])
      XCTAssertLessThan(d, 1e-2, "image \(i)")
      XCTAssertGreaterThan(d, 1e-6, "image \(i): bf16 gave float32 results")
    }
  }

  /// The attention core on bfloat16 q, k, v, dO against the float32 core on the same (rounded)
  /// values: only P, dS, O and dqkv are rounded in between. The shapes cover the fused kernel's
  /// edges (head dims 16, 24 (a partial vector), 64 and 80; one token; a query block of exactly
  /// 64 rows, one row more, and 197 tokens = three blocks and an odd rest) and an odd head dim
  /// (9), which takes the oneDNN path.
  func testAttentionMatchesFloat32OnRoundedInputs() throws {
    let shapes = [(2, 9, 32, 2), (2, 33, 48, 2), (1, 1, 32, 2), (1, 64, 64, 1), (1, 65, 32, 1), (1, 197, 192, 3),
                  (1, 70, 160, 2), (1, 9, 18, 2)]
    for (batch, tokens, width, heads) in shapes {
      let shape = Attention.Shape(batch: batch, tokens: tokens, width: width, heads: heads)
      XCTAssertEqual(Attention.Shape(batch: batch, tokens: tokens, width: width, heads: heads, bf16: true).usesFusedKernel,
                     Attention.hasFusedKernel && shape.headDim % 2 == 0)
      try checkRoundedAttention(shape)
    }
  }

  /// The fused float32 kernel against the per-head oneDNN products (and, for short heads, the
  /// small kernels) on the same inputs: output, log-sum-exp, dqkv and the bias sums agree to
  /// float32 rounding. Shapes: one token, the default job's 5, partial vectors (hd 24, 9, 7),
  /// a 64-row query block and one row more, 197 tokens.
  func testFusedFloat32AttentionMatchesProducts() throws {
    guard Attention.hasFusedKernel else { throw XCTSkip("no AVX512-BF16 on this CPU: the fused kernels do not run") }
    let shapes = [(2, 1, 32, 2), (3, 5, 128, 2), (2, 33, 48, 2), (1, 64, 64, 1), (1, 65, 32, 1), (1, 197, 192, 3),
                  (1, 70, 160, 2), (2, 9, 18, 2), (1, 40, 7, 1)]
    for (batch, tokens, width, heads) in shapes {
      var products = Attention.Shape(batch: batch, tokens: tokens, width: width, heads: heads)
      products.fusedKernelAllowed = false
      var fused = products
      fused.fusedKernelAllowed = true
      XCTAssertTrue(fused.usesFusedKernel)
      XCTAssertFalse(products.usesFusedKernel)
      let label = "B \(batch) T \(tokens) W \(width) H \(heads)"
      let a = try attention32(products, seed: 31), b = try attention32(fused, seed: 31)
      XCTAssertLessThan(relativeDistance(b.out[...], a.out[...]), 1e-5, label)
      for i in 0..<a.lse.count { XCTAssertEqual(b.lse[i], a.lse[i], accuracy: 1e-5, label) }
      XCTAssertLessThan(relativeDistance(b.dqkv[...], a.dqkv[...]), 1e-5, label)
      XCTAssertLessThan(relativeDistance(b.bias[...], a.bias[...]), 1e-5, label)
    }
  }

  /// Forward and backward of the fp32 attention core on random q, k, v and dO.
  func attention32(_ shape: Attention.Shape, seed: UInt64) throws
    -> (out: [Float], lse: [Float], dqkv: [Float], bias: [Float]) {
    var rng = TestRNG(seed)
    let n = shape.batch * shape.tokens, w = shape.width
    var qkv: [Float] = rng.floats(n * 3 * w).map { (v: Float) -> Float in v * 2 }
    var dOut: [Float] = rng.floats(n * w)
    var out = [Float](repeating: 0, count: n * w), lse = [Float](repeating: 0, count: shape.tasks * shape.tokens)
    var dqkv = [Float](repeating: 0, count: n * 3 * w), bias = [Float](repeating: 0.5, count: 3 * w)
    var partials = [Float](repeating: 0, count: Parallel.workers * 3 * w)
    var scratch = [Float](repeating: 0, count: Parallel.workers * shape.scratchPerWorker)
    let products = MatMul()
    try elements(&qkv, &out, &dOut) { q, o, d in
      try Attention.forward(qkv: q, shape: shape, out: o, lse: &lse, scratch: &scratch, products: products)
      _ = try Attention.backward(qkv: q, out: o, lse: lse, dOut: d, shape: shape, dqkv: &dqkv, rounded: nil,
                                 dBias: &bias, partials: &partials, scratch: &scratch, products: products)
    }
    return (out, lse, dqkv, bias)
  }

  func checkRoundedAttention(_ shape32: Attention.Shape) throws {
    var shape16 = shape32
    shape16.bf16 = true
    let label = "T \(shape32.tokens) W \(shape32.width) H \(shape32.heads)"
    var rng = TestRNG(23)
    let n = shape32.batch * shape32.tokens, w = shape32.width
    var qkv = rng.floats(n * 3 * w).map { BF16.widen(BF16.round($0 * 2)) }
    var dOut = rng.floats(n * w).map { BF16.widen(BF16.round($0)) }
    var qkv16 = qkv.map { BF16.round($0) }, dOut16 = dOut.map { BF16.round($0) }
    var out = [Float](repeating: 0, count: n * w), out16 = [BFloat16](repeating: 0, count: n * w)
    var lse = [Float](repeating: 0, count: shape32.tasks * shape32.tokens), lse16 = lse
    var dqkv = [Float](repeating: 0, count: n * 3 * w), dqkvScratch = dqkv
    var dqkv16 = [BFloat16](repeating: 0, count: n * 3 * w)
    var bias = [Float](repeating: 0, count: 3 * w), bias16 = bias
    var partials = [Float](repeating: 0, count: Parallel.workers * 3 * w)
    var scratch = [Float](repeating: 0, count: Parallel.workers * max(shape16.scratchPerWorker, shape32.scratchPerWorker))
    let products = MatMul()
    try elements(&qkv, &out, &dOut) { q, o, d in
      try Attention.forward(qkv: q, shape: shape32, out: o, lse: &lse, scratch: &scratch, products: products)
      try Attention.backward(qkv: q, out: o, lse: lse, dOut: d, shape: shape32, dqkv: &dqkv, rounded: nil, dBias: &bias,
                             partials: &partials, scratch: &scratch, products: products)
    }
    try qkv16.withUnsafeMutableBufferPointer { q in
      try out16.withUnsafeMutableBufferPointer { o in
        try dOut16.withUnsafeMutableBufferPointer { d in
          try Attention.forward(qkv: .bf16(q.baseAddress!), shape: shape16, out: .bf16(o.baseAddress!), lse: &lse16,
                                scratch: &scratch, products: products)
          let operand = try Attention.backward(qkv: .bf16(q.baseAddress!), out: .bf16(o.baseAddress!), lse: lse16,
                                               dOut: .bf16(d.baseAddress!), shape: shape16, dqkv: &dqkvScratch,
                                               rounded: &dqkv16, dBias: &bias16, partials: &partials,
                                               scratch: &scratch, products: products)
          XCTAssertEqual(operand.type, .bf16, label)
        }
      }
    }
    // The output is rounded once more (it is a bf16 product input), on top of rounded P.
    XCTAssertLessThan(relativeDistance(out16.map { BF16.widen($0) }[...], out[...]), 1e-2, label)
    for i in 0..<lse.count { XCTAssertEqual(lse16[i], lse[i], accuracy: 1e-4, label) }
    let d = relativeDistance(dqkv16.map { BF16.widen($0) }[...], dqkv[...])
    XCTAssertLessThan(d, 2e-2, label)
    // One token: P = 1 and dS = 0, so dv = dO and dq = dk = 0 exactly in both precisions.
    if shape32.tokens > 1 { XCTAssertGreaterThan(d, 1e-6, label) }
    XCTAssertLessThan(relativeDistance(bias16[...], bias[...]), 2e-2, label)
  }

  func testPrecisionIsSavedWithTheModel() throws {
    let dir = TempDir()
    let model = try Model(config: config(.bf16), seed: 5)
    try model.save(path: dir.file("m.safetensors"))
    XCTAssertEqual(try Model.load(path: dir.file("m.safetensors")).config.precision, .bf16)
  }
}
