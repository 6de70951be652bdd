/// Prompt templates for zero-shot classification: a class's prompts are its name put into each
/// template (`{}` marks the place; `{{` and `}}` are literal braces, as Python's str.format).
public enum PromptTemplates {
  /// The built-in sets, by name: `lift` (the one prompt the LIFT repository's ImageNet evaluation
  /// uses), `simple` (OpenCLIP's seven simple ImageNet templates), `openai` (the 80 templates
  /// of CLIP's ImageNet evaluation).
  public static let named: [String: [String]] = ["lift": lift, "simple": simple, "openai": openai]
  public static let defaultName = "lift"

  public static let lift = ["It is a photo of a {}"]

  public static let simple = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
  ]

  public static let openai = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
  ]

  /// The template set `spec` names: a built-in set's name, or a text file with one template per
  /// line (blank lines ignored). Every template must hold exactly one `{}`.
  public static func load(_ spec: String?) throws(LiftError) -> [String] {
    let name = spec ?? defaultName
    if let set = named[name] { return set }
    var out: [String] = []
    for line in try SuiteLayouts.textLines(name) {
      guard placeholders(line.text) == 1 else {
        throw .format("'\(name)' line \(line.number): a template needs exactly one {} where the class name goes (got '\(line.text)')")
      }
      out.append(line.text)
    }
    guard !out.isEmpty else { throw .format("'\(name)' holds no templates") }
    return out
  }

  /// `template` with its `{}` replaced by `name` (Python's `template.format(name)`).
  public static func format(_ template: String, _ name: String) -> String {
    var out = "", chars = Array(template), i = 0
    while i < chars.count {
      if chars[i] == "{", i + 1 < chars.count, chars[i + 1] == "}" { out += name; i += 2; continue }
      if (chars[i] == "{" || chars[i] == "}"), i + 1 < chars.count, chars[i + 1] == chars[i] { out.append(chars[i]); i += 2; continue }
      out.append(chars[i])
      i += 1
    }
    return out
  }

  /// Number of `{}` in a template (escaped braces excluded).
  static func placeholders(_ template: String) -> Int {
    var count = 0, chars = Array(template), i = 0
    while i < chars.count {
      if chars[i] == "{", i + 1 < chars.count, chars[i + 1] == "}" { count += 1; i += 2; continue }
      if (chars[i] == "{" || chars[i] == "}"), i + 1 < chars.count, chars[i + 1] == chars[i] { i += 2; continue }
      i += 1
    }
    return count
  }
}
