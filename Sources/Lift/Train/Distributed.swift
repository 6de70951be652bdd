/// The collectives a data-parallel step needs. liblift links no MPI library: drivers supply
/// these (MPI, mpi4py, or an in-process fake for tests).
public protocol Communicator: AnyObject {
  var rank: Int { get }
  var size: Int { get }
  /// all[r] = the value rank r passed.
  func allGather(_ value: Int64) throws(LiftError) -> [Int64]
  /// Rank-order concatenation of every rank's block (counts[r] floats from rank r) into recv.
  func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError)
  /// In-place sum over ranks, identical on every rank.
  func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError)
}

extension Trainer {
  /// One optimiser step of the global batch made of every rank's local images/texts
  /// (local batch may exceed the capacity: micro-batches with cached features). See
  /// lift_trainer_step_distributed in lift.h for the contract.
  public func stepDistributed(images: ImageInput, texts rawTexts: UnsafePointer<Float>, localBatch: Int,
                              communicator comm: Communicator) throws(LiftError) -> StepStats {
    guard localBatch >= 1 else { throw .argument("local batch must be >= 1 (got \(localBatch))") }
    guard comm.size >= 1, comm.rank >= 0, comm.rank < comm.size else {
      throw .argument("rank \(comm.rank) is not in [0, \(comm.size))")
    }
    let d = model.config.textDim, cap = config.batchCapacity
    let counts = try comm.allGather(Int64(localBatch))
    guard counts.count == comm.size, counts.allSatisfy({ $0 >= 1 }) else {
      throw .argument("every rank must contribute at least one image (counts \(counts))")
    }
    let total = Int(counts.reduce(0, +))
    let localStart = Int(counts[..<comm.rank].reduce(0, +))
    do throws(LiftError) {
      try cachedFeatures.reserve(localBatch * d)
      try featureGrads.reserve(localBatch * d)
      try gatheredFeatures.reserve(total * d)
      try gatheredTexts.reserve(total * d)
      let local = cachedFeatures.pointer, dLocal = featureGrads.pointer
      let global = gatheredFeatures.pointer, globalTexts = gatheredTexts.pointer
      // 1. Features of this rank's images, micro-batch by micro-batch.
      var start = 0
      while start < localBatch {
        let n = min(cap, localBatch - start)
        let f = try forward(images.advanced(byImages: start, config: model.config), batch: n)
        (local + start * d).update(from: f, count: n * d)
        start += n
      }
      // 2. Everyone's features and texts.
      let blockCounts = counts.map { $0 * Int64(d) }
      try Profile.measure(.gather) { () throws(LiftError) in
        try comm.allGatherV(local, count: localBatch * d, into: global, counts: blockCounts)
        try comm.allGatherV(rawTexts, count: localBatch * d, into: globalTexts, counts: blockCounts)
      }
      // 3. Loss of the global batch; gradient for this rank's rows, scaled by the rank count so
      //    that averaging the gradient buffers is exact.
      _ = try loss(images: global, texts: globalTexts, count: total, localStart: localStart, localCount: localBatch,
                   workerCount: comm.size, dLocal: dLocal)
      // 4. Backward: the pending forward serves a single micro-batch; otherwise recompute each.
      if localBatch <= cap {
        try backward(dLocal, batch: localBatch)
      } else {
        var s = 0
        while s < localBatch {
          let n = min(cap, localBatch - s)
          _ = try forward(images.advanced(byImages: s, config: model.config), batch: n)
          try backward(dLocal + s * d, batch: n)
          s += n
        }
      }
      // 5. Average the gradient over ranks, then the identical update everywhere.
      try Profile.measure(.allReduce) { () throws(LiftError) in try comm.allReduceSum(gradients, count: model.layout.totalCount) }
      if comm.size > 1 {
        AdamW.scaleBuffer(gradients, count: model.layout.totalCount, by: 1 / Float(comm.size))
      }
      return try apply()
    } catch {
      zeroGradients()
      throw error
    }
  }
}

/// A C lift_comm as a Communicator.
final class CCommunicator: Communicator {
  let comm: lift_comm
  init(_ comm: lift_comm) throws(LiftError) {
    guard comm.allgather_int64 != nil, comm.allgatherv_float != nil, comm.allreduce_sum_float != nil else {
      throw .argument("lift_comm: every callback must be set")
    }
    self.comm = comm
  }
  var rank: Int { Int(comm.rank) }
  var size: Int { Int(comm.size) }

  func allGather(_ value: Int64) throws(LiftError) -> [Int64] {
    var all = [Int64](repeating: 0, count: size)
    let rc = all.withUnsafeMutableBufferPointer { comm.allgather_int64!(comm.context, value, $0.baseAddress!) }
    guard rc == 0 else { throw .io("the all-gather callback failed (\(rc)) on rank \(rank)") }
    return all
  }

  func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError) {
    let rc = counts.withUnsafeBufferPointer { comm.allgatherv_float!(comm.context, send, Int64(count), recv, $0.baseAddress!) }
    guard rc == 0 else { throw .io("the all-gather-v callback failed (\(rc)) on rank \(rank)") }
  }

  func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError) {
    let rc = comm.allreduce_sum_float!(comm.context, data, Int64(count))
    guard rc == 0 else { throw .io("the all-reduce callback failed (\(rc)) on rank \(rank)") }
  }
}
