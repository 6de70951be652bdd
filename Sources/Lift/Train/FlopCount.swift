/// Matrix-product FLOPs of one training step (forward + backward), counting each multiply-add
/// as 2 FLOPs. Backward of every product costs twice its forward (input and weight
/// gradients), except the patch embedding, whose input (the image) needs no gradient.
/// Attention's backward recomputation of the scores is not counted (it is liblift's choice,
/// not the model's cost).
public enum FlopCount {
  public static func trainingStep(_ c: ModelConfig, batch b: Int) -> Double {
    let t = Double(c.tokens), w = Double(c.width), f = Double(c.hidden), d = Double(c.textDim)
    let p = Double(c.patches), pd = Double(c.patchDim), bb = Double(b)
    let patch = 2 * p * pd * w
    let block = 2 * t * (3 * w * w + w * w + 2 * w * f) + 4 * t * t * w
    let head = 2 * w * d + Double(c.headLayers - 1) * 2 * d * d
    let perImageForward = patch + Double(c.depth) * block + head
    let loss = c.objective == .cosine ? 0 : 2 * bb * bb * d
    return 3 * bb * perImageForward - bb * patch + 2 * loss
  }
}
