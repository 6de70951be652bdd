import CLiftABI
import XCTest
@testable import Lift

final class SimilarityTests: XCTestCase {
  func naiveCosine(_ a: [Float], _ b: [Float], d: Int) -> [Double] {
    let n = a.count / d, m = b.count / d
    var out: [Double] = []
    for i in 0..<n {
      for j in 0..<m {
        var dot = 0.0, na = 0.0, nb = 0.0
        for k in 0..<d {
          let x = Double(a[i * d + k]), y = Double(b[j * d + k])
          dot += x * y; na += x * x; nb += y * y
        }
        out.append(dot / (na.squareRoot() * nb.squareRoot()))
      }
    }
    return out
  }

  func testCosineMatchesDoublePrecisionReference() throws {
    var rng = TestRNG(11)
    for (n, m, d) in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (40, 2, 300)] {
      let a = rng.floats(n * d).map { $0 * 10 }
      let b = rng.floats(m * d)
      var out = [Float](repeating: 0, count: n * m)
      try a.withUnsafeBufferPointer { pa in
        try b.withUnsafeBufferPointer { pb in
          try out.withUnsafeMutableBufferPointer {
            try Similarity.cosine(pa.baseAddress!, n: n, pb.baseAddress!, m: m, d: d, into: $0.baseAddress!)
          }
        }
      }
      for (x, y) in zip(out, naiveCosine(a, b, d: d)) { XCTAssertEqual(Double(x), y, accuracy: 1e-5) }
    }
  }

  func testCosineRejectsZeroAndNonFiniteRows() {
    let a: [Float] = [1, 0, 0, 0]
    let b: [Float] = [1, 1, .nan, 1]
    var out = [Float](repeating: 0, count: 4)
    assertLiftError(LIFT_ERR_VALUE, ["a row 1", "zeros"]) {
      try Similarity.cosine(a, n: 2, a, m: 2, d: 2, into: &out)
    }
    assertLiftError(LIFT_ERR_VALUE, ["b row 1", "non-finite"]) {
      try Similarity.cosine([1, 1], n: 1, b, m: 2, d: 2, into: &out)
    }
  }

  func testTopKAgreesWithSortingAndBreaksTiesByIndex() throws {
    var rng = TestRNG(5)
    let n = 37, m = 101
    // Few distinct values, so ties are common.
    let scores = (0..<n * m).map { _ in Float(rng.int(9)) }
    for k in [1, 5, 101] {
      var idx = [Int64](repeating: -1, count: n * k)
      var val = [Float](repeating: .nan, count: n * k)
      try Similarity.topK(scores, n: n, m: m, k: k, indices: &idx, values: &val)
      for i in 0..<n {
        let expected = (0..<m).sorted { (scores[i * m + $0], -$0) > (scores[i * m + $1], -$1) }.prefix(k)
        XCTAssertEqual(Array(idx[i * k..<(i + 1) * k]), expected.map(Int64.init), "row \(i) k \(k)")
        XCTAssertEqual(Array(val[i * k..<(i + 1) * k]), expected.map { scores[i * m + $0] })
      }
    }
  }

  func testTopKLargeInputUsesBothCoresConsistently() throws {
    var rng = TestRNG(8)
    let n = 300, m = 2000, k = 7
    let scores = rng.floats(n * m)
    var idx = [Int64](repeating: -1, count: n * k)
    try Similarity.topK(scores, n: n, m: m, k: k, indices: &idx, values: nil)
    for i in stride(from: 0, to: n, by: 37) {
      let expected = (0..<m).sorted { scores[i * m + $0] > scores[i * m + $1] }.prefix(k).map(Int64.init)
      XCTAssertEqual(Array(idx[i * k..<(i + 1) * k]), expected)
    }
  }

  func testTopKRejectsBadArguments() {
    assertLiftError(LIFT_ERR_ARGUMENT, ["k must be in [1, 2]"]) {
      try Similarity.topK([1, 2], n: 1, m: 2, k: 3, indices: nil, values: nil)
    }
    assertLiftError(LIFT_ERR_VALUE, ["row 0 column 1", "NaN"]) {
      try Similarity.topK([1, .nan], n: 1, m: 2, k: 1, indices: nil, values: nil)
    }
  }

  func testStoreSearchMatchesBruteForce() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    var rng = TestRNG(21)
    let rows = 500, dim = 16
    let values = rng.floats(rows * dim)
    let writer = try EmbeddingStoreWriter(path: path, dim: Int64(dim), dtype: LIFT_DTYPE_FLOAT32)
    try values.withUnsafeBufferPointer { try writer.append($0.baseAddress!, rows: Int64(rows)) }
    try writer.finish()
    let store = try EmbeddingStore(paths: [path])
    try store.setBufferBytes(1000)  // many blocks
    let queries = Array(values[(3 * dim)..<(5 * dim)]) + rng.floats(dim)
    let k = 6
    var idx = [Int64](repeating: -1, count: 3 * k)
    var sc = [Float](repeating: 0, count: 3 * k)
    try queries.withUnsafeBufferPointer { try store.search(queries: $0.baseAddress!, count: 3, k: k, indices: &idx, scores: &sc) }
    let reference = naiveCosine(queries, values, d: dim)
    for q in 0..<3 {
      let expected = (0..<rows).sorted { reference[q * rows + $0] > reference[q * rows + $1] }.prefix(k)
      XCTAssertEqual(Array(idx[q * k..<(q + 1) * k]), expected.map(Int64.init))
      for (j, r) in expected.enumerated() { XCTAssertEqual(Double(sc[q * k + j]), reference[q * rows + r], accuracy: 1e-5) }
    }
    XCTAssertEqual(idx[0], 3)
    XCTAssertEqual(idx[k], 4)
  }
}

