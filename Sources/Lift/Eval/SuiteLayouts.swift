import Glibc

/// Readers of the benchmarks' published layouts (paths are the `Location`'s):
/// - imagenet: `root/<class folder>/.../<image>` (torchvision ImageFolder: classes are the
///   sorted folder names), or a flat folder of images with `annotations` naming each image's
///   class (lines `<image>,<label>`, also tab- or space-separated; the label an index into the
///   class table or a class id such as a WordNet id; an image named without its extension
///   matches the file with that stem; a first line that is a header is skipped). Class names
///   from `classes` (`ClassTable`), else the folder names; `_` in a name reads as a space.
/// - coco: `root/val2017/` and `annotations` (default `root/annotations/captions_val2017.json`):
///   `images` [{id, file_name}], `annotations` [{image_id, caption}].
/// - flickr30k: images in `root`; `annotations` the Karpathy split JSON (`images` [{filename,
///   split, sentences [{raw}]}]) or the CSV with columns filename, split and raw (a JSON list of
///   the captions); the images of `split` are evaluated.
/// - sugarcrepe: images in `root` (COCO's val2017); `annotations` a folder of subset files
///   (`add_att.json` ...; every `*.json` in it) or one such file: {id: {filename, caption,
///   negative_caption}} (or a list of such objects).
/// - captions: images in `root`; `annotations` JSON lines {"image", "caption"} (or "captions": a
///   list), or CSV with columns image and caption; an image may have several lines.
/// Annotations that name a file absent from the folder, malformed files and empty classes are
/// errors naming the file and entry; images that fail to decode are left out when encoded.
enum SuiteLayouts {
  typealias Suite = BenchmarkSuite

  // MARK: imagenet

  static func imagenet(_ at: Suite.Location) throws(LiftError) -> Suite {
    let root = try folder(at.root, "the image folder (--root)")
    let templates = try PromptTemplates.load(at.templates)
    let table = try at.classes.map { (path) throws(LiftError) in try ClassTable.read(path) }
    if let labels = at.annotations {
      return try imagenetFlat(root: root, labelFile: labels, table: table, templates: templates, at: at)
    }
    let classFolders = try ImageFolderSource.entries(root).folders
    guard !classFolders.isEmpty else {
      throw .format("'\(root)' has no class folders (expected <root>/<class>/<image>; for a flat folder of images give the label file as --annotations)")
    }
    var names: [String] = [], images: [String] = [], labels: [Int] = []
    for (k, id) in classFolders.enumerated() {
      names.append(try className(of: id, position: k, count: classFolders.count, table: table))
      let files = try imagesUnder(root + "/" + id)
      guard !files.isEmpty else { throw .format("class folder '\(root)/\(id)' holds no images") }
      images += files
      labels += [Int](repeating: k, count: files.count)
    }
    return Suite(name: .imagenet, location: at, images: images,
                 task: .classification(.init(labels: labels, classNames: names, templates: templates, classIDs: classFolders)))
  }

  /// The name of class folder `id` (the k-th of `count`).
  private static func className(of id: String, position k: Int, count: Int, table: ClassTable?) throws(LiftError) -> String {
    guard let table else { return readable(id) }
    if table.positional {
      guard table.names.count == count else {
        throw .format("'\(table.path)' lists \(table.names.count) class names but there are \(count) class folders")
      }
      return table.names[k]
    }
    guard let index = table.index[id] else {
      throw .format("class folder '\(id)' is not in '\(table.path)' (\(table.names.count) classes, e.g. '\(table.ids.first ?? "")')")
    }
    return table.names[index]
  }

