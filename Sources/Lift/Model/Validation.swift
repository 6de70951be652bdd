/// Checks at the edges of a step: inputs that would silently poison training are errors that
/// name the image or row.
enum Validation {
  /// float32 images must be finite (uint8 images cannot be wrong).
  static func checkImages(_ images: ImageInput, count: Int, config c: ModelConfig, firstIndex: Int) throws(LiftError) {
    guard case .float32NCHW(let p) = images else { return }
    let per = c.channels * c.imageSize * c.imageSize
    for i in 0..<count {
      if let j = VectorOps.firstNonFinite(p + i * per, per) {
        throw .value("image \(firstIndex + i) has a non-finite pixel value \(p[i * per + j]) at element \(j)")
      }
    }
  }

  /// Embeddings just computed must be finite with non-zero pre-normalisation norm.
  static func checkEmbeddings(_ ws: Workspace, count: Int, firstIndex: Int) throws(LiftError) {
    for i in 0..<count {
      let nrm = ws.norms[i]
      if !(nrm.isFinite && nrm > 0) {
        throw .value("image \(firstIndex + i): the encoder output has norm \(nrm) (non-finite weights or inputs)")
      }
    }
  }

  /// Rows of a matrix must be finite and non-zero (text embeddings).
  static func checkRows(_ x: UnsafePointer<Float>, rows: Int, cols: Int, name: String) throws(LiftError) {
    for i in 0..<rows {
      if let j = VectorOps.firstNonFinite(x + i * cols, cols) {
        throw .value("\(name) row \(i) has a non-finite value \(x[i * cols + j]) at column \(j)")
      }
      if VectorOps.sumOfSquares(x + i * cols, cols) == 0 { throw .value("\(name) row \(i) is all zeros") }
    }
  }
}

