import CLiftABI
import Glibc
import XCTest
@testable import Lift

/// The C entry points, called as a C program would: every misuse is a status, never a trap.
final class CAPITests: XCTestCase {
  var lastError: String { String(cString: cLiftLastError()) }

  func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> T) -> T {
    let copies = strings.map { UnsafePointer(strdup($0)!) }
    defer { copies.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    let array: [UnsafePointer<CChar>?] = copies
    return array.withUnsafeBufferPointer { body($0.baseAddress!) }
  }

  func makeStore(_ dir: TempDir, rows: Int64 = 4, dim: Int64 = 3) -> OpaquePointer? {
    let path = dir.file("s.h5")
    var writer: OpaquePointer?
    XCTAssertEqual(cLiftStoreWriterCreate(path, nil, dim, LIFT_DTYPE_FLOAT32, LIFT_WRITER_KEYS, &writer), LIFT_OK)
    let data = (0..<Int(rows * dim)).map { Float($0 + 1) }
    let st = withCStrings((0..<Int(rows)).map { "k\($0)" }) { keys in
      cLiftStoreWriterAppend(writer, data, rows, keys, nil)
    }
    XCTAssertEqual(st, LIFT_OK, lastError)
    XCTAssertEqual(cLiftStoreWriterFinish(writer), LIFT_OK, lastError)
    cLiftStoreWriterFree(writer)
    var store: OpaquePointer?
    let status = withCStrings([path]) { cLiftStoreOpen($0, 1, nil, 0, &store) }
    XCTAssertEqual(status, LIFT_OK, lastError)
    return store
  }

  func testVersionAndStatusNames() {
    XCTAssertEqual(String(cString: cLiftVersion()), liftVersion)
    XCTAssertEqual(String(cString: cLiftStatusName(LIFT_ERR_VALUE)), "LIFT_ERR_VALUE")
    XCTAssertEqual(String(cString: cLiftStatusName(lift_status(rawValue: 12345))), "LIFT_ERR_UNKNOWN")
  }

  func testNullArgumentsAreErrors() {
    var store: OpaquePointer?
    XCTAssertEqual(cLiftStoreOpen(nil, 1, nil, 0, &store), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("paths is NULL"), lastError)
    let status = withCStrings(["x.h5"]) { cLiftStoreOpen($0, 1, nil, 0, nil) }
    XCTAssertEqual(status, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("out is NULL"), lastError)
    let nullEntry: [UnsafePointer<CChar>?] = [nil]
    XCTAssertEqual(nullEntry.withUnsafeBufferPointer { cLiftStoreOpen($0.baseAddress, 1, nil, 0, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("paths[0] is NULL"), lastError)
    XCTAssertEqual(withCStrings(["x.h5"]) { cLiftStoreOpen($0, 0, nil, 0, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertEqual(withCStrings(["x.h5"]) { cLiftStoreOpen($0, 1, nil, 0x80, &store) }, LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("unknown flags 0x80"), lastError)
    XCTAssertNil(store)
    XCTAssertEqual(cLiftStoreShape(nil, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRange(nil, 0, 1, nil, 0), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreWriterAppend(nil, nil, 1, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftCosineSimilarity(nil, 1, nil, 1, 1, nil, 1), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTopK(nil, 1, 1, 1, nil, nil), LIFT_ERR_ARGUMENT)
    cLiftStoreFree(nil)
    cLiftStoreWriterFree(nil)
  }

  func testReadsThroughTheCInterface() {
    let dir = TempDir()
    let store = makeStore(dir)
    defer { cLiftStoreFree(store) }
    var rows: Int64 = 0, dim: Int64 = 0
    XCTAssertEqual(cLiftStoreShape(store, &rows, &dim), LIFT_OK)
    XCTAssertEqual([rows, dim], [4, 3])
    var out = [Float](repeating: 0, count: 6)
    XCTAssertEqual(cLiftStoreReadRows(store, [3, 0], 2, &out, 6), LIFT_OK, lastError)
    XCTAssertEqual(out, [10, 11, 12, 1, 2, 3])
    XCTAssertEqual(cLiftStoreReadRange(store, 1, 2, &out, 5), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftStoreReadRange(store, 1, 2, nil, 6), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRows(store, [0], -1, &out, 6), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreReadRange(store, 0, 0, nil, 0), LIFT_OK, "an empty read needs no buffer")
    // Strings: size query, then the copy.
    var length = 0
    XCTAssertEqual(cLiftStoreReadString(store, "keys", 2, nil, 0, &length), LIFT_ERR_BUFFER)
    XCTAssertEqual(length, 2)
    var buffer = [CChar](repeating: 1, count: 3)
    XCTAssertEqual(cLiftStoreReadString(store, "keys", 2, &buffer, 3, &length), LIFT_OK)
    XCTAssertEqual(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, "k2")
    var present: Int32 = -1
    XCTAssertEqual(cLiftStoreHasStrings(store, "captions", &present), LIFT_OK)
    XCTAssertEqual(present, 0)
    XCTAssertEqual(cLiftStoreReadString(store, "captions", 0, &buffer, 3, &length), LIFT_ERR_NOT_FOUND)
    var dtype = LIFT_DTYPE_FLOAT64
    XCTAssertEqual(cLiftStoreShardDtype(store, 0, &dtype), LIFT_OK)
    XCTAssertEqual(dtype, LIFT_DTYPE_FLOAT32)
    XCTAssertEqual(cLiftStoreShardDtype(store, 1, &dtype), LIFT_ERR_ARGUMENT)
    var idx = [Int64](repeating: -1, count: 2)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11, 12], 1, 3, 2, &idx, nil), LIFT_OK, lastError)
    XCTAssertEqual(idx[0], 3)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11], 1, 2, 2, &idx, nil), LIFT_ERR_SHAPE)
    XCTAssertEqual(cLiftStoreSearch(store, [10, 11, 12], 1, 3, 5, &idx, nil), LIFT_ERR_ARGUMENT)
  }

  func testWrongHandleKindIsRejected() {
    let dir = TempDir()
    var writer: OpaquePointer?
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("w.h5"), nil, 2, LIFT_DTYPE_FLOAT16, 0, &writer), LIFT_OK)
    defer { cLiftStoreWriterFree(writer) }
    var rows: Int64 = 0
    XCTAssertEqual(cLiftStoreShape(writer, &rows, nil), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("different kind"), lastError)
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("x.h5"), nil, 2, lift_dtype(rawValue: 9), 0, &writer), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("x.h5"), nil, 2, LIFT_DTYPE_FLOAT32, 0x100, &writer), LIFT_ERR_ARGUMENT)
  }

  func testOverflowingSizesAreErrors() {
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 4)
    defer { buffer.deallocate() }
    buffer.initialize(repeating: 1, count: 4)
    XCTAssertEqual(cLiftCosineSimilarity(buffer, Int64.max / 2, buffer, 1, 4, buffer, 1), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("overflows"), lastError)
    XCTAssertEqual(cLiftTopK(buffer, 1 << 40, 1 << 40, 1, nil, nil), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftCosineSimilarity(buffer, 1, buffer, 1, 1, buffer, -1), LIFT_ERR_ARGUMENT)
    var writer: OpaquePointer?
    let dir = TempDir()
    XCTAssertEqual(cLiftStoreWriterCreate(dir.file("w.h5"), nil, 1 << 20, LIFT_DTYPE_FLOAT32, 0, &writer), LIFT_OK)
    XCTAssertEqual(cLiftStoreWriterAppend(writer, buffer, Int64.max / 4, nil, nil), LIFT_ERR_ARGUMENT)
    cLiftStoreWriterFree(writer)
  }

  func testLastErrorIsPerThread() {
    var store: OpaquePointer?
    XCTAssertEqual(withCStrings(["/no/such/file.h5"]) { cLiftStoreOpen($0, 1, nil, 0, &store) }, LIFT_ERR_IO)
    let mine = lastError
    XCTAssertTrue(mine.contains("/no/such/file.h5"))
    var other = "unset"
    var thread = pthread_t()
    let box = UnsafeMutablePointer<String>.allocate(capacity: 1)
    box.initialize(to: "")
    pthread_create(&thread, nil, { arg in
      let box = arg!.assumingMemoryBound(to: String.self)
      box.pointee = String(cString: cLiftLastError())
      _ = cLiftTopK(nil, 1, 1, 1, nil, nil)
      return nil
    }, box)
    pthread_join(thread, nil)
    other = box.pointee
    box.deinitialize(count: 1); box.deallocate()
    XCTAssertEqual(other, "", "a new thread starts with no error")
    XCTAssertEqual(lastError, mine, "another thread's error does not replace this thread's")
  }
}

