/// Pillow-exact separable resampling of uint8 images (Pillow's Resample.c, 8 bits per channel):
/// per axis, filter weights normalised to sum 1 and rounded to 22-bit fixed point; a horizontal
/// pass over the rows the vertical pass needs, rounded and clipped to uint8, then a vertical
/// pass, rounded and clipped again. An axis whose output equals its input is copied.
///
/// Beyond Pillow's `resize(size, filter, box)` this resamples a *window* of the output (the
/// centre crop of a resize, computed without the rest) and reads from a region of a larger
/// buffer (a crop, by row stride), so that crop-then-resize and resize-then-crop pipelines are
/// reproduced exactly without copies.
public enum ResampleFilter: String, Sendable, CaseIterable {
  /// Pillow's BILINEAR: triangle filter, support 1.
  case bilinear
  /// Pillow's BICUBIC: Keys cubic with a = -0.5, support 2 (OpenCLIP's and timm's resampling).
  case bicubic

  var support: Double { self == .bilinear ? 1 : 2 }

  @inline(__always)
  func weight(_ x: Double) -> Double {
    let t = x < 0 ? -x : x
    switch self {
    case .bilinear:
      return t < 1 ? 1 - t : 0
    case .bicubic:
      let a = -0.5
      if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
      if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
      return 0
    }
  }
}

/// One axis of a resampling: input [start, end) (in pixels of the region) resized to `outSize`
/// pixels, of which output positions [window, window + count) are produced.
struct ResampleAxis: Equatable {
  var start: Double
  var end: Double
  var outSize: Int
  var window: Int

  /// Whether the axis needs filtering for an input of `inSize` pixels (else it is a copy from
  /// `window`), exactly as Pillow decides.
  func needsFilter(inSize: Int) -> Bool { outSize != inSize || Float(start) != 0 || Float(end) != Float(inSize) }
}

/// Pillow's fixed-point weights of one axis for the window's output positions
/// (Resample.c precompute_coeffs + normalize_coeffs_8bpc).
struct AxisWeights {
  static let precision = 22
  let ksize: Int
  /// Per output position: first input pixel and tap count; weights at [i * ksize, i * ksize + count).
  private(set) var first: [Int]
  private(set) var count: [Int]
  private(set) var weights: [Int32]
  /// Input pixels [firstInput, lastInput) cover every tap.
  private(set) var firstInput = Int.max
  private(set) var lastInput = 0

  init(filter: ResampleFilter, inSize: Int, axis: ResampleAxis, positions: Int) {
    // Pillow takes the box as C floats and subtracts them in float.
    let start = Float(axis.start), end = Float(axis.end)
    let scale = Double(end - start) / Double(axis.outSize)
    let filterScale = max(scale, 1)
    let support = filter.support * filterScale
    ksize = Int(support.rounded(.up)) * 2 + 1
    first = [Int](repeating: 0, count: positions)
    count = [Int](repeating: 0, count: positions)
    weights = [Int32](repeating: 0, count: positions * ksize)
    var k = [Double](repeating: 0, count: ksize)
    let ss = 1 / filterScale
    for i in 0..<positions {
      let center = Double(start) + (Double(axis.window + i) + 0.5) * scale
      let xmin = max(Int(center - support + 0.5), 0)
      let n = max(min(Int(center + support + 0.5), inSize) - xmin, 0)
      var total = 0.0
      for x in 0..<n {
        k[x] = filter.weight((Double(x + xmin) - center + 0.5) * ss)
        total += k[x]
      }
      for x in 0..<n {
        let v = total != 0 ? k[x] / total : k[x]
        let scaled = v * Double(1 << Self.precision)
        weights[i * ksize + x] = Int32(v < 0 ? scaled - 0.5 : scaled + 0.5)
      }
      first[i] = xmin
      count[i] = n
      firstInput = min(firstInput, xmin)
      lastInput = max(lastInput, xmin + n)
    }
    if firstInput > lastInput { firstInput = lastInput }
  }
}

