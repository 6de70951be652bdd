import CLiftABI

// C entry points of image decoding and preprocessing (see Include/lift.h, "Images").

extension lift_image_info: SizedCStruct { static var cName: String { "lift_image_info" } }
extension lift_preprocess_options: SizedCStruct { static var cName: String { "lift_preprocess_options" } }

extension ResampleFilter {
  init(c value: Int32) throws(LiftError) {
    switch value {
    case Int32(LIFT_FILTER_BILINEAR.rawValue): self = .bilinear
    case Int32(LIFT_FILTER_BICUBIC.rawValue): self = .bicubic
    default: throw .argument("filter must be LIFT_FILTER_BILINEAR or LIFT_FILTER_BICUBIC (got \(value))")
    }
  }

  var c: Int32 { Int32(self == .bilinear ? LIFT_FILTER_BILINEAR.rawValue : LIFT_FILTER_BICUBIC.rawValue) }
}

/// The encoded bytes a caller passed: `len` bytes at `data` (NULL only when len is 0).
private func encodedBytes(_ data: UnsafePointer<UInt8>?, _ len: Int) throws(LiftError) -> UnsafeRawBufferPointer {
  let n = try requiredSize(len, "len")
  if n == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
  return UnsafeRawBufferPointer(start: try required(data, "data"), count: n)
}

private func maxPixels(_ value: Int64) throws(LiftError) -> Int64 {
  guard value >= 0 else { throw .argument("max_pixels must be >= 0 (0: the default; got \(value))") }
  return value == 0 ? ImageDecoder.defaultMaxPixels : value
}

/// The options' view and flip, checked (the view is checked against the image later).
private struct PreprocessRequest {
  let size: Int
  let channels: Int
  let filter: ResampleFilter
  let view: Preprocess.View
  let flip: Bool
  let reducedDecode: Bool
  let maxPixels: Int64

  init(_ o: lift_preprocess_options, dstLen: Int) throws(LiftError) {
    let side = 1 << 14
    guard o.size >= 1, o.size <= side else { throw .argument("size must be in [1, \(side)] (got \(o.size))") }
    guard o.channels == 1 || o.channels == 3 else { throw .argument("channels must be 1 or 3 (got \(o.channels))") }
    size = Int(o.size)
    channels = Int(o.channels)
    let needed = size * size * channels
    guard try requiredSize(dstLen, "dst_len") >= needed else { throw .buffer("dst holds \(dstLen) bytes; \(needed) needed") }
    filter = try ResampleFilter(c: o.filter)
    let r = [o.rect.0, o.rect.1, o.rect.2, o.rect.3]
    switch o.view {
    case Int32(LIFT_VIEW_CENTRE.rawValue):
      view = .centre
    case Int32(LIFT_VIEW_CROP.rawValue):
      guard r.allSatisfy({ $0.isFinite && $0 == $0.rounded() && abs($0) <= Double(side) }) else {
        throw .argument("a crop's rect must be whole pixels (x, y, width, height); got \(r)")
      }
      view = .crop(x: Int(r[0]), y: Int(r[1]), width: Int(r[2]), height: Int(r[3]))
    case Int32(LIFT_VIEW_BOX.rawValue):
      guard r.allSatisfy({ $0.isFinite }) else { throw .argument("a box's rect must be finite; got \(r)") }
      view = .box(Preprocess.Box(x0: r[0], y0: r[1], x1: r[2], y1: r[3]))
    default:
      throw .argument("view must be LIFT_VIEW_CENTRE, LIFT_VIEW_CROP or LIFT_VIEW_BOX (got \(o.view))")
    }
    flip = o.flip != 0
    reducedDecode = o.reduced_decode != 0
    maxPixels = try Lift.maxPixels(o.max_pixels)
  }
}

@_cdecl("lift_preprocess_options_default")
public func cLiftPreprocessOptionsDefault(_ out: UnsafeMutablePointer<lift_preprocess_options>?) -> lift_status {
  capi { () throws(LiftError) in
    var o = lift_preprocess_options()
    o.size = 224
    o.channels = 3
    o.filter = ResampleFilter.bicubic.c
    o.view = Int32(LIFT_VIEW_CENTRE.rawValue)
    o.reduced_decode = 1
    o.max_pixels = ImageDecoder.defaultMaxPixels
    try requiredStruct(out, "out").pointee = o.sized
  }
}

