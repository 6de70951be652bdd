import CLiftABI
import Glibc

// C entry points of datasets, loaders, preprocessing and evaluation (see Include/lift.h).

/// Copies `values` into a caller buffer of `capacity` entries, reporting the count.
private func copyList(_ values: [Int64], into out: UnsafeMutablePointer<Int64>?, capacity: Int,
                      count: UnsafeMutablePointer<Int>?, what: String) throws(LiftError) {
  count?.pointee = values.count
  guard try requiredSize(capacity, "cap") >= values.count else {
    throw .buffer("\(what) has \(values.count) entries; the buffer holds \(capacity)")
  }
  if !values.isEmpty { try required(out, "rows").update(from: values, count: values.count) }
}

@_cdecl("lift_dataset_open")
public func cLiftDatasetOpen(_ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ flags: UInt32,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let paths = try required(paths, "paths")
    let n = try requiredSize(count, "n_paths")
    guard n >= 1 else { throw .argument("n_paths must be >= 1") }
    var list: [String] = []
    for i in 0..<n { list.append(try requiredString(paths[i], "paths[\(i)]")) }
    for path in list { try checkUntrusted(path, kind: .dataset, flags: flags) }
    out.pointee = makeHandle(try ImageDataset(paths: list))
  }
}

@_cdecl("lift_dataset_free")
public func cLiftDatasetFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_dataset_get_info")
public func cLiftDatasetGetInfo(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<lift_dataset_info>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try requiredStruct(out, "out").pointee = lift_dataset_info(
      struct_size: lift_dataset_info.knownSize, images: ds.count, captions: ds.captions.rows, height: Int32(ds.height), width: Int32(ds.width),
      channels: Int32(ds.channels), text_dim: Int32(ds.textDim), has_labels: ds.hasLabels ? 1 : 0,
      classes: Int64(ds.classCount))
  }
}

@_cdecl("lift_dataset_read_pixels")
public func cLiftDatasetReadPixels(_ handle: OpaquePointer?, _ images: UnsafePointer<Int64>?, _ n: Int64,
                                   _ out: UnsafeMutablePointer<UInt8>?, _ outLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try requireNonNegative(n, "n")
    let needed = try checkedCount(n, Int64(ds.imageBytes), "pixels")
    guard try requiredSize(outLen, "out_len") >= needed else {
      throw .buffer("out holds \(outLen) bytes but \(n) images of \(ds.imageBytes) bytes need \(needed)")
    }
    if n == 0 { return }
    try ds.readPixels(UnsafeBufferPointer(start: try required(images, "images"), count: Int(n)), into: try required(out, "out"))
  }
}

@_cdecl("lift_dataset_read_labels")
public func cLiftDatasetReadLabels(_ handle: OpaquePointer?, _ images: UnsafePointer<Int64>?, _ n: Int64,
                                   _ out: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try requireNonNegative(n, "n")
    if n == 0 { return }
    try ds.readLabels(UnsafeBufferPointer(start: try required(images, "images"), count: Int(n)), into: try required(out, "out"))
  }
}

@_cdecl("lift_dataset_read_image")
public func cLiftDatasetReadImage(_ handle: OpaquePointer?, _ image: Int64, _ buffer: UnsafeMutablePointer<UInt8>?,
                                  _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    let bytes = try ds.encodedImage(image)
    let length = try required(length, "len")
    length.pointee = bytes.count
    guard try requiredSize(capacity, "cap") >= bytes.count else {
      throw .buffer("image \(image) has \(bytes.count) bytes; the buffer holds \(capacity)")
    }
    if !bytes.isEmpty { try required(buffer, "buf").update(from: bytes, count: bytes.count) }
  }
}

@_cdecl("lift_dataset_caption_rows")
public func cLiftDatasetCaptionRows(_ handle: OpaquePointer?, _ image: Int64, _ rows: UnsafeMutablePointer<Int64>?,
                                    _ capacity: Int, _ count: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try copyList(try ds.captionRows(of: image), into: rows, capacity: capacity, count: count, what: "image \(image)'s caption list")
  }
}

private func classIndex(_ ds: ImageDataset, _ k: Int64) throws(LiftError) -> Int {
  guard k >= 0, k < Int64(ds.classCount) else {
    throw .argument("class \(k) is out of range: the dataset has \(ds.classCount) classes")
  }
  return Int(k)
}

@_cdecl("lift_dataset_class_name")
public func cLiftDatasetClassName(_ handle: OpaquePointer?, _ k: Int64, _ buffer: UnsafeMutablePointer<CChar>?,
                                  _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    let name = try ds.className(try classIndex(ds, k))
    try copyCString(Array(name.utf8), into: buffer, capacity: capacity, length: length, what: "class \(k)'s name")
  }
}