  private static func imagenetFlat(root: String, labelFile: String, table: ClassTable?, templates: [String],
                                   at: Suite.Location) throws(LiftError) -> Suite {
    let (files, _) = try ImageFolderSource.entries(root)
    var byStem: [String: String] = [:]
    for f in files where ImageFolderSource.isImageName(f) { byStem[stem(f)] = byStem[stem(f)] == nil ? f : "" }
    let fileSet = Set(files)
    var discovered: [String] = [], discoveredIndex: [String: Int] = [:]
    var images: [String] = [], labels: [Int] = [], seen = Set<String>()
    for (n, line) in try textLines(labelFile).enumerated() {
      let fields = splitLabelLine(line.text)
      guard fields.count >= 2 else {
        if n == 0 { continue }
        throw .format("'\(labelFile)' line \(line.number): expected '<image>,<label>' (got '\(line.text)')")
      }
      let label: Int
      if let table {
        if let i = table.index[fields[1]] {
          label = i
        } else if let i = Int(fields[1]) {
          guard i >= 0, i < table.names.count else {
            throw .format("'\(labelFile)' line \(line.number): label \(i) is not a class of '\(table.path)' (0..<\(table.names.count))")
          }
          label = i
        } else {
          if n == 0 { continue }  // a header
          throw .format("'\(labelFile)' line \(line.number): label '\(fields[1])' is not a class of '\(table.path)'")
        }
      } else {
        if Int(fields[1]) != nil { throw .format("'\(labelFile)' line \(line.number): integer labels need the class table (--classes)") }
        if n == 0, !fileSet.contains(fields[0]), byStem[fields[0]] == nil { continue }  // a header
        if discoveredIndex[fields[1]] == nil { discoveredIndex[fields[1]] = discovered.count; discovered.append(fields[1]) }
        label = discoveredIndex[fields[1]]!
      }
      let file: String
      if fileSet.contains(fields[0]) {
        file = fields[0]
      } else if let f = byStem[fields[0]], !f.isEmpty {
        file = f
      } else {
        throw .format("'\(labelFile)' line \(line.number): image '\(fields[0])' is not in '\(root)'")
      }
      guard seen.insert(file).inserted else { throw .format("'\(labelFile)' line \(line.number): image '\(fields[0])' is listed twice") }
      images.append(root + "/" + file)
      labels.append(label)
    }
    guard !images.isEmpty else { throw .format("'\(labelFile)' labels no images") }
    var names: [String], ids: [String]
    if let table {
      names = table.names
      ids = table.positional ? table.names.indices.map { String($0) } : table.ids
    } else {
      // Classes without a table: the distinct labels, sorted (as class folders would be).
      let order = discovered.indices.sorted { discovered[$0] < discovered[$1] }
      var remap = [Int](repeating: 0, count: discovered.count)
      for (k, i) in order.enumerated() { remap[i] = k }
      labels = labels.map { remap[$0] }
      ids = order.map { discovered[$0] }
      names = ids.map(readable)
    }
    return Suite(name: .imagenet, location: at, images: images,
                 task: .classification(.init(labels: labels, classNames: names, templates: templates, classIDs: ids)))
  }

  /// `<image>,<label>` with comma, tab or spaces; the label is its field's first word.
  private static func splitLabelLine(_ line: String) -> [String] {
    let separators: [Character] = line.contains(",") ? [","] : line.contains("\t") ? ["\t"] : [" "]
    let parts = line.split(maxSplits: 1, whereSeparator: { separators.contains($0) }).map { $0.trimmingSpaces }
    guard parts.count == 2, !parts[0].isEmpty, let label = parts[1].split(separator: " ").first else { return parts }
    return [parts[0], String(label)]
  }

  // MARK: coco

  static func coco(_ at: Suite.Location) throws(LiftError) -> Suite {
    let root = try folder(at.root, "the COCO folder (--root)")
    let imageFolder = try folder(root + "/val2017", "COCO's val2017 image folder")
    let annotations = at.annotations ?? root + "/annotations/captions_val2017.json"
    let json = try readJSON(annotations)
    guard let images = json["images"]?.array, let anns = json["annotations"]?.array else {
      throw .format("'\(annotations)' needs \"images\" and \"annotations\" lists (COCO captions format)")
    }
    var files: [String] = [], position: [Int: Int] = [:]
    for (i, image) in images.enumerated() {
      guard let id = image["id"]?.int, let name = image["file_name"]?.string, !name.isEmpty else {
        throw .format("'\(annotations)' images[\(i)]: needs an integer \"id\" and a \"file_name\"")
      }
      try checkRelative(name, annotations, "images[\(i)]")
      guard position[id] == nil else { throw .format("'\(annotations)' images[\(i)]: image id \(id) appears twice") }
      position[id] = files.count
      files.append(name)
    }
    var captions = [[String]](repeating: [], count: files.count)
    for (i, a) in anns.enumerated() {
      guard let id = a["image_id"]?.int, let caption = a["caption"]?.string else {
        throw .format("'\(annotations)' annotations[\(i)]: needs an integer \"image_id\" and a \"caption\" string")
      }
      guard let p = position[id] else {
        throw .format("'\(annotations)' annotations[\(i)]: image_id \(id) is not among the file's images")
      }
      captions[p].append(caption)
    }
    return try retrievalSuite(.coco, at, folder: imageFolder, files: files, captions: captions, annotations: annotations)
  }

