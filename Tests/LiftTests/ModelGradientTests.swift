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

  func checkGradients(_ config: ModelConfig, file: StaticString = #filePath, line: UInt = #line) throws {
    let model = try Model(config: config, seed: 42)
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
      for i in 0..<tensor.count { p[i] = saved[i] + eps * v[i] }
      let up = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: false)
      for i in 0..<tensor.count { p[i] = saved[i] - eps * v[i] }
      let down = try lossAndGradient(trainer, images: images, texts: texts, batch: batch, withGradient: false)
      for i in 0..<tensor.count { p[i] = saved[i] }
      let numeric = (up - down) / (2 * Double(eps))
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
  /// Head dimension 16: attention runs on the SmallGemm kernels.
  func testWideHeadGradients() throws { try checkGradients(Self.tinyConfig(.contrastive, width: 32)) }
  func testOneLayerHeadGradients() throws { try checkGradients(Self.tinyConfig(.sigmoid, headLayers: 1)) }
}
