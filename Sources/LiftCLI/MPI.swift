import Glibc
import Lift

/// Open MPI's MPI_COMM_WORLD, loaded at run time so that `lift` neither links nor needs MPI
/// unless it is started by Open MPI's mpirun. liblift stays MPI-free: this type supplies the
/// collectives of Trainer.stepDistributed.
///
/// Only Open MPI's ABI is supported (handles are pointers to exported globals: MPI_COMM_WORLD is
/// &ompi_mpi_comm_world, MPI_FLOAT is &ompi_mpi_float, ...; MPI_IN_PLACE is (void *)1 and
/// MPI_STATUS_IGNORE is NULL). LIFT_MPI_LIBRARY names the library file (default libmpi.so.40, the
/// soname of Open MPI 3 to 5 as Debian ships it).
final class MPIWorld: Communicator {
  private typealias Handle = UnsafeMutableRawPointer
  private typealias InitFn = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32
  private typealias VoidFn = @convention(c) () -> Int32
  private typealias RankFn = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
  private typealias AllgatherFn = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle) -> Int32
  private typealias AllgathervFn = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, UnsafePointer<Int32>,
                                                   UnsafePointer<Int32>, Handle, Handle) -> Int32
  private typealias AllreduceFn = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
  private typealias IbarrierFn = @convention(c) (Handle, UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> Int32
  private typealias TestFn = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
  private typealias AbortFn = @convention(c) (Handle, Int32) -> Int32

  let rank: Int
  let size: Int
  /// Ranks on this machine (OMPI_COMM_WORLD_LOCAL_SIZE), for the default thread count.
  let localSize: Int

  private let world, float, int64, sum: Handle
  private let inPlace = UnsafeRawPointer(bitPattern: 1)
  private let finalizeFn: VoidFn
  private let allgatherFn: AllgatherFn
  private let allgathervFn: AllgathervFn
  private let allreduceFn: AllreduceFn
  private let ibarrierFn: IbarrierFn
  private let testFn: TestFn
  private let abortFn: AbortFn
  private var finalized = false

  /// Whether this process was started by Open MPI's launcher (mpirun / mpiexec).
  static var launchedByMPI: Bool { getenv("OMPI_COMM_WORLD_SIZE") != nil }

  /// Loads the library and calls MPI_Init.
  init() throws {
    let name = getenv("LIFT_MPI_LIBRARY").map { String(cString: $0) } ?? "libmpi.so.40"
    // RTLD_GLOBAL: Open MPI's own plugins resolve their MPI symbols against this library.
    guard let lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL) else {
      let why = dlerror().map { String(cString: $0) } ?? "unknown reason"
      throw CLIError("started by mpirun, but Open MPI's library \(name) cannot be loaded (\(why)); install it with apt-get install -y openmpi-bin libopenmpi3, or set LIFT_MPI_LIBRARY")
    }
    func symbol(_ s: String) throws -> Handle {
      guard let p = dlsym(lib, s) else { throw CLIError("\(name) lacks \(s): lift train supports Open MPI only") }
      return p
    }
    func function<F>(_ s: String, _: F.Type) throws -> F { unsafeBitCast(try symbol(s), to: F.self) }
    world = try symbol("ompi_mpi_comm_world")
    float = try symbol("ompi_mpi_float")
    int64 = try symbol("ompi_mpi_int64_t")
    sum = try symbol("ompi_mpi_op_sum")
    let initFn = try function("MPI_Init", InitFn.self)
    let rankFn = try function("MPI_Comm_rank", RankFn.self)
    let sizeFn = try function("MPI_Comm_size", RankFn.self)
    finalizeFn = try function("MPI_Finalize", VoidFn.self)
    allgatherFn = try function("MPI_Allgather", AllgatherFn.self)
    allgathervFn = try function("MPI_Allgatherv", AllgathervFn.self)
    allreduceFn = try function("MPI_Allreduce", AllreduceFn.self)
    ibarrierFn = try function("MPI_Ibarrier", IbarrierFn.self)
    testFn = try function("MPI_Test", TestFn.self)
    abortFn = try function("MPI_Abort", AbortFn.self)
    guard initFn(nil, nil) == 0 else { throw CLIError("MPI_Init failed") }
    var r: Int32 = 0, n: Int32 = 0
    _ = rankFn(world, &r)
    _ = sizeFn(world, &n)
    rank = Int(r)
    size = Int(n)
    localSize = getenv("OMPI_COMM_WORLD_LOCAL_SIZE").flatMap { Int(String(cString: $0)) } ?? 1
  }

  func allGather(_ value: Int64) throws(LiftError) -> [Int64] {
    var all = [Int64](repeating: 0, count: size)
    var v = value
    let rc = all.withUnsafeMutableBytes { allgatherFn(&v, 1, int64, $0.baseAddress, 1, int64, world) }
    guard rc == 0 else { throw LiftError(LIFT_ERR_IO, "MPI_Allgather failed (\(rc)) on rank \(rank)") }
    return all
  }

  func allGatherV(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>, counts: [Int64]) throws(LiftError) {
    guard counts.reduce(0, +) <= Int64(Int32.max) else {
      throw LiftError(LIFT_ERR_ARGUMENT, "the all-gather of \(counts.reduce(0, +)) floats exceeds MPI's int count")
    }
    let c = counts.map { Int32($0) }
    var displs = [Int32](repeating: 0, count: size)
    for r in 1..<max(size, 1) { displs[r] = displs[r - 1] + c[r - 1] }
    let rc = allgathervFn(send, Int32(count), float, recv, c, displs, float, world)
    guard rc == 0 else { throw LiftError(LIFT_ERR_IO, "MPI_Allgatherv failed (\(rc)) on rank \(rank)") }
  }

  func allReduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws(LiftError) {
    var done = 0
    while done < count {
      let n = min(count - done, Int(Int32.max))
      let rc = allreduceFn(inPlace, data + done, Int32(n), float, sum, world)
      guard rc == 0 else { throw LiftError(LIFT_ERR_IO, "MPI_Allreduce failed (\(rc)) on rank \(rank)") }
      done += n
    }
  }

  /// For each flag, whether any rank passed it set (every rank gets the same answer; one
  /// all-reduce for all flags).
  func any(_ flags: [Bool]) throws -> [Bool] {
    var x = flags.map { $0 ? Float(1) : 0 }
    try cli { () throws(LiftError) in try x.withUnsafeMutableBufferPointer { b throws(LiftError) in try allReduceSum(b.baseAddress!, count: b.count) } }
    return x.map { $0 > 0 }
  }

  /// A barrier that sleeps while it waits: the ranks that wait (e.g. for rank 0 to build the
  /// dataset or evaluate) leave the cores to the ones working instead of spinning.
  func barrier() throws {
    var request: UnsafeMutableRawPointer? = nil
    guard ibarrierFn(world, &request) == 0 else { throw CLIError("MPI_Ibarrier failed on rank \(rank)") }
    var done: Int32 = 0
    while true {
      guard testFn(&request, &done, nil) == 0 else { throw CLIError("MPI_Test failed on rank \(rank)") }
      if done != 0 { return }
      usleep(2000)
    }
  }

  func finalize() {
    if !finalized { _ = finalizeFn() }
    finalized = true
  }

  /// Ends every rank of the job (mpirun reports the exit code).
  func abort(_ code: Int32) -> Never {
    _ = abortFn(world, code)
    exit(code)
  }
}
