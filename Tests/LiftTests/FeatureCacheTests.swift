import CHDF5
import Glibc
import XCTest
@testable import Lift

/// Pooled features of a frozen tower, computed once per image, in memory or in an HDF5 file.
final class FeatureCacheTests: XCTestCase {
  let config = ModelConfig(imageSize: 8, channels: 1, patch: 4, width: 16, depth: 2, heads: 2, mlpRatio: 2, headLayers: 1,
                           textDim: 3)

  /// The images as the loader prepares them without augmentation, one by one through Model.features.
  func expectedFeatures(_ model: Model, _ dataset: ImageDataset) throws -> [[Float]] {
    var options = DataLoader.Options(batchSize: Int(dataset.count), imageSize: 8, channels: 1)
    options.shuffle = false
    let batch = try DataLoader(dataset: dataset, options: options).next()
    return try (0..<batch.count).map { i in
      var out = [Float](repeating: 0, count: 16)
      try model.features(.uint8NHWC(UnsafePointer(batch.images + i * 64)), count: 1, into: &out)
      return out
    }
  }

  func testComputedOnceThenReadFromTheFile() throws {
    let dir = TempDir()
    try makeDataset(dir.file("d.h5"), images: 11, height: 8, width: 8)
    let dataset = try ImageDataset(paths: [dir.file("d.h5")])
    let model = try Model(config: config, seed: 4)
    let expected = try expectedFeatures(model, dataset)
    let (cache, computed) = try FeatureCache.make(model: model, dataset: dataset, path: dir.file("f.h5"), chunk: 4)
    XCTAssertTrue(computed)
    XCTAssertEqual([cache.count, cache.width], [11, 16])
    for i in 0..<11 {
      for (a, b) in zip(Array(cache.row(i)), expected[i]) { XCTAssertEqual(a, b, accuracy: 1e-5, "image \(i)") }
    }
    XCTAssertNotEqual(Array(cache.row(0)), Array(cache.row(5)))
    let rows = try cache.rows(for: [5, 0, 5])
    XCTAssertEqual(Array(UnsafeBufferPointer(start: rows, count: 16)), Array(cache.row(5)))
    XCTAssertEqual(Array(UnsafeBufferPointer(start: rows + 16, count: 16)), Array(cache.row(0)))
    assertLiftError(LIFT_ERR_ARGUMENT, ["image 11", "11 images"]) { _ = try cache.rows(for: [11]) }

    // A second run reads the same features from the file.
    let (again, computedAgain) = try FeatureCache.make(model: model, dataset: dataset, path: dir.file("f.h5"))
    XCTAssertFalse(computedAgain)
    for i in 0..<11 { XCTAssertEqual(Array(again.row(i)), Array(cache.row(i))) }
    // The file says what it is, and loads whatever made it (lift info, lift check).
    XCTAssertEqual(try LiftFileKind.of(path: dir.file("f.h5")), .featureCache)
    XCTAssertEqual(try LiftFileKind.of(path: dir.file("d.h5")), .dataset)
    let header = try FeatureCache.header(path: dir.file("f.h5"))
    XCTAssertEqual([header.count, header.width], [11, 16])
    XCTAssertEqual(header.fingerprint, cache.fingerprint)
    let loaded = try FeatureCache.load(path: dir.file("f.h5"))
    for i in 0..<11 { XCTAssertEqual(Array(loaded.row(i)), Array(cache.row(i))) }
    assertLiftError(LIFT_ERR_IO, ["d.h5", "not a liblift feature cache"]) { _ = try FeatureCache.load(path: dir.file("d.h5")) }

    // Another tower: the file does not match, so the features are computed again (and replace it).
    model.tensor("visual.transformer.resblocks.1.mlp.c_fc.bias")![0] += 1
    let (changed, recomputed) = try FeatureCache.make(model: model, dataset: dataset, path: dir.file("f.h5"))
    XCTAssertTrue(recomputed)
    XCTAssertNotEqual(changed.fingerprint, cache.fingerprint)
    XCTAssertNotEqual(Array(changed.row(3)), Array(cache.row(3)))
    XCTAssertFalse(try FeatureCache.make(model: model, dataset: dataset, path: dir.file("f.h5")).computed)
    // The head does not change the features.
    model.tensor("mlp_projector.projector.0.weight")![0] += 1
    XCTAssertFalse(try FeatureCache.make(model: model, dataset: dataset, path: dir.file("f.h5")).computed)
  }

  func testTwoRanksComputeTheirSharesAndGetTheWholeCache() throws {
    let dir = TempDir()
    try makeDataset(dir.file("d.h5"), images: 13, height: 8, width: 8)
    let dataset = try ImageDataset(paths: [dir.file("d.h5")])
    let models = [try Model(config: config, seed: 4), try Model(config: config, seed: 4)]
    let (single, _) = try FeatureCache.make(model: models[0], dataset: dataset, path: nil, chunk: 3)
    let group = ThreadGroup(size: 2)
    nonisolated(unsafe) var caches: [FeatureCache?] = [nil, nil]
    onThreads(2) { r in
      // Rank 1 alone would find no file: both must then compute (and only rank 0 writes).
      caches[r] = try? FeatureCache.make(model: models[r], dataset: dataset, path: r == 0 ? dir.file("f.h5") : nil,
                                         chunk: 3, communicator: ThreadGroup.Member(group, rank: r)).0
    }
    for r in 0..<2 {
      let cache = try XCTUnwrap(caches[r])
      for i in 0..<13 {
        for (a, b) in zip(Array(cache.row(i)), Array(single.row(i))) { XCTAssertEqual(a, b, accuracy: 1e-5, "rank \(r) image \(i)") }
      }
    }
    XCTAssertFalse(try FeatureCache.make(model: models[0], dataset: dataset, path: dir.file("f.h5")).computed)
  }

