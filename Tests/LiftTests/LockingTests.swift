import XCTest
@testable import Lift

/// Locking layer groups (LiT / OpenCLIP --lock-image) and layer-wise learning-rate decay.
final class LockingTests: XCTestCase {
  let config = ModelConfig(imageSize: 8, channels: 3, patch: 4, width: 16, depth: 3, heads: 2, mlpRatio: 2, headLayers: 2,
                           textDim: 6)

  func makeTrainer(unlocked: Int?, layerDecay: Double = 1, weightDecay: Double = 0.2) throws -> Trainer {
    var tc = TrainConfig()
    tc.batchCapacity = 4
    tc.warmupSteps = 0
    tc.totalSteps = 100
    tc.unlockedGroups = unlocked
    tc.layerDecay = layerDecay
    tc.weightDecay = weightDecay
    return try Trainer(model: try Model(config: config, seed: 3), config: tc, seed: 1)
  }

  func batch(_ k: Int) -> ([Float], [Float]) {
    var rng = TestRNG(UInt64(100 + k))
    return (rng.floats(4 * 3 * 8 * 8), rng.floats(4 * 6))
  }

  func values(_ t: Trainer, _ tensor: TensorInfo) -> [Float] {
    Array(UnsafeBufferPointer(start: t.model.parameters + tensor.offset, count: tensor.count))
  }

  func testGroupsFollowOpenCLIPLock() {
    let l = ParameterLayout(config, withLogitBias: false)
    XCTAssertEqual(l.towerGroups, 4)
    func group(_ name: String) -> Int { l.group(ofOffset: l.find(name)!.offset) }
    XCTAssertEqual(group("visual.conv1.weight"), 0)
    XCTAssertEqual(group("visual.ln_pre.bias"), 0)
    XCTAssertEqual(group("visual.transformer.resblocks.0.ln_1.weight"), 1)
    XCTAssertEqual(group("visual.transformer.resblocks.1.mlp.c_proj.bias"), 2)
    XCTAssertEqual(group("visual.transformer.resblocks.2.attn.in_proj_weight"), 3)
    XCTAssertEqual(group("visual.ln_post.weight"), 3)
    XCTAssertEqual(group("mlp_projector.projector.0.weight"), 4)
    XCTAssertEqual(group("logit_scale"), 4)
  }

  /// Frozen tensors stay bit-identical; the trained ones get exactly the update of a full run
  /// whose frozen gradients are discarded (weight decay off, so the full run's frozen tensors,
  /// whose gradient is zero, stay put too and both runs see the same forward).
  func testLockedTrainingEqualsFullTrainingWithFrozenGradientsDiscarded() throws {
    for unlocked in [0, 1, 2] {
      let locked = try makeTrainer(unlocked: unlocked, weightDecay: 0)
      let full = try makeTrainer(unlocked: nil, weightDecay: 0)
      let initial = locked.model.layout.tensors.map { values(locked, $0) }
      let boundary = full.model.layout.offset(ofGroup: locked.lowestTrainedGroup)
      for k in 0..<3 {
        let (images, texts) = batch(k)
        try images.withUnsafeBufferPointer { (im) throws(LiftError) in
          try texts.withUnsafeBufferPointer { (tx) throws(LiftError) in
            _ = try locked.step(images: .float32NCHW(im.baseAddress!), texts: tx.baseAddress!, batch: 4)
            // The full run's split step, with the frozen part of its gradient discarded.
            let f = try full.forward(.float32NCHW(im.baseAddress!), batch: 4)
            var grad = [Float](repeating: 0, count: 4 * 6)
            _ = try full.loss(images: f, texts: tx.baseAddress!, count: 4, localStart: 0, localCount: 4, workerCount: 1,
                              dLocal: &grad)
            try full.backward(grad, batch: 4)
            full.gradients.update(repeating: 0, count: boundary)
            _ = try full.apply()
          }
        }
      }
      for (i, t) in locked.model.layout.tensors.enumerated() {
        let frozen = locked.model.layout.group(ofOffset: t.offset) < locked.lowestTrainedGroup
        if frozen { XCTAssertEqual(values(locked, t), initial[i], "\(unlocked): \(t.name) changed") }
        XCTAssertEqual(values(locked, t), values(full, t), "\(unlocked): \(t.name)")
      }
    }
  }

