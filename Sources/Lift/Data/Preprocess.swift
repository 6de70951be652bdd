import Glibc

/// Image preprocessing: which part of an image becomes the model's square input, and how it is
/// resampled there, bit-exact with the Pillow + torchvision pipelines OpenCLIP and LIFT use:
/// - `.centre` (evaluation): torchvision `Resize(S)` of the short side (the long side becomes
///   int(S * long / short)) then `CenterCrop(S)` (offsets rounded half to even, as Python does);
/// - `.crop` (training): torchvision `RandomResizedCrop`: crop the rectangle, then resize it to
///   S x S (`randomCrop` draws the rectangle with torchvision's `get_params`, including its
///   fallback); a horizontal flip with probability 1/2 if asked;
/// - `.resizedCentre(R)` (evaluation as timm and LIFT do it): `Resize(R)` of the short side then
///   `CenterCrop(S)` (R >= S; R = S is `.centre`), e.g. R = 256 for S = 224;
/// - `.box`: Pillow's `resize((S, S), filter, box=...)` over the whole image (taps may reach
///   outside the box), the behaviour of `lift_preprocess_image`.
/// Resampling is Pillow's bilinear or bicubic (`Resample`). RGB -> grey is Pillow's
/// `convert("L")` (ITU-R 601-2 luma, (19595 R + 38470 G + 7471 B + 2^15) >> 16); grey -> RGB
/// replicates the channel.
///
/// When a JPEG is decoded at a reduced scale (`reduction`), the view, chosen on the full-size
/// image, is mapped onto the decoded pixels: a crop keeps its fractional edges (resampled as a
/// Pillow box inside the enclosing whole pixels), the centre view keeps its output geometry.
public enum Preprocess {
  public struct Box: Equatable, Sendable {
    public var x0: Double, y0: Double, x1: Double, y1: Double
    public init(x0: Double, y0: Double, x1: Double, y1: Double) {
      self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1
    }
  }

