/// What a suite measured, as a table and as JSON. The JSON holds one object named after the
/// suite with its headline metrics (imagenet: top1, top5; coco, flickr30k, captions:
/// image_to_text and text_to_image with R@1, R@5, R@10; sugarcrepe: one accuracy per subset
/// and the means of the add, replace and swap categories), then counts, images left out and why,
/// and the wall time. Fractions are in [0, 1].
public struct SuiteResult {
  public struct Classification {
    public var top1: Double
    public var top5: Double
    /// Per class: id (folder), name, images evaluated, correct at top-1 and top-5.
    public var classes: [(id: String, name: String, images: Int, top1: Int, top5: Int)]
    public var templates: Int
  }

  public struct Subset {
    public var name: String
    public var correct: Int
    public var total: Int
    /// Triples whose image could not be read.
    public var left: Int
    public var accuracy: Double { total > 0 ? Double(correct) / Double(total) : 0 }
  }

  public enum Measured {
    case none
    case classification(Classification)
    case retrieval(Metrics.Retrieval)
    case pairs([Subset])
  }

  public var suite: BenchmarkSuite.Name
  /// Images the suite uses, and how many of them were read.
  public var images: Int
  public var kept: Int
  public var bad: DataLoader.BadSamples
  public var notes: [String]
  public var metrics = Measured.none
  public var seconds = 0.0

  init(suite: BenchmarkSuite.Name, images: Int, kept: Int, bad: DataLoader.BadSamples, notes: [String]) {
    self.suite = suite
    self.images = images
    self.kept = kept
    self.bad = bad
    self.notes = notes
  }

  /// SugarCrepe's categories: the mean accuracy of the subsets named `<category>_...`.
  public static let categories = ["add", "replace", "swap"]

  public func categoryMeans(_ subsets: [Subset]) -> [(String, Double)] {
    SuiteResult.categories.compactMap { c in
      let members = subsets.filter { $0.name.hasPrefix(c + "_") && $0.total > 0 }
      return members.isEmpty ? nil : (c, members.reduce(0) { $0 + $1.accuracy } / Double(members.count))
    }
  }

  // MARK: JSON

  public var json: JSON {
    var members: [(String, JSON)] = [(suite.rawValue, headline)]
    switch metrics {
    case .classification(let c):
      members.append(("classes", .number(Double(c.classes.count))))
      members.append(("templates", .number(Double(c.templates))))
      members.append(("per_class", .object(c.classes.map { row in
        (row.id, .object([("name", .string(row.name)), ("images", .number(Double(row.images))),
                          ("top1", .number(row.images > 0 ? Double(row.top1) / Double(row.images) : 0)),
                          ("top5", .number(row.images > 0 ? Double(row.top5) / Double(row.images) : 0))]))
      })))
    case .retrieval(let r):
      members.append(("texts", .number(Double(r.texts))))
    case .pairs(let subsets):
      members.append(("pairs", .object(subsets.map { ($0.name, .number(Double($0.total))) })))
    case .none: break
    }
    members.append(("images", .number(Double(kept))))
    if bad.total > 0 || kept < images {
      var skipped: [(String, JSON)] = [("images", .number(Double(images - kept)))]
      skipped += bad.counts.keys.sorted { $0.rawValue < $1.rawValue }.map { ($0.rawValue, .number(Double(bad.counts[$0]!))) }
      skipped.append(("report", .string(bad.description)))
      members.append(("skipped", .object(skipped)))
    }
    if !notes.isEmpty { members.append(("notes", .array(notes.map { .string($0) }))) }
    members.append(("seconds", .number(seconds)))
    return .object(members)
  }

  private var headline: JSON {
    switch metrics {
    case .classification(let c): return .object([("top1", .number(c.top1)), ("top5", .number(c.top5))])
    case .retrieval(let r):
      func recalls(_ v: [Double]) -> JSON { .object(zip(Metrics.recallKs, v).map { ("R@\($0.0)", .number($0.1)) }) }
      return .object([("image_to_text", recalls(r.imageToText)), ("text_to_image", recalls(r.textToImage))])
    case .pairs(let subsets):
      return .object(subsets.filter { $0.total > 0 }.map { ($0.name, .number($0.accuracy)) }
                     + categoryMeans(subsets).map { ($0.0, .number($0.1)) })
    case .none: return .object([])
    }
  }

  // MARK: Table

  public var table: String {
    var lines: [String] = []
    func pct(_ x: Double) -> String {
      let v = (x * 1000).rounded() / 10
      return String(v) + " %"
    }
    switch metrics {
    case .classification(let c):
      lines.append("\(suite.rawValue): zero-shot classification, \(kept) images, \(c.classes.count) classes, \(c.templates) templates")
      lines.append("  top-1 \(pct(c.top1))   top-5 \(pct(c.top5))")
      if c.classes.count <= 20 {
        for row in c.classes where row.images > 0 {
          lines.append("  \(row.name.padded(24)) \(pct(Double(row.top1) / Double(row.images)).padded(8)) (\(row.images) images)")
        }
      }
    case .retrieval(let r):
      lines.append("\(suite.rawValue): retrieval, \(r.images) images, \(r.texts) captions")
      lines.append("  image->text  " + zip(Metrics.recallKs, r.imageToText).map { "R@\($0.0) \(pct($0.1))".padded(14) }.joined())
      lines.append("  text->image  " + zip(Metrics.recallKs, r.textToImage).map { "R@\($0.0) \(pct($0.1))".padded(14) }.joined())
    case .pairs(let subsets):
      lines.append("\(suite.rawValue): pairwise accuracy (image closer to its caption than to the negative)")
      for s in subsets { lines.append("  \(s.name.padded(14)) \(pct(s.accuracy).padded(8)) (\(s.total) pairs)") }
      for (c, mean) in categoryMeans(subsets) { lines.append("  \((c + " (mean)").padded(14)) \(pct(mean))") }
    case .none: break
    }
    if images > kept { lines.append("left out \(images - kept) of \(images) images that could not be read: \(bad.description)") }
    lines += notes
    return lines.joined(separator: "\n")
  }
}

extension String {
  func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