  /// Frozen tensors get no weight decay either (which a zero gradient alone would not prevent).
  func testFrozenTensorsGetNoWeightDecay() throws {
    let t = try makeTrainer(unlocked: 0, weightDecay: 0.5)
    let before = t.model.layout.tensors.map { values(t, $0) }
    let (images, texts) = batch(2)
    try images.withUnsafeBufferPointer { (im) throws(LiftError) in
      try texts.withUnsafeBufferPointer { (tx) throws(LiftError) in
        _ = try t.step(images: .float32NCHW(im.baseAddress!), texts: tx.baseAddress!, batch: 4)
      }
    }
    for (i, tensor) in t.model.layout.tensors.enumerated() {
      let tower = tensor.name.hasPrefix("visual.")
      XCTAssertEqual(values(t, tensor) == before[i], tower, "\(tensor.name) \(tower ? "changed" : "did not train")")
    }
  }

  /// Backward leaves frozen gradients at zero and computes the trained ones as a full backward.
  func testBackwardStopsBelowTheLowestTrainedGroup() throws {
    let locked = try makeTrainer(unlocked: 1), full = try makeTrainer(unlocked: nil)
    let (images, texts) = batch(0)
    for t in [locked, full] {
      try images.withUnsafeBufferPointer { (im) throws(LiftError) in
        try texts.withUnsafeBufferPointer { (tx) throws(LiftError) in
          let f = try t.forward(.float32NCHW(im.baseAddress!), batch: 4)
          var grad = [Float](repeating: 0, count: 4 * 6)
          _ = try t.loss(images: f, texts: tx.baseAddress!, count: 4, localStart: 0, localCount: 4, workerCount: 1,
                         dLocal: &grad)
          try t.backward(grad, batch: 4)
        }
      }
    }
    let boundary = locked.model.layout.offset(ofGroup: locked.lowestTrainedGroup)
    XCTAssertEqual(locked.lowestTrainedGroup, 3)
    XCTAssertTrue(UnsafeBufferPointer(start: locked.gradients, count: boundary).allSatisfy { $0 == 0 })
    let count = locked.model.layout.totalCount - boundary
    XCTAssertEqual(Array(UnsafeBufferPointer(start: locked.gradients + boundary, count: count)),
                   Array(UnsafeBufferPointer(start: full.gradients + boundary, count: count)))
  }

  /// Layer decay d scales group g's first AdamW step by d^(head group - g) (weight decay off:
  /// the first update is proportional to the learning rate).
  func testLayerDecayScalesEachGroupsUpdate() throws {
    let decayed = try makeTrainer(unlocked: nil, layerDecay: 0.5, weightDecay: 0)
    let plain = try makeTrainer(unlocked: nil, weightDecay: 0)
    let before = plain.model.layout.tensors.map { values(plain, $0) }
    let (images, texts) = batch(1)
    for t in [decayed, plain] {
      try images.withUnsafeBufferPointer { (im) throws(LiftError) in
        try texts.withUnsafeBufferPointer { (tx) throws(LiftError) in
          _ = try t.step(images: .float32NCHW(im.baseAddress!), texts: tx.baseAddress!, batch: 4)
        }
      }
    }
    let head = plain.model.layout.towerGroups
    for (i, t) in plain.model.layout.tensors.enumerated() {
      let scale = pow(0.5, Double(head - plain.model.layout.group(ofOffset: t.offset)))
      let a = values(decayed, t), b = values(plain, t)
      for j in 0..<t.count where abs(b[j] - before[i][j]) > 1e-6 {
        XCTAssertEqual(Double(a[j] - before[i][j]) / Double(b[j] - before[i][j]), scale, accuracy: 2e-3 * scale + 1e-6,
                       "\(t.name)[\(j)]")
      }
    }
  }

  func testCheckpointKeepsLockAndDecay() throws {
    let dir = TempDir()
    let t = try makeTrainer(unlocked: 2, layerDecay: 0.75)
    try t.save(path: dir.file("c.safetensors"))
    let (loaded, _) = try Trainer.load(path: dir.file("c.safetensors"))
    XCTAssertEqual(loaded.config.unlockedGroups, 2)
    XCTAssertEqual(loaded.config.layerDecay, 0.75)
    var bad = TrainConfig()
    bad.layerDecay = 1.5
    XCTAssertThrowsError(try bad.validate())
  }
}

/// The head-only fast path and what frozen groups cost.
extension LockingTests {

