import ArgumentParser
import Glibc
import Lift

/// `lift build`: data as users have it (tar shards, image folders, an indexed folder) with its
/// keyed caption embeddings, written as liblift dataset shards of encoded images: the images'
/// own bytes (no re-encoding), each checked by decoding it once, with every caption embedding
/// under its key. Shards are written one at a time, each atomically, so --resume continues after
/// the last complete one.
struct Build: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write tar shards or image folders with their caption embeddings as liblift dataset shards of encoded images.",
    discussion: """
      Each output shard (OUT/00000.h5, OUT/00001.h5, ...) holds --shard-size samples in the data's order: \
      images/encoded (the files as they are), images/keys, and the samples' caption embeddings \
      (every store row under the key: alternative captions). Samples that cannot be used (an image \
      that does not decode, a missing or non-finite embedding, ...) are left out and listed.
      """)

  @Option(name: .long, help: "Data: tar shards (files, a folder, a pattern) or an image folder (as lift train --data).") var data: [String]
  @Option(name: .long, help: "Caption embedding store(s) keyed by sample.") var embeddings: [String] = []
  @Option(name: .long, help: "Index file (CSV/JSONL) of an image folder.") var index: String?
  @Option(name: .long, help: "Output folder of dataset shards.") var out: String
  @Option(name: .long, parsing: .unconditional, help: "Samples per output shard.") var shardSize = 10_000
  @Option(name: .long, help: "Caption embeddings stored as float16 or float32.") var dtype = "float16"
  @Flag(name: .long, help: "Keep the shards already complete in --out and write the rest.") var resume = false
  @Flag(name: .long, help: "No progress line.") var quiet = false
  @OptionGroup var inputs: InputCheckOptions

  func run() throws {
    guard dtype == "float16" || dtype == "float32" else { throw CLIError("--dtype must be float16 or float32") }
    guard shardSize >= 1, shardSize <= 1 << 30 else { throw CLIError("--shard-size must be in [1, 2^30]") }
    let checks = try inputs.checks()
    try checks.data(data, index: index)
    try checks.files(embeddings, as: .store)
    let source = try cli { () throws(LiftError) in
      try DataSources.open(DataSources.Request(paths: data, embeddings: embeddings, index: index))
    }
    guard !(source is ImageDataset) else { throw CLIError("the data is already a liblift dataset") }
    try makeDirectories(out)
    let total = source.sampleCount
    let shards = Int((total + Int64(shardSize) - 1) / Int64(shardSize))
    var bad = DataLoader.BadSamples()
    var written: Int64 = 0
    let start = now()
    var pacer = ProgressPacer()
    for k in 0..<shards {
      let path = out + "/" + String(k).leftPadded(5) + ".h5"
      if exists(path) {
        guard resume else { throw CLIError("'\(path)' exists: pass --resume to keep the complete shards and write the rest") }
        continue
      }
      let range = Int64(k) * Int64(shardSize)..<min(Int64(k + 1) * Int64(shardSize), total)
      written += try writeShard(source, range: range, path: path, bad: &bad) { done in
        if !quiet && pacer.due(last: false) {
          Console.progress("building shard \(k + 1)/\(shards): \(range.lowerBound + done)/\(total) samples, \(fixed(Double(range.lowerBound + done) / max(now() - start, 1e-9), 0)) /s")
        }
      }
    }
    Console.clearProgress()
    Console.line("wrote \(written) samples in \(shards) shard\(shards == 1 ? "" : "s") to \(out) in \(fixed(now() - start, 1)) s"
                 + (bad.total > 0 ? "; left out \(bad.total): \(bad.description)" : ""))
  }

  /// Writes samples `range` of the source to one shard; returns how many were written.
  func writeShard(_ source: SampleSource, range: Range<Int64>, path: String, bad: inout DataLoader.BadSamples,
                  progress: (Int64) -> Void) throws -> Int64 {
    let d = source.textDim
    let writer = try cli { () throws(LiftError) in
      try ImageDatasetWriter(encodedPath: path, textDim: d, dtype: dtype == "float16" ? LIFT_DTYPE_FLOAT16 : LIFT_DTYPE_FLOAT32)
    }
    let arena = try cli { () throws(LiftError) in try ByteArena() }
    let scratch = ScratchBuffer()
    var texts = [Float](repeating: 0, count: 256 * d)
    var kept: Int64 = 0
    for blockStart in stride(from: range.lowerBound, to: range.upperBound, by: 256) {
      let indices = blockStart..<min(blockStart + 256, range.upperBound)
      try cli { () throws(LiftError) in
        let refs = try indices.map { (i) throws(LiftError) in try source.ref(index: i) }
        arena.reset()
        let fetched = try texts.withUnsafeMutableBufferPointer { (t) throws(LiftError) in
          try source.fetch(refs, images: true, into: arena, texts: t.baseAddress!) { _, _ in 0 }
        }
        for (i, f) in fetched.enumerated() {
          let name = refs[i].key.isEmpty ? "sample \(refs[i].id)" : refs[i].key
          guard f.problem == nil, case .encoded(let at, let count) = f.payload else {
            bad.add(f.problem ?? .unsupported, "\(name): \(f.detail)")
            continue
          }
          let bytes = arena.bytes(at, count)
          do throws(LiftError) {
            let header = try ImageDecoder.header(bytes)
            _ = try ImageDecoder.decode(bytes, header: header, channels: 3, eighths: header.scalable ? 1 : 8, into: scratch)
          } catch {
            bad.add(error.sampleProblem ?? .corrupt, "\(name): \(error.message)")
            continue
          }
          // Every caption under the key (alternative captions), or the sample's own embedding.
          let captions = try captionRows(source, key: refs[i].key, fromStore: f.captionRow >= 0,
                                         own: texts, slot: i, dim: d, writer: writer)
          try writer.addEncodedImages([Array(bytes)], keys: [refs[i].key.isEmpty ? String(refs[i].id) : refs[i].key],
                                      captions: [captions])
          kept += 1
        }
      }
      progress(indices.upperBound - range.lowerBound)
    }
    guard kept > 0 else { throw CLIError("no sample of \(range.lowerBound)..<\(range.upperBound) could be used: \(bad.description)") }
    try cli { () throws(LiftError) in try writer.finish() }
    return kept
  }
}