  // MARK: flickr30k

  static func flickr30k(_ at: Suite.Location) throws(LiftError) -> Suite {
    let root = try folder(at.root, "the Flickr30k image folder (--root)")
    guard let annotations = at.annotations else {
      throw .argument("flickr30k needs the split file as --annotations (dataset_flickr30k.json, or the CSV with filename, split and raw columns)")
    }
    var files: [String] = [], captions: [[String]] = []
    let bytes = try readWholeFile(annotations, limit: 1 << 30)
    if firstByte(bytes) == UInt8(ascii: "{") {
      guard let images = try JSON.parse(bytes, what: "'\(annotations)'")["images"]?.array else {
        throw .format("'\(annotations)' needs an \"images\" list (Karpathy split format)")
      }
      for (i, image) in images.enumerated() {
        guard let name = image["filename"]?.string, let split = image["split"]?.string,
              let sentences = image["sentences"]?.array else {
          throw .format("'\(annotations)' images[\(i)]: needs \"filename\", \"split\" and \"sentences\"")
        }
        guard split == at.split else { continue }
        var texts: [String] = []
        for (j, s) in sentences.enumerated() {
          guard let raw = s["raw"]?.string else { throw .format("'\(annotations)' images[\(i)].sentences[\(j)]: needs a \"raw\" string") }
          texts.append(raw)
        }
        try checkRelative(name, annotations, "images[\(i)]")
        files.append(name)
        captions.append(texts)
      }
    } else {
      let rows = try IndexFile.csvRows(bytes, path: annotations)
      guard let header = rows.first, let f = header.firstIndex(of: "filename"), let s = header.firstIndex(of: "split"),
            let r = header.firstIndex(of: "raw") else {
        throw .format("'\(annotations)' needs a header with filename, split and raw columns")
      }
      for (n, row) in rows.dropFirst().enumerated() where !(row.count == 1 && row[0].isEmpty) {
        guard row.count == header.count else {
          throw .format("'\(annotations)' line \(n + 2) has \(row.count) fields; the header has \(header.count)")
        }
        guard row[s] == at.split else { continue }
        guard let list = try? JSON.parse(Array(row[r].utf8), what: "raw").array, let texts = Optional(list.compactMap(\.string)),
              texts.count == list.count else {
          throw .format("'\(annotations)' line \(n + 2): raw must be a JSON list of caption strings")
        }
        try checkRelative(row[f], annotations, "line \(n + 2)")
        files.append(row[f])
        captions.append(texts)
      }
    }
    guard !files.isEmpty else { throw .format("'\(annotations)' has no images in split '\(at.split)'") }
    return try retrievalSuite(.flickr30k, at, folder: root, files: files, captions: captions, annotations: annotations)
  }

  // MARK: captions

