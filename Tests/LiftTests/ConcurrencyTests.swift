import Dispatch
import XCTest
@testable import Lift

/// Two trainers and two loaders driven from different threads at once give exactly what each
/// gives alone: no state is shared between handles (Profile's totals are, under a mutex).
final class ConcurrencyTests: XCTestCase {
  static func run(dataset: ImageDataset, seed: UInt64, steps: Int) throws -> [Float] {
    let config = ModelConfig(imageSize: 8, channels: 1, patch: 4, width: 16, depth: 1, heads: 1, mlpRatio: 2,
                             textDim: dataset.textDim)
    var tc = TrainConfig()
    tc.batchCapacity = 4
    tc.warmupSteps = 1
    tc.totalSteps = steps
    let trainer = try Trainer(model: try Model(config: config, seed: seed), config: tc)
    var options = DataLoader.Options(batchSize: 4, imageSize: 8, channels: 1)
    options.seed = seed
    let loader = try DataLoader(dataset: dataset, options: options)
    for _ in 0..<steps {
      let batch = try loader.next()
      _ = try trainer.step(images: .uint8NHWC(UnsafePointer(batch.images)), texts: batch.texts, batch: batch.count)
    }
    return Array(UnsafeBufferPointer(start: trainer.model.parameters, count: trainer.model.layout.totalCount))
  }

  func testTwoTrainersAndLoadersOnTwoThreads() throws {
    let dir = TempDir()
    let path = dir.file("data.h5")
    try makeDataset(path, images: 24, height: 8, width: 8, channels: 1, captions: 6, textDim: 8)
    let dataset = try ImageDataset(paths: [path])
    let alone = try [1, 2].map { try Self.run(dataset: dataset, seed: UInt64($0), steps: 6) }
    let results = Results()
    DispatchQueue.concurrentPerform(iterations: 2) { i in
      do {
        let params = try Self.run(dataset: dataset, seed: UInt64(i + 1), steps: 6)
        results.set(i, params)
      } catch {
        results.fail("\(error)")
      }
    }
    XCTAssertNil(results.failure)
    XCTAssertEqual(results.values[0], alone[0])
    XCTAssertEqual(results.values[1], alone[1])
  }

  /// Results gathered from several threads.
  final class Results: @unchecked Sendable {
    private let lock = Lock()
    private(set) var values: [[Float]] = [[], []]
    private(set) var failure: String?
    func set(_ i: Int, _ v: [Float]) { lock.withLock { values[i] = v } }
    func fail(_ message: String) { lock.withLock { failure = message } }
  }
}
