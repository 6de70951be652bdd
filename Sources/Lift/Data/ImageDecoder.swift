import LiftCodecs

/// Why a data source's sample cannot be used. The loader skips such samples and counts them by
/// kind; none of them stops a run unless they exceed the allowed fraction.
public enum SampleProblem: String, Sendable, CaseIterable {
  /// The image has zero bytes.
  case empty
  /// Not a JPEG, PNG or WebP image (GIF, BMP, animated WebP, ...).
  case unsupported
  /// The decoder found invalid data.
  case corrupt
  /// The data ends before the image does.
  case truncated
  /// More pixels than the decompression-bomb limit.
  case tooLarge = "too_large"
  /// No caption embedding for the sample's key.
  case missingEmbedding = "missing_embedding"
  /// The caption embedding holds NaN or infinity.
  case nonFiniteEmbedding = "non_finite_embedding"
  /// The key was seen before in the same shard or index.
  case duplicateKey = "duplicate_key"
}

public enum ImageFormat: String, Sendable {
  case jpeg, png, webp
}

/// What an encoded image's header says.
public struct ImageHeader: Equatable, Sendable {
  public var format: ImageFormat
  public var width: Int
  public var height: Int
  /// 1 grey, 3 colour, 4 CMYK, as stored.
  public var colour: Int
  /// Whether the decoder can decode at n/8 of the size (JPEG).
  public var scalable: Bool
}

/// Decodes JPEG (TurboJPEG), PNG (libpng) and WebP (libwebp) into RGB or grey uint8 pixels as
/// Pillow's `Image.open(...).convert("RGB" or "L")` does (see Sources/LiftCodecs). Every decoder
/// error, libpng's longjmp included, stays in the C shim and arrives here as a `LiftError` with
/// a `sampleProblem`.
///
/// Thread safety: a value type with no shared state; each thread uses its own decoder and buffers.
public enum ImageDecoder {
  /// Pillow's decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): the default pixel limit.
  public static let defaultMaxPixels: Int64 = 89_478_485

  private static func failure(_ code: Int32, _ message: String, what: String) -> LiftError {
    switch Int(code) {
    case LC_EMPTY: return LiftError(LIFT_ERR_FORMAT, "\(what): \(message)", sampleProblem: .empty)
    case LC_UNSUPPORTED: return LiftError(LIFT_ERR_UNSUPPORTED, "\(what): \(message)", sampleProblem: .unsupported)
    case LC_TRUNCATED: return LiftError(LIFT_ERR_FORMAT, "\(what): truncated: \(message)", sampleProblem: .truncated)
    case LC_NOMEM: return .memory("\(what): \(message)")
    case LC_ARGUMENT: return .internal("\(what): \(message)")
    default: return LiftError(LIFT_ERR_FORMAT, "\(what): \(message)", sampleProblem: .corrupt)
    }
  }

  private static func message(_ buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
  }

  /// The format and size of an encoded image, from its header only.
  public static func header(_ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String = "image") throws(LiftError) -> ImageHeader {
    var info = lc_info()
    var text = [CChar](repeating: 0, count: 256)
    let rc = lc_probe(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &info, &text, text.count)
    guard rc == LC_OK else { throw failure(rc, message(text), what: what()) }
    let format: ImageFormat = info.format == LC_FORMAT_JPEG ? .jpeg : info.format == LC_FORMAT_PNG ? .png : .webp
    guard info.width >= 1, info.height >= 1 else {
      throw LiftError(LIFT_ERR_FORMAT, "\(what()): the \(format.rawValue.uppercased()) header declares a \(info.width)x\(info.height) image",
                      sampleProblem: .corrupt)
    }
    return ImageHeader(format: format, width: Int(info.width), height: Int(info.height), colour: Int(info.colour),
                       scalable: info.scalable != 0)
  }