final class VectorOpsTests: XCTestCase {
  func testHalfConversionBothWaysMatchesScalarFloat16() {
    var rng = TestRNG(2)
    var values = rng.floats(1000).map { $0 * 70000 }
    values += [0, -0, 65504, -65504, 65520, 1e-8, 6e-5, 5.96e-8, .infinity, -.infinity]
    var half = [UInt8](repeating: 0, count: values.count * 2)
    values.withUnsafeBufferPointer { src in half.withUnsafeMutableBytes { VectorOps.floatToHalf(src.baseAddress!, $0.baseAddress!, values.count) } }
    var back = [Float](repeating: .nan, count: values.count)
    half.withUnsafeBytes { src in back.withUnsafeMutableBufferPointer { VectorOps.halfToFloat(src.baseAddress!, $0.baseAddress!, values.count) } }
    for (i, v) in values.enumerated() {
      XCTAssertEqual(back[i].bitPattern, Float(Float16(v)).bitPattern, "value \(v)")
    }
  }

  func testFirstNonFiniteFindsTheFirstBadElement() {
    var x = [Float](repeating: 1, count: 100)
    XCTAssertNil(VectorOps.firstNonFinite(x, 100))
    x[70] = .infinity
    x[90] = .nan
    XCTAssertEqual(VectorOps.firstNonFinite(x, 100), 70)
    XCTAssertEqual(VectorOps.firstNonFinite(x, 70), nil)
    x[3] = -.infinity
    XCTAssertEqual(VectorOps.firstNonFinite(x, 5), 3)
    // Large finite values must not be mistaken for overflow.
    XCTAssertNil(VectorOps.firstNonFinite([Float](repeating: 3e38, count: 40), 40))
  }

  func testNormalizeHandlesHugeAndZeroVectors() {
    var x = [Float](repeating: 3e30, count: 33)
    XCTAssertTrue(VectorOps.normalize(&x, 33))
    XCTAssertEqual(Double(VectorOps.norm(x, 33)), 1, accuracy: 1e-6)
    var z = [Float](repeating: 0, count: 5)
    XCTAssertFalse(VectorOps.normalize(&z, 5))
    XCTAssertEqual(z, [0, 0, 0, 0, 0])
  }
}
