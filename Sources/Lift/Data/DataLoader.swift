import Dispatch
import Glibc

/// Training batches from a `SampleSource`: the samples of each step (`SampleOrder`: a seeded
/// permutation per epoch for indexed sources, shuffled shards and blocks for sharded ones), each
/// paired with one caption embedding, decoded (JPEG/PNG/WebP) or read as stored pixels, and
/// brought to the model's size and channels (centre view, or random-resized crop and flip).
///
/// `batchSize` is the global batch: with `workers` > 1 the loader yields rank `rank`'s disjoint
/// part of each global batch. For indexed sources the sequence of global batches depends only on
/// the seed and batch size (a run can resume on another number of ranks); a sharded source's
/// stream also depends on the number of ranks. Unshuffled, any source is read in order, every
/// sample once per epoch (evaluation, encoding).
///
/// Everything random is a pure function of (seed, epoch, position), so a loader started at
/// `Position(epoch:batch:)` reproduces the batches of one that ran up to there. Decoding runs on
/// `decodeThreads` threads and is deterministic whatever their number.
///
/// Bad samples (an image that does not decode, a missing or non-finite embedding, ...) are left
/// out of their batch and counted by kind (`badSamples`); when more than `maxBadFraction` of the
/// samples seen are bad, `next()` throws, naming the kinds and examples.
///
/// With `prefetch`, a background thread prepares the next batch while the caller trains on the
/// current one; `waitSeconds` says how long `next()` had to block.
public final class DataLoader: @unchecked Sendable {  // next() and close() take `lock`
  public struct Options {
    /// Images per global batch, split over the workers (batches of an epoch differ by at most one).
    public var batchSize: Int
    public var imageSize: Int
    public var channels: Int
    public var seed: UInt64 = 0
    public var shuffle = true
    public var augment: Preprocess.Augment? = nil
    /// Resampling filter (Pillow's); bicubic is what OpenCLIP and pretrained encoders expect.
    public var filter = ResampleFilter.bicubic
    /// Without augmentation: resize the short side to this many pixels, then centre-crop to
    /// `imageSize` (timm's and LIFT's evaluation: 256 for 224); nil resizes to `imageSize`.
    public var resize: Int? = nil
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale when the view allows (see `Preprocess.reduction`).
    public var reducedDecode = true
    /// Images with more pixels are bad samples (decompression bombs).
    public var maxPixels = ImageDecoder.defaultMaxPixels
    /// Threads decoding a batch (the producer thread counts as one).
    public var decodeThreads = 1
    /// Sharded sources: samples shuffled together in a block (OpenCLIP's buffer is 5000).
    public var shuffleBlock = 5000
    /// More bad samples than this fraction of those seen stops the loader (checked from 1000
    /// samples on, and at the end of every epoch); 1 never stops.
    public var maxBadFraction = 0.01
    /// true: a batch whose samples are all bad comes back empty (evaluation, which reads every
    /// sample once); false: such a batch is an error (training needs samples).
    public var allowEmptyBatches = false
    public var rank = 0
    public var workers = 1
    public var prefetch = true
    /// false: batches carry indices and caption embeddings only (for training on cached
    /// features); `images` is then empty.
    public var pixels = true

    public init(batchSize: Int, imageSize: Int, channels: Int) {
      self.batchSize = batchSize
      self.imageSize = imageSize
      self.channels = channels
    }
  }

  /// The next batch to produce: epoch and batch index within it.
  public struct Position: Equatable {
    public var epoch: Int
    public var batch: Int
    public init(epoch: Int, batch: Int) { self.epoch = epoch; self.batch = batch }
  }

  /// Samples left out so far, by kind, with the first few of each kind named.
  public struct BadSamples: Equatable {
    public var seen: Int64 = 0
    public var counts: [SampleProblem: Int64] = [:]
    public var examples: [SampleProblem: [String]] = [:]
    public var total: Int64 { counts.values.reduce(0, +) }

