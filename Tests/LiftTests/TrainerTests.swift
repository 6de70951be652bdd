import CLiftABI
import Glibc
import XCTest
@testable import Lift

final class TrainerTests: XCTestCase {
  func tiny(_ objective: ModelConfig.Objective = .contrastive) -> ModelConfig {
    ModelGradientTests.tinyConfig(objective)
  }

  func makeTrainer(_ config: ModelConfig, capacity: Int = 4, seed: UInt64 = 7, train: ((inout TrainConfig) -> Void)? = nil) throws -> Trainer {
    var tc = TrainConfig()
    tc.batchCapacity = capacity
    tc.warmupSteps = 2
    tc.totalSteps = 20
    train?(&tc)
    return try Trainer(model: try Model(config: config, seed: seed), config: tc)
  }

  func params(_ t: Trainer) -> [Float] { Array(UnsafeBufferPointer(start: t.model.parameters, count: t.model.layout.totalCount)) }

  func data(_ batch: Int, seed: UInt64 = 3, textDim: Int = 6) -> (images: [Float], texts: [Float]) {
    var rng = TestRNG(seed)
    return (rng.floats(batch * 3 * 8 * 8), rng.floats(batch * textDim))
  }

  func step(_ t: Trainer, _ images: [Float], _ texts: [Float], batch: Int) throws -> StepStats {
    try images.withUnsafeBufferPointer { try t.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: batch) }
  }

  func testScheduleMatchesOpenCLIPCosineLR() {
    var c = TrainConfig()
    c.learningRate = 0.1
    c.warmupSteps = 4
    c.totalSteps = 12
    XCTAssertEqual(c.learningRate(atStep: 0), 0.025, accuracy: 1e-15)
    XCTAssertEqual(c.learningRate(atStep: 3), 0.1, accuracy: 1e-15)
    XCTAssertEqual(c.learningRate(atStep: 4), 0.1, accuracy: 1e-15)
    XCTAssertEqual(c.learningRate(atStep: 8), 0.05, accuracy: 1e-15)     // cos(pi/2)
    XCTAssertEqual(c.learningRate(atStep: 10), 0.5 * (1 + cos(Double.pi * 6 / 8)) * 0.1, accuracy: 1e-15)
    XCTAssertEqual(c.learningRate(atStep: 12), 0)
    XCTAssertEqual(c.learningRate(atStep: 99), 0)
    c.warmupSteps = 0
    XCTAssertEqual(c.learningRate(atStep: 0), 0.1, accuracy: 1e-15)
  }

  /// Three AdamW steps on hand-set gradients against the formulas evaluated in double.
  func testAdamWMatchesHandComputedSequence() throws {
    let t = try makeTrainer(tiny(.cosine)) { $0.gradClip = 0; $0.warmupSteps = 0; $0.totalSteps = 1000; $0.learningRate = 0.01 }
    let layout = t.model.layout
    let decayed = layout.find("visual.transformer.resblocks.0.attn.in_proj_weight")!
    let plain = layout.find("visual.transformer.resblocks.0.attn.in_proj_bias")!
    let p0 = [t.model.parameters[decayed.offset], t.model.parameters[plain.offset + 1]]
    let gs: [[Float]] = [[0.5, -2], [0.1, 0.3], [-1, 1e-3]]
    var ref = p0.map(Double.init)
    var m = [0.0, 0.0], v = [0.0, 0.0]
    for (k, g) in gs.enumerated() {
      t.zeroGradients()
      t.gradients[decayed.offset] = g[0]
      t.gradients[plain.offset + 1] = g[1]
      let stats = try t.apply()
      let step = Double(k + 1)
      let lr = TrainConfig.learningRate(t.config)(atStep: k)
      XCTAssertEqual(stats.learningRate, lr)
      for i in 0..<2 {
        let wd = i == 0 ? 0.2 : 0
        ref[i] *= 1 - lr * wd
        m[i] = 0.9 * m[i] + 0.1 * Double(g[i])
        v[i] = 0.98 * v[i] + 0.02 * Double(g[i]) * Double(g[i])
        let denom = (v[i] / (1 - pow(0.98, step))).squareRoot() + 1e-6
        ref[i] -= lr / (1 - pow(0.9, step)) * m[i] / denom
      }
      XCTAssertEqual(Double(t.model.parameters[decayed.offset]), ref[0], accuracy: 1e-6 * max(1, abs(ref[0])))
      XCTAssertEqual(Double(t.model.parameters[plain.offset + 1]), ref[1], accuracy: 1e-6 * max(1, abs(ref[1])))
    }
    XCTAssertEqual(t.step, 3)
  }

  func testClippingScalesToTheGlobalNorm() throws {
    // With clip c and gradient g (|g| = 5), the first Adam step moves each parameter by ~lr*sign
    // regardless of scale, so check the clipped gradient through the first moment instead.
    let t = try makeTrainer(tiny(.cosine)) { $0.gradClip = 1; $0.warmupSteps = 0; $0.weightDecay = 0 }
    let o = t.model.layout.find("visual.ln_pre.bias")!.offset
    t.gradients[o] = 3
    t.gradients[o + 1] = 4
    let stats = try t.apply()
    XCTAssertEqual(stats.gradNorm, 5, accuracy: 1e-6)
    XCTAssertEqual(Double(t.firstMoment[o]), 0.1 * 3 / (5 + 1e-6), accuracy: 1e-7)
    XCTAssertEqual(Double(t.firstMoment[o + 1]), 0.1 * 4 / (5 + 1e-6), accuracy: 1e-7)
    XCTAssertEqual(t.gradients[o], 0, "the gradient is zeroed after the update")
  }

  func testLogitScaleIsClampedAfterUpdate() throws {
    let t = try makeTrainer(tiny()) { $0.learningRate = 10; $0.warmupSteps = 0; $0.gradClip = 0 }
    let s = t.model.layout.logitScale
    t.model.parameters[s] = Float(log(100.0)) - 1e-3
    t.gradients[s] = -1  // pushes the scale up by ~lr
    _ = try t.apply()
    XCTAssertEqual(t.model.parameters[s], Float(log(100.0)))
    t.gradients[s] = 1
    for _ in 0..<3 { _ = try t.apply() }
    XCTAssertGreaterThanOrEqual(t.model.parameters[s], 0)
  }

  func testNonFiniteGradientRefusesTheUpdate() throws {
    let t = try makeTrainer(tiny())
    let before = params(t)
    t.gradients[5] = .nan
    assertLiftError(LIFT_ERR_VALUE, ["not finite", "skipped"]) { _ = try t.apply() }
    XCTAssertEqual(params(t), before)
    XCTAssertEqual(t.step, 0)
    XCTAssertEqual(t.gradients[5], 0)
    XCTAssertEqual(t.firstMoment[5], 0)
  }

  func testSameSeedSameRun() throws {
    let (images, texts) = data(4)
    var runs: [[Float]] = []
    for _ in 0..<2 {
      let t = try makeTrainer(tiny())
      for _ in 0..<3 { _ = try step(t, images, texts, batch: 4) }
      runs.append(params(t))
    }
    XCTAssertEqual(runs[0], runs[1])
    let other = try makeTrainer(tiny(), seed: 8)
    XCTAssertNotEqual(params(other), runs[0])
  }

  /// The one-call step is exactly forward -> loss -> backward -> apply.
  func testOneCallStepEqualsSplitSequenceBitForBit() throws {
    for objective in [ModelConfig.Objective.contrastive, .cosine, .sigmoid] {
      let (images, texts) = data(4)
      let a = try makeTrainer(tiny(objective)), b = try makeTrainer(tiny(objective))
      for k in 0..<3 {
        let sa = try step(a, images, texts, batch: 4)
        let emb = try images.withUnsafeBufferPointer { try b.forward(.float32NCHW($0.baseAddress!), batch: 4) }
        let embCopy = Array(UnsafeBufferPointer(start: emb, count: 4 * 6))
        var dLocal = [Float](repeating: 0, count: 4 * 6)
        let loss = try b.loss(images: embCopy, texts: texts, count: 4, localStart: 0, localCount: 4, workerCount: 1, dLocal: &dLocal)
        try b.backward(dLocal, batch: 4)
        let sb = try b.apply()
        XCTAssertEqual(sa, sb, "\(objective) step \(k)")
        XCTAssertEqual(sa.loss, loss)
        XCTAssertEqual(params(a), params(b), "\(objective) step \(k)")
      }
    }
  }

  /// Micro-batches with cached features give the gradient of the whole batch.
  func testAccumulationEqualsOneLargeBatch() throws {
    for objective in [ModelConfig.Objective.contrastive, .sigmoid, .cosine] {
      let (images, texts) = data(8, seed: 11)
      let big = try makeTrainer(tiny(objective), capacity: 8)
      let small = try makeTrainer(tiny(objective), capacity: 3)  // micro-batches 3, 3, 2
      for k in 0..<3 {
        let sBig = try step(big, images, texts, batch: 8)
        let sSmall = try step(small, images, texts, batch: 8)
        XCTAssertEqual(sBig.loss, sSmall.loss, accuracy: 1e-5 * abs(sBig.loss), "\(objective) step \(k)")
        XCTAssertEqual(sBig.gradNorm, sSmall.gradNorm, accuracy: 1e-4 * sBig.gradNorm, "\(objective) step \(k)")
      }
      let p = params(big), q = params(small)
      var worst: Float = 0
      for i in 0..<p.count { worst = max(worst, abs(p[i] - q[i]) / max(1e-2, abs(p[i]))) }
      XCTAssertLessThan(worst, 1e-3, "\(objective)")
    }
  }

  func testTrainingReducesTheLoss() throws {
    // 8 images whose text targets are a fixed function of the image: the loss must fall.
    let (images, texts) = data(8, seed: 5)
    let t = try makeTrainer(tiny(), capacity: 8) { $0.warmupSteps = 5; $0.totalSteps = 60; $0.learningRate = 3e-3 }
    let first = try step(t, images, texts, batch: 8).loss
    var last = first
    for _ in 0..<40 { last = try step(t, images, texts, batch: 8).loss }
    XCTAssertLessThan(last, first * 0.5, "loss \(first) -> \(last)")
  }

  func testBadInputsAreErrorsAndChangeNothing() throws {
    let t = try makeTrainer(tiny())
    let before = params(t)
    var (images, texts) = data(4)
    assertLiftError(LIFT_ERR_ARGUMENT, ["at least 2"]) { _ = try step(t, images, texts, batch: 1) }
    images[100] = .nan
    assertLiftError(LIFT_ERR_VALUE, ["image 0", "non-finite"]) { _ = try step(t, images, texts, batch: 4) }
    images[100] = 0
    texts[7] = .infinity
    assertLiftError(LIFT_ERR_VALUE, ["text embeddings row 1"]) { _ = try step(t, images, texts, batch: 4) }
    texts[7] = 0
    for j in 0..<6 { texts[6 + j] = 0 }
    assertLiftError(LIFT_ERR_VALUE, ["text embeddings row 1", "zeros"]) { _ = try step(t, images, texts, batch: 4) }
    assertLiftError(LIFT_ERR_ARGUMENT) { _ = try step(t, images, texts, batch: 0) }
    assertLiftError(LIFT_ERR_STATE, ["preceding forward"]) { try t.backward([Float](repeating: 0, count: 24), batch: 4) }
    XCTAssertEqual(params(t), before)
    XCTAssertEqual(t.step, 0)
    for i in 0..<t.model.layout.totalCount { XCTAssertEqual(t.gradients[i], 0) }
    // Split form misuse.
    _ = try images.withUnsafeBufferPointer { try t.forward(.float32NCHW($0.baseAddress!), batch: 4) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["pending forward had 4"]) { try t.backward([Float](repeating: 0, count: 18), batch: 3) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["capacity"]) {
      _ = try images.withUnsafeBufferPointer { try t.forward(.float32NCHW($0.baseAddress!), batch: 5) }
    }
    var d = [Float](repeating: 0, count: 24)
    assertLiftError(LIFT_ERR_ARGUMENT, ["outside the batch"]) {
      _ = try t.loss(images: texts, texts: texts, count: 4, localStart: 3, localCount: 2, workerCount: 1, dLocal: &d)
    }
  }

  func testConfigNonsenseIsRejected() {
    func bad(_ change: (inout ModelConfig) -> Void, _ fragment: String) {
      var c = tiny()
      change(&c)
      assertLiftError(LIFT_ERR_ARGUMENT, [fragment]) { _ = try Model(config: c, seed: 1) }
    }
    bad({ $0.heads = 3 }, "not divisible by heads")
    bad({ $0.imageSize = 10 }, "not divisible by patch")
    bad({ $0.channels = 2 }, "channels")
    bad({ $0.textDim = 0 }, "text dim")
    bad({ $0.headLayers = 0 }, "head layers")
    bad({ $0.imageStd = [1, 0, 1] }, "std")
    bad({ $0.imageMean = [0.5] }, "mean/std")
    var tc = TrainConfig()
    tc.warmupSteps = 50
    tc.totalSteps = 10
    assertLiftError(LIFT_ERR_ARGUMENT, ["warm-up"]) { _ = try Trainer(model: try Model(config: tiny(), seed: 1), config: tc) }
    tc = TrainConfig()
    tc.beta2 = 1
    assertLiftError(LIFT_ERR_ARGUMENT, ["beta2"]) { _ = try Trainer(model: try Model(config: tiny(), seed: 1), config: tc) }
    assertLiftError(LIFT_ERR_ARGUMENT, ["unknown preset"]) { _ = try ModelConfig.preset("ViT-Z/3", textDim: 8) }
  }

  func testPresetsValidate() throws {
    for name in ModelConfig.presetNames {
      let c = try ModelConfig.preset(name, textDim: 384)
      XCTAssertNoThrow(try c.validate(), name)
    }
    // ViT-B/16 tower (no projection), counted by hand from OpenCLIP's module shapes.
    let b = ParameterLayout(try ModelConfig.preset("ViT-B/16", textDim: 4096), withLogitBias: false)
    let tower = b.tensors.filter { $0.name.hasPrefix("visual.") }.reduce(0) { $0 + $1.count }
    let block = 2 * 1536 + (3 * 768 * 768 + 3 * 768) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768)
    XCTAssertEqual(tower, 768 * 3 * 16 * 16 + 768 + 197 * 768 + 1536 + 12 * block + 1536)
    XCTAssertEqual(tower, 85_799_424)
  }
}