  static func captions(_ at: Suite.Location) throws(LiftError) -> Suite {
    let root = try folder(at.root, "the image folder (--root)")
    guard let annotations = at.annotations else {
      throw .argument("the captions suite needs --annotations: a JSONL of {\"image\", \"caption\"} lines (or a CSV with image and caption columns)")
    }
    var files: [String] = [], captions: [[String]] = [], position: [String: Int] = [:]
    func add(_ image: String, _ texts: [String], _ entry: String) throws(LiftError) {
      try checkRelative(image, annotations, entry)
      if position[image] == nil { position[image] = files.count; files.append(image); captions.append([]) }
      captions[position[image]!] += texts
    }
    if annotations.lowercased().hasSuffix(".csv") {
      let rows = try IndexFile.csvRows(try readWholeFile(annotations, limit: 1 << 30), path: annotations)
      guard let header = rows.first, let i = header.firstIndex(of: "image"), let c = header.firstIndex(of: "caption") else {
        throw .format("'\(annotations)' needs a header with image and caption columns")
      }
      for (n, row) in rows.dropFirst().enumerated() where !(row.count == 1 && row[0].isEmpty) {
        guard row.count == header.count, !row[i].isEmpty else { throw .format("'\(annotations)' line \(n + 2): needs an image and a caption") }
        try add(row[i], [row[c]], "line \(n + 2)")
      }
    } else {
      for line in try textLines(annotations) {
        let json = try JSON.parse(Array(line.text.utf8), what: "'\(annotations)' line \(line.number)")
        guard let image = json["image"]?.string, !image.isEmpty else {
          throw .format("'\(annotations)' line \(line.number): needs a non-empty \"image\" string")
        }
        if let caption = json["caption"]?.string {
          try add(image, [caption], "line \(line.number)")
        } else if let list = json["captions"]?.array, list.allSatisfy({ $0.string != nil }) {
          try add(image, list.map { $0.string! }, "line \(line.number)")
        } else {
          throw .format("'\(annotations)' line \(line.number): needs a \"caption\" string (or a \"captions\" list of strings)")
        }
      }
    }
    guard !files.isEmpty else { throw .format("'\(annotations)' lists no images") }
    return try retrievalSuite(.captions, at, folder: root, files: files, captions: captions, annotations: annotations)
  }

  /// A retrieval suite of `files` (relative to `folder`) and their captions; images without
  /// captions are left out (noted), each image keeps its first `captionsPerImage` captions.
  private static func retrievalSuite(_ name: Suite.Name, _ at: Suite.Location, folder: String, files: [String],
                                     captions: [[String]], annotations: String) throws(LiftError) -> Suite {
    guard at.captionsPerImage >= 0 else { throw .argument("captions per image must be >= 0 (0: all)") }
    var images: [String] = [], texts: [String] = [], offsets = [0], notes: [String] = []
    var without = 0
    for (file, list) in zip(files, captions) {
      guard !list.isEmpty else { without += 1; continue }
      images.append(folder + "/" + file)
      texts += at.captionsPerImage > 0 ? Array(list.prefix(at.captionsPerImage)) : list
      offsets.append(texts.count)
    }
    if without > 0 { notes.append("\(without) images of '\(annotations)' have no captions and were left out") }
    guard !images.isEmpty else { throw .format("'\(annotations)' gives no image a caption") }
    try requireFiles(images, listedIn: annotations)
    return Suite(name: name, location: at, images: images, task: .retrieval(.init(captions: texts, offsets: offsets)), notes: notes)
  }

  // MARK: sugarcrepe

  static func sugarcrepe(_ at: Suite.Location) throws(LiftError) -> Suite {
    let root = try folder(at.root, "the image folder (--root, COCO's val2017)")
    guard let annotations = at.annotations else {
      throw .argument("sugarcrepe needs --annotations: the folder of its JSON files (add_att.json, ..., swap_obj.json) or one of them")
    }
    var st = stat()
    guard stat(annotations, &st) == 0 else { throw .io("cannot open '\(annotations)': \(String(cString: strerror(errno)))") }
    let subsetFiles: [String]
    if (st.st_mode & S_IFMT) == S_IFDIR {
      subsetFiles = try ImageFolderSource.entries(annotations).files.filter { $0.lowercased().hasSuffix(".json") }
        .map { annotations + "/" + $0 }
      guard !subsetFiles.isEmpty else { throw .format("'\(annotations)' holds no .json subset files") }
    } else {
      subsetFiles = [annotations]
    }
    var images: [String] = [], position: [String: Int] = [:], subsets: [Suite.PairSubset] = []
    for file in subsetFiles {
      let json = try readJSON(file)
      let entries: [(String, JSON)]
      switch json {
      case .object(let members): entries = members
      case .array(let list): entries = list.enumerated().map { (String($0.offset), $0.element) }
      default: throw .format("'\(file)' must be an object of entries {filename, caption, negative_caption} (or a list of them)")
      }
      var subset = Suite.PairSubset(name: baseName(file), file: file, images: [], positives: [], negatives: [])
      for (id, entry) in entries {
        guard let name = entry["filename"]?.string, !name.isEmpty, let caption = entry["caption"]?.string,
              let negative = entry["negative_caption"]?.string else {
          throw .format("'\(file)' entry '\(id)': needs \"filename\", \"caption\" and \"negative_caption\" strings")
        }
        try checkRelative(name, file, "entry '\(id)'")
        let path = root + "/" + name
        if position[path] == nil { position[path] = images.count; images.append(path) }
        subset.images.append(position[path]!)
        subset.positives.append(caption)
        subset.negatives.append(negative)
      }
      guard !subset.images.isEmpty else { throw .format("'\(file)' has no entries") }
      subsets.append(subset)
    }
    try requireFiles(images, listedIn: annotations)
    return Suite(name: .sugarcrepe, location: at, images: images, task: .pairs(subsets))
  }