    public init() {}

    public mutating func add(_ problem: SampleProblem, _ example: String) {
      counts[problem, default: 0] += 1
      let named = examples[problem, default: []]
      if named.count < 3 && !named.contains(example) { examples[problem, default: []].append(example) }
    }

    /// "3 corrupt (a.jpg: JPEG: ..., ...), 1 missing_embedding (b)".
    public var description: String {
      SampleProblem.allCases.compactMap { p in
        counts[p].map { "\($0) \(p.rawValue) (\(examples[p, default: []].joined(separator: "; ")))" }
      }.joined(separator: ", ")
    }
  }

  /// One batch. Its buffers stay valid until the following `next()` call.
  public final class Batch {
    public let images: UnsafeMutablePointer<UInt8>
    public let texts: UnsafeMutablePointer<Float>
    public fileprivate(set) var indices: [Int64] = []
    public fileprivate(set) var captionRows: [Int64] = []
    public fileprivate(set) var keys: [String] = []
    /// Usable samples (bad ones are left out).
    public fileprivate(set) var count = 0
    public fileprivate(set) var position = Position(epoch: 0, batch: 0)
    /// Size of the global batch this is part of (all ranks).
    public fileprivate(set) var globalCount = 0
    /// Samples of this part left out as bad.
    public fileprivate(set) var skipped = 0
    /// The loader's bad-sample totals up to and including this batch.
    public fileprivate(set) var badSamples = BadSamples()
    fileprivate var error: LiftError?

    init(capacity: Int, imageBytes: Int, textDim: Int) throws(LiftError) {
      images = try allocateElements(max(1, try checkedCount(Int64(capacity), Int64(imageBytes), "batch images")),
                                    of: UInt8.self, what: "a batch of \(capacity) images")
      do {
        texts = try allocateFloats(max(1, try checkedCount(Int64(capacity), Int64(textDim), "batch texts")),
                                   what: "a batch of \(capacity) caption embeddings")
      } catch {
        images.deallocate()
        throw error
      }
    }

    deinit {
      images.deallocate()
      texts.deallocate()
    }
  }

  public let source: SampleSource
  public let options: Options
  /// The source as a liblift HDF5 dataset (nil for other kinds).
  public var dataset: ImageDataset? { source as? ImageDataset }
  /// Seconds the last `next()` waited for its batch, and the total so far.
  public private(set) var lastWaitSeconds = 0.0
  public private(set) var waitSeconds = 0.0
  /// Largest part of a global batch this rank receives.
  public let capacity: Int

  private let state: SharedState
  private var thread: pthread_t?
  /// Serialises next() and close() (several threads may share a loader).
  private let lock = Lock()

  public var batchesPerEpoch: Int { state.producer.order.batchesPerEpoch }

  /// Batches per epoch a loader over `source` with these options has (before creating one):
  /// a shuffled sharded source streams floor(samples / batch) steps, anything else
  /// ceil(samples / batch).
  public static func batchesPerEpoch(source: SampleSource, batchSize: Int, shuffle: Bool = true) -> Int {
    let batch = Int64(max(1, min(Int64(batchSize), source.sampleCount)))
    if source.shardSampleCounts != nil && shuffle { return max(1, Int(source.sampleCount / batch)) }
    return EpochPlan(count: source.sampleCount, globalBatch: Int(batch)).batchesPerEpoch
  }

  /// Largest epoch a loader may start at (or reach): far beyond any run, far from overflow.
  public static let maxEpoch = 1 << 40

  public convenience init(dataset: ImageDataset, options: Options, start: Position = Position(epoch: 0, batch: 0)) throws(LiftError) {
    try self.init(source: dataset, options: options, start: start)
  }