/// Model and trainer entry points: sizes, nulls and handle kinds are checked before any work.
final class TrainerCAPITests: XCTestCase {
  var lastError: String { String(cString: cLiftLastError()) }

  func makeTrainer() -> (OpaquePointer?, OpaquePointer?) {
    var config = ModelGradientTests.tinyConfig(.contrastive).c
    var model: OpaquePointer?
    XCTAssertEqual(cLiftModelCreate(&config, 1, &model), LIFT_OK, lastError)
    var tc = lift_train_config().sized
    XCTAssertEqual(cLiftTrainConfigDefault(&tc), LIFT_OK)
    tc.batch_capacity = 4
    var trainer: OpaquePointer?
    XCTAssertEqual(cLiftTrainerCreate(model, &tc, 1, &trainer), LIFT_OK, lastError)
    return (model, trainer)
  }

  func testConfigAndTensorTable() {
    var c = lift_model_config().sized
    XCTAssertEqual(cLiftModelConfigPreset("ViT-S/16", 4096, &c), LIFT_OK)
    XCTAssertEqual([c.width, c.depth, c.heads, c.patch, c.image_size, c.text_dim], [384, 12, 6, 16, 224, 4096])
    XCTAssertEqual(cLiftModelConfigPreset("nope", 4, &c), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftModelConfigPreset("ViT-S/16", 0, &c), LIFT_ERR_ARGUMENT)
    var bad = ModelGradientTests.tinyConfig(.contrastive).c
    bad.pool = 7
    var model: OpaquePointer?
    XCTAssertEqual(cLiftModelCreate(&bad, 1, &model), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("pool"), lastError)
    bad = ModelGradientTests.tinyConfig(.contrastive).c
    bad.image_std.1 = 0
    XCTAssertEqual(cLiftModelCreate(&bad, 1, &model), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftModelCreate(nil, 1, &model), LIFT_ERR_ARGUMENT)
    let (m, t) = makeTrainer()
    defer { cLiftTrainerFree(t); cLiftModelFree(m) }
    var count: Int64 = 0
    XCTAssertEqual(cLiftModelTensorCount(m, &count), LIFT_OK)
    var info = lift_tensor_info().sized
    XCTAssertEqual(cLiftModelTensorInfo(m, 2, &info), LIFT_OK)
    XCTAssertEqual(String(cString: info.name), "visual.positional_embedding")
    XCTAssertEqual([info.ndim, Int32(info.shape.0), Int32(info.shape.1), info.decays], [2, 5, 8, 1])
    XCTAssertEqual(cLiftModelTensorInfo(m, count, &info), LIFT_ERR_ARGUMENT)
    var index: Int64 = -1
    XCTAssertEqual(cLiftModelFindTensor(m, "logit_scale", &index), LIFT_OK)
    XCTAssertEqual(index, count - 1)
    XCTAssertEqual(cLiftModelFindTensor(m, "logit_bias", &index), LIFT_ERR_NOT_FOUND)
    var flops = 0.0
    XCTAssertEqual(cLiftModelStepFlops(m, 4, &flops), LIFT_OK)
    XCTAssertGreaterThan(flops, 0)
  }