  // MARK: helpers

  /// `path` without a trailing slash, checked to be a folder.
  static func folder(_ path: String, _ what: String) throws(LiftError) -> String {
    let p = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    var st = stat()
    guard stat(p, &st) == 0 else { throw .io("\(what) '\(p)': \(String(cString: strerror(errno)))") }
    guard (st.st_mode & S_IFMT) == S_IFDIR else { throw .io("\(what) '\(p)' is not a folder") }
    return p
  }

  /// Image files under `folder` and its subfolders (relative paths joined to it), sorted.
  static func imagesUnder(_ folder: String, depth: Int = 0) throws(LiftError) -> [String] {
    guard depth < 16 else { throw .format("'\(folder)' is nested more than 16 folders deep") }
    let (files, folders) = try ImageFolderSource.entries(folder)
    var out = files.filter { ImageFolderSource.isImageName($0) }.map { folder + "/" + $0 }
    for sub in folders { out += try imagesUnder(folder + "/" + sub, depth: depth + 1) }
    return out.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
  }

  /// Every listed file must exist: the first few missing are named.
  static func requireFiles(_ paths: [String], listedIn annotations: String) throws(LiftError) {
    var missing: [String] = [], count = 0
    for p in paths where access(p, F_OK) != 0 {
      count += 1
      if missing.count < 3 { missing.append("'\(p)'") }
    }
    guard count == 0 else {
      throw .format("\(count) of the \(paths.count) images '\(annotations)' names are missing, e.g. \(missing.joined(separator: ", "))")
    }
  }

  static func checkRelative(_ name: String, _ file: String, _ entry: String) throws(LiftError) {
    guard !name.hasPrefix("/"), !name.split(separator: "/").contains("..") else {
      throw .format("'\(file)' \(entry): image '\(name)' must be a path inside the image folder (relative, no '..')")
    }
  }

  static func readJSON(_ path: String) throws(LiftError) -> JSON {
    try JSON.parse(try readWholeFile(path, limit: 1 << 30), what: "'\(path)'")
  }

  /// The first byte that is not white space or a UTF-8 byte-order mark.
  static func firstByte(_ bytes: [UInt8]) -> UInt8? {
    bytes.first { $0 != 32 && $0 != 9 && $0 != 10 && $0 != 13 && $0 != 0xEF && $0 != 0xBB && $0 != 0xBF }
  }

  /// Non-blank lines of a text file with their 1-based numbers (CR before LF dropped).
  static func textLines(_ path: String) throws(LiftError) -> [(number: Int, text: String)] {
    textLines(bytes: try readWholeFile(path, limit: 1 << 30))
  }