  public init(source: SampleSource, options: Options, start: Position = Position(epoch: 0, batch: 0)) throws(LiftError) {
    guard options.batchSize >= 1 else { throw .argument("batch size must be >= 1 (got \(options.batchSize))") }
    guard options.workers >= 1, options.rank >= 0, options.rank < options.workers else {
      throw .argument("rank \(options.rank) is not in [0, \(options.workers))")
    }
    guard options.channels == 1 || options.channels == 3 else { throw .argument("channels must be 1 or 3") }
    guard options.imageSize >= 1, options.imageSize <= 4096 else { throw .argument("image size must be in [1, 4096]") }
    if let r = options.resize, r < options.imageSize || r > 1 << 14 {
      throw .argument("resize must be in [\(options.imageSize), 16384] (the image size is \(options.imageSize); got \(r))")
    }
    guard options.decodeThreads >= 1, options.decodeThreads <= 256 else { throw .argument("decode threads must be in [1, 256]") }
    guard options.maxBadFraction >= 0, options.maxBadFraction <= 1 else { throw .argument("max bad fraction must be in [0, 1]") }
    guard options.maxPixels >= 1 else { throw .argument("max pixels must be >= 1") }
    guard source.sampleCount >= Int64(options.workers) else {
      throw .argument("the data has \(source.sampleCount) samples, fewer than the \(options.workers) workers")
    }
    let order: SampleOrder
    if let counts = source.shardSampleCounts, options.shuffle {
      let batch = Int(min(Int64(options.batchSize), source.sampleCount))
      guard batch >= options.workers else {
        throw .argument("a global batch of \(batch) cannot give each of the \(options.workers) workers a sample")
      }
      order = try ShardStream(source: source, counts: counts, globalBatch: batch, rank: options.rank,
                              workers: options.workers, seed: options.seed, block: options.shuffle ? options.shuffleBlock : 1)
    } else {
      // A batch never holds more than the dataset: a larger batch size is the whole dataset.
      let batchSize = Int(min(Int64(options.batchSize), source.sampleCount))
      let plan = EpochPlan(count: source.sampleCount, globalBatch: batchSize, workers: options.workers)
      guard source.sampleCount / Int64(plan.batchesPerEpoch) >= Int64(options.workers) else {
        throw .argument("\(source.sampleCount) images make global batches too small to give each of the \(options.workers) workers an image; use a smaller batch size or fewer workers")
      }
      order = IndexedOrder(source: source, plan: plan, rank: options.rank, seed: options.seed, shuffle: options.shuffle)
    }
    // Checked before the producer thread starts (it advances from here).
    guard start.epoch >= 0, start.epoch <= DataLoader.maxEpoch, start.batch >= 0, start.batch < order.batchesPerEpoch else {
      throw .argument("start position (epoch \(start.epoch), batch \(start.batch)) is outside the data: epochs are "
                      + "in [0, \(DataLoader.maxEpoch)] and hold \(order.batchesPerEpoch) batches")
    }
    self.source = source
    self.options = options
    // A local part is at most ceil(batch / workers) (+1 from the near-equal splits).
    let batchSize = Int(min(Int64(options.batchSize), source.sampleCount))
    capacity = (batchSize + options.workers - 1) / options.workers + 1
    let producer = try Producer(source: source, options: options, order: order)
    let imageBytes = options.pixels ? producer.outBytes : 0
    state = SharedState(producer: producer, slots: [
      try Batch(capacity: capacity, imageBytes: imageBytes, textDim: source.textDim),
      try Batch(capacity: capacity, imageBytes: imageBytes, textDim: source.textDim),
    ], start: start)
    if options.prefetch {
      var t = pthread_t()
      let box = Unmanaged.passRetained(state).toOpaque()
      let rc = pthread_create(&t, nil, { arg in
        let state = Unmanaged<SharedState>.fromOpaque(arg!).takeRetainedValue()
        state.runProducer()
        return nil
      }, box)
      guard rc == 0 else {
        Unmanaged<SharedState>.fromOpaque(box).release()
        throw .internal("cannot start the data loader thread (error \(rc))")
      }
      thread = t
    }
  }

