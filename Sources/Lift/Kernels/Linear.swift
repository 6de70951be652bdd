/// y = x W^T + b for a Linear layer with W (out x in) row-major, over `rows` input rows, and its
/// backward; the products run on `MatMul` (float32 or bfloat16 operands, float32 accumulation).
enum Linear {
  /// y (rows x out) = x (rows x in) W^T + b, or y += x W^T + b when `accumulate`.
  static func forward(_ x: Matrix, rows: Int, inFeatures: Int, outFeatures: Int, weight: Matrix,
                      bias: UnsafePointer<Float>?, _ y: Matrix, accumulate: Bool = false,
                      products: MatMul) throws(LiftError) {
    try products.product(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, x, weight, y,
                         bias: bias, accumulate: accumulate)
  }

  /// Backward of y = x W^T + b: dW += dy^T x, db += column sums of dy (from its float32 copy
  /// `dyValues`), and dx = dy W (dx += dy W when `accumulateInput`; skipped when dx is nil).
  static func backward(_ dy: Matrix, dyValues: UnsafePointer<Float>, _ x: Matrix, rows: Int, inFeatures: Int,
                       outFeatures: Int, weight: Matrix, dWeight: UnsafeMutablePointer<Float>,
                       dBias: UnsafeMutablePointer<Float>?, dx: Matrix?, accumulateInput: Bool = false,
                       products: MatMul) throws(LiftError) {
    try weightGradient(dy, x, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, dWeight: dWeight,
                       products: products)
    if let dBias { VectorOps.addColumnSums(dyValues, rows: rows, cols: outFeatures, lda: outFeatures, into: dBias) }
    if let dx {
      try inputGradient(dy, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures, weight: weight, dx: dx,
                        accumulate: accumulateInput, products: products)
    }
  }

  /// dW (out x in) += dy^T x.
  static func weightGradient(_ dy: Matrix, _ x: Matrix, rows: Int, inFeatures: Int, outFeatures: Int,
                             dWeight: UnsafeMutablePointer<Float>, products: MatMul) throws(LiftError) {
    try products.accumulateTransposed(m: outFeatures, n: inFeatures, k: rows, dy, x, into: dWeight)
  }

  /// dx (rows x in) = dy W, or += when `accumulate`.
  static func inputGradient(_ dy: Matrix, rows: Int, inFeatures: Int, outFeatures: Int, weight: Matrix, dx: Matrix,
                            accumulate: Bool = false, products: MatMul) throws(LiftError) {
    try products.product(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures, dy, weight, dx,
                         accumulate: accumulate)
  }
}
