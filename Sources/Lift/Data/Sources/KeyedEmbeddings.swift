/// The caption embeddings of a batch's keyed samples: each key's rows in the store (several rows
/// are alternative captions; one is picked), read in one scattered read, each checked for
/// finiteness. A key with no row, or a non-finite row, makes its sample unusable.
struct KeyedEmbeddings {
  let store: EmbeddingStore?
  let dim: Int
  private var requests: [(slot: Int, key: String)] = []

  init(store: EmbeddingStore?, dim: Int) {
    self.store = store
    self.dim = dim
  }

  mutating func request(slot: Int, key: String) {
    requests.append((slot, key))
  }

  /// Looks every requested key up and writes its embedding to texts[slot * dim ...]; sets the
  /// problem of samples without one (`samples` is indexed by slot); `pick(slot, count)` chooses
  /// among a key's rows.
  func resolve(into texts: UnsafeMutablePointer<Float>, samples: inout [FetchedSample],
               pick: (Int, Int64) -> Int64) throws(LiftError) {
    guard !requests.isEmpty else { return }
    guard let store else {
      for r in requests {
        samples[r.slot] = .failed(.missingEmbedding, "no caption embedding: the sample has no npy/emb member and no embedding store was given")
      }
      return
    }
    var found: [(slot: Int, row: Int64)] = []
    for r in requests {
      let rows = try store.rows(forKey: Array(r.key.utf8))
      guard !rows.isEmpty else {
        samples[r.slot] = .failed(.missingEmbedding, "no caption embedding for key '\(r.key)' in '\(store.paths[0])'"
                                   + (store.paths.count > 1 ? " (or the other \(store.paths.count - 1) store files)" : ""))
        continue
      }
      found.append((r.slot, rows[Int(pick(r.slot, Int64(rows.count)))]))
    }
    guard !found.isEmpty else { return }
    let staged = try allocateFloats(try checkedCount(Int64(found.count), Int64(dim), "caption embeddings"),
                                    what: "\(found.count) caption embeddings")
    defer { staged.deallocate() }
    let rows = found.map(\.row)
    try rows.withUnsafeBufferPointer { (list) throws(LiftError) in
      try store.readUnchecked(rows: list, into: staged, capacity: found.count * dim)
    }
    for (k, f) in found.enumerated() {
      let row = staged + k * dim
      if let c = VectorOps.firstNonFinite(row, dim) {
        samples[f.slot] = .failed(.nonFiniteEmbedding, "caption embedding \(store.describeRow(f.row)) has \(row[c]) at column \(c)")
        continue
      }
      (texts + f.slot * dim).update(from: row, count: dim)
      samples[f.slot].captionRow = f.row
    }
  }
}

/// Numpy `.npy` arrays (format versions 1-3) of float16/32/64 in either byte order, and raw
/// little-endian float32 blobs: the caption embedding members of webdataset samples.
enum NumpyArray {
  /// The array's values in order (C order; a Fortran-order array of one row or column is the same).
  static func floats(_ bytes: [UInt8]) throws(LiftError) -> [Float] {
    let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw .format("not a .npy array (no \\x93NUMPY magic)") }
    let major = bytes[6]
    let headerLength: Int, headerStart: Int
    if major == 1 {
      headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
      headerStart = 10
    } else if major == 2 || major == 3 {
      guard bytes.count >= 12 else { throw .format(".npy header is cut short") }
      headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
      headerStart = 12
    } else {
      throw .format(".npy format version \(major) is not supported")
    }
    guard headerLength <= 1 << 16, headerStart + headerLength <= bytes.count else { throw .format(".npy header is cut short") }
    let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
    guard let descr = field(header, "descr"), let shapeText = field(header, "shape") else {
      throw .format(".npy header lacks 'descr' or 'shape': \(header.prefix(120))")
    }
    // "(384,)" or "(1, 384)": every comma-separated part is a number.
    let parts = shapeText.split(separator: ",").map { trim(String($0), " ()") }.filter { !$0.isEmpty }
    let dims = parts.compactMap { Int($0) }
    guard dims.count == parts.count, dims.allSatisfy({ $0 >= 0 && $0 <= 1 << 24 }) else {
      throw .format(".npy shape \(shapeText) is not understood")
    }
    var count = 1
    for d in dims {
      let (product, overflow) = count.multipliedReportingOverflow(by: d)
      guard !overflow, product <= 1 << 24 else { throw .format(".npy shape \(shapeText) holds more than 2^24 values") }
      count = product
    }
    let fortran = field(header, "fortran_order") == "True"
    guard !fortran || dims.filter({ $0 > 1 }).count <= 1 else { throw .format("Fortran-order .npy arrays of rank > 1 are not supported") }
    let code = trim(descr, "'\" ")
    guard code.count == 3, let order = code.first, "<>=|".contains(order), code.dropFirst().first == "f",
          let size = Int(String(code.suffix(1))), [2, 4, 8].contains(size) else {
      throw .format(".npy dtype \(code) is not a float type (f2, f4 or f8)")
    }
    let data = headerStart + headerLength
    guard bytes.count - data == count * size else {
      throw .format(".npy data holds \(bytes.count - data) bytes; shape \(dims) of \(code) needs \(count * size)")
    }
    let bigEndian = order == ">"
    var out = [Float](repeating: 0, count: count)
    for i in 0..<count {
      var word: UInt64 = 0
      for b in 0..<size {
        let byte = UInt64(bytes[data + i * size + (bigEndian ? size - 1 - b : b)])
        word |= byte << UInt64(8 * b)
      }
      switch size {
      case 2: out[i] = Float(Float16(bitPattern: UInt16(word)))
      case 4: out[i] = Float(bitPattern: UInt32(word))
      default: out[i] = Float(Double(bitPattern: word))
      }
    }
    return out
  }

  /// Little-endian float32 values back to back.
  static func rawFloat32(_ bytes: [UInt8]) throws(LiftError) -> [Float] {
    guard bytes.count % 4 == 0 else { throw .format("an .emb member must hold float32 values (\(bytes.count) bytes)") }
    var out = [Float](repeating: 0, count: bytes.count / 4)
    for i in out.indices {
      var word = UInt32(bytes[4 * i])
      word |= UInt32(bytes[4 * i + 1]) << 8
      word |= UInt32(bytes[4 * i + 2]) << 16
      word |= UInt32(bytes[4 * i + 3]) << 24
      out[i] = Float(bitPattern: word)
    }
    return out
  }

  /// The text of a header dict entry ('key': value) up to the next top-level comma or brace.
  private static func field(_ header: String, _ key: String) -> String? {
    let chars = Array(header)
    var start: Int? = nil
    for quoted in ["'\(key)':", "\"\(key)\":"] {
      let pattern = Array(quoted)
      if let at = (0...max(chars.count - pattern.count, 0)).first(where: { chars.count >= pattern.count && Array(chars[$0..<($0 + pattern.count)]) == pattern }) {
        start = at + pattern.count
        break
      }
    }
    guard let start else { return nil }
    var depth = 0
    var value = ""
    for ch in chars[start...] {
      if ch == "(" { depth += 1 }
      if ch == ")" { depth -= 1; if depth < 0 { break } }
      if (ch == "," || ch == "}") && depth == 0 { break }
      value.append(ch)
    }
    return trim(value, " ")
  }

  /// `text` without leading and trailing characters of `set`.
  private static func trim(_ text: String, _ set: String) -> String {
    var chars = Substring(text)
    while let f = chars.first, set.contains(f) { chars = chars.dropFirst() }
    while let l = chars.last, set.contains(l) { chars = chars.dropLast() }
    return String(chars)
  }
}
