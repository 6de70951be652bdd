import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// In-process "ranks" on threads, for testing the data-parallel step without MPI.
final class ThreadGroup: @unchecked Sendable {
  let size: Int
  private let barrier = UnsafeMutablePointer<pthread_barrier_t>.allocate(capacity: 1)
  private var slots: [[Float]]
  private var ints: [Int64]

  init(size: Int) {
    self.size = size
    slots = [[Float]](repeating: [], count: size)
    ints = [Int64](repeating: 0, count: size)
    pthread_barrier_init(barrier, nil, UInt32(size))
  }

  deinit { pthread_barrier_destroy(barrier); barrier.deallocate() }

  func wait() { pthread_barrier_wait(barrier) }

  final class Member: Communicator {
    let group: ThreadGroup
    let rank: Int
    var size: Int { group.size }
    init(_ group: ThreadGroup, rank: Int) { self.group = group; self.rank = rank }

    func allGather(_ value: Int64) throws(LiftError) -> [Int64] {
      group.ints[rank] = value
      group.wait()
      let out = group.ints
      group.wait()
      return out
    }

    func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError) {
      group.slots[rank] = Array(UnsafeBufferPointer(start: send, count: count))
      group.wait()
      var offset = 0
      for r in 0..<size { (recv + offset).update(from: group.slots[r], count: group.slots[r].count); offset += group.slots[r].count }
      group.wait()
    }

    func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError) {
      group.slots[rank] = Array(UnsafeBufferPointer(start: data, count: count))
      group.wait()
      for i in 0..<count {
        var s: Float = 0
        for r in 0..<size { s += group.slots[r][i] }
        data[i] = s
      }
      group.wait()
    }
  }
}

/// Runs body(rank) on `size` threads at once and waits for all.
func onThreads(_ size: Int, _ body: @escaping (Int) -> Void) {
  var threads: [pthread_t] = []
  final class Box { let f: () -> Void; init(_ f: @escaping () -> Void) { self.f = f } }
  for r in 0..<size {
    var t = pthread_t()
    let box = Unmanaged.passRetained(Box { body(r) }).toOpaque()
    pthread_create(&t, nil, { arg in
      Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().f()
      return nil
    }, box)
    threads.append(t)
  }
  for t in threads { pthread_join(t, nil) }
}

final class DistributedTests: XCTestCase {
  func trainer(_ objective: ModelConfig.Objective, capacity: Int, unlockedGroups: Int? = nil) throws -> Trainer {
    var tc = TrainConfig()
    tc.unlockedGroups = unlockedGroups
    tc.batchCapacity = capacity
    tc.warmupSteps = 1
    tc.totalSteps = 20
    return try Trainer(model: try Model(config: ModelGradientTests.tinyConfig(objective), seed: 11), config: tc)
  }

  /// Steps two ranks on threads through `batches` of 8 images (3 x 8 x 8) and 8 texts (6-d),
  /// rank r taking images and texts 4r ..< 4r + 4 of each; returns each rank's stats and error.
  func stepOnTwoRanks(_ ranks: [Trainer], _ batches: [([Float], [Float])]) -> (results: [[StepStats]], failures: [String]) {
    let group = ThreadGroup(size: 2)
    var results = [[StepStats]](repeating: [], count: 2)
    var failures = [String](repeating: "", count: 2)
    onThreads(2) { r in
      let member = ThreadGroup.Member(group, rank: r)
      do {
        for (images, texts) in batches {
          let mine = Array(images[(r * 4 * 192)..<((r + 1) * 4 * 192)]), myTexts = Array(texts[(r * 24)..<((r + 1) * 24)])
          let s = try mine.withUnsafeBufferPointer {
            try ranks[r].stepDistributed(images: .float32NCHW($0.baseAddress!), texts: myTexts, localBatch: 4, communicator: member)
          }
          results[r].append(s)
        }
      } catch {
        failures[r] = "\(error)"
      }
    }
    return (results, failures)
  }