@_cdecl("lift_dataset_class_prompts")
public func cLiftDatasetClassPrompts(_ handle: OpaquePointer?, _ k: Int64, _ rows: UnsafeMutablePointer<Int64>?,
                                     _ capacity: Int, _ count: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try copyList(ds.classPrompts[try classIndex(ds, k)], into: rows, capacity: capacity, count: count, what: "class \(k)'s prompt list")
  }
}

@_cdecl("lift_dataset_captions")
public func cLiftDatasetCaptions(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let ds = try object(handle, as: ImageDataset.self, "dataset")
    try required(out, "out").pointee = makeHandle(ds.captions)
  }
}

// MARK: - Loader

/// The loader and stable copies of the batch's arrays handed to C (valid until the next call;
/// the image and text buffers are the batch's own).
final class LoaderHandle {
  let loader: DataLoader
  let indices: UnsafeMutablePointer<Int64>
  let captionRows: UnsafeMutablePointer<Int64>
  /// The batch's keys as C strings (owned here, replaced at each call).
  private var keyStrings: [UnsafeMutablePointer<CChar>] = []
  let keys: UnsafeMutablePointer<UnsafePointer<CChar>?>
  /// Bad samples as of the last batch returned.
  var bad = DataLoader.BadSamples()

  init(_ loader: DataLoader) throws(LiftError) {
    self.loader = loader
    // >= any rank's part of a batch.
    let capacity = loader.capacity + 1
    indices = try allocateElements(capacity, of: Int64.self, what: "batch indices")
    do {
      captionRows = try allocateElements(capacity, of: Int64.self, what: "batch caption rows")
    } catch {
      indices.deallocate()
      throw error
    }
    keys = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: capacity)
  }

  deinit {
    indices.deallocate()
    captionRows.deallocate()
    keyStrings.forEach { free($0) }
    keys.deallocate()
  }

  func setKeys(_ values: [String]) throws(LiftError) {
    keyStrings.forEach { free($0) }
    keyStrings = []
    for (i, k) in values.enumerated() {
      guard let copy = strdup(k) else { throw .memory("cannot copy the batch's keys") }
      keyStrings.append(copy)
      keys[i] = UnsafePointer(copy)
    }
  }
}

@_cdecl("lift_loader_options_default")
public func cLiftLoaderOptionsDefault(_ out: UnsafeMutablePointer<lift_loader_options>?) -> lift_status {
  capi { () throws(LiftError) in
    var o = lift_loader_options()
    o.batch_size = 128
    o.image_size = 224
    o.channels = 3
    o.shuffle = 1
    o.crop_scale_min = 0.08
    o.crop_scale_max = 1
    o.flip = 1
    o.workers = 1
    o.prefetch = 1
    o.filter = ResampleFilter.bicubic.c
    o.reduced_decode = 1
    o.max_pixels = ImageDecoder.defaultMaxPixels
    o.decode_threads = 1
    o.shuffle_block = 5000
    o.max_bad_fraction = 0.01
    try requiredStruct(out, "out").pointee = o.sized
  }
}

/// Loader options from C, checked; fields an older caller's struct lacks take their defaults.
private func loaderOptions(_ c: lift_loader_options, callerSize: Int) throws(LiftError) -> DataLoader.Options {
  guard c.batch_size >= 1, c.batch_size <= 1 << 20 else { throw .argument("batch_size must be in [1, 1048576] (got \(c.batch_size))") }
  var o = DataLoader.Options(batchSize: Int(c.batch_size), imageSize: Int(c.image_size), channels: Int(c.channels))
  o.seed = c.seed
  o.shuffle = c.shuffle != 0
  if c.augment != 0 {
    guard c.crop_scale_min > 0, c.crop_scale_min <= c.crop_scale_max, c.crop_scale_max <= 1 else {
      throw .argument("crop scale must satisfy 0 < min <= max <= 1 (got \(c.crop_scale_min) .. \(c.crop_scale_max))")
    }
    o.augment = Preprocess.Augment(scale: c.crop_scale_min...c.crop_scale_max, flip: c.flip != 0)
  }
  o.rank = Int(c.rank)
  o.workers = Int(c.workers)
  o.prefetch = c.prefetch != 0
  guard callerSize > lift_loader_options.size(before: \.filter) else {
    o.filter = .bilinear  // what 0.3 resampled with
    return o
  }
  o.filter = try ResampleFilter(c: c.filter)
  o.reducedDecode = c.reduced_decode != 0
  guard c.max_pixels >= 0 else { throw .argument("max_pixels must be >= 0 (0: the default; got \(c.max_pixels))") }
  o.maxPixels = c.max_pixels == 0 ? ImageDecoder.defaultMaxPixels : c.max_pixels
  guard c.decode_threads >= 1, c.decode_threads <= 256 else { throw .argument("decode_threads must be in [1, 256] (got \(c.decode_threads))") }
  o.decodeThreads = Int(c.decode_threads)
  guard c.shuffle_block >= 1 else { throw .argument("shuffle_block must be >= 1 (got \(c.shuffle_block))") }
  o.shuffleBlock = Int(c.shuffle_block)
  guard c.max_bad_fraction >= 0, c.max_bad_fraction <= 1 else {
    throw .argument("max_bad_fraction must be in [0, 1] (got \(c.max_bad_fraction))")
  }
  o.maxBadFraction = c.max_bad_fraction
  return o
}

