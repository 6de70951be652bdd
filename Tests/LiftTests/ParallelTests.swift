import Dispatch
import Glibc
import XCTest
@testable import Lift

/// The thread pool under every parallel kernel: each part runs exactly once, whoever calls it
/// and however calls overlap.
final class ParallelTests: XCTestCase {
  /// counts[p] = how many times part p ran, and on how many distinct threads the parts ran.
  private func runCounting(parts: Int, repeats: Int) -> (counts: [Int], threads: Int) {
    var counts = [Int](repeating: 0, count: parts)
    var threadIDs = [pthread_t](repeating: pthread_t(), count: parts)
    counts.withUnsafeMutableBufferPointer { c in
      threadIDs.withUnsafeMutableBufferPointer { t in
        for _ in 0..<repeats {
          Parallel.run(parts) { p in
            c[p] += 1
            t[p] = pthread_self()
          }
        }
      }
    }
    return (counts, Set(threadIDs.map { UInt($0) }).count)
  }

  func testEveryPartRunsOnceOnItsOwnThread() {
    for parts in [2, 3, 8] {
      let (counts, threads) = runCounting(parts: parts, repeats: 500)
      XCTAssertEqual(counts, [Int](repeating: 500, count: parts), "\(parts) parts")
      XCTAssertEqual(threads, parts, "part p runs on helper thread p (part 0 on the caller)")
    }
  }

  func testCallFromInsideAPartRunsItsPartsInline() {
    let outer = 3, inner = 4
    var counts = [Int](repeating: 0, count: outer * inner)
    counts.withUnsafeMutableBufferPointer { c in
      Parallel.run(outer) { p in
        let caller = pthread_self()
        Parallel.run(inner) { q in
          c[p * inner + q] += 1
          XCTAssertTrue(pthread_equal(pthread_self(), caller) != 0, "the nested job stays on its caller's thread")
        }
      }
    }
    XCTAssertEqual(counts, [Int](repeating: 1, count: outer * inner))
  }

  func testCallersOnSeveralThreadsEachGetEveryPart() {
    let callers = 4, parts = 3, repeats = 2000
    var counts = [Int](repeating: 0, count: callers * parts)
    counts.withUnsafeMutableBufferPointer { c in
      let base = UncheckedPointer(c.baseAddress!)
      DispatchQueue.concurrentPerform(iterations: callers) { caller in
        for _ in 0..<repeats {
          Parallel.run(parts) { p in base.pointer[caller * parts + p] += 1 }
        }
      }
    }
    XCTAssertEqual(counts, [Int](repeating: repeats, count: callers * parts))
  }

  func testForRangesCoversEveryElementOnce() {
    var hits = [UInt8](repeating: 0, count: 100_003)
    hits.withUnsafeMutableBufferPointer { h in
      Parallel.forRanges(h.count, grain: 1000) { r in
        for i in r { h[i] &+= 1 }
      }
    }
    XCTAssertTrue(hits.allSatisfy { $0 == 1 })
  }
}

/// A raw pointer the concurrent callers above write disjoint elements through.
private struct UncheckedPointer: @unchecked Sendable {
  let pointer: UnsafeMutablePointer<Int>
  init(_ pointer: UnsafeMutablePointer<Int>) { self.pointer = pointer }
}