  static func textLines(bytes: [UInt8]) -> [(number: Int, text: String)] {
    var out: [(Int, String)] = []
    for (n, line) in bytes.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
      var text = String(decoding: line, as: UTF8.self)
      if text.hasSuffix("\r") { text.removeLast() }
      if n == 0, text.hasPrefix("\u{FEFF}") { text.removeFirst() }
      guard text.contains(where: { !$0.isWhitespace }) else { continue }
      out.append((n + 1, text))
    }
    return out
  }

  static func stem(_ name: String) -> String {
    guard let dot = name.lastIndex(of: "."), dot > name.startIndex else { return name }
    return String(name[..<dot])
  }

  static func baseName(_ path: String) -> String {
    stem(path.split(separator: "/").last.map(String.init) ?? path)
  }

  /// A class id as a name: "great_white_shark" -> "great white shark".
  static func readable(_ id: String) -> String { id.replacingUnderscores }
}

/// A class table: ids (e.g. WordNet ids, the class folders' names) and names, in class order.
/// Read from JSON `{"0": ["n01440764", "tench"], ...}` (the LIFT repository's and Keras's
/// imagenet_class_index.json), `{"<id>": "<name>", ...}`, or a list of names; or from text
/// lines `<id><TAB><name>` or one name per line. A table of names only is positional: the k-th
/// name is the k-th class (folder).
struct ClassTable {
  var path: String
  var ids: [String]
  var names: [String]
  var positional: Bool { ids.isEmpty }
  var index: [String: Int] = [:]

  static func read(_ path: String) throws(LiftError) -> ClassTable {
    var table = ClassTable(path: path, ids: [], names: [])
    let bytes = try readWholeFile(path, limit: 1 << 30)
    if SuiteLayouts.firstByte(bytes).map({ $0 == UInt8(ascii: "{") || $0 == UInt8(ascii: "[") }) ?? false {
      try table.readJSON(JSON.parse(bytes, what: "'\(path)'"))
    } else {
      for line in SuiteLayouts.textLines(bytes: bytes) {
        let parts = line.text.split(separator: "\t", maxSplits: 1).map { String($0).trimmingSpaces }
        if parts.count == 2 {
          table.ids.append(parts[0]); table.names.append(parts[1])
        } else {
          guard table.ids.isEmpty else { throw .format("'\(path)' line \(line.number): expected '<id><TAB><name>' like the lines before") }
          table.names.append(parts[0])
        }
      }
      guard table.ids.isEmpty || table.ids.count == table.names.count else {
        throw .format("'\(path)' mixes '<id><TAB><name>' lines and name-only lines")
      }
    }
    guard !table.names.isEmpty else { throw .format("'\(path)' lists no classes") }
    table.names = table.names.map(SuiteLayouts.readable)
    for (k, id) in table.ids.enumerated() {
      guard table.index[id] == nil else { throw .format("'\(path)': class id '\(id)' appears twice") }
      table.index[id] = k
    }
    return table
  }

  private mutating func readJSON(_ json: JSON) throws(LiftError) {
    switch json {
    case .array(let list):
      for (k, item) in list.enumerated() {
        guard let name = item.string else { throw .format("'\(path)' [\(k)]: class names must be strings") }
        names.append(name)
      }
    case .object(let members):
      var rows: [(Int, String, String)] = []
      let numbered = members.allSatisfy { Int($0.0) != nil }
      for (k, (key, value)) in members.enumerated() {
        let order = numbered ? Int(key)! : k
        if let pair = value.array, pair.count == 2, let id = pair[0].string, let name = pair[1].string {
          rows.append((order, id, name))
        } else if let name = value.string {
          rows.append((order, key, name))
        } else {
          throw .format("'\(path)' entry '\(key)': expected [\"<id>\", \"<name>\"] or a name")
        }
      }
      rows.sort { $0.0 < $1.0 }
      if numbered {
        for (k, row) in rows.enumerated() where row.0 != k {
          throw .format("'\(path)': class indices must run 0..<\(rows.count) (index \(k) is missing)")
        }
      }
      ids = rows.map(\.1)
      names = rows.map(\.2)
    default:
      throw .format("'\(path)' must be a JSON object or list of class names")
    }
  }
}

extension StringProtocol {
  /// The text without leading and trailing spaces and tabs (and a trailing carriage return).
  public var trimmingSpaces: String {
    String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
  }
  var replacingUnderscores: String { String(map { $0 == "_" ? " " : $0 }) }
}