private func createLoader(_ source: SampleSource, _ options: UnsafePointer<lift_loader_options>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) throws(LiftError) {
  let out = try required(out, "out")
  let c = try requiredStruct(options, "options")
  let size = try lift_loader_options.checkSize(at: UnsafeRawPointer(options!), "options")
  let o = try loaderOptions(c, callerSize: size)
  // The loader checks the position (against the data) before its thread starts.
  let loader = try DataLoader(source: source, options: o, start: .init(epoch: Int(c.start_epoch), batch: Int(c.start_batch)))
  out.pointee = makeHandle(try LoaderHandle(loader))
}

@_cdecl("lift_loader_create")
public func cLiftLoaderCreate(_ datasetHandle: OpaquePointer?, _ options: UnsafePointer<lift_loader_options>?,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    try createLoader(try object(datasetHandle, as: ImageDataset.self, "dataset"), options, out)
  }
}

@_cdecl("lift_loader_create_from_source")
public func cLiftLoaderCreateFromSource(_ sourceHandle: OpaquePointer?, _ options: UnsafePointer<lift_loader_options>?,
                                        _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    try createLoader(try object(sourceHandle, as: SourceHandle.self, "source").source, options, out)
  }
}

@_cdecl("lift_loader_next")
public func cLiftLoaderNext(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<lift_batch>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: LoaderHandle.self, "loader")
    let out = try requiredStruct(out, "out")
    let b = try h.loader.next()
    h.indices.update(from: b.indices, count: b.count)
    h.captionRows.update(from: b.captionRows, count: b.count)
    try h.setKeys(b.keys)
    h.bad = b.badSamples
    var batch = lift_batch()
    batch.images = UnsafePointer(b.images)
    batch.texts = UnsafePointer(b.texts)
    batch.indices = UnsafePointer(h.indices)
    batch.caption_rows = UnsafePointer(h.captionRows)
    batch.count = Int64(b.count)
    batch.global_count = Int64(b.globalCount)
    batch.epoch = Int64(b.position.epoch)
    batch.batch = Int64(b.position.batch)
    batch.wait_seconds = h.loader.lastWaitSeconds
    batch.skipped = Int64(b.skipped)
    batch.keys = UnsafePointer(h.keys)
    out.pointee = batch
  }
}

@_cdecl("lift_loader_batches_per_epoch")
public func cLiftLoaderBatchesPerEpoch(_ handle: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: LoaderHandle.self, "loader")
    try required(count, "count").pointee = Int64(h.loader.batchesPerEpoch)
  }
}

@_cdecl("lift_loader_bad_samples")
public func cLiftLoaderBadSamples(_ handle: OpaquePointer?, _ seen: UnsafeMutablePointer<Int64>?,
                                  _ counts: UnsafeMutablePointer<Int64>?, _ n: Int) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: LoaderHandle.self, "loader")
    seen?.pointee = h.bad.seen
    let n = min(try requiredSize(n, "n_counts"), SampleProblem.allCases.count)
    if n > 0 {
      let counts = try required(counts, "counts")
      for (k, p) in SampleProblem.allCases.prefix(n).enumerated() { counts[k] = h.bad.counts[p] ?? 0 }
    }
  }
}

@_cdecl("lift_loader_bad_report")
public func cLiftLoaderBadReport(_ handle: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                                 _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: LoaderHandle.self, "loader")
    try copyCString(Array(h.bad.description.utf8), into: buffer, capacity: capacity, length: length, what: "the bad-sample report")
  }
}

// MARK: - Sources

