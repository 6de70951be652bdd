/// One sample of a step, with the key of its random draws (caption choice, crop, flip): the
/// draws are a function of (seed, epoch, position), so any step can be rebuilt exactly.
struct Draw {
  var ref: SampleRef
  var epoch: UInt64
  var position: UInt64
}

/// Which samples each step of one rank reads: a pure function of the position.
protocol SampleOrder {
  var batchesPerEpoch: Int { get }
  /// This rank's samples of batch `batch` of epoch `epoch`.
  func draws(epoch: Int, batch: Int) throws(LiftError) -> [Draw]
  /// Samples in the global batch (all ranks).
  func globalCount(batch: Int) -> Int
}

/// An indexed source (or any source read in order, unshuffled: evaluation, encoding): every
/// epoch is a seeded permutation of all samples (or their order), cut into global batches
/// (`EpochPlan`), each split over the ranks; every sample is seen exactly once per epoch.
struct IndexedOrder: SampleOrder {
  let source: SampleSource
  let plan: EpochPlan
  let rank: Int
  let seed: UInt64
  let shuffle: Bool

  var batchesPerEpoch: Int { plan.batchesPerEpoch }

  func draws(epoch: Int, batch: Int) throws(LiftError) -> [Draw] {
    let permutation = RandomPermutation(count: UInt64(plan.count), seed: mix64(seed, UInt64(epoch)))
    var out: [Draw] = []
    for p in plan.localRange(batch, rank: rank) {
      let index = shuffle ? Int64(permutation(UInt64(p))) : p
      out.append(Draw(ref: try source.ref(index: index), epoch: UInt64(epoch), position: UInt64(p)))
    }
    return out
  }

  func globalCount(batch: Int) -> Int {
    let r = plan.globalRange(batch)
    return Int(r.upperBound - r.lowerBound)
  }
}

/// A sharded source, streamed: each epoch shuffles the shards (seeded) and deals them to the
/// ranks (rank r takes every R-th), so ranks read disjoint files. A rank reads its shards' samples
/// in file order and shuffles them in blocks of `block` samples (a seeded permutation per block:
/// OpenCLIP's shuffle buffer, made addressable). Each step takes the rank's share of the global
/// batch from this stream; the stream runs on into the next epoch's shards, so every rank runs the
/// same number of steps (an epoch is floor(samples / batch) steps) whatever its shards hold.
///
/// Everything is a function of (seed, ranks, position): a loader started at any position rebuilds
/// the stream from the shards' sample counts and lists at most the shards of the blocks it needs
/// (memory: a block of refs and the few shards it spans).
final class ShardStream: SampleOrder {
  let source: SampleSource
  let counts: [Int64]
  let total: Int64
  let globalBatch: Int
  let rank: Int
  let workers: Int
  let seed: UInt64
  let block: Int
  /// This rank's samples per step (the near-equal split of the global batch).
  let localBatch: Int
  let batchesPerEpoch: Int

  /// Stream epochs located so far: the rank's shards and where the epoch starts in its stream.
  private var epochs: [(shards: [Int], start: Int64, length: Int64)] = []
  /// The block last built: (epoch, block index) and its refs in shuffled order.
  private var cachedBlock: (epoch: Int, index: Int64, refs: [SampleRef])? = nil
  /// Shards listed recently (a block spans few), most recent last.
  private var listed: [(shard: Int, refs: [SampleRef])] = []

  init(source: SampleSource, counts: [Int64], globalBatch: Int, rank: Int, workers: Int, seed: UInt64,
       block: Int) throws(LiftError) {
    guard counts.count >= workers else {
      throw .argument("\(counts.count) shard\(counts.count == 1 ? "" : "s") cannot feed \(workers) ranks: each rank reads "
                      + "its own shards; use at least as many shards as ranks")
    }
    self.source = source
    self.counts = counts
    total = counts.reduce(0, +)
    self.globalBatch = globalBatch
    self.rank = rank
    self.workers = workers
    self.seed = seed
    self.block = max(block, 1)
    let plan = EpochPlan(count: Int64(globalBatch), globalBatch: globalBatch, workers: workers)
    let part = plan.localRange(0, rank: rank)
    localBatch = Int(part.upperBound - part.lowerBound)
    batchesPerEpoch = max(1, Int(total / Int64(globalBatch)))
  }

