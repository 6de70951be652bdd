import CHDF5
import CLiftABI
import XCTest
@testable import Lift

/// A small synthetic dataset: image i is filled with value i, has (i % 3) + 1 captions
/// [i, i+1, ...] (mod captionCount), label i % classes.
func makeDataset(_ path: String, images: Int, height: Int = 4, width: Int = 5, channels: Int = 1,
                 captions: Int = 7, textDim: Int = 3, classes: Int = 2, firstImageValue: Int = 0) throws {
  let w = try ImageDatasetWriter(path: path, height: height, width: width, channels: channels, textDim: textDim,
                                 dtype: LIFT_DTYPE_FLOAT32, labels: true)
  var emb: [Float] = []
  for r in 0..<captions { for j in 0..<textDim { emb.append(Float(r * 10 + j + 1)) } }
  _ = try emb.withUnsafeBufferPointer { try w.addCaptions($0.baseAddress!, count: captions) }
  var pixels: [UInt8] = []
  var lists: [[Int64]] = []
  var labels: [Int64] = []
  for i in 0..<images {
    pixels += [UInt8](repeating: UInt8((firstImageValue + i) % 256), count: height * width * channels)
    lists.append((0...(i % 3)).map { Int64((i + $0) % captions) })
    labels.append(Int64(i % classes))
  }
  try pixels.withUnsafeBufferPointer { try w.addImages($0.baseAddress!, count: images, captions: lists, labels: labels) }
  try w.setClasses(names: (0..<classes).map { "class \($0)" }, prompts: (0..<classes).map { [Int64($0), Int64(captions - 1)] })
  try w.finish()
}

final class DatasetTests: XCTestCase {
  func testWriteThenReadAcrossShards() throws {
    let dir = TempDir()
    try makeDataset(dir.file("a.h5"), images: 5)
    try makeDataset(dir.file("b.h5"), images: 4, captions: 4, firstImageValue: 100)
    let ds = try ImageDataset(paths: [dir.file("a.h5"), dir.file("b.h5")])
    XCTAssertEqual(ds.count, 9)
    XCTAssertEqual([ds.height, ds.width, ds.channels, ds.textDim], [4, 5, 1, 3])
    XCTAssertEqual(ds.captions.rows, 11)
    XCTAssertEqual(ds.classCount, 2)
    XCTAssertEqual(try ds.classNames(), ["class 0", "class 1"])
    XCTAssertEqual(try ds.className(1), "class 1")
    assertLiftError(LIFT_ERR_ARGUMENT, ["out of range"]) { _ = try ds.className(2) }
    XCTAssertEqual(ds.classPrompts, [[0, 6], [1, 6]])
    var pixels = [UInt8](repeating: 0, count: 3 * 20)
    let list: [Int64] = [8, 0, 5]
    try list.withUnsafeBufferPointer { l in try pixels.withUnsafeMutableBufferPointer { try ds.readPixels(l, into: $0.baseAddress!) } }
    XCTAssertEqual([pixels[0], pixels[20], pixels[40]], [103, 0, 100])
    // Image 7 is image 2 of shard b: captions 2, 3, 0 of b = global 9, 10, 7.
    XCTAssertEqual(try ds.captionRows(of: 7), [9, 10, 7])
    XCTAssertEqual(try ds.captionRows(of: 4), [4, 5])
    var labels = [Int64](repeating: -1, count: 3)
    try list.withUnsafeBufferPointer { l in try labels.withUnsafeMutableBufferPointer { try ds.readLabels(l, into: $0.baseAddress!) } }
    XCTAssertEqual(labels, [1, 0, 0])  // labels restart with each file (i % 2 per file)
    assertLiftError(LIFT_ERR_ARGUMENT, ["images[0] = 9"]) {
      try [Int64(9)].withUnsafeBufferPointer { l in try pixels.withUnsafeMutableBufferPointer { try ds.readPixels(l, into: $0.baseAddress!) } }
    }
  }

