import XCTest
@testable import Lift

/// The whole encoder + objective: analytic parameter gradients against central differences,
/// one random direction per tensor (so every tensor's gradient is checked).
final class ModelGradientTests: XCTestCase {
  static func tinyConfig(_ objective: ModelConfig.Objective, pooling: ModelConfig.Pooling = .average,
                         headLayers: Int = 2, width: Int = 8) -> ModelConfig {
    ModelConfig(imageSize: 8, channels: 3, patch: 4, width: width, depth: 2, heads: 2, mlpRatio: 2,
                headLayers: headLayers, textDim: 6, pooling: pooling, objective: objective)
  }

  /// `richardson`: combine differences at steps h and h/2 as (4 D(h/2) - D(h)) / 3, which
  /// cancels the h^2 error term, for configurations whose loss curves too much for a plain
  /// central difference at h = 1e-2 (no ln_pre: larger activations).
  func checkGradients(_ config: ModelConfig, richardson: Bool = false, file: StaticString = #filePath,
                      line: UInt = #line) throws {
    let model = try Model(config: config, seed: 42)
    // LayerScale starts at 1, which would hide a missing gamma in backward: make it uneven.
    var scaleRNG = TestRNG(5)
    for tensor in model.layout.tensors where tensor.name.contains(".ls_") {
      for i in 0..<tensor.count { model.parameters[tensor.offset + i] = 0.75 + 0.5 * abs(scaleRNG.floats(1)[0]) }
    }
    var tc = TrainConfig()
    tc.batchCapacity = 4
    let trainer = try Trainer(model: model, config: tc)
    var rng = TestRNG(17)
    let batch = 3
    let images = rng.floats(batch * 3 * 8 * 8)
    let texts = rng.floats(batch * config.textDim)
    _ = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: true)
    let grads = Array(UnsafeBufferPointer(start: trainer.gradients, count: model.layout.totalCount))
    trainer.zeroGradients()
    let eps: Float = 1e-2
    for tensor in model.layout.tensors {
      if config.objective == .cosine && tensor.name == "logit_scale" { continue }
      var v = rng.floats(tensor.count)
      let nrm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
      v = v.map { $0 / nrm }
      let p = model.parameters + tensor.offset
      let saved = Array(UnsafeBufferPointer(start: p, count: tensor.count))
      func centralDifference(_ h: Float) throws -> Double {
        for i in 0..<tensor.count { p[i] = saved[i] + h * v[i] }
        let up = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: false)
        for i in 0..<tensor.count { p[i] = saved[i] - h * v[i] }
        let down = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: false)
        for i in 0..<tensor.count { p[i] = saved[i] }
        return (up - down) / (2 * Double(h))
      }
      let numeric = richardson ? (4 * (try centralDifference(eps / 2)) - (try centralDifference(eps))) / 3
                               : try centralDifference(eps)
      var analytic = 0.0
      for i in 0..<tensor.count { analytic += Double(grads[tensor.offset + i]) * Double(v[i]) }
      // Float32 forward noise puts the floor near 5e-5 (measured); a 1% error in any tensor fails.
      let tol = 1.5e-4 + 1e-3 * abs(numeric)
      XCTAssertEqual(analytic, numeric, accuracy: tol, "\(config.objective) \(config.pooling) \(tensor.name)",
                     file: file, line: line)
    }
  }

  func testContrastiveGradients() throws { try checkGradients(Self.tinyConfig(.contrastive)) }
  func testCosineGradients() throws { try checkGradients(Self.tinyConfig(.cosine)) }
  func testSigmoidGradients() throws { try checkGradients(Self.tinyConfig(.sigmoid)) }
  func testTokenPoolingGradients() throws { try checkGradients(Self.tinyConfig(.contrastive, pooling: .token)) }
  func testThreeLayerHeadGradients() throws { try checkGradients(Self.tinyConfig(.contrastive, headLayers: 3)) }
  /// Head dimension 16 (the fused fp32 attention kernel; SmallGemm on CPUs without AVX512-BF16).
  func testWideHeadGradients() throws { try checkGradients(Self.tinyConfig(.contrastive, width: 32)) }
  func testOneLayerHeadGradients() throws { try checkGradients(Self.tinyConfig(.sigmoid, headLayers: 1)) }

  /// Every option of other model families at once: patch bias, no ln_pre, QuickGELU, LayerScale,
  /// two registers, ln_post on the pooled feature, eps 1e-6.
  func testPretrainedFamilyOptionsGradients() throws {
    var c = Self.tinyConfig(.contrastive)
    c.patchBias = true; c.lnPre = false; c.activation = .quickGELU; c.layerScale = true; c.registers = 2
    c.finalNorm = .pooled; c.layerNormEps = 1e-6
    try checkGradients(c, richardson: true)
  }

  /// Registers with class-token pooling and ln_post on every token (DINOv2 with registers).
  func testRegistersTokenPoolingGradients() throws {
    var c = Self.tinyConfig(.sigmoid, pooling: .token)
    c.registers = 3; c.layerScale = true; c.patchBias = true
    try checkGradients(c)
  }

  /// Head dimension 16 (as above) with LayerScale, registers and QuickGELU.
  func testWidePretrainedOptionsGradients() throws {
    var c = Self.tinyConfig(.contrastive, width: 32)
    c.registers = 1; c.layerScale = true; c.activation = .quickGELU; c.finalNorm = .pooled
    try checkGradients(c)
  }
}