  func globalCount(batch: Int) -> Int { globalBatch }

  /// Stream epoch `e` of this rank (located in order from epoch 0; cheap arithmetic).
  private func epoch(_ e: Int) -> (shards: [Int], start: Int64, length: Int64) {
    while epochs.count <= e {
      let k = epochs.count
      let permutation = RandomPermutation(count: UInt64(counts.count), seed: mix64(seed, UInt64(k), 0x5A4D))
      let mine = stride(from: rank, to: counts.count, by: workers).map { Int(permutation(UInt64($0))) }
      let start = epochs.last.map { $0.start + $0.length } ?? 0
      epochs.append((mine, start, mine.reduce(Int64(0)) { $0 + counts[$1] }))
    }
    return epochs[e]
  }

  func draws(epoch e: Int, batch b: Int) throws(LiftError) -> [Draw] {
    let first = (Int64(e) * Int64(batchesPerEpoch) + Int64(b)) * Int64(localBatch)
    var out: [Draw] = []
    out.reserveCapacity(localBatch)
    // Find the stream epoch holding `first`, then walk forward.
    var se = 0
    while epoch(se).start + epoch(se).length <= first { se += 1 }
    var offset = first - epoch(se).start
    while out.count < localBatch {
      let current = epoch(se)
      if offset >= current.length {
        se += 1
        offset = 0
        continue
      }
      let k = offset / Int64(block)
      let refs = try blockRefs(epoch: se, index: k)
      let j = Int(offset - k * Int64(block))
      out.append(Draw(ref: refs[j], epoch: UInt64(se), position: (UInt64(rank) << 40) | UInt64(offset)))
      offset += 1
    }
    return out
  }

  /// Block `k` of stream epoch `e`: its samples in file order, permuted.
  private func blockRefs(epoch e: Int, index k: Int64) throws(LiftError) -> [SampleRef] {
    if let c = cachedBlock, c.epoch == e, c.index == k { return c.refs }
    let ep = epoch(e)
    let begin = k * Int64(block), end = min(begin + Int64(block), ep.length)
    var inOrder: [SampleRef] = []
    inOrder.reserveCapacity(Int(end - begin))
    var shardStart: Int64 = 0
    for s in ep.shards {
      let n = counts[s]
      defer { shardStart += n }
      if shardStart + n <= begin { continue }
      if shardStart >= end { break }
      let refs = try shardRefs(s)
      let lo = Int(max(begin - shardStart, 0)), hi = Int(min(end - shardStart, n))
      inOrder += refs[lo..<hi]
    }
    let permutation = RandomPermutation(count: UInt64(inOrder.count), seed: mix64(seed, UInt64(e), UInt64(rank), UInt64(k)))
    let shuffled = (0..<inOrder.count).map { inOrder[Int(permutation(UInt64($0)))] }
    cachedBlock = (e, k, shuffled)
    return shuffled
  }

  /// Shard `s`'s samples, listed (and checked against the count taken when the source opened).
  private func shardRefs(_ s: Int) throws(LiftError) -> [SampleRef] {
    if let hit = listed.firstIndex(where: { $0.shard == s }) { return listed[hit].refs }
    let refs = try source.listShard(s)
    guard Int64(refs.count) == counts[s] else {
      throw .state("shard \(s) now lists \(refs.count) samples but held \(counts[s]) when the data was opened: "
                   + "was it changed during the run?")
    }
    listed.append((s, refs))
    if listed.count > 4 { listed.removeFirst() }
    return refs
  }
}