  func testWriterRejectsBadInput() throws {
    let dir = TempDir()
    let w = try ImageDatasetWriter(path: dir.file("x.h5"), height: 2, width: 2, channels: 3, textDim: 2)
    let emb: [Float] = [1, 2, 3, .nan]
    assertLiftError(LIFT_ERR_VALUE, ["store row 1"]) { try emb.withUnsafeBufferPointer { _ = try w.addCaptions($0.baseAddress!, count: 2) } }
    try [Float(1), 2].withUnsafeBufferPointer { _ = try w.addCaptions($0.baseAddress!, count: 1) }
    let px = [UInt8](repeating: 1, count: 24)
    assertLiftError(LIFT_ERR_ARGUMENT, ["image 1 has no captions"]) { try px.withUnsafeBufferPointer { try w.addImages($0.baseAddress!, count: 2, captions: [[0], []]) } }
    assertLiftError(LIFT_ERR_ARGUMENT, ["refers to caption 1"]) { try px.withUnsafeBufferPointer { try w.addImages($0.baseAddress!, count: 2, captions: [[0], [1]]) } }
    assertLiftError(LIFT_ERR_ARGUMENT, ["without labels"]) { try px.withUnsafeBufferPointer { try w.addImages($0.baseAddress!, count: 2, captions: [[0], [0]], labels: [0, 0]) } }
    XCTAssertEqual(w.imageCount, 0)
    try px.withUnsafeBufferPointer { try w.addImages($0.baseAddress!, count: 2, captions: [[0], [0]]) }
    try w.finish()
    let ds = try ImageDataset(paths: [dir.file("x.h5")])
    XCTAssertEqual(ds.count, 2)
    XCTAssertFalse(ds.hasLabels)
    XCTAssertEqual(ds.classCount, 0)
    XCTAssertEqual(try ds.classNames(), [])
    assertLiftError(LIFT_ERR_ARGUMENT, ["channels"]) { _ = try ImageDatasetWriter(path: dir.file("y.h5"), height: 2, width: 2, channels: 2, textDim: 2) }
  }

  func testReaderRejectsMalformedFiles() throws {
    let dir = TempDir()
    try makeDataset(dir.file("a.h5"), images: 3)
    try makeDataset(dir.file("c.h5"), images: 3, channels: 3)
    assertLiftError(LIFT_ERR_SHAPE, ["c.h5", "(4, 5, 3)", "(4, 5, 1)"]) { _ = try ImageDataset(paths: [dir.file("a.h5"), dir.file("c.h5")]) }
    let store = dir.file("store.h5")
    let sw = try EmbeddingStoreWriter(path: store, dataset: "captions/embeddings", dim: 2, dtype: LIFT_DTYPE_FLOAT32)
    try [Float(1), 2].withUnsafeBufferPointer { try sw.append($0.baseAddress!, rows: 1) }
    try sw.finish()
    assertLiftError(LIFT_ERR_NOT_FOUND, ["store.h5", "images/pixels"]) { _ = try ImageDataset(paths: [store]) }
    // Offsets pointing outside caption_rows are reported when the image is used.
    let bad = dir.file("bad.h5")
    try makeDataset(bad, images: 3)
    let f = H5Fopen(bad, lift_h5f_acc_rdwr(), lift_h5p_default())
    let ds = H5Dopen2(f, "images/caption_offsets", lift_h5p_default())
    var values: [Int64] = [0, 1, 1, 99]
    H5Dwrite(ds, lift_h5t_native_int64(), lift_h5s_all(), lift_h5s_all(), lift_h5p_default(), &values)
    H5Dclose(ds); H5Fclose(f)
    let reader = try ImageDataset(paths: [bad])
    assertLiftError(LIFT_ERR_FORMAT, ["image 1", "bad.h5", "at least one caption"]) { _ = try reader.captionRows(of: 1) }
    assertLiftError(LIFT_ERR_FORMAT, ["image 2", "[1, 99)"]) { _ = try reader.captionRows(of: 2) }
  }
}

final class SamplerTests: XCTestCase {
  func testPermutationIsABijection() {
    for n in [1, 2, 3, 17, 64, 1000, 4097] {
      for seed in [0, 1, 99] as [UInt64] {
        let p = RandomPermutation(count: UInt64(n), seed: seed)
        XCTAssertEqual(Set((0..<n).map { p(UInt64($0)) }), Set((0..<n).map(UInt64.init)), "n \(n) seed \(seed)")
      }
    }
    let a = RandomPermutation(count: 1000, seed: 1), b = RandomPermutation(count: 1000, seed: 2)
    XCTAssertNotEqual((0..<20).map { a(UInt64($0)) }, (0..<20).map { b(UInt64($0)) })
    // Not the identity, and positions are spread.
    XCTAssertLessThan((0..<1000).filter { a(UInt64($0)) == UInt64($0) }.count, 10)
  }

  func testEpochPlanCoversEverySampleOnceAcrossRanks() {
    for (count, batch, workers) in [(10, 3, 1), (10, 3, 2), (60000, 128, 1), (101, 8, 4), (5, 2, 2)] as [(Int64, Int, Int)] {
      let plan = EpochPlan(count: count, globalBatch: batch * workers, workers: workers)
      var seen = [Int](repeating: 0, count: Int(count))
      var sizes = Set<Int64>()
      for j in 0..<plan.batchesPerEpoch {
        for r in 0..<workers {
          let range = plan.localRange(j, rank: r)
          sizes.insert(range.upperBound - range.lowerBound)
          XCTAssertLessThanOrEqual(range.upperBound - range.lowerBound, Int64(batch) + 1)
          for p in range { seen[Int(p)] += 1 }
        }
      }
      XCTAssertEqual(Set(seen), [1], "\(count) \(batch) \(workers)")
      XCTAssertLessThanOrEqual(sizes.max()! - sizes.min()!, 1)
    }
  }
}

