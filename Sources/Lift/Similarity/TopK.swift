/// The k best (score, index) pairs seen so far, where better means a higher score, or an equal
/// score and a lower index. A bounded min-heap over caller-provided storage of k entries, so many
/// of them can live in one allocation.
struct TopKHeap {
  let scores: UnsafeMutablePointer<Float>
  let indices: UnsafeMutablePointer<Int64>
  let k: Int
  private(set) var count = 0

  init(scores: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int64>, k: Int) {
    self.scores = scores
    self.indices = indices
    self.k = k
  }

  @inline(__always)
  static func worse(_ s1: Float, _ i1: Int64, than s2: Float, _ i2: Int64) -> Bool {
    s1 < s2 || (s1 == s2 && i1 > i2)
  }

  /// Offers one candidate; keeps it if it is among the k best so far.
  @inline(__always)
  mutating func offer(_ score: Float, _ index: Int64) {
    if count < k {
      var c = count
      count += 1
      while c > 0 {
        let parent = (c - 1) / 2
        guard Self.worse(score, index, than: scores[parent], indices[parent]) else { break }
        scores[c] = scores[parent]; indices[c] = indices[parent]
        c = parent
      }
      scores[c] = score; indices[c] = index
      return
    }
    guard Self.worse(scores[0], indices[0], than: score, index) else { return }
    siftDown(score, index, from: 0, limit: count)
  }

  /// Places (score, index) at `start` and restores heap order within [0, limit).
  private func siftDown(_ score: Float, _ index: Int64, from start: Int, limit: Int) {
    var c = start
    while true {
      var child = 2 * c + 1
      if child >= limit { break }
      if child + 1 < limit, Self.worse(scores[child + 1], indices[child + 1], than: scores[child], indices[child]) {
        child += 1
      }
      guard Self.worse(scores[child], indices[child], than: score, index) else { break }
      scores[c] = scores[child]; indices[c] = indices[child]
      c = child
    }
    scores[c] = score; indices[c] = index
  }

  /// Sorts the kept entries best-first in place (heap sort); the heap is consumed.
  mutating func sortDescending() {
    var n = count
    while n > 1 {
      // Move the worst remaining entry to the end of the live range.
      let s = scores[0], i = indices[0]
      n -= 1
      let lastS = scores[n], lastI = indices[n]
      scores[n] = s; indices[n] = i
      siftDown(lastS, lastI, from: 0, limit: n)
    }
  }
}