  public struct Augment: Equatable, Sendable {
    /// Range of the crop's area as a fraction of the image (torchvision default 0.08...1;
    /// OpenCLIP and LIFT train with 0.9...1).
    public var scale: ClosedRange<Double>
    /// Range of the crop's aspect ratio (width / height).
    public var ratio: ClosedRange<Double>
    public var flip: Bool
    public init(scale: ClosedRange<Double> = 0.08...1, ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3), flip: Bool = true) {
      self.scale = scale; self.ratio = ratio; self.flip = flip
    }
  }

  /// The part of an image that becomes the output, in full-resolution pixels.
  public enum View: Equatable, Sendable {
    case centre
    case resizedCentre(resize: Int)
    case crop(x: Int, y: Int, width: Int, height: Int)
    case box(Box)
  }

  /// torchvision's RandomResizedCrop.get_params with the generator's uniform draws (Python's
  /// round-half-to-even for the sides; the ratio-clamped centre crop after 10 failed attempts).
  public static func randomCrop(width: Int, height: Int, augment: Augment, rng: inout Xoshiro256) -> View {
    let area = Double(width) * Double(height)
    let logLow = log(augment.ratio.lowerBound), logHigh = log(augment.ratio.upperBound)
    for _ in 0..<10 {
      let target = area * (augment.scale.lowerBound + rng.unit() * (augment.scale.upperBound - augment.scale.lowerBound))
      let aspect = exp(logLow + rng.unit() * (logHigh - logLow))
      let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
      let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
      if w > 0, h > 0, w <= width, h <= height {
        let i = Int(rng.unit() * Double(height - h + 1)), j = Int(rng.unit() * Double(width - w + 1))
        return .crop(x: j, y: i, width: w, height: h)
      }
    }
    let inRatio = Double(width) / Double(height)
    var w = width, h = height
    if inRatio < augment.ratio.lowerBound {
      h = Int((Double(w) / augment.ratio.lowerBound).rounded(.toNearestOrEven))
    } else if inRatio > augment.ratio.upperBound {
      w = Int((Double(h) * augment.ratio.upperBound).rounded(.toNearestOrEven))
    }
    w = min(max(w, 1), width)
    h = min(max(h, 1), height)
    return .crop(x: (width - w) / 2, y: (height - h) / 2, width: w, height: h)
  }

  /// The size torchvision's Resize(size) gives a width x height image (short side = size).
  static func shortSideSize(width: Int, height: Int, size: Int) -> (width: Int, height: Int) {
    if width <= height { return (size, Int(Double(size) * Double(height) / Double(width))) }
    return (Int(Double(size) * Double(width) / Double(height)), size)
  }

  /// The view's extent in full-resolution pixels (width, height) that maps onto `size` pixels.
  static func extent(_ view: View, width: Int, height: Int, size: Int) -> (Double, Double) {
    switch view {
    case .centre: return (Double(min(width, height)), Double(min(width, height)))
    case .resizedCentre(let resize):
      let side = Double(min(width, height)) * Double(size) / Double(max(resize, 1))
      return (side, side)
    case .crop(_, _, let w, let h): return (Double(w), Double(h))
    case .box(let b): return (b.x1 - b.x0, b.y1 - b.y0)
    }
  }

  /// The JPEG DCT-domain reduction, in eighths, to decode at: the smallest of 1/8, 1/4 and 1/2
  /// that still leaves at least `size` decoded pixels across the view in both directions (so
  /// the final resize still downsamples), or 8 (full size) when the view is under twice `size`.
  public static func reduction(for view: View, width: Int, height: Int, size: Int) -> Int {
    let (w, h) = extent(view, width: width, height: height, size: size)
    for eighths in [1, 2, 4] where w * Double(eighths) / 8 >= Double(size) && h * Double(eighths) / 8 >= Double(size) {
      return eighths
    }
    return 8
  }

  /// Checks that the view lies inside a width x height image.
  static func validate(_ view: View, width: Int, height: Int, size: Int) throws(LiftError) {
    switch view {
    case .centre: return
    case .resizedCentre(let resize):
      guard resize >= size, resize <= 1 << 14 else { throw .argument("resize \(resize) must be in [\(size), 16384] (the output is \(size))") }
    case .crop(let x, let y, let w, let h):
      guard x >= 0, y >= 0, w >= 1, h >= 1, x <= width - w, y <= height - h else {
        throw .argument("crop (x \(x), y \(y), \(w)x\(h)) is not inside the \(width)x\(height) image")
      }
    case .box(let b):
      guard b.x0 >= 0, b.y0 >= 0, b.x1 <= Double(width), b.y1 <= Double(height), b.x0 < b.x1, b.y0 < b.y1 else {
        throw .argument("box (\(b.x0), \(b.y0), \(b.x1), \(b.y1)) is not inside the \(width)x\(height) image")
      }
    }
  }

  /// Renders `view` of an image whose full size is fullWidth x fullHeight and whose decoded
  /// pixels are `image` (the full size, or a JPEG's decode at `scale` = n/8 of it, whose last
  /// row and column may be partial) into dst (size x size x outChannels). The view must lie
  /// inside the full-size image.
  static func render(_ image: ImageRegion, fullWidth: Int, fullHeight: Int, scale: Double = 1, view: View, size: Int,
                     filter: ResampleFilter, outChannels: Int, flip: Bool, into dst: UnsafeMutablePointer<UInt8>,
                     scratch: ScratchBuffer) throws(LiftError) {
    let rx = scale, ry = scale
    let exact = scale == 1
    var region = image
    let x: ResampleAxis, y: ResampleAxis
    switch view {
    case .centre, .resizedCentre:
      var resize = size
      if case .resizedCentre(let r) = view { resize = r }
      let (w, h) = shortSideSize(width: fullWidth, height: fullHeight, size: resize)
      let left = Int((Double(w - size) / 2).rounded(.toNearestOrEven))
      let top = Int((Double(h - size) / 2).rounded(.toNearestOrEven))
      // The full image's extent in decoded pixels (a partial last block counts by its share).
      x = ResampleAxis(start: 0, end: min(Double(fullWidth) * rx, Double(image.width)), outSize: w, window: left)
      y = ResampleAxis(start: 0, end: min(Double(fullHeight) * ry, Double(image.height)), outSize: h, window: top)
    case .crop(let cx, let cy, let cw, let ch) where exact:
      region = image.cropped(x: cx, y: cy, width: cw, height: ch)
      x = ResampleAxis(start: 0, end: Double(cw), outSize: size, window: 0)
      y = ResampleAxis(start: 0, end: Double(ch), outSize: size, window: 0)
    case .crop(let cx, let cy, let cw, let ch):
      // The crop's edges on the reduced image, inside the whole pixels that enclose them.
      let (x0, x1) = (Double(cx) * rx, Double(cx + cw) * rx), (y0, y1) = (Double(cy) * ry, Double(cy + ch) * ry)
      let px = max(0, Int(x0.rounded(.down))), py = max(0, Int(y0.rounded(.down)))
      let qx = min(image.width, Int(x1.rounded(.up))), qy = min(image.height, Int(y1.rounded(.up)))
      region = image.cropped(x: px, y: py, width: max(qx - px, 1), height: max(qy - py, 1))
      x = ResampleAxis(start: x0 - Double(px), end: min(x1, Double(qx)) - Double(px), outSize: size, window: 0)
      y = ResampleAxis(start: y0 - Double(py), end: min(y1, Double(qy)) - Double(py), outSize: size, window: 0)
    case .box(let b):
      x = ResampleAxis(start: b.x0 * rx, end: min(b.x1 * rx, Double(image.width)), outSize: size, window: 0)
      y = ResampleAxis(start: b.y0 * ry, end: min(b.y1 * ry, Double(image.height)), outSize: size, window: 0)
    }
    try Resample.run(region, x: x, y: y, size: size, filter: filter, outChannels: outChannels, flip: flip,
                     into: dst, scratch: scratch)
  }

  /// Checks arguments from outside (sides in [1, 16384], channels 1 or 3, the view inside the
  /// image) and renders one uint8 image (height x width x channels) into `dst` (`dstCount`
  /// bytes, at least size * size * outChannels).
  public static func image(_ src: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int, view: View, size: Int,
                           filter: ResampleFilter, outChannels: Int, flip: Bool, into dst: UnsafeMutablePointer<UInt8>,
                           dstCount: Int) throws(LiftError) {
    let side = 1 << 14
    guard height >= 1, width >= 1, height <= side, width <= side else { throw .argument("image size must be in [1, \(side)]") }
    guard channels == 1 || channels == 3, outChannels == 1 || outChannels == 3 else { throw .argument("channels must be 1 or 3") }
    guard size >= 1, size <= side else { throw .argument("size must be in [1, \(side)]") }
    let needed = size * size * outChannels
    guard dstCount >= needed else { throw .buffer("dst holds \(dstCount) bytes; \(needed) needed") }
    try validate(view, width: width, height: height, size: size)
    try render(ImageRegion(base: src, width: width, height: height, channels: channels), fullWidth: width,
               fullHeight: height, view: view, size: size, filter: filter, outChannels: outChannels, flip: flip,
               into: dst, scratch: ScratchBuffer())
  }

  /// Pillow's RGB -> L.
  @inline(__always)
  public static func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
    let red: UInt32 = UInt32(r) * 19595
    let green: UInt32 = UInt32(g) * 38470
    let blue: UInt32 = UInt32(b) * 7471
    return UInt8((red + green + blue + 0x8000) >> 16)
  }
}