/// Pixels resampling reads: `height` rows of `width` pixels of `channels` bytes, rows `stride`
/// bytes apart.
public struct ImageRegion {
  public var base: UnsafePointer<UInt8>
  public var width: Int
  public var height: Int
  public var channels: Int
  public var stride: Int

  public init(base: UnsafePointer<UInt8>, width: Int, height: Int, channels: Int, stride: Int? = nil) {
    self.base = base
    self.width = width
    self.height = height
    self.channels = channels
    self.stride = stride ?? width * channels
  }

  /// The sub-rectangle [x, x + w) x [y, y + h) (inside the region).
  func cropped(x: Int, y: Int, width w: Int, height h: Int) -> ImageRegion {
    ImageRegion(base: base + y * stride + x * channels, width: w, height: h, channels: channels, stride: stride)
  }
}

/// The horizontal weights of RGB rows arranged for SIMD: outputs in groups of eight; per tap,
/// one 4-byte load per output (R, G, B and the next byte, which is masked off) gives eight words,
/// split into R, G and B lanes by shifts and masks and weighted by the eight outputs' weights of
/// that tap. Built once per image and used for every row. Groups are used while every load stays
/// inside the row (the last pixel's fourth byte would not): `groups` x 8 outputs are done here,
/// the rest by the scalar loop, with the same sums in the same integer arithmetic.
struct PackedHorizontal {
  /// Groups done with SIMD (a prefix of the outputs).
  let groups: Int
  /// Per group: the 8 outputs' first input pixel (relative to the row), and the group's taps.
  private let starts: [Int32]
  private let taps: [Int]
  /// Per group and tap (ksize slots): the 8 outputs' weights (0 past an output's own taps).
  private let weights: [SIMD8<Int32>]
  private let ksize: Int

  init(_ w: AxisWeights, size: Int, channels: Int, origin: Int, available: Int) {
    ksize = w.ksize
    var starts: [Int32] = [], taps: [Int] = [], weights: [SIMD8<Int32>] = []
    var groups = 0
    if channels == 3 {
      for g in 0..<(size / 8) {
        let outs = (8 * g)..<(8 * g + 8)
        let n = outs.map { w.count[$0] }.max() ?? 0
        // Every load of pixel first + t (4 bytes) for t < n stays inside the row.
        guard outs.allSatisfy({ w.first[$0] - origin + n <= available - 1 }) else { break }
        starts += outs.map { Int32(w.first[$0] - origin) }
        taps.append(n)
        for t in 0..<ksize {
          var v = SIMD8<Int32>(repeating: 0)
          for (k, o) in outs.enumerated() where t < w.count[o] { v[k] = w.weights[o * w.ksize + t] }
          weights.append(v)
        }
        groups += 1
      }
    }
    self.groups = groups
    self.starts = starts
    self.taps = taps
    self.weights = weights
  }

