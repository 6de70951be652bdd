import Glibc

/// Optimisation settings. Defaults are LIFT's: AdamW lr 1e-3, betas (0.9, 0.98), eps 1e-6,
/// weight decay 0.2 on >= 2-D tensors, 500 warm-up steps then cosine decay to 0, global
/// gradient-norm clipping at 1.0.
public struct TrainConfig: Equatable {
  public var learningRate: Double = 1e-3
  public var beta1: Double = 0.9
  public var beta2: Double = 0.98
  public var eps: Double = 1e-6
  public var weightDecay: Double = 0.2
  public var warmupSteps: Int = 500
  /// Length of the schedule: the learning rate reaches 0 at this step and stays there.
  public var totalSteps: Int = 10_000
  /// Global gradient-norm clip; <= 0 disables clipping.
  public var gradClip: Double = 1.0
  /// Largest number of images one forward/backward processes (sizes the activation memory).
  /// Larger batches go through gradient accumulation in micro-batches of at most this size.
  public var batchCapacity: Int = 64
  /// Locking the image tower (LiT; OpenCLIP's --lock-image): nil trains everything; k >= 0
  /// freezes the tower except its last k layer groups (ParameterLayout.group: the embeddings,
  /// each block, the last block with ln_post). The LIFT head and the logit scale/bias always
  /// train. Frozen tensors get no gradient (backward stops below the lowest trained group), no
  /// AdamW update and no weight decay.
  public var unlockedGroups: Int?
  /// Layer-wise learning-rate decay (BEiT/MAE fine-tuning): layer group g (0 = embeddings,
  /// i + 1 = block i, depth = the last block with ln_post, depth + 1 = the head and logit
  /// scale/bias) learns at lr * layerDecay^(depth + 1 - g), MAE's rule. 1 turns it off.
  public var layerDecay: Double = 1

  /// Most optimiser steps a schedule (and a checkpoint) may have: far beyond any run, far from
  /// integer overflow.
  public static let maxSteps = 1 << 40

  public init() {}

  public func validate() throws(LiftError) {
    func require(_ ok: Bool, _ message: @autoclosure () -> String) throws(LiftError) {
      if !ok { throw .argument("train config: \(message())") }
    }
    try require(learningRate.isFinite && learningRate >= 0 && learningRate <= 10,
                "learning rate must be in [0, 10] (got \(learningRate))")
    try require(beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1) (got \(beta1))")
    try require(beta2 >= 0 && beta2 < 1, "beta2 must be in [0, 1) (got \(beta2))")
    try require(eps.isFinite && eps > 0, "eps must be > 0 (got \(eps))")
    try require(weightDecay.isFinite && weightDecay >= 0 && weightDecay <= 10, "weight decay must be in [0, 10] (got \(weightDecay))")
    try require(warmupSteps >= 0, "warm-up steps must be >= 0 (got \(warmupSteps))")
    try require(totalSteps >= 1 && totalSteps <= Checkpoint.maxStep,
                "total steps must be in [1, \(Checkpoint.maxStep)] (got \(totalSteps))")
    try require(warmupSteps <= totalSteps, "warm-up steps (\(warmupSteps)) exceed total steps (\(totalSteps))")
    try require(gradClip.isFinite && gradClip <= 1e6, "gradient clip must be finite and <= 1e6, <= 0 = off (got \(gradClip))")
    try require(batchCapacity >= 1 && batchCapacity <= 1 << 20, "batch capacity must be in [1, 1048576] (got \(batchCapacity))")
    if let k = unlockedGroups { try require(k >= 0 && k <= 1 << 10, "unlocked groups must be in [0, 1024] (got \(k))") }
    try require(layerDecay.isFinite && layerDecay > 0 && layerDecay <= 1, "layer decay must be in (0, 1] (got \(layerDecay))")
  }

  /// OpenCLIP's cosine_lr: linear warm-up lr * (step + 1) / warmup, then
  /// 0.5 * (1 + cos(pi * e / es)) * lr with e = step - warmup, es = total - warmup; 0 after total.
  public func learningRate(atStep step: Int) -> Double {
    if step < warmupSteps { return learningRate * Double(step + 1) / Double(warmupSteps) }
    let es = totalSteps - warmupSteps
    if es <= 0 || step >= totalSteps { return 0 }
    let e = step - warmupSteps
    return 0.5 * (1 + cos(Double.pi * Double(e) / Double(es))) * learningRate
  }
}