  deinit { close() }

  /// Stops the background thread (batches already handed out stay valid until deinit).
  public func close() {
    lock.withLock {
      guard let t = thread else { return }
      state.stop()
      pthread_join(t, nil)
      thread = nil
    }
  }

  /// The next batch (blocking until it is ready). Throws the error that producing it hit.
  public func next() throws(LiftError) -> Batch {
    try lock.withLock { () throws(LiftError) in try nextLocked() }
  }

  private func nextLocked() throws(LiftError) -> Batch {
    var a = timespec(), b = timespec()
    clock_gettime(CLOCK_MONOTONIC, &a)
    let batch: Batch
    if thread != nil {
      batch = state.take()
    } else {
      batch = state.produceInline()
    }
    clock_gettime(CLOCK_MONOTONIC, &b)
    lastWaitSeconds = Double(b.tv_sec - a.tv_sec) + Double(b.tv_nsec - a.tv_nsec) * 1e-9
    waitSeconds += lastWaitSeconds
    if let error = batch.error { throw error }
    return batch
  }

  /// Position of the batch `next()` returns next.
  public var nextPosition: Position { state.nextToTake }
}

/// Builds batches; used by exactly one thread at a time.
private final class Producer {
  let source: SampleSource
  let options: DataLoader.Options
  let order: SampleOrder
  let outBytes: Int
  private let arena: ByteArena
  /// Per decode thread: its pipeline (decoder buffers) and resampling scratch.
  private let pipelines: [ImagePipeline]
  private let scratches: [ScratchBuffer]
  private var bad = DataLoader.BadSamples()

  init(source: SampleSource, options: DataLoader.Options, order: SampleOrder) throws(LiftError) {
    self.source = source
    self.options = options
    self.order = order
    outBytes = options.imageSize * options.imageSize * options.channels
    arena = try ByteArena()
    pipelines = (0..<options.decodeThreads).map { _ in
      ImagePipeline(size: options.imageSize, channels: options.channels, filter: options.filter,
                    reducedDecode: options.reducedDecode, maxPixels: options.maxPixels)
    }
    scratches = (0..<options.decodeThreads).map { _ in ScratchBuffer() }
  }

  func fill(_ batch: DataLoader.Batch, at position: DataLoader.Position) {
    batch.error = nil
    batch.position = position
    do throws(LiftError) {
      try build(batch, epoch: position.epoch, index: position.batch)
    } catch {
      batch.error = error
    }
  }

  private func build(_ batch: DataLoader.Batch, epoch: Int, index: Int) throws(LiftError) {
    let draws = try order.draws(epoch: epoch, batch: index)
    batch.globalCount = order.globalCount(batch: index)
    let seed = options.seed
    arena.reset()
    let fetched = try source.fetch(draws.map(\.ref), images: options.pixels, into: arena, texts: batch.texts) { i, count in
      Int64(mix64(seed, draws[i].epoch, draws[i].position, 0xCA97) % UInt64(count))
    }
    var problems: [LiftError?] = fetched.map { f in f.problem.map { LiftError(LIFT_ERR_FORMAT, f.detail, sampleProblem: $0) } }
    if options.pixels { try render(draws, fetched, into: batch, problems: &problems) }
    keepUsable(draws, fetched, problems, in: batch)
    batch.badSamples = bad
    guard batch.count > 0 || options.allowEmptyBatches else {
      throw .value("every sample of epoch \(epoch) batch \(index) was unusable: \(bad.description)")
    }
    let epochEnd = index == order.batchesPerEpoch - 1
    if options.maxBadFraction < 1, bad.seen >= 1000 || epochEnd, Double(bad.total) > options.maxBadFraction * Double(bad.seen) {
      throw .value("\(bad.total) of \(bad.seen) samples (\(Int((Double(bad.total) / Double(bad.seen) * 1000).rounded()) / 10) %) "
                   + "could not be used, more than the allowed \(options.maxBadFraction * 100) %: \(bad.description)")
    }
  }