/// Adds a sample's caption embeddings to the shard: every store row under its key, or (for a
/// sample carrying its own) the embedding the source read into `own`; returns their rows.
private func captionRows(_ source: SampleSource, key: String, fromStore: Bool, own: [Float], slot: Int, dim d: Int,
                         writer: ImageDatasetWriter) throws(LiftError) -> [Int64] {
  if let store = source.keyedStore, fromStore {
    let all = try store.rows(forKey: Array(key.utf8))
    guard all.count * d <= 1 << 28 else {
      throw LiftError(LIFT_ERR_VALUE, "key '\(key)' has \(all.count) caption rows; at most \((1 << 28) / d) are copied")
    }
    var vectors = [Float](repeating: 0, count: max(all.count * d, 1))
    try all.withUnsafeBufferPointer { (list) throws(LiftError) in
      try vectors.withUnsafeMutableBufferPointer { (v) throws(LiftError) in
        try store.read(rows: list, into: v.baseAddress!, capacity: v.count)
      }
    }
    let first = try vectors.withUnsafeBufferPointer { (v) throws(LiftError) in try writer.addCaptions(v.baseAddress!, count: all.count) }
    return Array(first..<(first + Int64(all.count)))
  }
  let first = try own.withUnsafeBufferPointer { (t) throws(LiftError) in try writer.addCaptions(t.baseAddress! + slot * d, count: 1) }
  return [first]
}

extension String {
  /// The string padded with zeros on the left to `width` characters.
  func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