  /// Computes the first `groups` x 8 outputs of one row; returns how many.
  @inline(__always)
  func run(_ src: UnsafePointer<UInt8>, into out: UnsafeMutablePointer<UInt8>) -> Int {
    let half = SIMD8<Int32>(repeating: 1 << Int32(AxisWeights.precision - 1))
    let mask = SIMD8<UInt32>(repeating: 0xFF)
    let raw = UnsafeRawPointer(src)
    starts.withUnsafeBufferPointer { s in
      weights.withUnsafeBufferPointer { wt in
        for g in 0..<groups {
          var r = half, gr = half, b = half
          var offsets = SIMD8<Int32>(repeating: 0)
          for k in 0..<8 { offsets[k] = s[8 * g + k] &* 3 }
          for t in 0..<taps[g] {
            let o = offsets &+ Int32(t * 3)
            var words = SIMD8<UInt32>(repeating: 0)
            for k in 0..<8 { words[k] = raw.loadUnaligned(fromByteOffset: Int(o[k]), as: UInt32.self) }
            let w = wt[g * ksize + t]
            r &+= SIMD8<Int32>(truncatingIfNeeded: words & mask) &* w
            gr &+= SIMD8<Int32>(truncatingIfNeeded: (words &>> 8) & mask) &* w
            b &+= SIMD8<Int32>(truncatingIfNeeded: (words &>> 16) & mask) &* w
          }
          let lo = SIMD8<Int32>(repeating: 0), hi = SIMD8<Int32>(repeating: 255)
          let rv = (r &>> Int32(AxisWeights.precision)).clamped(lowerBound: lo, upperBound: hi)
          let gv = (gr &>> Int32(AxisWeights.precision)).clamped(lowerBound: lo, upperBound: hi)
          let bv = (b &>> Int32(AxisWeights.precision)).clamped(lowerBound: lo, upperBound: hi)
          let q = out + g * 24
          for k in 0..<8 {
            q[k * 3] = UInt8(truncatingIfNeeded: rv[k])
            q[k * 3 + 1] = UInt8(truncatingIfNeeded: gv[k])
            q[k * 3 + 2] = UInt8(truncatingIfNeeded: bv[k])
          }
        }
      }
    }
    return groups * 8
  }
}

/// Scratch memory (decoded pixels, resampling rows), grown on demand (fallibly) and reused.
public final class ScratchBuffer {
  private(set) var bytes: UnsafeMutablePointer<UInt8>? = nil
  private(set) var capacity = 0

  public init() {}
  deinit { bytes?.deallocate() }

  func reserve(_ needed: Int) throws(LiftError) -> UnsafeMutablePointer<UInt8> {
    if needed > capacity || bytes == nil {
      bytes?.deallocate()
      bytes = nil
      capacity = 0
      bytes = try allocateElements(max(needed, 64), of: UInt8.self, what: "\(needed) bytes of scratch")
      capacity = max(needed, 64)
    }
    return bytes!
  }
}

enum Resample {
  /// Resamples `region` to a size x size image in `dst` (size * size * outChannels bytes), x and
  /// y as the axes say, converting 1 <-> 3 channels per output pixel (grey to RGB replicates;
  /// RGB to grey is Pillow's luma) and mirroring horizontally if asked.
  static func run(_ region: ImageRegion, x: ResampleAxis, y: ResampleAxis, size: Int, filter: ResampleFilter,
                  outChannels: Int, flip: Bool, into dst: UnsafeMutablePointer<UInt8>,
                  scratch: ScratchBuffer) throws(LiftError) {
    let needsH = x.needsFilter(inSize: region.width), needsV = y.needsFilter(inSize: region.height)
    let cols = needsH ? AxisWeights(filter: filter, inSize: region.width, axis: x, positions: size) : nil
    let rows = needsV ? AxisWeights(filter: filter, inSize: region.height, axis: y, positions: size) : nil
    // Pillow (since its vertical-first change) runs the vertical pass first when the height
    // shrinks by more than twice what the width does.
    let shrinkH = region.height - y.outSize, shrinkW = region.width - x.outSize
    let verticalFirst = shrinkH > 0 && shrinkH > shrinkW * 2
    let output = Output(dst: dst, size: size, channels: region.channels, outChannels: outChannels, flip: flip)
    if verticalFirst, let rows {
      try verticalThenHorizontal(region, cols: cols, rows: rows, x: x, output: output, scratch: scratch)
    } else {
      try horizontalThenVertical(region, cols: cols, rows: rows, x: x, y: y, output: output, scratch: scratch)
    }
  }

  /// Where output rows go: straight into dst, or through a row buffer for flip and channel
  /// conversion.
  private struct Output {
    let dst: UnsafeMutablePointer<UInt8>
    let size: Int
    let channels: Int
    let outChannels: Int
    let flip: Bool
    var direct: Bool { !flip && channels == outChannels }
    var rowBytes: Int { size * channels }

