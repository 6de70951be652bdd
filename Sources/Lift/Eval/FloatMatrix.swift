/// A rows x cols float32 matrix, row-major, zero-initialised, allocated fallibly (its size comes
/// from outside: the images and texts of a benchmark). Pages never written cost no memory.
public final class FloatMatrix {
  public let rows: Int
  public let cols: Int
  private let storage: ZeroedFloats
  /// The first element. Valid while the matrix lives: a caller whose last use of the matrix is
  /// taking this pointer keeps it alive (withExtendedLifetime) until the pointer's last use.
  public var pointer: UnsafeMutablePointer<Float> { storage.pointer }

  public init(rows: Int, cols: Int, what: @autoclosure () -> String) throws(LiftError) {
    guard rows >= 0, cols >= 1 else { throw .argument("\(what()): \(rows) x \(cols) is not a matrix") }
    let count = try checkedCount(Int64(rows), Int64(cols), what())
    self.rows = rows
    self.cols = cols
    storage = try ZeroedFloats(count, what: what())
  }

  /// Row i (cols floats). i must be in 0..<rows.
  public func row(_ i: Int) -> UnsafeMutablePointer<Float> {
    precondition(i >= 0 && i < rows, "row \(i) of \(rows)")
    return pointer + i * cols
  }

  /// A matrix of the listed rows in order.
  public func gather(_ list: [Int]) throws(LiftError) -> FloatMatrix {
    let out = try FloatMatrix(rows: list.count, cols: cols, what: "\(list.count) rows of \(cols) floats")
    for (k, i) in list.enumerated() { out.row(k).update(from: row(i), count: cols) }
    return out
  }
}
