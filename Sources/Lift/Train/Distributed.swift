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
    try stepDistributed(.images(images), texts: rawTexts, localBatch: localBatch, communicator: comm)
  }

  /// `stepDistributed` on pooled features (see `step(features:texts:batch:)`).
  public func stepDistributed(_ input: StepInput, texts rawTexts: UnsafePointer<Float>, localBatch: Int,
                              communicator comm: Communicator) throws(LiftError) -> StepStats {
    guard comm.size >= 1, comm.rank >= 0, comm.rank < comm.size else {
      throw .argument("rank \(comm.rank) is not in [0, \(comm.size))")
    }
    return try model.lock.withLock { () throws(LiftError) in
      try stepLocked(input, texts: rawTexts, batch: localBatch, communicator: comm)
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
    guard comm.size >= 1, comm.size <= CCommunicator.maxSize, comm.rank >= 0, comm.rank < comm.size else {
      throw .argument("lift_comm: rank \(comm.rank) of size \(comm.size) (size must be in [1, \(CCommunicator.maxSize)])")
    }
    self.comm = comm
  }
  var rank: Int { Int(comm.rank) }
  var size: Int { Int(comm.size) }
  /// Most ranks a communicator may have (its per-step count arrays hold one entry per rank).
  static let maxSize: Int32 = 1 << 20

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