  func testAFileThatIsNotACacheIsLeftAlone() throws {
    let dir = TempDir()
    try makeDataset(dir.file("d.h5"), images: 3, height: 8, width: 8)
    let dataset = try ImageDataset(paths: [dir.file("d.h5")])
    let model = try Model(config: config, seed: 4)
    // Pointing the cache at the dataset itself must not destroy it.
    let before = fileBytes(dir.file("d.h5"))
    assertLiftError(LIFT_ERR_IO, ["d.h5", "not a liblift feature cache"]) {
      _ = try FeatureCache.make(model: model, dataset: dataset, path: dir.file("d.h5"))
    }
    XCTAssertEqual(fileBytes(dir.file("d.h5")), before)
  }
}

extension FeatureCacheTests {
  /// Writes a file that says it is a feature cache: `rows` x `width` values (rank 1 when width
  /// is 0), float32 or 32-bit integers, with or without a fingerprint.
  func writeCache(_ path: String, rows: Int, width: Int, values: [Float], integer: Bool = false,
                  fingerprint: String? = "f") throws {
    let writer = try H5FileWriter(path: path, overwrite: true)
    let shape = width == 0 ? [] : [width]
    if integer {
      let data = try writer.createDataset("features", rowShape: shape, type: lift_h5t_std_i32le())
      let ints = UnsafeMutablePointer<Int64>.allocate(capacity: values.count)
      defer { ints.deallocate() }
      for (i, v) in values.enumerated() { ints[i] = Int64(v) }
      try data.append(UnsafeRawPointer(ints), count: Int64(rows), memType: lift_h5t_native_int64())
    } else {
      let data = try writer.createDataset("features", rowShape: shape, type: lift_h5t_ieee_f32le())
      try data.append(values, count: Int64(rows), memType: lift_h5t_native_float())
    }
    try writer.setAttribute("lift.kind", FeatureCache.kind)
    if let fingerprint { try writer.setAttribute("lift.fingerprint", fingerprint) }
    try writer.finish()
  }

  /// A damaged cache file is an error naming the file and what is wrong, never a trap or a
  /// silent use of bad features.
  func testDamagedCacheFilesAreErrors() throws {
    let dir = TempDir()
    let path = dir.file("c.h5")
    try writeCache(path, rows: 2, width: 3, values: [1, 2, 3, 4, .nan, 6])
    assertLiftError(LIFT_ERR_VALUE, ["c.h5", "image 1", "not finite"]) { _ = try FeatureCache.load(path: path) }
    try writeCache(path, rows: 6, width: 0, values: [1, 2, 3, 4, 5, 6])
    assertLiftError(LIFT_ERR_SHAPE, ["c.h5", "(images, width)"]) { _ = try FeatureCache.load(path: path) }
    try writeCache(path, rows: 2, width: 3, values: [1, 2, 3, 4, 5, 6], integer: true)
    assertLiftError(LIFT_ERR_FORMAT, ["c.h5", "not floating point"]) { _ = try FeatureCache.load(path: path) }
    try writeCache(path, rows: 2, width: 3, values: [1, 2, 3, 4, 5, 6], fingerprint: nil)
    assertLiftError(LIFT_ERR_FORMAT, ["c.h5", "lift.fingerprint"]) { _ = try FeatureCache.load(path: path) }
    // A shape the file cannot hold (grown to 2^30 rows without data) sizes no allocation.
    try writeCache(path, rows: 2, width: 3, values: [1, 2, 3, 4, 5, 6])
    let file = H5Fopen(path, lift_h5f_acc_rdwr(), lift_h5p_default())
    let data = H5Dopen2(file, "features", lift_h5p_default())
    var grown: [hsize_t] = [1 << 30, 3]
    XCTAssertGreaterThanOrEqual(H5Dset_extent(data, &grown), 0)
    H5Dclose(data)
    H5Fclose(file)
    assertLiftError(LIFT_ERR_FORMAT, ["c.h5", "more than the file holds"]) { _ = try FeatureCache.load(path: path) }
    assertLiftError(LIFT_ERR_FORMAT, ["c.h5", "more than the file holds"]) { _ = try FeatureCache.header(path: path) }
    try writeCache(path, rows: 2, width: 3, values: [1, 2, 3, 4, 5, 6])
    XCTAssertEqual(Array(try FeatureCache.load(path: path).row(1)), [4, 5, 6])

    // A run whose fingerprint matches a damaged file stops with the error (it does not train on it).
    try makeDataset(dir.file("d.h5"), images: 2, height: 8, width: 8)
    let dataset = try ImageDataset(paths: [dir.file("d.h5")])
    let model = try Model(config: config, seed: 4)
    var values = [Float](repeating: 0.5, count: 2 * 16)
    values[17] = .infinity
    try writeCache(path, rows: 2, width: 16, values: values, fingerprint: FeatureCache.fingerprint(model: model, dataset: dataset))
    assertLiftError(LIFT_ERR_VALUE, ["c.h5", "image 1"]) { _ = try FeatureCache.make(model: model, dataset: dataset, path: path) }
  }
}

/// The bytes of a file.
func fileBytes(_ path: String) -> [UInt8] {
  guard let f = fopen(path, "rb") else { return [] }
  defer { fclose(f) }
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 1 << 16)
  while true {
    let n = fread(&buffer, 1, buffer.count, f)
    if n <= 0 { break }
    bytes += buffer[0..<n]
  }
  return bytes
}