    /// The buffer row `oy` is computed into (`rowBuffer` unless direct).
    func target(_ oy: Int, rowBuffer: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8> {
      direct ? dst + oy * rowBytes : rowBuffer
    }

    func finish(_ oy: Int, rowBuffer: UnsafeMutablePointer<UInt8>) {
      if !direct { emit(rowBuffer, size: size, channels: channels, outChannels: outChannels, flip: flip, into: dst + oy * size * outChannels) }
    }
  }

  /// Pillow's usual order: the horizontal pass over the input rows the vertical pass reads (kept
  /// as uint8), then the vertical pass.
  private static func horizontalThenVertical(_ region: ImageRegion, cols: AxisWeights?, rows: AxisWeights?,
                                             x: ResampleAxis, y: ResampleAxis, output: Output,
                                             scratch: ScratchBuffer) throws(LiftError) {
    let c = region.channels, size = output.size, rowBytes = output.rowBytes
    let firstRow = rows?.firstInput ?? y.window
    let rowCount = (rows?.lastInput ?? (y.window + size)) - firstRow
    let midBytes = cols != nil ? rowCount * rowBytes : 0
    let memory = try scratch.reserve(midBytes + rowBytes + 64)
    let rowBuffer = memory + midBytes
    let mid: UnsafePointer<UInt8>, midStride: Int
    if let cols {
      let packed = PackedHorizontal(cols, size: size, channels: c, origin: 0, available: region.width)
      for r in 0..<rowCount {
        horizontal(region.base + (firstRow + r) * region.stride, origin: 0, weights: cols, packed: packed, size: size,
                   channels: c, into: memory + r * rowBytes)
      }
      mid = UnsafePointer(memory)
      midStride = rowBytes
    } else {
      mid = region.base + firstRow * region.stride + x.window * c
      midStride = region.stride
    }
    for oy in 0..<size {
      let target = output.target(oy, rowBuffer: rowBuffer)
      if let rows {
        rows.weights.withUnsafeBufferPointer { w in
          vertical(mid + (rows.first[oy] - firstRow) * midStride, stride: midStride, taps: rows.count[oy],
                   weights: w.baseAddress! + oy * rows.ksize, count: rowBytes, into: target)
        }
      } else {
        target.update(from: mid + (y.window + oy - firstRow) * midStride, count: rowBytes)
      }
      output.finish(oy, rowBuffer: rowBuffer)
    }
  }

  /// The vertical pass first, over the input columns the horizontal pass reads (kept as uint8),
  /// then the horizontal pass.
  private static func verticalThenHorizontal(_ region: ImageRegion, cols: AxisWeights?, rows: AxisWeights,
                                             x: ResampleAxis, output: Output, scratch: ScratchBuffer) throws(LiftError) {
    let c = region.channels, size = output.size, rowBytes = output.rowBytes
    let firstCol = cols?.firstInput ?? x.window
    let midRowBytes = ((cols?.lastInput ?? (x.window + size)) - firstCol) * c
    let midBytes = size * midRowBytes
    let memory = try scratch.reserve(midBytes + rowBytes + 64)
    let rowBuffer = memory + midBytes
    rows.weights.withUnsafeBufferPointer { w in
      for oy in 0..<size {
        vertical(region.base + rows.first[oy] * region.stride + firstCol * c, stride: region.stride, taps: rows.count[oy],
                 weights: w.baseAddress! + oy * rows.ksize, count: midRowBytes, into: memory + oy * midRowBytes)
      }
    }
    let packed = cols.map { PackedHorizontal($0, size: size, channels: c, origin: firstCol, available: midRowBytes / c) }
    for oy in 0..<size {
      let target = output.target(oy, rowBuffer: rowBuffer)
      if let cols {
        horizontal(memory + oy * midRowBytes, origin: firstCol, weights: cols, packed: packed!, size: size, channels: c,
                   into: target)
      } else {
        target.update(from: memory + oy * midRowBytes + (x.window - firstCol) * c, count: rowBytes)
      }
      output.finish(oy, rowBuffer: rowBuffer)
    }
  }

