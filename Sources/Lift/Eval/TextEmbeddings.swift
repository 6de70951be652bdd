/// Text embeddings looked up by exact text in a store that holds its texts in a string dataset
/// (`captions`, as liblift's store writer names it, or `texts`/`text`), one per row.
public enum TextEmbeddings {
  public static let textColumns = ["captions", "texts", "text"]

  /// The store's text dataset name, or an error naming the store.
  public static func column(of store: EmbeddingStore) throws(LiftError) -> String {
    for name in textColumns where try store.hasStrings(name) { return name }
    throw .format("'\(store.paths[0])' has no text column (a string dataset named \(textColumns.joined(separator: ", ")) with one text per row): "
                  + "write the store with its texts (lift_store_writer with captions, python3 -m liblift.embed, or liblift.import_embeddings --text-column)")
  }

  /// Embeddings of `texts` (texts.count x dim, as stored: not normalised). Memory holds the
  /// wanted texts and the result, whatever the store's size. Errors: a store whose dimension is
  /// not `dim`; texts the store lacks (the first few named, with their count); a text stored
  /// twice with different embeddings; non-finite rows.
  public static func lookup(_ texts: [String], in store: EmbeddingStore, dim: Int) throws(LiftError) -> FloatMatrix {
    guard store.dim == Int64(dim) else {
      throw .shape("the text store '\(store.paths[0])' holds \(store.dim)-d embeddings but the model makes \(dim)-d ones: "
                   + "embed the texts with the text model the image model was trained against")
    }
    let columnName = try column(of: store)
    var wanted: [String: Int] = [:]
    for (i, t) in texts.enumerated() where wanted[t] == nil { wanted[t] = i }
    var rowOf = [Int64](repeating: -1, count: texts.count)
    var repeats: [(text: Int, row: Int64)] = []
    let block = 4096
    var start: Int64 = 0
    while start < store.rows {
      let n = Int(min(Int64(block), store.rows - start))
      for (k, bytes) in try store.stringBytes(columnName, from: start, count: n).enumerated() {
        guard let i = wanted[String(decoding: bytes, as: UTF8.self)] else { continue }
        if rowOf[i] < 0 { rowOf[i] = start + Int64(k) } else { repeats.append((i, start + Int64(k))) }
      }
      start += Int64(n)
    }
    let missing = rowOf.indices.filter { rowOf[$0] < 0 && wanted[texts[$0]] == $0 }
    if !missing.isEmpty {
      let named = missing.prefix(3).map { "\"\(shortened(texts[$0]))\"" }.joined(separator: ", ")
      throw .notFound("\(missing.count) of the \(wanted.count) texts are not in the text store '\(store.paths[0])', e.g. \(named): "
                      + "list them with --list-texts and embed them all")
    }
    let out = try FloatMatrix(rows: texts.count, cols: dim, what: "\(texts.count) text embeddings")
    let rows = texts.indices.map { rowOf[wanted[texts[$0]]!] }
    try rows.withUnsafeBufferPointer { (list) throws(LiftError) in
      try store.read(rows: list, into: out.pointer, capacity: texts.count * dim)
    }
    try checkRepeats(repeats, rowOf: rowOf, texts: texts, store: store, dim: dim)
    return out
  }

  /// A text stored on several rows must have the same embedding on each.
  private static func checkRepeats(_ repeats: [(text: Int, row: Int64)], rowOf: [Int64], texts: [String],
                                   store: EmbeddingStore, dim: Int) throws(LiftError) {
    guard !repeats.isEmpty else { return }
    let pairs = try FloatMatrix(rows: 2, cols: dim, what: "two text embeddings")
    for r in repeats {
      let list = [rowOf[r.text], r.row]
      try list.withUnsafeBufferPointer { (l) throws(LiftError) in try store.read(rows: l, into: pairs.pointer, capacity: 2 * dim) }
      for j in 0..<dim where pairs.row(0)[j] != pairs.row(1)[j] {
        throw .value("the text store '\(store.paths[0])' holds \"\(shortened(texts[r.text]))\" on rows \(list[0]) and \(list[1]) "
                     + "with different embeddings (column \(j): \(pairs.row(0)[j]) vs \(pairs.row(1)[j]))")
      }
    }
  }

  static func shortened(_ text: String) -> String {
    text.count <= 80 ? text : String(text.prefix(77)) + "..."
  }
}