/// A data source handed to C (a dataset opened this way is a source too).
final class SourceHandle {
  let source: SampleSource
  let kind: DataSources.Kind
  init(_ source: SampleSource, kind: DataSources.Kind) {
    self.source = source
    self.kind = kind
  }
}

private func stringList(_ list: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ name: String) throws(LiftError) -> [String] {
  let n = try requiredSize(count, "n_\(name)")
  guard n > 0 else { return [] }
  let list = try required(list, name)
  var out: [String] = []
  for i in 0..<n { out.append(try requiredString(list[i], "\(name)[\(i)]")) }
  return out
}

@_cdecl("lift_source_open")
public func cLiftSourceOpen(_ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ nPaths: Int,
                            _ embeddings: UnsafePointer<UnsafePointer<CChar>?>?, _ nEmbeddings: Int,
                            _ index: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let request = DataSources.Request(paths: try stringList(paths, nPaths, "paths"),
                                      embeddings: try stringList(embeddings, nEmbeddings, "embeddings"),
                                      index: index.map { String(cString: $0) })
    guard !request.paths.isEmpty else { throw .argument("n_paths must be >= 1") }
    let (kind, _) = try DataSources.detect(request)
    out.pointee = makeHandle(SourceHandle(try DataSources.open(request), kind: kind))
  }
}

@_cdecl("lift_source_get_info")
public func cLiftSourceGetInfo(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<lift_source_info>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SourceHandle.self, "source")
    let out = try requiredStruct(out, "out")
    var info = lift_source_info()
    info.kind = Int32([DataSources.Kind.dataset, .tarShards, .imageFolders, .indexedFolder].firstIndex(of: h.kind)!)
    info.text_dim = Int32(h.source.textDim)
    info.samples = h.source.sampleCount
    info.shards = Int64(h.source.shardSampleCounts?.count ?? 0)
    out.pointee = info.sized
  }
}

@_cdecl("lift_source_summary")
public func cLiftSourceSummary(_ handle: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                               _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SourceHandle.self, "source")
    try copyCString(Array(h.source.summary.utf8), into: buffer, capacity: capacity, length: length, what: "the summary")
  }
}

@_cdecl("lift_source_free")
public func cLiftSourceFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_loader_free")
public func cLiftLoaderFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_preprocess_image")
public func cLiftPreprocessImage(_ src: UnsafePointer<UInt8>?, _ height: Int32, _ width: Int32, _ channels: Int32,
                                 _ box: UnsafePointer<Double>?, _ size: Int32, _ outChannels: Int32, _ flip: Int32,
                                 _ dst: UnsafeMutablePointer<UInt8>?, _ dstLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let view = box.map { Preprocess.View.box(Preprocess.Box(x0: $0[0], y0: $0[1], x1: $0[2], y1: $0[3])) }
      ?? .box(centredSquare(width: Int(width), height: Int(height)))
    try Preprocess.image(try required(src, "src"), width: Int(width), height: Int(height), channels: Int(channels), view: view,
                         size: Int(size), filter: .bilinear, outChannels: Int(outChannels), flip: flip != 0,
                         into: try required(dst, "dst"), dstCount: try requiredSize(dstLen, "dst_len"))
  }
}

/// The centred square of side min(width, height) (lift_preprocess_image's default box).
private func centredSquare(width: Int, height: Int) -> Preprocess.Box {
  let side = Double(min(width, height))
  let x0 = ((Double(width) - side) / 2).rounded(.down), y0 = ((Double(height) - side) / 2).rounded(.down)
  return Preprocess.Box(x0: x0, y0: y0, x1: x0 + side, y1: y0 + side)
}

// MARK: - Evaluation