@_cdecl("lift_image_probe")
public func cLiftImageProbe(_ data: UnsafePointer<UInt8>?, _ len: Int, _ out: UnsafeMutablePointer<lift_image_info>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try requiredStruct(out, "out")
    let h = try ImageDecoder.header(try encodedBytes(data, len))
    let codec = h.format == .jpeg ? LIFT_CODEC_JPEG : h.format == .png ? LIFT_CODEC_PNG : LIFT_CODEC_WEBP
    var info = lift_image_info()
    info.codec = Int32(codec.rawValue)
    info.width = Int32(h.width)
    info.height = Int32(h.height)
    info.colour = Int32(h.colour)
    out.pointee = info.sized
  }
}

@_cdecl("lift_image_decode")
public func cLiftImageDecode(_ data: UnsafePointer<UInt8>?, _ len: Int, _ channels: Int32, _ limit: Int64,
                             _ out: UnsafeMutablePointer<UInt8>?, _ outLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    guard channels == 1 || channels == 3 else { throw .argument("channels must be 1 or 3 (got \(channels))") }
    let bytes = try encodedBytes(data, len)
    let header = try ImageDecoder.header(bytes)
    let limit = try maxPixels(limit)
    try ImageDecoder.checkSize(header, maxPixels: limit, what: "image")
    let needed = try checkedCount(Int64(header.width) * Int64(header.height), Int64(channels), "decoded pixels")
    guard try requiredSize(outLen, "out_len") >= needed else {
      throw .buffer("out holds \(outLen) bytes; the \(header.width)x\(header.height) image needs \(needed)")
    }
    let buffer = ScratchBuffer()
    let image = try ImageDecoder.decode(bytes, header: header, channels: Int(channels), maxPixels: limit, into: buffer)
    try required(out, "out").update(from: image.base, count: needed)
  }
}

@_cdecl("lift_image_preprocess")
public func cLiftImagePreprocess(_ data: UnsafePointer<UInt8>?, _ len: Int, _ options: UnsafePointer<lift_preprocess_options>?,
                                 _ dst: UnsafeMutablePointer<UInt8>?, _ dstLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let r = try PreprocessRequest(try requiredStruct(options, "options"), dstLen: dstLen)
    let bytes = try encodedBytes(data, len)
    let pipeline = ImagePipeline(size: r.size, channels: r.channels, filter: r.filter, reducedDecode: r.reducedDecode,
                                 maxPixels: r.maxPixels)
    try pipeline.render(bytes, what: "image", choose: { _, _ in (r.view, r.flip) }, into: try required(dst, "dst"))
  }
}

@_cdecl("lift_pixels_preprocess")
public func cLiftPixelsPreprocess(_ src: UnsafePointer<UInt8>?, _ srcLen: Int, _ height: Int32, _ width: Int32, _ channels: Int32,
                                  _ options: UnsafePointer<lift_preprocess_options>?, _ dst: UnsafeMutablePointer<UInt8>?,
                                  _ dstLen: Int) -> lift_status {
  capi { () throws(LiftError) in
    let r = try PreprocessRequest(try requiredStruct(options, "options"), dstLen: dstLen)
    guard height >= 1, width >= 1, channels >= 1 else {
      throw .argument("height, width and channels must be positive (got \(height), \(width), \(channels))")
    }
    let needed = try checkedCount(Int64(height) * Int64(width), Int64(channels), "src")
    guard try requiredSize(srcLen, "src_len") >= needed else {
      throw .buffer("src holds \(srcLen) bytes; a \(height)x\(width)x\(channels) image needs \(needed)")
    }
    try Preprocess.image(try required(src, "src"), width: Int(width), height: Int(height), channels: Int(channels),
                         view: r.view, size: r.size, filter: r.filter, outChannels: r.channels, flip: r.flip,
                         into: try required(dst, "dst"), dstCount: dstLen)
  }
}