  /// 2 ranks x 4 images == 1 process x 8 images, for every objective, with and without
  /// micro-batches on the ranks.
  func testTwoRanksEqualOneProcessWithTheWholeBatch() throws {
    for objective in [ModelConfig.Objective.contrastive, .cosine, .sigmoid] {
      for rankCapacity in [4, 3] {
        var rng = TestRNG(21)
        let steps = 3
        let batches = (0..<steps).map { _ in (rng.floats(8 * 3 * 64), rng.floats(8 * 6)) }
        let single = try trainer(objective, capacity: 8)
        var reference: [StepStats] = []
        for (images, texts) in batches {
          reference.append(try images.withUnsafeBufferPointer { try single.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: 8) })
        }
        let ranks = [try trainer(objective, capacity: rankCapacity), try trainer(objective, capacity: rankCapacity)]
        let (results, failures) = stepOnTwoRanks(ranks, batches)
        XCTAssertEqual(failures, ["", ""])
        let n = single.model.layout.totalCount
        let p0 = Array(UnsafeBufferPointer(start: ranks[0].model.parameters, count: n))
        let p1 = Array(UnsafeBufferPointer(start: ranks[1].model.parameters, count: n))
        XCTAssertEqual(p0, p1, "ranks stay identical")
        let ref = Array(UnsafeBufferPointer(start: single.model.parameters, count: n))
        // Relative L2 distance of the parameter vectors (summation order differs between one
        // process and two ranks, so bit equality is not expected).
        var diff = 0.0, norm = 0.0
        for i in 0..<n {
          diff += Double(p0[i] - ref[i]) * Double(p0[i] - ref[i])
          norm += Double(ref[i]) * Double(ref[i])
        }
        XCTAssertLessThan((diff / norm).squareRoot(), 1e-5, "\(objective) capacity \(rankCapacity)")
        for k in 0..<steps {
          XCTAssertEqual(results[0][k].loss, reference[k].loss, accuracy: 1e-6 * abs(reference[k].loss), "\(objective)")
          XCTAssertEqual(results[0][k].gradNorm, reference[k].gradNorm, accuracy: 1e-5 * reference[k].gradNorm, "\(objective)")
        }
      }
    }
  }

  /// With the tower locked but its last group, 2 ranks (which all-reduce only what trains)
  /// equal one process, and the frozen tensors stay as they were on every rank.
  func testTwoRanksWithLockingEqualOneProcess() throws {
    var rng = TestRNG(31)
    let batches = (0..<3).map { _ in (rng.floats(8 * 3 * 64), rng.floats(8 * 6)) }
    let single = try trainer(.contrastive, capacity: 8, unlockedGroups: 1)
    let initial = Array(UnsafeBufferPointer(start: single.model.parameters, count: single.model.layout.totalCount))
    for (images, texts) in batches {
      _ = try images.withUnsafeBufferPointer { try single.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: 8) }
    }
    let ranks = [try trainer(.contrastive, capacity: 4, unlockedGroups: 1), try trainer(.contrastive, capacity: 4, unlockedGroups: 1)]
    XCTAssertEqual(stepOnTwoRanks(ranks, batches).failures, ["", ""])
    let layout = single.model.layout, frozen = layout.offset(ofGroup: single.lowestTrainedGroup), n = layout.totalCount
    let p0 = Array(UnsafeBufferPointer(start: ranks[0].model.parameters, count: n))
    XCTAssertEqual(Array(p0[..<frozen]), Array(initial[..<frozen]), "frozen tensors unchanged")
    let ref = Array(UnsafeBufferPointer(start: single.model.parameters, count: n))
    var diff = 0.0, norm = 0.0
    for i in frozen..<n {
      diff += Double(p0[i] - ref[i]) * Double(p0[i] - ref[i])
      norm += Double(ref[i]) * Double(ref[i])
    }
    XCTAssertLessThan((diff / norm).squareRoot(), 1e-5)
  }

  func testUnevenPartsAndOneRankIsTheSingleStep() throws {
    // One rank: the distributed step is the one-call step.
    var rng = TestRNG(5)
    let images = rng.floats(5 * 192), texts = rng.floats(5 * 6)
    let a = try trainer(.contrastive, capacity: 8), b = try trainer(.contrastive, capacity: 8)
    let sa = try images.withUnsafeBufferPointer { try a.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: 5) }
    let solo = ThreadGroup(size: 1)
    let sb = try images.withUnsafeBufferPointer {
      try b.stepDistributed(images: .float32NCHW($0.baseAddress!), texts: texts, localBatch: 5, communicator: ThreadGroup.Member(solo, rank: 0))
    }
    XCTAssertEqual(sa, sb)
    XCTAssertEqual(Array(UnsafeBufferPointer(start: a.model.parameters, count: a.model.layout.totalCount)),
                   Array(UnsafeBufferPointer(start: b.model.parameters, count: b.model.layout.totalCount)))
    assertLiftError(LIFT_ERR_ARGUMENT) {
      _ = try images.withUnsafeBufferPointer {
        try b.stepDistributed(images: .float32NCHW($0.baseAddress!), texts: texts, localBatch: 0, communicator: ThreadGroup.Member(solo, rank: 0))
      }
    }
  }

  /// A collective that fails or answers inconsistently is an error that changes nothing: no
  /// update, no step, the gradient zeroed; the trainer works afterwards.
  func testFailingCollectivesChangeNothing() throws {
    final class Faulty: Communicator {
      enum Fault { case gather, reduce, wrongCount }
      let fault: Fault
      init(_ fault: Fault) { self.fault = fault }
      let rank = 0, size = 1
      func allGather(_ value: Int64) throws(LiftError) -> [Int64] {
        if fault == .gather { throw LiftError(LIFT_ERR_IO, "gather failed") }
        return [fault == .wrongCount ? value + 1 : value]
      }
      func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError) {
        recv.update(from: send, count: count)
      }
      func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError) {
        if fault == .reduce { throw LiftError(LIFT_ERR_IO, "reduce failed") }
      }
    }
    var rng = TestRNG(9)
    let images = rng.floats(4 * 192), texts = rng.floats(4 * 6)
    let t = try trainer(.contrastive, capacity: 4)
    let n = t.model.layout.totalCount
    let before = Array(UnsafeBufferPointer(start: t.model.parameters, count: n))
    for fault in [Faulty.Fault.gather, .reduce, .wrongCount] {
      // size 1 skips the all-reduce, so the reduce fault needs a 2-rank view of the same data.
      let comm: Communicator = fault == .reduce ? TwoRankEcho() : Faulty(fault)
      assertLiftError(LIFT_ERR_IO) {
        _ = try images.withUnsafeBufferPointer {
          try t.stepDistributed(images: .float32NCHW($0.baseAddress!), texts: texts, localBatch: 4, communicator: comm)
        }
      }
      XCTAssertEqual(Array(UnsafeBufferPointer(start: t.model.parameters, count: n)), before, "\(fault)")
      XCTAssertEqual(t.step, 0)
      XCTAssertTrue(UnsafeBufferPointer(start: t.gradients, count: n).allSatisfy { $0 == 0 }, "\(fault)")
    }
    _ = try images.withUnsafeBufferPointer { try t.step(images: .float32NCHW($0.baseAddress!), texts: texts, batch: 4) }
    XCTAssertEqual(t.step, 1)
  }

  /// Rank 0 of two whose partner mirrors its data, with an all-reduce that fails.
  final class TwoRankEcho: Communicator {
    let rank = 0, size = 2
    func allGather(_ value: Int64) throws(LiftError) -> [Int64] { [value, value] }
    func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError) {
      recv.update(from: send, count: count)
      (recv + count).update(from: send, count: count)
    }
    func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError) {
      throw LiftError(LIFT_ERR_IO, "reduce failed")
    }
  }

  /// lift_trainer_step_distributed refuses a missing or incomplete lift_comm with a status.
  func testCAPIRejectsBadCommunicators() throws {
    var rng = TestRNG(3)
    let images = rng.floats(4 * 192), texts = rng.floats(4 * 6)
    let t = try trainer(.contrastive, capacity: 4)
    let handle = makeHandle(t)
    defer { releaseHandle(handle) }
    var stats = lift_step_stats().sized
    func call(_ comm: UnsafePointer<lift_comm>?) -> lift_status {
      images.withUnsafeBytes { px in
        cLiftTrainerStepDistributed(handle, px.baseAddress, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, 4, comm, &stats)
      }
    }
    XCTAssertEqual(call(nil), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(String(cString: cLiftLastError()).contains("comm"))
    var incomplete = lift_comm(struct_size: lift_comm.knownSize, context: nil, rank: 0, size: 1, allgather_int64: nil, allgatherv_float: nil, allreduce_sum_float: nil)
    XCTAssertEqual(call(&incomplete), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(String(cString: cLiftLastError()).contains("callback"))
    var outside = lift_comm(struct_size: lift_comm.knownSize, context: nil, rank: 2, size: 2, allgather_int64: { _, v, all in all![0] = v; all![1] = v; return 0 },
                            allgatherv_float: { _, _, _, _, _ in 0 }, allreduce_sum_float: { _, _, _ in 0 })
    XCTAssertEqual(call(&outside), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(String(cString: cLiftLastError()).contains("rank 2"))
    var failing = lift_comm(struct_size: lift_comm.knownSize, context: nil, rank: 0, size: 1, allgather_int64: { _, _, _ in 7 },
                            allgatherv_float: { _, _, _, _, _ in 0 }, allreduce_sum_float: { _, _, _ in 0 })
    XCTAssertEqual(call(&failing), LIFT_ERR_IO)
    XCTAssertTrue(String(cString: cLiftLastError()).contains("(7)"))
    XCTAssertEqual(t.step, 0)
  }
}