@_cdecl("lift_eval_class_embeddings")
public func cLiftEvalClassEmbeddings(_ prompts: UnsafePointer<Float>?, _ promptCount: Int64, _ d: Int64,
                                     _ offsets: UnsafePointer<Int64>?, _ rows: UnsafePointer<Int64>?, _ classes: Int64,
                                     _ out: UnsafeMutablePointer<Float>?) -> lift_status {
  capi { () throws(LiftError) in
    try requirePositive(d, "d")
    try requirePositive(classes, "classes")
    guard classes <= Int64(ImageDataset.maxClasses) else {
      throw .argument("classes must be at most \(ImageDataset.maxClasses) (got \(classes))")
    }
    try requireNonNegative(promptCount, "prompt_count")
    _ = try checkedCount(promptCount, d, "prompts")
    _ = try checkedCount(classes, d, "class embeddings")
    let offsets = try required(offsets, "offsets")
    guard offsets[0] == 0 else { throw .argument("offsets[0] must be 0") }
    // All offsets first: rows has offsets[classes] entries, and no read may go beyond them.
    let total = offsets[Int(classes)]
    for k in 0..<Int(classes) where !(offsets[k] <= offsets[k + 1] && offsets[k + 1] <= total) {
      throw .argument("offsets must not decrease (rows holds offsets[classes] = \(total) entries); they do at class \(k)")
    }
    var lists: [[Int]] = []
    for k in 0..<Int(classes) {
      var list: [Int] = []
      if offsets[k] < offsets[k + 1] {
        let rows = try required(rows, "rows")
        for p in offsets[k]..<offsets[k + 1] {
          guard rows[Int(p)] >= 0, rows[Int(p)] < promptCount else {
            throw .argument("class \(k) refers to prompt \(rows[Int(p)]); there are \(promptCount)")
          }
          list.append(Int(rows[Int(p)]))
        }
      }
      lists.append(list)
    }
    let result = try Metrics.classEmbeddings(prompts: try required(prompts, "prompts"), d: Int(d), classes: lists)
    try required(out, "out").update(from: result, count: result.count)
  }
}

@_cdecl("lift_eval_zero_shot")
public func cLiftEvalZeroShot(_ images: UnsafePointer<Float>?, _ n: Int64, _ classes: UnsafePointer<Float>?,
                              _ classCount: Int64, _ d: Int64, _ labels: UnsafePointer<Int64>?,
                              _ top1: UnsafeMutablePointer<Double>?, _ top5: UnsafeMutablePointer<Double>?) -> lift_status {
  capi { () throws(LiftError) in
    try requirePositive(n, "n")
    try requirePositive(classCount, "class_count")
    try requirePositive(d, "d")
    _ = try checkedCount(n, d, "images")
    _ = try checkedCount(classCount, d, "classes")
    let r = try Metrics.zeroShot(images: try required(images, "images"), n: Int(n), classes: try required(classes, "classes"),
                                 classCount: Int(classCount), d: Int(d), labels: try required(labels, "labels"))
    top1?.pointee = r.top1
    top5?.pointee = r.top5
  }
}

@_cdecl("lift_eval_retrieval")
public func cLiftEvalRetrieval(_ images: UnsafePointer<Float>?, _ n: Int64, _ texts: UnsafePointer<Float>?, _ m: Int64,
                               _ d: Int64, _ offsets: UnsafePointer<Int64>?, _ rows: UnsafePointer<Int64>?,
                               _ i2t: UnsafeMutablePointer<Double>?, _ t2i: UnsafeMutablePointer<Double>?) -> lift_status {
  capi { () throws(LiftError) in
    try requirePositive(n, "n")
    try requirePositive(m, "m")
    try requirePositive(d, "d")
    _ = try checkedCount(n, d, "images")
    _ = try checkedCount(m, d, "texts")
    let offsets = Array(UnsafeBufferPointer(start: try required(offsets, "caption_offsets"), count: Int(n) + 1))
    guard offsets[0] == 0, offsets.last! >= 0, offsets.last! <= Int64(Int32.max) else {
      throw .argument("caption offsets must start at 0 and end at the number of caption rows")
    }
    let rowList = offsets.last! == 0 ? [] : Array(UnsafeBufferPointer(start: try required(rows, "caption_rows"), count: Int(offsets.last!)))
    let r = try Metrics.retrieval(images: try required(images, "images"), n: Int(n), texts: try required(texts, "texts"),
                                  m: Int(m), d: Int(d), captionOffsets: offsets, captionRows: rowList)
    try required(i2t, "image_to_text").update(from: r.imageToText, count: 3)
    try required(t2i, "text_to_image").update(from: r.textToImage, count: 3)
  }
}

@_cdecl("lift_eval_pairwise")
public func cLiftEvalPairwise(_ images: UnsafePointer<Float>?, _ positives: UnsafePointer<Float>?,
                              _ negatives: UnsafePointer<Float>?, _ n: Int64, _ d: Int64,
                              _ correct: UnsafeMutablePointer<UInt8>?) -> lift_status {
  capi { () throws(LiftError) in
    try requirePositive(n, "n")
    try requirePositive(d, "d")
    _ = try checkedCount(n, d, "pairs")
    let flags = try Metrics.pairwise(images: try required(images, "images"), positives: try required(positives, "positives"),
                                     negatives: try required(negatives, "negatives"), n: Int(n), d: Int(d))
    let out = try required(correct, "correct")
    for (i, f) in flags.enumerated() { out[i] = f ? 1 : 0 }
  }
}
