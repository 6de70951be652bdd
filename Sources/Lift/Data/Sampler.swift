/// splitmix64's output function: a 64-bit mixer used to derive independent seeds and choices.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
  var z = x &+ 0x9E37_79B9_7F4A_7C15
  z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
  z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
  return z ^ (z >> 31)
}

/// A hash of several words (order matters).
@inline(__always)
func mix64(_ words: UInt64...) -> UInt64 {
  var h: UInt64 = 0x243F_6A88_85A3_08D3
  for w in words { h = mix64(h ^ w) }
  return h
}

/// A seeded pseudo-random permutation of 0..<count computed on demand, in O(1) memory: a
/// 4-round Feistel network over the smallest even-bit-width power of two >= count, with cycle
/// walking for values outside the range. Every index maps to a distinct index.
public struct RandomPermutation {
  public let count: UInt64
  private let halfBits: UInt64
  private let mask: UInt64
  private let keys: (UInt64, UInt64, UInt64, UInt64)

  public init(count: UInt64, seed: UInt64) {
    self.count = count
    var bits: UInt64 = 2
    while bits < 62 && (UInt64(1) << bits) < count { bits += 2 }
    halfBits = bits / 2
    mask = (UInt64(1) << halfBits) - 1
    keys = (mix64(seed, 1), mix64(seed, 2), mix64(seed, 3), mix64(seed, 4))
  }

  @inline(__always)
  private func round(_ x: UInt64, _ key: UInt64) -> UInt64 {
    let left = x >> halfBits, right = x & mask
    return (right << halfBits) | (left ^ (mix64(right ^ key) & mask))
  }

  @inline(__always)
  private func feistel(_ x: UInt64) -> UInt64 {
    round(round(round(round(x, keys.0), keys.1), keys.2), keys.3)
  }

  /// The image at position `i` (0 <= i < count).
  public func callAsFunction(_ i: UInt64) -> UInt64 {
    var x = feistel(i)
    while x >= count { x = feistel(x) }
    return x
  }
}

/// How an epoch of `count` samples splits into steps: ceil(count / globalBatch) global batches
/// of near-equal size (sizes differ by at most one, so every sample is used exactly once and no
/// batch is tiny), each split over `workers` ranks the same way. Positions index the epoch's
/// permutation.
public struct EpochPlan: Equatable {
  public let count: Int64
  public let globalBatch: Int
  public let workers: Int

  public init(count: Int64, globalBatch: Int, workers: Int = 1) {
    self.count = count
    self.globalBatch = max(1, globalBatch)
    self.workers = max(1, workers)
  }

  public var batchesPerEpoch: Int { count == 0 ? 0 : Int((count + Int64(globalBatch) - 1) / Int64(globalBatch)) }

  /// Positions [start, end) of global batch `j`.
  public func globalRange(_ j: Int) -> Range<Int64> {
    let nb = Int64(batchesPerEpoch)
    let start = Int64(j) * count / nb, end = Int64(j + 1) * count / nb
    return start..<end
  }

  /// Positions of rank `rank`'s part of global batch `j`.
  public func localRange(_ j: Int, rank: Int) -> Range<Int64> {
    let g = globalRange(j)
    let size = g.upperBound - g.lowerBound, w = Int64(workers), r = Int64(rank)
    return (g.lowerBound + r * size / w)..<(g.lowerBound + (r + 1) * size / w)
  }
}