  func run(_ t: Trainer, steps: Range<Int>, onFeatures: Bool) throws {
    let w = t.model.config.width
    for k in steps {
      let (images, texts) = batch(k)
      var features = [Float](repeating: 0, count: 4 * w)
      try images.withUnsafeBufferPointer { (im) throws(LiftError) in
        try texts.withUnsafeBufferPointer { (tx) throws(LiftError) in
          if onFeatures {
            try t.model.features(.float32NCHW(im.baseAddress!), count: 4, into: &features)
            _ = try t.step(features: features, texts: tx.baseAddress!, batch: 4)
          } else {
            _ = try t.step(images: .float32NCHW(im.baseAddress!), texts: tx.baseAddress!, batch: 4)
          }
        }
      }
    }
  }

  func testFeatureStepsEqualImageStepsWithTheTowerFrozen() throws {
    let onImages = try makeTrainer(unlocked: 0), onFeatures = try makeTrainer(unlocked: 0)
    XCTAssertTrue(onFeatures.towerFrozen)
    try run(onImages, steps: 0..<3, onFeatures: false)
    try run(onFeatures, steps: 0..<3, onFeatures: true)
    let a = Array(UnsafeBufferPointer(start: onImages.model.parameters, count: onImages.model.layout.totalCount))
    let b = Array(UnsafeBufferPointer(start: onFeatures.model.parameters, count: onFeatures.model.layout.totalCount))
    XCTAssertEqual(onFeatures.step, 3)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-6 * max(1, abs(x))) }
    // The head did train.
    let initial = try makeTrainer(unlocked: 0)
    let head = initial.model.layout.find("mlp_projector.projector.0.weight")!
    XCTAssertNotEqual(values(initial, head), values(onFeatures, head))
  }

  func testFeatureStepNeedsTheWholeTowerFrozen() throws {
    for unlocked in [nil, 1] as [Int?] {
      let t = try makeTrainer(unlocked: unlocked)
      XCTAssertFalse(t.towerFrozen)
      let features: [Float] = Array(repeating: 0.5, count: 4 * 16), texts: [Float] = Array(repeating: 1, count: 4 * 6)
      XCTAssertThrowsError(try t.step(features: features, texts: texts, batch: 4)) {
        XCTAssertEqual(($0 as? LiftError)?.status, LIFT_ERR_STATE)
      }
    }
    let t = try makeTrainer(unlocked: 0)
    let bad: [Float] = Array(repeating: .nan, count: 4 * 16), texts: [Float] = Array(repeating: 1, count: 4 * 6)
    XCTAssertThrowsError(try t.step(features: bad, texts: texts, batch: 4)) {
      XCTAssertEqual(($0 as? LiftError)?.status, LIFT_ERR_VALUE)
    }
    XCTAssertEqual(t.step, 0)
  }

  func testFrozenGroupsKeepNoActivationsAndNoOptimiserState() throws {
    let full = try makeTrainer(unlocked: nil)
    let lastBlock = try makeTrainer(unlocked: 1), headOnly = try makeTrainer(unlocked: 0)
    XCTAssertLessThan(lastBlock.workspace.bytes, full.workspace.bytes)
    XCTAssertLessThan(headOnly.workspace.bytes, lastBlock.workspace.bytes)
    XCTAssertEqual(lastBlock.workspace.firstSavedBlock, 2)
    XCTAssertNil(lastBlock.workspace.xhat1[1])
    XCTAssertNotNil(lastBlock.workspace.xhat1[2])

    // A checkpoint holds moments of the trained tensors only, and resumes bit-identically.
    let dir = TempDir()
    try run(lastBlock, steps: 0..<2, onFeatures: false)
    try lastBlock.save(path: dir.file("c.safetensors"))
    let reader = try SafeTensors.Reader(path: dir.file("c.safetensors"))
    for t in lastBlock.model.layout.tensors {
      let trains = t.offset >= lastBlock.trainedOffset
      XCTAssertEqual(reader.tensors["optimizer.exp_avg." + t.name] != nil, trains, t.name)
      XCTAssertEqual(reader.tensors["optimizer.exp_avg_sq." + t.name] != nil, trains, t.name)
    }
    let (resumed, _) = try Trainer.load(path: dir.file("c.safetensors"))
    try run(lastBlock, steps: 2..<4, onFeatures: false)
    try run(resumed, steps: 2..<4, onFeatures: false)
    let n = lastBlock.model.layout.totalCount
    XCTAssertEqual(Array(UnsafeBufferPointer(start: lastBlock.model.parameters, count: n)),
                   Array(UnsafeBufferPointer(start: resumed.model.parameters, count: n)))
    XCTAssertEqual(Array(UnsafeBufferPointer(start: lastBlock.secondMoment, count: n)),
                   Array(UnsafeBufferPointer(start: resumed.secondMoment, count: n)))
  }
}