  /// One row of the horizontal pass: size output pixels of `channels` bytes; `src` holds the
  /// row's input pixels from column `origin` on. RGB outputs go four at a time through `packed`
  /// where it allows, the rest one at a time (the same sums in the same integer arithmetic).
  @inline(__always)
  private static func horizontal(_ src: UnsafePointer<UInt8>, origin: Int, weights: AxisWeights, packed: PackedHorizontal,
                                 size: Int, channels c: Int, into out: UnsafeMutablePointer<UInt8>) {
    let half = Int32(1) << Int32(AxisWeights.precision - 1)
    let simdDone = c == 3 ? packed.run(src, into: out) : 0
    weights.weights.withUnsafeBufferPointer { wb in
      let w = wb.baseAddress!
      for ox in simdDone..<size {
        let lo = weights.first[ox] - origin, n = weights.count[ox], k = w + ox * weights.ksize
        if c == 3 {
          var a0 = half, a1 = half, a2 = half
          var p = src + lo * 3
          for t in 0..<n {
            let wt = k[t]
            a0 &+= Int32(p[0]) &* wt
            a1 &+= Int32(p[1]) &* wt
            a2 &+= Int32(p[2]) &* wt
            p += 3
          }
          out[ox * 3] = clip8(a0)
          out[ox * 3 + 1] = clip8(a1)
          out[ox * 3 + 2] = clip8(a2)
        } else {
          var a = half
          for t in 0..<n { a &+= Int32(src[lo + t]) &* k[t] }
          out[ox] = clip8(a)
        }
      }
    }
  }

  /// One output row of the vertical pass over `count` bytes: the weighted sum of `taps` input
  /// rows `stride` bytes apart, 16 bytes at a time.
  @inline(__always)
  private static func vertical(_ src: UnsafePointer<UInt8>, stride: Int, taps: Int, weights: UnsafePointer<Int32>,
                               count: Int, into out: UnsafeMutablePointer<UInt8>) {
    let half = Int32(1) << Int32(AxisWeights.precision - 1)
    var j = 0
    while j + 16 <= count {
      var acc = SIMD16<Int32>(repeating: half)
      for t in 0..<taps {
        let bytes = UnsafeRawPointer(src + t * stride + j).loadUnaligned(as: SIMD16<UInt8>.self)
        acc &+= SIMD16<Int32>(truncatingIfNeeded: bytes) &* weights[t]
      }
      let shifted = acc &>> Int32(AxisWeights.precision)
      let clipped = shifted.clamped(lowerBound: SIMD16(repeating: 0), upperBound: SIMD16(repeating: 255))
      UnsafeMutableRawPointer(out + j).storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: clipped), as: SIMD16<UInt8>.self)
      j += 16
    }
    while j < count {
      var a = half
      for t in 0..<taps { a &+= Int32(src[t * stride + j]) &* weights[t] }
      out[j] = clip8(a)
      j += 1
    }
  }

  /// Channel conversion and mirroring of one output row.
  @inline(__always)
  fileprivate static func emit(_ row: UnsafePointer<UInt8>, size: Int, channels c: Int, outChannels: Int, flip: Bool,
                           into out: UnsafeMutablePointer<UInt8>) {
    for ox in 0..<size {
      let p = row + (flip ? size - 1 - ox : ox) * c
      let o = out + ox * outChannels
      if outChannels == c {
        for ch in 0..<c { o[ch] = p[ch] }
      } else if outChannels == 1 {
        o[0] = Preprocess.luma(p[0], p[1], p[2])
      } else {
        o[0] = p[0]; o[1] = p[0]; o[2] = p[0]
      }
    }
  }

  @inline(__always)
  static func clip8(_ acc: Int32) -> UInt8 {
    let v = acc >> Int32(AxisWeights.precision)
    return v < 0 ? 0 : v > 255 ? 255 : UInt8(v)
  }
}