  /// Refuses images above `maxPixels` pixels (a decompression bomb) before anything is allocated.
  static func checkSize(_ header: ImageHeader, maxPixels: Int64, what: @autoclosure () -> String) throws(LiftError) {
    let pixels = Int64(header.width) * Int64(header.height)
    guard pixels <= maxPixels else {
      throw LiftError(LIFT_ERR_VALUE, "\(what()): \(header.width)x\(header.height) = \(pixels) pixels exceeds the limit of \(maxPixels) (a decompression bomb?)",
                      sampleProblem: .tooLarge)
    }
  }

  /// Decodes at eighths/8 of the full size (8: full size; less only where `header.scalable`)
  /// into `buffer` as `channels` (1 or 3) samples per pixel; returns the decoded pixels' region.
  public static func decode(_ bytes: UnsafeRawBufferPointer, header: ImageHeader, channels: Int, eighths: Int = 8,
                            maxPixels: Int64 = defaultMaxPixels, into buffer: ScratchBuffer,
                            what: @autoclosure () -> String = "image") throws(LiftError) -> ImageRegion {
    try checkSize(header, maxPixels: maxPixels, what: what())
    let w = Int(lc_scaled(Int32(header.width), Int32(eighths))), h = Int(lc_scaled(Int32(header.height), Int32(eighths)))
    let capacity = try checkedCount(Int64(w) * Int64(h), Int64(channels), "decoded pixels")
    let out = try buffer.reserve(capacity)
    var width: Int32 = 0, height: Int32 = 0
    var text = [CChar](repeating: 0, count: 256)
    let rc = lc_decode(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, Int32(channels), Int32(eighths),
                       out, capacity, &width, &height, &text, text.count)
    guard rc == LC_OK else { throw failure(rc, message(text), what: what()) }
    guard Int(width) == w, Int(height) == h else {
      throw LiftError(LIFT_ERR_FORMAT, "\(what()): decoded \(width)x\(height) pixels where the header declares \(w)x\(h)",
                      sampleProblem: .corrupt)
    }
    return ImageRegion(base: UnsafePointer(out), width: w, height: h, channels: channels)
  }
}

/// Decodes an encoded image and renders a view of it at the model's size: the loader's work per
/// sample. One per thread (it owns its buffers).
public final class ImagePipeline {
  public var size: Int
  public var channels: Int
  public var filter: ResampleFilter
  /// Decode JPEGs at a reduced scale when the view spans at least twice `size` (see
  /// `Preprocess.reduction`); off: always decode at full size (then the result is exact).
  public var reducedDecode: Bool
  public var maxPixels: Int64
  private let decoded = ScratchBuffer()
  private let scratch = ScratchBuffer()

  public init(size: Int, channels: Int, filter: ResampleFilter, reducedDecode: Bool = true,
              maxPixels: Int64 = ImageDecoder.defaultMaxPixels) {
    self.size = size
    self.channels = channels
    self.filter = filter
    self.reducedDecode = reducedDecode
    self.maxPixels = maxPixels
  }

  /// Decodes `bytes` and renders the view `choose(width, height)` picks on the full-size image
  /// (with its flip) into dst (size x size x channels bytes).
  public func render(_ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String,
                     choose: (Int, Int) -> (Preprocess.View, Bool), into dst: UnsafeMutablePointer<UInt8>) throws(LiftError) {
    let header = try ImageDecoder.header(bytes, what: what())
    try ImageDecoder.checkSize(header, maxPixels: maxPixels, what: what())
    let (view, flip) = choose(header.width, header.height)
    try Preprocess.validate(view, width: header.width, height: header.height, size: size)
    let eighths = reducedDecode && header.scalable ? Preprocess.reduction(for: view, width: header.width, height: header.height, size: size) : 8
    let image = try ImageDecoder.decode(bytes, header: header, channels: channels, eighths: eighths, maxPixels: maxPixels,
                                        into: decoded, what: what())
    try Preprocess.render(image, fullWidth: header.width, fullHeight: header.height, scale: Double(eighths) / 8, view: view,
                          size: size, filter: filter, outChannels: channels, flip: flip, into: dst, scratch: scratch)
  }
}
