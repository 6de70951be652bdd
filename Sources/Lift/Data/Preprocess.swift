import Glibc

/// Image preprocessing for uint8 H x W x C images, bit-exact with Pillow where Pillow defines
/// the operation:
/// - resampling: `Image.resize((S, S), Image.BILINEAR, box=...)` — separable triangle filter with
///   antialiasing (support scaled by the downscale factor), 22-bit fixed-point coefficients,
///   horizontal pass then vertical pass, each rounded to uint8;
/// - RGB to grey: `Image.convert("L")` (ITU-R 601-2 luma, (19595 R + 38470 G + 7471 B + 2^15) >> 16);
///   grey to RGB replicates the channel.
/// Crops: evaluation takes the centred square of side min(H, W) (Resize of the short side +
/// CenterCrop, as CLIP preprocesses); training can take a random-resized crop (torchvision's
/// RandomResizedCrop sampling: area fraction and log-uniform aspect ratio, 10 attempts; unlike
/// torchvision, sides round half away from zero and the fallback is the centred square rather
/// than a ratio-clamped centre crop) and a horizontal flip with probability 1/2.
public enum Preprocess {
  public struct Box: Equatable {
    public var x0: Double, y0: Double, x1: Double, y1: Double
    public init(x0: Double, y0: Double, x1: Double, y1: Double) {
      self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1
    }
  }