  /// Decodes (or takes the stored pixels of) every usable sample and renders its view into its
  /// batch slot, on `decodeThreads` threads; a sample that fails gets its problem.
  private func render(_ draws: [Draw], _ fetched: [FetchedSample], into batch: DataLoader.Batch,
                      problems: inout [LiftError?]) throws(LiftError) {
    let n = draws.count, threads = min(options.decodeThreads, max(n, 1))
    let results = UnsafeMutableBufferPointer<LiftError?>.allocate(capacity: max(n, 1))
    _ = results.initialize(from: problems + (n == 0 ? [nil] : []))
    defer {
      results.deinitialize()  // errors hold messages: released before the memory goes
      results.deallocate()
    }
    let work = RenderWork(producer: self, draws: draws, fetched: fetched, images: batch.images, results: results)
    if threads == 1 {
      work.run(thread: 0, of: 1)
    } else {
      DispatchQueue.concurrentPerform(iterations: threads) { t in work.run(thread: t, of: threads) }
    }
    for i in 0..<n {
      problems[i] = results[i]
      // A failure that is not about the sample (memory, a bug) fails the batch.
      if let e = results[i], e.sampleProblem == nil { throw e }
    }
  }

  /// Renders sample i into its slot (the view and flip drawn from its own seed).
  fileprivate func render(_ i: Int, draw: Draw, sample: FetchedSample, thread: Int,
                          into dst: UnsafeMutablePointer<UInt8>) throws(LiftError) {
    var rng = Xoshiro256(seed: mix64(options.seed, draw.epoch, draw.position, 0xA06))
    let augment = options.augment, resize = options.resize
    let choose = { (w: Int, h: Int) -> (Preprocess.View, Bool) in
      let view = augment.map { Preprocess.randomCrop(width: w, height: h, augment: $0, rng: &rng) } ?? (resize.map { .resizedCentre(resize: $0) } ?? .centre)
      return (view, (augment?.flip ?? false) && rng.next() & 1 == 1)
    }
    switch sample.payload {
    case .pixels(let start, let w, let h, let c):
      let (view, flip) = choose(w, h)
      try Preprocess.render(ImageRegion(base: arena.base + start, width: w, height: h, channels: c), fullWidth: w,
                            fullHeight: h, view: view, size: options.imageSize, filter: options.filter,
                            outChannels: options.channels, flip: flip, into: dst, scratch: scratches[thread])
    case .encoded(let start, let count):
      try pipelines[thread].render(arena.bytes(start, count), what: "image", choose: choose, into: dst)
    case .none:
      throw .internal("sample \(draw.ref.id) has no image")
    }
  }

  /// Moves usable samples to the front of the batch, in order, and counts the others.
  private func keepUsable(_ draws: [Draw], _ fetched: [FetchedSample], _ problems: [LiftError?], in batch: DataLoader.Batch) {
    let d = source.textDim
    var kept = 0
    batch.indices = []
    batch.captionRows = []
    batch.keys = []
    for i in draws.indices {
      bad.seen += 1
      if let e = problems[i], let kind = e.sampleProblem {
        bad.add(kind, "\(describe(draws[i].ref)): \(e.message)")
        continue
      }
      if kept != i {
        if options.pixels { (batch.images + kept * outBytes).update(from: batch.images + i * outBytes, count: outBytes) }
        (batch.texts + kept * d).update(from: batch.texts + i * d, count: d)
      }
      batch.indices.append(draws[i].ref.id)
      batch.captionRows.append(fetched[i].captionRow)
      batch.keys.append(draws[i].ref.key)
      kept += 1
    }
    batch.count = kept
    batch.skipped = draws.count - kept
  }

  private func describe(_ ref: SampleRef) -> String { ref.key.isEmpty ? "sample \(ref.id)" : ref.key }
}