  func testStepValidatesEveryBuffer() {
    let (m, t) = makeTrainer()
    defer { cLiftTrainerFree(t); cLiftModelFree(m) }
    var rng = TestRNG(1)
    let images = rng.floats(4 * 3 * 64), texts = rng.floats(4 * 6)
    var stats = lift_step_stats().sized
    XCTAssertEqual(cLiftTrainerStep(t, images, LIFT_IMAGE_F32_NCHW, images.count - 1, texts, texts.count, 4, &stats), LIFT_ERR_BUFFER)
    XCTAssertTrue(lastError.contains("images_len"), lastError)
    XCTAssertEqual(cLiftTrainerStep(t, images, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count - 1, 4, &stats), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerStep(t, nil, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, 4, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStep(t, images, lift_image_format(rawValue: 5), images.count, texts, texts.count, 4, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStep(t, images, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, 0, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStep(t, images, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, Int64.max, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStep(m, images, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, 4, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("different kind"), lastError)
    var step: Int64 = -1
    XCTAssertEqual(cLiftTrainerStepCount(t, &step), LIFT_OK)
    XCTAssertEqual(step, 0)
    XCTAssertEqual(cLiftTrainerStep(t, images, LIFT_IMAGE_F32_NCHW, images.count, texts, texts.count, 4, &stats), LIFT_OK, lastError)
    XCTAssertEqual(stats.step, 1)
    var features = [Float](repeating: 0, count: 4 * 6)
    XCTAssertEqual(cLiftTrainerForward(t, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &features, features.count - 1), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerForward(t, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &features, features.count), LIFT_OK)
    var grad = [Float](repeating: 0, count: 2 * 6)
    var loss = 0.0
    XCTAssertEqual(cLiftTrainerLoss(t, features, texts, 4, 2, 3, 1, &grad, grad.count, &loss), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerLoss(t, features, texts, 4, 2, 2, 0, &grad, grad.count, &loss), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerLoss(t, features, texts, 4, 2, 2, 2, &grad, grad.count - 1, &loss), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerLoss(t, features, texts, 4, 2, 2, 2, &grad, grad.count, &loss), LIFT_OK, lastError)
    XCTAssertEqual(cLiftTrainerBackward(t, grad, grad.count, 4), LIFT_ERR_BUFFER)
    var g: UnsafeMutablePointer<Float>?
    var n: Int64 = 0
    XCTAssertEqual(cLiftTrainerBuffers(t, &g, nil, nil, &n), LIFT_OK)
    XCTAssertNotNil(g)
    var out = [Float](repeating: 0, count: 4 * 6)
    XCTAssertEqual(cLiftModelEncode(m, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &out, out.count), LIFT_OK, lastError)
    XCTAssertEqual(cLiftModelEncode(m, images, LIFT_IMAGE_F32_NCHW, 10, 4, &out, out.count), LIFT_ERR_BUFFER)
  }

  /// lift_model_features and lift_trainer_step_features check every buffer and the locking.
  func testFeatureEntryPoints() {
    var config = ModelGradientTests.tinyConfig(.contrastive).c
    var m: OpaquePointer?, locked: OpaquePointer?, unlocked: OpaquePointer?
    XCTAssertEqual(cLiftModelCreate(&config, 1, &m), LIFT_OK, lastError)
    var tc = lift_train_config().sized
    XCTAssertEqual(cLiftTrainConfigDefault(&tc), LIFT_OK)
    tc.batch_capacity = 4
    XCTAssertEqual(cLiftTrainerCreate(m, &tc, 1, &unlocked), LIFT_OK, lastError)
    tc.lock_image = 1
    XCTAssertEqual(cLiftTrainerCreate(m, &tc, 1, &locked), LIFT_OK, lastError)
    defer { cLiftTrainerFree(locked); cLiftTrainerFree(unlocked); cLiftModelFree(m) }
    let w = Int(config.width)
    var rng = TestRNG(2)
    let images = rng.floats(4 * 3 * 64), texts = rng.floats(4 * 6)
    var features = [Float](repeating: 0, count: 4 * w)
    XCTAssertEqual(cLiftModelFeatures(m, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &features, features.count - 1), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftModelFeatures(m, images, LIFT_IMAGE_F32_NCHW, images.count - 1, 4, &features, features.count), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftModelFeatures(m, images, LIFT_IMAGE_F32_NCHW, images.count, -1, &features, features.count), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftModelFeatures(m, images, LIFT_IMAGE_F32_NCHW, images.count, 4, nil, features.count), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftModelFeatures(locked, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &features, features.count), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftModelFeatures(m, images, LIFT_IMAGE_F32_NCHW, images.count, 4, &features, features.count), LIFT_OK, lastError)
    XCTAssertTrue(features.contains { $0 != 0 })
    var stats = lift_step_stats().sized
    XCTAssertEqual(cLiftTrainerStepFeatures(unlocked, features, features.count, texts, texts.count, 4, &stats), LIFT_ERR_STATE)
    XCTAssertTrue(lastError.contains("whole image tower frozen"), lastError)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, features, features.count - 1, texts, texts.count, 4, &stats), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, features, features.count, texts, texts.count - 1, 4, &stats), LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, nil, features.count, texts, texts.count, 4, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, features, features.count, texts, texts.count, 0, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, features, Int.max, texts, Int.max, Int64.max, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStepFeatures(m, features, features.count, texts, texts.count, 4, &stats), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerStepFeatures(locked, features, features.count, texts, texts.count, 4, &stats), LIFT_OK, lastError)
    XCTAssertEqual(stats.step, 1)

    // The data-parallel form, on one rank.
    var solo = lift_comm(struct_size: lift_comm.knownSize, context: nil, rank: 0, size: 1,
                         allgather_int64: { _, v, all in all![0] = v; return 0 },
                         allgatherv_float: { _, send, count, recv, _ in recv!.update(from: send!, count: Int(count)); return 0 },
                         allreduce_sum_float: { _, _, _ in 0 })
    XCTAssertEqual(cLiftTrainerStepFeaturesDistributed(locked, features, features.count, texts, texts.count, 4, nil, &stats),
                   LIFT_ERR_ARGUMENT)
    XCTAssertTrue(lastError.contains("comm"), lastError)
    XCTAssertEqual(cLiftTrainerStepFeaturesDistributed(unlocked, features, features.count, texts, texts.count, 4, &solo, &stats),
                   LIFT_ERR_STATE)
    XCTAssertEqual(cLiftTrainerStepFeaturesDistributed(locked, features, features.count - 1, texts, texts.count, 4, &solo, &stats),
                   LIFT_ERR_BUFFER)
    XCTAssertEqual(cLiftTrainerStepFeaturesDistributed(locked, features, features.count, texts, texts.count, 4, &solo, &stats),
                   LIFT_OK, lastError)
    XCTAssertEqual(stats.step, 2)
  }

  func testCheckpointEntryPoints() {
    let dir = TempDir()
    let (m, t) = makeTrainer()
    defer { cLiftTrainerFree(t); cLiftModelFree(m) }
    XCTAssertEqual(cLiftTrainerSave(t, dir.file("c.safetensors"), nil, nil, 1), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerSave(t, dir.file("c.safetensors"), nil, nil, 0), LIFT_OK, lastError)
    var loaded: OpaquePointer?
    XCTAssertEqual(cLiftTrainerLoad(dir.file("c.safetensors"), -1, 0, &loaded), LIFT_ERR_ARGUMENT)
    XCTAssertEqual(cLiftTrainerLoad(dir.file("c.safetensors"), 2, 0, &loaded), LIFT_OK, lastError)
    var tc = lift_train_config().sized
    XCTAssertEqual(cLiftTrainerGetConfig(loaded, &tc), LIFT_OK)
    XCTAssertEqual(tc.batch_capacity, 2)
    var len = 0
    XCTAssertEqual(cLiftTrainerMetadata(loaded, "x", nil, 0, &len), LIFT_ERR_NOT_FOUND)
    var model: OpaquePointer?
    XCTAssertEqual(cLiftTrainerModel(loaded, &model), LIFT_OK)
    cLiftTrainerFree(loaded)
    // The model reference outlives the trainer.
    var c = lift_model_config().sized
    XCTAssertEqual(cLiftModelGetConfig(model, &c), LIFT_OK)
    XCTAssertEqual(c.width, 8)
    cLiftModelFree(model)
    var m2: OpaquePointer?
    XCTAssertEqual(cLiftModelLoad(dir.file("missing"), 0, &m2), LIFT_ERR_IO)
    XCTAssertEqual(cLiftModelLoad(nil, 0, &m2), LIFT_ERR_ARGUMENT)
  }
}