  public struct Augment: Equatable {
    /// Range of the crop's area as a fraction of the image (torchvision default 0.08...1).
    public var scale: ClosedRange<Double>
    /// Range of the crop's aspect ratio (width / height).
    public var ratio: ClosedRange<Double>
    public var flip: Bool
    public init(scale: ClosedRange<Double> = 0.08...1, ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3), flip: Bool = true) {
      self.scale = scale; self.ratio = ratio; self.flip = flip
    }
  }

  /// The centred square of side min(width, height).
  public static func centerBox(width: Int, height: Int) -> Box {
    let side = Double(min(width, height))
    let x0 = (Double(width) - side) / 2, y0 = (Double(height) - side) / 2
    return Box(x0: x0.rounded(.down), y0: y0.rounded(.down), x1: x0.rounded(.down) + side, y1: y0.rounded(.down) + side)
  }

  /// torchvision RandomResizedCrop.get_params with the generator's uniform draws.
  public static func randomBox(width: Int, height: Int, augment: Augment, rng: inout Xoshiro256) -> Box {
    let area = Double(width * height)
    let logLow = log(augment.ratio.lowerBound), logHigh = log(augment.ratio.upperBound)
    for _ in 0..<10 {
      let target = area * (augment.scale.lowerBound + rng.unit() * (augment.scale.upperBound - augment.scale.lowerBound))
      let aspect = exp(logLow + rng.unit() * (logHigh - logLow))
      let w = Int((target * aspect).squareRoot().rounded())
      let h = Int((target / aspect).squareRoot().rounded())
      if w > 0, h > 0, w <= width, h <= height {
        let i = Int(rng.unit() * Double(height - h + 1)), j = Int(rng.unit() * Double(width - w + 1))
        return Box(x0: Double(j), y0: Double(i), x1: Double(j + w), y1: Double(i + h))
      }
    }
    return centerBox(width: width, height: height)
  }

  /// Resamples `box` of src (h x w x c) to dst (size x size x outChannels), converting channels
  /// (1 <-> 3) and optionally mirroring horizontally. `scratch` must hold
  /// size * h * max(c, outChannels) bytes.
  /// Checks arguments from outside (sides in [1, 16384], channels 1 or 3, the box inside the
  /// image), allocates the scratch fallibly and resamples one image into `dst` (`dstCount` bytes,
  /// at least size * size * outChannels).
  public static func image(_ src: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int, box: Box?, size: Int,
                           outChannels: Int, flip: Bool, into dst: UnsafeMutablePointer<UInt8>, dstCount: Int) throws(LiftError) {
    let side = 1 << 14
    guard height >= 1, width >= 1, height <= side, width <= side else { throw .argument("image size must be in [1, \(side)]") }
    guard channels == 1 || channels == 3, outChannels == 1 || outChannels == 3 else { throw .argument("channels must be 1 or 3") }
    guard size >= 1, size <= side else { throw .argument("size must be in [1, \(side)]") }
    let needed = size * size * outChannels
    guard dstCount >= needed else { throw .buffer("dst holds \(dstCount) bytes; \(needed) needed") }
    let b = box ?? centerBox(width: width, height: height)
    guard b.x0 >= 0, b.y0 >= 0, b.x1 <= Double(width), b.y1 <= Double(height), b.x0 < b.x1, b.y0 < b.y1 else {
      throw .argument("box (\(b.x0), \(b.y0), \(b.x1), \(b.y1)) is not inside the \(width)x\(height) image")
    }
    let scratch = try allocateElements(size * height * 3, of: UInt8.self, what: "resampling scratch")
    defer { scratch.deallocate() }
    resample(src, width: width, height: height, channels: channels, box: b, size: size, outChannels: outChannels,
             flip: flip, into: dst, scratch: scratch)
  }

  public static func resample(_ src: UnsafePointer<UInt8>, width w: Int, height h: Int, channels c: Int, box: Box,
                              size: Int, outChannels: Int, flip: Bool, into dst: UnsafeMutablePointer<UInt8>,
                              scratch: UnsafeMutablePointer<UInt8>) {
    // Resampling runs in the source's channels; grey <-> RGB conversion is applied per output
    // pixel afterwards (both are linear per pixel except the rounding, which Pillow also does last).
    let needsH = size != w || box.x0 != 0 || box.x1 != Double(w)
    let needsV = size != h || box.y0 != 0 || box.y1 != Double(h)
    let cols = Coefficients(inSize: w, outSize: size, start: box.x0, end: box.x1)
    let rows = Coefficients(inSize: h, outSize: size, start: box.y0, end: box.y1)
    // Horizontal pass over the rows the vertical pass needs: (rows used) x size x c.
    let firstRow = needsV ? rows.firstInput : 0
    let lastRow = needsV ? rows.lastInput : h
    let midRows = lastRow - firstRow
    let mid: UnsafeMutablePointer<UInt8>
    let midWidth: Int
    if needsH {
      mid = scratch
      midWidth = size
      for y in 0..<midRows {
        let srcRow = src + (firstRow + y) * w * c, midRow = mid + y * size * c
        for x in 0..<size {
          let (lo, n, k) = cols.taps(x)
          for ch in 0..<c {
            var acc: Int32 = 1 << (Coefficients.precision - 1)
            for t in 0..<n { acc &+= Int32(srcRow[(lo + t) * c + ch]) &* cols.weights[k + t] }
            midRow[x * c + ch] = clip8(acc)
          }
        }
      }
    } else {
      mid = UnsafeMutablePointer(mutating: src + firstRow * w * c)
      midWidth = w
    }
    // Vertical pass (or copy), channel conversion and flip, straight into dst.
    for y in 0..<size {
      for x in 0..<size {
        let sx = flip ? size - 1 - x : x
        var pixel: (UInt8, UInt8, UInt8) = (0, 0, 0)
        func sample(_ ch: Int) -> UInt8 {
          if !needsV { return mid[(y * midWidth + sx) * c + ch] }
          let (lo, n, k) = rows.taps(y)
          var acc: Int32 = 1 << (Coefficients.precision - 1)
          for t in 0..<n { acc &+= Int32(mid[((lo - firstRow + t) * midWidth + sx) * c + ch]) &* rows.weights[k + t] }
          return clip8(acc)
        }
        if c == 1 {
          let v = sample(0)
          pixel = (v, v, v)
        } else {
          pixel = (sample(0), sample(1), sample(2))
        }
        let out = dst + (y * size + x) * outChannels
        if outChannels == 1 {
          out[0] = c == 1 ? pixel.0 : luma(pixel.0, pixel.1, pixel.2)
        } else {
          out[0] = pixel.0; out[1] = pixel.1; out[2] = pixel.2
        }
      }
    }
  }

  @inline(__always)
  static func clip8(_ acc: Int32) -> UInt8 {
    let v = acc >> Coefficients.precision
    return v < 0 ? 0 : v > 255 ? 255 : UInt8(v)
  }

  /// Pillow's RGB -> L.
  @inline(__always)
  public static func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
    let red: UInt32 = UInt32(r) * 19595
    let green: UInt32 = UInt32(g) * 38470
    let blue: UInt32 = UInt32(b) * 7471
    return UInt8((red + green + blue + 0x8000) >> 16)
  }

  /// Pillow's bilinear resampling coefficients for one axis (Resample.c precompute_coeffs and
  /// normalize_coeffs_8bpc).
  struct Coefficients {
    static let precision: Int32 = 22
    let ksize: Int
    let bounds: [(Int, Int)]
    let weights: [Int32]
    let firstInput: Int
    let lastInput: Int

    init(inSize: Int, outSize: Int, start: Double, end: Double) {
      let scale = (end - start) / Double(outSize)
      let filterScale = max(scale, 1)
      let support = 1.0 * filterScale
      ksize = Int(support.rounded(.up)) * 2 + 1
      var bounds: [(Int, Int)] = []
      var weights = [Int32](repeating: 0, count: outSize * ksize)
      var first = inSize, last = 0
      for xx in 0..<outSize {
        let center = start + (Double(xx) + 0.5) * scale
        let ss = 1 / filterScale
        var xmin = Int(center - support + 0.5)
        if xmin < 0 { xmin = 0 }
        var xmax = Int(center + support + 0.5)
        if xmax > inSize { xmax = inSize }
        xmax -= xmin
        var k = [Double](repeating: 0, count: max(xmax, 0))
        var ww = 0.0
        for x in 0..<max(xmax, 0) {
          var t = (Double(x + xmin) - center + 0.5) * ss
          if t < 0 { t = -t }
          let wgt = t < 1 ? 1 - t : 0
          k[x] = wgt
          ww += wgt
        }
        for x in 0..<max(xmax, 0) {
          let v = ww != 0 ? k[x] / ww : k[x]
          let scaled = v * Double(1 << Coefficients.precision)
          weights[xx * ksize + x] = Int32(v < 0 ? scaled - 0.5 : scaled + 0.5)
        }
        bounds.append((xmin, max(xmax, 0)))
        first = min(first, xmin)
        last = max(last, xmin + max(xmax, 0))
      }
      self.bounds = bounds
      self.weights = weights
      self.firstInput = min(first, last)
      self.lastInput = last
    }

    /// (first input, tap count, offset of its weights in `weights`) of output position x.
    @inline(__always)
    func taps(_ x: Int) -> (Int, Int, Int) {
      let (lo, n) = bounds[x]
      return (lo, n, x * ksize)
    }
  }
}

