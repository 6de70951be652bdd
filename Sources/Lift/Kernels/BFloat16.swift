import LiftKernelsC

/// bfloat16 values as their 16 bits: the upper half of the float32 with the same sign, exponent
/// and leading 7 fraction bits.
typealias BFloat16 = UInt16

/// float32 <-> bfloat16 conversions (round to nearest, ties to even, as PyTorch and oneDNN do;
/// NaN stays a quiet NaN, overflow becomes infinity).
enum BF16 {
  /// Whether this CPU runs liblift's AVX512-BF16 kernels (LiftKernelsC): the fused attention
  /// core and the MLP activation in bf16.
  static let hasVectorKernels = lk_cpu_has_avx512_bf16() != 0

  /// Integer lane arithmetic only: lane selects (`replacing(with:where:)`) on integer vectors
  /// compile to scalar code here, 20x slower.
  @inline(__always)
  static func round(_ v: Vec16) -> SIMD16<UInt16> {
    let bits = unsafeBitCast(v, to: SIMD16<Int32>.self)
    let rounded = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
    // All ones in NaN lanes (|bits| > 0x7F800000 makes the difference negative), else zero.
    let nan = (0x7F80_0000 &- (bits & 0x7FFF_FFFF)) &>> 31
    let quiet = (bits &>> 16) | 0x40
    return narrow((rounded & ~nan) | (quiet & nan))
  }

  /// The low 16 bits of each lane. A fixed-length loop over the lanes that LLVM turns into
  /// pack instructions; the standard library's SIMD truncating initialiser stays an
  /// out-of-line call inside larger kernels.
  @inline(__always)
  static func narrow(_ x: SIMD16<Int32>) -> SIMD16<UInt16> {
    var out = SIMD16<UInt16>()
    withUnsafeBytes(of: x) { src in
      withUnsafeMutableBytes(of: &out) { dst in
        let s = src.baseAddress!.assumingMemoryBound(to: Int32.self)
        let d = dst.baseAddress!.assumingMemoryBound(to: UInt16.self)
        for i in 0..<16 { d[i] = UInt16(truncatingIfNeeded: s[i]) }
      }
    }
    return out
  }

  @inline(__always)
  static func round(_ x: Float) -> BFloat16 {
    let bits = x.bitPattern
    if bits & 0x7FFF_FFFF > 0x7F80_0000 { return BFloat16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    return BFloat16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
  }

  @inline(__always)
  static func widen(_ h: SIMD16<UInt16>) -> Vec16 {
    unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16, to: Vec16.self)
  }

  @inline(__always)
  static func widen(_ h: BFloat16) -> Float { Float(bitPattern: UInt32(h) << 16) }

  /// dst[i] = round(src[i]) for i in 0..<count, on the calling thread.
  static func convert(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<BFloat16>, count: Int) {
    var i = 0
    while i + 16 <= count {
      UnsafeMutableRawPointer(dst + i).storeBytes(of: round(src.vload(i)), as: SIMD16<UInt16>.self)
      i += 16
    }
    while i < count { dst[i] = round(src[i]); i += 1 }
  }

  /// The same over the workers.
  static func convertParallel(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<BFloat16>, count: Int) {
    Parallel.forRanges(count, grain: 1 << 15) { r in convert(src + r.lowerBound, dst + r.lowerBound, count: r.count) }
  }
}

/// Where a kernel writes values that feed a matrix product: float32 as they are, or bfloat16
/// rounded. Kernels are generic over it so each precision gets its own specialised loop.
protocol ProductInputWriter {
  func store(_ v: Vec16, at i: Int)
  /// Stores the first `count` (< 16) lanes of v at i.
  func store(_ v: Vec16, at i: Int, count: Int)
  func store(_ x: Float, at i: Int)
  func advanced(by n: Int) -> Self
}

struct Float32Writer: ProductInputWriter {
  let pointer: UnsafeMutablePointer<Float>
  @inline(__always) func store(_ v: Vec16, at i: Int) { pointer.vstore(v, i) }
  @inline(__always) func store(_ v: Vec16, at i: Int, count: Int) { storeTail(v, pointer + i, count) }
  @inline(__always) func store(_ x: Float, at i: Int) { pointer[i] = x }
  @inline(__always) func advanced(by n: Int) -> Float32Writer { Float32Writer(pointer: pointer + n) }
}

struct BFloat16Writer: ProductInputWriter {
  let pointer: UnsafeMutablePointer<BFloat16>
  @inline(__always) func store(_ v: Vec16, at i: Int) {
    UnsafeMutableRawPointer(pointer + i).storeBytes(of: BF16.round(v), as: SIMD16<UInt16>.self)
  }
  @inline(__always) func store(_ v: Vec16, at i: Int, count: Int) {
    let h = BF16.round(v)
    withUnsafeBytes(of: h) { (pointer + i).update(from: $0.baseAddress!.assumingMemoryBound(to: UInt16.self), count: count) }
  }
  @inline(__always) func store(_ x: Float, at i: Int) { pointer[i] = BF16.round(x) }
  @inline(__always) func advanced(by n: Int) -> BFloat16Writer { BFloat16Writer(pointer: pointer + n) }
}

/// Where a kernel reads values saved as product inputs: float32, or bfloat16 widened.
protocol ProductInputReader {
  func load(_ i: Int) -> Vec16
  /// The first `count` (< 16) values at i in the low lanes, zeros elsewhere.
  func load(_ i: Int, count: Int) -> Vec16
}

struct Float32Reader: ProductInputReader {
  let pointer: UnsafeMutablePointer<Float>
  @inline(__always) func load(_ i: Int) -> Vec16 { pointer.vload(i) }
  @inline(__always) func load(_ i: Int, count: Int) -> Vec16 { loadTail(pointer + i, count) }
}

struct BFloat16Reader: ProductInputReader {
  let pointer: UnsafeMutablePointer<BFloat16>
  @inline(__always) func load(_ i: Int) -> Vec16 {
    BF16.widen(UnsafeRawPointer(pointer + i).loadUnaligned(as: SIMD16<UInt16>.self))
  }
  @inline(__always) func load(_ i: Int, count: Int) -> Vec16 {
    var h = SIMD16<UInt16>()
    withUnsafeMutableBytes(of: &h) { $0.baseAddress!.assumingMemoryBound(to: UInt16.self).update(from: pointer + i, count: count) }
    return BF16.widen(h)
  }
}

/// Element access for code outside the hot loops, and for reading product inputs back.
extension MatrixElements {
  @inline(__always) func store(_ x: Float, at i: Int) {
    switch self {
    case .f32(let p): p[i] = x
    case .bf16(let p): p[i] = BF16.round(x)
    }
  }

  @inline(__always) func loadVector(_ i: Int) -> Vec16 {
    switch self {
    case .f32(let p): return p.vload(i)
    case .bf16(let p): return BF16.widen(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<UInt16>.self))
    }
  }

  @inline(__always) func loadValue(_ i: Int) -> Float {
    switch self {
    case .f32(let p): return p[i]
    case .bf16(let p): return BF16.widen(p[i])
    }
  }

  @inline(__always) func advanced(by n: Int) -> MatrixElements {
    switch self {
    case .f32(let p): return .f32(p + n)
    case .bf16(let p): return .bf16(p + n)
    }
  }

  @inline(__always) func matrix(ld: Int) -> Matrix { Matrix(self, ld: ld) }
}