/// What the decode threads share for one batch: each writes only its own samples' slots and
/// result entries (disjoint), and reads the rest. That is the invariant that makes handing it to
/// several threads safe.
private struct RenderWork: @unchecked Sendable {
  let producer: Producer
  let draws: [Draw]
  let fetched: [FetchedSample]
  let images: UnsafeMutablePointer<UInt8>
  let results: UnsafeMutableBufferPointer<LiftError?>

  /// Thread t of `threads` renders samples t, t + threads, ... that have no problem yet.
  func run(thread t: Int, of threads: Int) {
    for i in stride(from: t, to: draws.count, by: threads) where results[i] == nil {
      results[i] = renderCatching(i, thread: t)
    }
  }

  func renderCatching(_ i: Int, thread: Int) -> LiftError? {
    do throws(LiftError) {
      try producer.render(i, draw: draws[i], sample: fetched[i], thread: thread, into: images + i * producer.outBytes)
      return nil
    } catch {
      return error
    }
  }
}

/// State shared by the consumer and the producer thread: two batch slots, one being filled while
/// the caller holds the other.
private final class SharedState: @unchecked Sendable {
  let producer: Producer
  let slots: [DataLoader.Batch]
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  /// Slots ready for the consumer, in order.
  private var ready: [Int] = []
  /// Slot the consumer holds (not to be refilled until the next take).
  private var held: Int? = nil
  private var stopping = false
  private(set) var nextToProduce: DataLoader.Position
  private(set) var nextToTake: DataLoader.Position

  init(producer: Producer, slots: [DataLoader.Batch], start: DataLoader.Position) {
    self.producer = producer
    self.slots = slots
    nextToProduce = start
    nextToTake = start
    pthread_mutex_init(mutex, nil)
    pthread_cond_init(changed, nil)
  }

  deinit {
    pthread_mutex_destroy(mutex)
    pthread_cond_destroy(changed)
    mutex.deallocate()
    changed.deallocate()
  }

  func advance(_ p: DataLoader.Position) -> DataLoader.Position {
    p.batch + 1 >= producer.order.batchesPerEpoch ? DataLoader.Position(epoch: p.epoch + 1, batch: 0)
      : DataLoader.Position(epoch: p.epoch, batch: p.batch + 1)
  }

  /// Producer thread: fill free slots in order until stopped.
  func runProducer() {
    while true {
      pthread_mutex_lock(mutex)
      var free: Int? = nil
      while !stopping {
        free = slots.indices.first { i in !ready.contains(i) && held != i }
        if free != nil { break }
        pthread_cond_wait(changed, mutex)
      }
      if stopping { pthread_mutex_unlock(mutex); return }
      let position = nextToProduce
      nextToProduce = advance(position)
      pthread_mutex_unlock(mutex)
      producer.fill(slots[free!], at: position)
      pthread_mutex_lock(mutex)
      ready.append(free!)
      pthread_cond_broadcast(changed)
      pthread_mutex_unlock(mutex)
    }
  }

  /// Consumer: release the held slot, wait for the next ready one.
  func take() -> DataLoader.Batch {
    pthread_mutex_lock(mutex)
    held = nil
    pthread_cond_broadcast(changed)
    while ready.isEmpty { pthread_cond_wait(changed, mutex) }
    let slot = ready.removeFirst()
    held = slot
    nextToTake = advance(nextToTake)
    pthread_mutex_unlock(mutex)
    return slots[slot]
  }

  /// Without a thread: build the next batch now.
  func produceInline() -> DataLoader.Batch {
    let position = nextToTake
    nextToTake = advance(position)
    producer.fill(slots[0], at: position)
    return slots[0]
  }

  func stop() {
    pthread_mutex_lock(mutex)
    stopping = true
    pthread_cond_broadcast(changed)
    pthread_mutex_unlock(mutex)
  }
}
