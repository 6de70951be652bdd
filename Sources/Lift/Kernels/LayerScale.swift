/// LayerScale on a residual branch (DeiT-III, DINOv2): x = x + gamma * y, with gamma a learned
/// vector over the columns (the width), and its backward.
enum LayerScale {
  /// x[r, j] += gamma[j] * y[r, j] for a rows x cols matrix (parallel over rows).
  static func addScaled(_ y: UnsafePointer<Float>, gamma: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>,
                        rows: Int, cols: Int) {
    Parallel.forRanges(rows, grain: max(1, (1 << 14) / cols)) { r in
      for row in r {
        let xr = x + row * cols, yr = y + row * cols
        var j = 0
        while j + 16 <= cols { xr.vstore(xr.vload(j) + gamma.vload(j) * yr.vload(j), j); j += 16 }
        while j < cols { xr[j] += gamma[j] * yr[j]; j += 1 }
      }
    }
  }

  /// Given dx = dLoss/d(x after the update) and the branch output y (both rows x cols):
  /// dBranch = dx * gamma (dLoss/dy), and dGamma += column sums of dx * y. `partials` holds
  /// workers * cols floats; the sum over workers runs in worker order (deterministic for a
  /// given worker count).
  static func backward(_ dx: UnsafePointer<Float>, branch y: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                       dBranch: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                       partials: UnsafeMutablePointer<Float>) {
    let parts = Parallel.forWorkers(rows, grain: max(1, (1 << 14) / cols)) { w, r in
      let acc = partials + w * cols
      acc.initialize(repeating: 0, count: cols)
      for row in r {
        let dr = dx + row * cols, yr = y + row * cols, out = dBranch + row * cols
        var j = 0
        while j + 16 <= cols {
          let d = dr.vload(j)
          out.vstore(d * gamma.vload(j), j)
          acc.vstore(acc.vload(j) + d * yr.vload(j), j)
          j += 16
        }
        while j < cols {
          out[j] = dr[j] * gamma[j]
          acc[j] += dr[j] * yr[j]
          j += 1
        }
      }
    }
    for w in 0..<parts {
      let acc = partials + w * cols
      for j in 0..<cols { dGamma[j] += acc[j] }
    }
  }
}