final class DataLoaderTests: XCTestCase {
  func loader(_ ds: ImageDataset, batch: Int = 4, seed: UInt64 = 5, rank: Int = 0, workers: Int = 1, prefetch: Bool = true,
              start: DataLoader.Position = .init(epoch: 0, batch: 0), augment: Preprocess.Augment? = nil) throws -> DataLoader {
    var o = DataLoader.Options(batchSize: batch, imageSize: 4, channels: 3)
    o.seed = seed
    o.rank = rank
    o.workers = workers
    o.prefetch = prefetch
    o.augment = augment
    return try DataLoader(dataset: ds, options: o, start: start)
  }

  func testEpochsVisitEveryImageOnceWithTheirOwnCaptions() throws {
    let dir = TempDir()
    try makeDataset(dir.file("a.h5"), images: 11, height: 4, width: 4)
    let ds = try ImageDataset(paths: [dir.file("a.h5")])
    let l = try loader(ds)
    XCTAssertEqual(l.batchesPerEpoch, 3)
    var chosen = [Set<Int64>](repeating: [], count: 11)
    var orders: [[Int64]] = []
    for _ in 0..<4 {
      var epoch: [Int64] = []
      for _ in 0..<3 {
        let b = try l.next()
        for i in 0..<b.count {
          let image = b.indices[i]
          epoch.append(image)
          // Pixels are the image's value, grey to RGB; texts are its chosen caption row.
          XCTAssertEqual(b.images[i * 48], UInt8(image))
          XCTAssertEqual(b.images[i * 48 + 47], UInt8(image))
          XCTAssertTrue(try ds.captionRows(of: image).contains(b.captionRows[i]))
          XCTAssertEqual(b.texts[i * 3], Float(b.captionRows[i] * 10 + 1))
          chosen[Int(image)].insert(b.captionRows[i])
        }
      }
      XCTAssertEqual(epoch.sorted(), Array(0..<11))
      orders.append(epoch)
    }
    XCTAssertNotEqual(orders[0], orders[1], "each epoch reshuffles")
    // Over four epochs, images with several captions drew more than one of them.
    XCTAssertGreaterThan(chosen.filter { $0.count > 1 }.count, 2)
  }

  func testDeterministicResumableAndShardedByRank() throws {
    let dir = TempDir()
    try makeDataset(dir.file("a.h5"), images: 23, height: 4, width: 4)
    let ds = try ImageDataset(paths: [dir.file("a.h5")])
    func run(_ l: DataLoader, _ n: Int) throws -> [[Int64]] {
      var out: [[Int64]] = []
      for _ in 0..<n {
        let b = try l.next()
        out.append(b.indices + b.captionRows + [Int64(b.position.epoch), Int64(b.position.batch)])
      }
      return out
    }
    let straight = try run(try loader(ds), 9)
    XCTAssertEqual(try run(try loader(ds, prefetch: false), 9), straight)
    let resumed = try run(try loader(ds, start: .init(epoch: 1, batch: 1)), 2)
    XCTAssertEqual(resumed, Array(straight[7..<9]))
    XCTAssertNotEqual(try run(try loader(ds, seed: 6), 9), straight)
    // Two ranks: disjoint halves of each global batch of 6, together the whole epoch, and the
    // same global batches as one worker with batch 6.
    let r0 = try loader(ds, batch: 6, workers: 2), r1 = try loader(ds, batch: 6, rank: 1, workers: 2)
    XCTAssertEqual(r0.batchesPerEpoch, 4)
    let single = try loader(ds, batch: 6)
    var all: [Int64] = []
    for _ in 0..<4 {
      let a = try r0.next(), b = try r1.next(), whole = try single.next()
      XCTAssertEqual(a.globalCount, b.globalCount)
      XCTAssertEqual(a.globalCount, a.count + b.count)
      XCTAssertEqual(a.indices + b.indices, whole.indices)
      XCTAssertEqual(a.captionRows + b.captionRows, whole.captionRows)
      all += a.indices + b.indices
    }
    XCTAssertEqual(all.sorted(), Array(0..<23))
  }

