import Glibc
import XCTest
@testable import Lift

/// The isolated file check: the child's end (exit, crash, hang, malformed output) becomes the
/// right verdict, and the full read knows each kind of file. (The check of real crafted HDF5
/// files through liblift.so and its helper runs in bindings/python/tests/test_hostile.py.)
final class FileCheckTests: XCTestCase {
  private func shell(_ script: String, timeout: Double = 10) -> FileCheck.Verdict {
    FileCheck.isolated(command: ["/bin/sh", "-c", script], timeout: timeout)
  }

  func testVerdictLinesBecomeVerdicts() {
    XCTAssertEqual(shell("echo noise; printf 'ok\\tstore of 2 x 4\\n'"), .passed("store of 2 x 4"))
    XCTAssertEqual(shell("printf 'error\\t3\\tbad header: row 7\\n'; exit 1"),
                   .invalid(LiftError(LIFT_ERR_FORMAT, "bad header: row 7")))
    guard case .failedToRun(let why) = shell("echo something else") else { return XCTFail("no verdict must not pass") }
    XCTAssertTrue(why.contains("something else"), why)
    guard case .failedToRun = FileCheck.isolated(command: ["/nonexistent/lift-file-check"], timeout: 5) else {
      return XCTFail("a missing program")
    }
  }

  func testACrashIsReportedWithItsSignal() {
    XCTAssertEqual(shell("echo reading; kill -SEGV $$"), .crashed(signal: SIGSEGV, detail: ""))
    XCTAssertEqual(shell("echo 'Fatal error: out of range'; echo '#1 frame'; kill -ABRT $$"),
                   .crashed(signal: SIGABRT, detail: "Fatal error: out of range"))
    let error = FileCheck.error(of: .crashed(signal: SIGSEGV, detail: ""), path: "/x.h5")
    XCTAssertEqual(error?.status, LIFT_ERR_UNSAFE)
    XCTAssertTrue(error?.message.contains("do not open it in-process") == true)
  }

  func testAHangIsKilledAtTheTimeout() {
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    XCTAssertEqual(shell("sleep 30", timeout: 0.5), .timedOut(seconds: 0.5))
    clock_gettime(CLOCK_MONOTONIC, &end)
    XCTAssertLessThan(Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) * 1e-9, 5)
    XCTAssertEqual(FileCheck.error(of: .timedOut(seconds: 0.5), path: "/x.h5")?.status, LIFT_ERR_UNSAFE)
  }

  func testOutputIsBounded() {
    // 1 MiB of output before the verdict: the parent keeps the end and still finds the line.
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; printf 'ok\\tfine\\n'"
    XCTAssertEqual(shell(script), .passed("fine"))
    let run = FileCheck.runChild(command: ["/bin/sh", "-c", script], timeout: 10)
    XCTAssertEqual(run.output.count, 1 << 16, "the last 64 KiB of the output are kept")
    XCTAssertEqual(run.exitStatus, 0)
  }

  func testReadAllKnowsEachKindAndRefusesAMismatch() throws {
    let dir = TempDir()
    let path = dir.file("s.h5")
    let writer = try EmbeddingStoreWriter(path: path, dim: 4, dtype: LIFT_DTYPE_FLOAT32, keys: true)
    try writer.append([Float](repeating: 1, count: 8), rows: 2, keys: [Array("a".utf8), Array("b".utf8)])
    try writer.finish()
    XCTAssertEqual(try FileCheck.readAll(path), "embedding store of 2 x 4")
    XCTAssertEqual(try FileCheck.readAll(path, expecting: .store), "embedding store of 2 x 4")
    XCTAssertThrowsError(try FileCheck.readAll(path, expecting: .model)) { error in
      let e = error as! LiftError
      XCTAssertEqual(e.status, LIFT_ERR_FORMAT)
      XCTAssertTrue(e.message.contains("is not a model or training checkpoint"), e.message)
    }
    let text = dir.file("notes.txt")
    XCTAssertEqual(system("echo hello > '\(text)'"), 0)
    XCTAssertThrowsError(try FileCheck.readAll(text)) { error in
      XCTAssertTrue((error as! LiftError).message.contains("neither safetensors nor HDF5"))
    }
  }

  func testAllocationsAndTrainersBeyondTheBudgetAreRefusedFirst() throws {
    MemoryBudget.set(1 << 20)
    defer { MemoryBudget.set(0) }
    XCTAssertEqual(MemoryBudget.bytes, 1 << 20)
    XCTAssertThrowsError(try allocateFloats(1 << 19, what: "the test's buffer")) { error in
      let e = error as! LiftError
      XCTAssertEqual(e.status, LIFT_ERR_MEMORY)
      XCTAssertTrue(e.message.hasPrefix("the test's buffer needs 2097152 bytes, more than the memory budget of 1048576"),
                    e.message)
    }
    let small = try allocateFloats(1 << 16, what: "a small buffer")
    small.deallocate()
    MemoryBudget.set(0)
    let model = try Model(config: try ModelConfig.preset("ViT-XS/14-28", textDim: 16), seed: 1)
    MemoryBudget.set(64 << 20)
    var config = TrainConfig()
    config.batchCapacity = 8192
    XCTAssertThrowsError(try Trainer(model: model, config: config)) { error in
      let e = error as! LiftError
      XCTAssertEqual(e.status, LIFT_ERR_MEMORY)
      XCTAssertTrue(e.message.contains("a trainer of batch capacity 8192 (batch_capacity) needs"), e.message)
      XCTAssertTrue(e.message.contains("loss logits 268599296"), e.message)
    }
    config.batchCapacity = 64
    XCTAssertNoThrow(try Trainer(model: model, config: config))
  }

  func testMemoryBudgetParsesSizes() {
    XCTAssertEqual(MemoryBudget.parse("4096"), 4096)
    XCTAssertEqual(MemoryBudget.parse("512M"), 512 << 20)
    XCTAssertEqual(MemoryBudget.parse(" 2g "), 2 << 30)
    XCTAssertNil(MemoryBudget.parse("0"))
    XCTAssertNil(MemoryBudget.parse("-1"))
    XCTAssertNil(MemoryBudget.parse("lots"))
    XCTAssertNil(MemoryBudget.parse("99999999999T"))
    XCTAssertGreaterThanOrEqual(MemoryBudget.bytes, 1 << 30)
  }
}
