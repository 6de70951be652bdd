import Glibc

/// An evaluation benchmark read from the layout it is distributed in (`SuiteLayouts`): the
/// image files it uses, and what is measured on them. Texts are kept as given (no trimming or
/// case folding): their embeddings are looked up by exact text in a store the user made with
/// the text model the image model was trained against.
public struct BenchmarkSuite {
  public enum Name: String, CaseIterable, Sendable {
    case imagenet, coco, flickr30k, sugarcrepe, captions
  }

  /// Where a suite's files are; which of them a suite reads is given in `SuiteLayouts`.
  public struct Location {
    public var root: String
    public var annotations: String?
    public var classes: String?
    /// A file of templates (one per line, `{}` marks the class name), or a built-in set's name
    /// (`PromptTemplates.named`).
    public var templates: String?
    /// Retrieval: use each image's first N captions (0: all of them).
    public var captionsPerImage = 0
    /// flickr30k: the split evaluated.
    public var split = "test"
    public init(root: String) { self.root = root }
  }

  public struct Classification {
    /// labels[i]: the class of image i (an index into classNames).
    public var labels: [Int]
    public var classNames: [String]
    /// Class k's prompts are the templates with `{}` replaced by classNames[k].
    public var templates: [String]
    /// The folder (or label-file name) of each class, for per-class results.
    public var classIDs: [String]
  }

  public struct Retrieval {
    /// Image i's captions are captions[offsets[i] ..< offsets[i + 1]], one entry per annotation
    /// (a text two images share stays two entries, as the benchmarks count them).
    public var captions: [String]
    public var offsets: [Int]
  }

  /// One compositional subset: triple t is (images[t], positives[t], negatives[t]).
  public struct PairSubset {
    public var name: String
    public var file: String
    public var images: [Int]
    public var positives: [String]
    public var negatives: [String]
  }

  public enum Task {
    case classification(Classification)
    case retrieval(Retrieval)
    case pairs([PairSubset])
  }

  public let name: Name
  public let location: Location
  /// The image files (paths as opened: root joined with the layout's relative name), each once.
  public let images: [String]
  public let task: Task
  /// Entries of the layout left out (an image without captions), with the reason; reported.
  public let notes: [String]

  public init(name: Name, location: Location, images: [String], task: Task, notes: [String] = []) {
    self.name = name
    self.location = location
    self.images = images
    self.task = task
    self.notes = notes
  }

  /// Reads the suite `name` from its layout at `location`.
  public static func open(_ name: Name, at location: Location) throws(LiftError) -> BenchmarkSuite {
    switch name {
    case .imagenet: return try SuiteLayouts.imagenet(location)
    case .coco: return try SuiteLayouts.coco(location)
    case .flickr30k: return try SuiteLayouts.flickr30k(location)
    case .sugarcrepe: return try SuiteLayouts.sugarcrepe(location)
    case .captions: return try SuiteLayouts.captions(location)
    }
  }

  /// Every distinct text the suite needs (class prompts, captions, negatives), in first-use order.
  public var texts: [String] {
    var seen = Set<String>(), out: [String] = []
    func add(_ t: String) { if seen.insert(t).inserted { out.append(t) } }
    switch task {
    case .classification(let c):
      for name in c.classNames { for t in c.templates { add(PromptTemplates.format(t, name)) } }
    case .retrieval(let r):
      r.captions.forEach(add)
    case .pairs(let subsets):
      for s in subsets { for (p, q) in zip(s.positives, s.negatives) { add(p); add(q) } }
    }
    return out
  }
}