  func testAugmentationIsSeededAndStaysInRange() throws {
    let dir = TempDir()
    try makeDataset(dir.file("a.h5"), images: 6, height: 8, width: 10, channels: 3)
    let ds = try ImageDataset(paths: [dir.file("a.h5")])
    let a = try loader(ds, augment: Preprocess.Augment(scale: 0.3...1)), b = try loader(ds, augment: Preprocess.Augment(scale: 0.3...1))
    let x = try a.next(), y = try b.next()
    XCTAssertEqual(Array(UnsafeBufferPointer(start: x.images, count: x.count * 48)), Array(UnsafeBufferPointer(start: y.images, count: y.count * 48)))
    // Constant images stay constant whatever the crop.
    for i in 0..<x.count { XCTAssertEqual(Set(UnsafeBufferPointer(start: x.images + i * 48, count: 48)), [UInt8(x.indices[i])]) }
  }

  func testErrorsSurfaceFromTheBackgroundThread() throws {
    let dir = TempDir()
    let bad = dir.file("bad.h5")
    try makeDataset(bad, images: 3, height: 4, width: 4)
    let f = H5Fopen(bad, lift_h5f_acc_rdwr(), lift_h5p_default())
    let d = H5Dopen2(f, "images/caption_rows", lift_h5p_default())
    var values: [Int64] = [0, 55, 55, 2, 3, 4]  // both captions of image 1 are out of range
    H5Dwrite(d, lift_h5t_native_int64(), lift_h5s_all(), lift_h5s_all(), lift_h5p_default(), &values)
    H5Dclose(d); H5Fclose(f)
    let ds = try ImageDataset(paths: [bad])
    var o = DataLoader.Options(batchSize: 3, imageSize: 4, channels: 1)
    o.shuffle = false
    let l = try DataLoader(dataset: ds, options: o)
    assertLiftError(LIFT_ERR_FORMAT, ["bad.h5", "55"]) { _ = try l.next() }
    assertLiftError(LIFT_ERR_ARGUMENT, ["rank"]) {
      var o2 = o
      o2.rank = 2
      _ = try DataLoader(dataset: ds, options: o2)
    }
  }
}

final class FileKindTests: XCTestCase {
  /// assets/fashion-mnist-captions.h5 of this checkout.
  static let captionsAsset = String(#filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3)
    .joined(separator: "/")) + "/assets/fashion-mnist-captions.h5"

  func write(_ path: String, _ text: String) {
    let f = fopen(path, "w")!
    fputs(text, f)
    fclose(f)
  }

  func testKindsComeFromTheContent() throws {
    let dir = TempDir()
    try makeDataset(dir.file("dataset.bin"), images: 2)
    let store = try EmbeddingStoreWriter(path: dir.file("store"), dim: 3, dtype: LIFT_DTYPE_FLOAT32)
    try store.finish()
    try Model(config: ModelGradientTests.tinyConfig(.contrastive), seed: 1).save(path: dir.file("model.h5"))
    RawHDF5.writeFloats(dir.file("other.h5"), [1, 2], rows: 1, cols: 2, fileType: lift_h5t_ieee_f32le(), name: "x")
    write(dir.file("text.safetensors"), "{}{}{}{}{}")
    write(dir.file("empty"), "")
    let expected: [(String, LiftFileKind)] = [("dataset.bin", .dataset), ("store", .store), ("model.h5", .safetensors),
                                              ("other.h5", .otherHDF5), ("text.safetensors", .unknown), ("empty", .unknown)]
    for (name, kind) in expected { XCTAssertEqual(try LiftFileKind.of(path: dir.file(name)), kind, name) }
    XCTAssertEqual(try LiftFileKind.of(path: Self.captionsAsset), .captions)
    assertLiftError(LIFT_ERR_IO, ["missing.h5"]) { _ = try LiftFileKind.of(path: dir.file("missing.h5")) }
  }

  func testCaptionsFileReadsTheAsset() throws {
    let file = try CaptionsFile(path: Self.captionsAsset)
    XCTAssertEqual([file.captions.rows, file.captions.dim], [160, 384])
    XCTAssertEqual(file.classCount, 10)
    XCTAssertEqual(file.classPrompts[1], (16..<32).map { Int64($0) })
    XCTAssertEqual(try file.classNames().first, "t-shirt")
    XCTAssertEqual(try file.attribute("model"), "sentence-transformers/all-MiniLM-L6-v2")
    XCTAssertEqual(try file.attribute("liblift_format"), "captions")
    XCTAssertNil(try file.attribute("missing"))
    // A dataset file is a captions file too (same captions/* and classes/* datasets).
    let dir = TempDir()
    try makeDataset(dir.file("d.h5"), images: 2)
    XCTAssertEqual(try CaptionsFile(path: dir.file("d.h5")).classPrompts, [[0, 6], [1, 6]])
  }
}
