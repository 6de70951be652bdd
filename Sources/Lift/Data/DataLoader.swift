import Glibc

/// Training batches from an `ImageDataset`: seeded shuffling that visits every image exactly
/// once per epoch (a computed permutation, no index array), each image paired with one of its
/// captions drawn afresh at every visit, images brought to the model's size and channels
/// (optionally with random-resized-crop and flip), caption embeddings read alongside.
///
/// `batchSize` is the global batch: with `workers` > 1 the loader yields rank `rank`'s disjoint
/// part of each global batch (see `EpochPlan`), and the ranks together cover every image once
/// per epoch. The sequence of global batches depends only on the seed and the global batch size,
/// not on the number of workers, so a run can resume on a different number of ranks.
///
/// Everything random is a pure function of (seed, epoch, position), so a loader started at
/// `Position(epoch:batch:)` reproduces the batches of one that ran up to there.
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
    public var filter = ResampleFilter.bilinear
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

  /// One batch. Its buffers stay valid until the following `next()` call.
  public final class Batch {
    public let images: UnsafeMutablePointer<UInt8>
    public let texts: UnsafeMutablePointer<Float>
    public fileprivate(set) var indices: [Int64] = []
    public fileprivate(set) var captionRows: [Int64] = []
    public fileprivate(set) var count = 0
    public fileprivate(set) var position = Position(epoch: 0, batch: 0)
    /// Size of the global batch this is part of (all ranks).
    public fileprivate(set) var globalCount = 0
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

  public let dataset: ImageDataset
  public let options: Options
  public let plan: EpochPlan
  /// Seconds the last `next()` waited for its batch, and the total so far.
  public private(set) var lastWaitSeconds = 0.0
  public private(set) var waitSeconds = 0.0

  private let state: SharedState
  private var thread: pthread_t?
  /// Serialises next() and close() (several threads may share a loader).
  private let lock = Lock()

  public var batchesPerEpoch: Int { plan.batchesPerEpoch }

  /// Largest epoch a loader may start at (or reach): far beyond any run, far from overflow.
  public static let maxEpoch = 1 << 40

  public init(dataset: ImageDataset, options: Options, start: Position = Position(epoch: 0, batch: 0)) throws(LiftError) {
    guard options.batchSize >= 1 else { throw .argument("batch size must be >= 1 (got \(options.batchSize))") }
    guard options.workers >= 1, options.rank >= 0, options.rank < options.workers else {
      throw .argument("rank \(options.rank) is not in [0, \(options.workers))")
    }
    guard options.channels == 1 || options.channels == 3 else { throw .argument("channels must be 1 or 3") }
    guard options.imageSize >= 1, options.imageSize <= 4096 else { throw .argument("image size must be in [1, 4096]") }
    guard dataset.count >= Int64(options.workers) else {
      throw .argument("the dataset has \(dataset.count) images, fewer than the \(options.workers) workers")
    }
    // A batch never holds more than the dataset: a larger batch size is the whole dataset.
    let batchSize = Int(min(Int64(options.batchSize), dataset.count))
    let plan = EpochPlan(count: dataset.count, globalBatch: batchSize, workers: options.workers)
    guard dataset.count / Int64(plan.batchesPerEpoch) >= Int64(options.workers) else {
      throw .argument("\(dataset.count) images make global batches too small to give each of the \(options.workers) workers an image; use a smaller batch size or fewer workers")
    }
    // Checked before the producer thread starts (it advances from here).
    guard start.epoch >= 0, start.epoch <= DataLoader.maxEpoch, start.batch >= 0, start.batch < plan.batchesPerEpoch else {
      throw .argument("start position (epoch \(start.epoch), batch \(start.batch)) is outside the data: epochs are "
                      + "in [0, \(DataLoader.maxEpoch)] and hold \(plan.batchesPerEpoch) batches")
    }
    self.dataset = dataset
    self.options = options
    self.plan = plan
    // A local part is at most ceil(batch / workers) (+1 from the near-equal splits).
    let capacity = (batchSize + options.workers - 1) / options.workers + 1
    let producer = try Producer(dataset: dataset, options: options, plan: plan, capacity: capacity)
    state = SharedState(producer: producer, slots: [
      try Batch(capacity: capacity, imageBytes: options.pixels ? producer.outBytes : 0, textDim: dataset.textDim),
      try Batch(capacity: capacity, imageBytes: options.pixels ? producer.outBytes : 0, textDim: dataset.textDim),
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
  let dataset: ImageDataset
  let options: DataLoader.Options
  let plan: EpochPlan
  let outBytes: Int
  private let raw: UnsafeMutablePointer<UInt8>
  private let scratch = ScratchBuffer()
  private var permutationEpoch = -1
  private var permutation = RandomPermutation(count: 1, seed: 0)

  init(dataset: ImageDataset, options: DataLoader.Options, plan: EpochPlan, capacity: Int) throws(LiftError) {
    self.dataset = dataset
    self.options = options
    self.plan = plan
    outBytes = options.imageSize * options.imageSize * options.channels
    let stored = options.pixels ? capacity : 0
    raw = try allocateElements(max(1, try checkedCount(Int64(stored), Int64(dataset.imageBytes), "stored batch")),
                               of: UInt8.self, what: "\(capacity) stored images")
  }

  deinit {
    raw.deallocate()
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
    if epoch != permutationEpoch {
      permutation = RandomPermutation(count: UInt64(dataset.count), seed: mix64(options.seed, UInt64(epoch)))
      permutationEpoch = epoch
    }
    let positions = plan.localRange(index, rank: options.rank)
    let global = plan.globalRange(index)
    batch.globalCount = Int(global.upperBound - global.lowerBound)
    let n = Int(positions.upperBound - positions.lowerBound)
    batch.count = n
    batch.indices = positions.map { options.shuffle ? Int64(permutation(UInt64($0))) : $0 }
    batch.captionRows = [Int64](repeating: 0, count: n)
    let seed = options.seed, e = UInt64(epoch)
    let first = positions.lowerBound
    try batch.indices.withUnsafeBufferPointer { (list) throws(LiftError) in
      if options.pixels { try dataset.readPixels(list, into: raw) }
      try batch.captionRows.withUnsafeMutableBufferPointer { (rows) throws(LiftError) in
        try dataset.chooseCaptions(list, into: rows.baseAddress!) { i, count in
          Int64(mix64(seed, e, UInt64(first) + UInt64(i), 0xCA97) % UInt64(count))
        }
      }
    }
    try batch.captionRows.withUnsafeBufferPointer { (rows) throws(LiftError) in
      try dataset.captions.read(rows: rows, into: batch.texts, capacity: n * dataset.textDim)
    }
    let w = dataset.width, h = dataset.height, c = dataset.channels
    for i in 0..<(options.pixels ? n : 0) {
      var rng = Xoshiro256(seed: mix64(seed, e, UInt64(first) + UInt64(i), 0xA06))
      let view = options.augment.map { Preprocess.randomCrop(width: w, height: h, augment: $0, rng: &rng) } ?? .centre
      let flip = (options.augment?.flip ?? false) && rng.next() & 1 == 1
      let image = ImageRegion(base: raw + i * dataset.imageBytes, width: w, height: h, channels: c)
      try Preprocess.render(image, fullWidth: w, fullHeight: h, view: view, size: options.imageSize, filter: options.filter,
                            outChannels: options.channels, flip: flip, into: batch.images + i * outBytes, scratch: scratch)
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
    p.batch + 1 >= producer.plan.batchesPerEpoch ? DataLoader.Position(epoch: p.epoch + 1, batch: 0)
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
