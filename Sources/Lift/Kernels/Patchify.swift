/// A batch of images as the encoder accepts them.
public enum ImageInput {
  /// float32 (B, C, S, S), already normalised.
  case float32NCHW(UnsafePointer<Float>)
  /// uint8 (B, S, S, C), normalised by the library as (x / 255 - mean[c]) / std[c] with the
  /// model config's image mean and std.
  case uint8NHWC(UnsafePointer<UInt8>)

  /// The same input starting `n` images later.
  func advanced(byImages n: Int, config c: ModelConfig) -> ImageInput {
    let per = c.channels * c.imageSize * c.imageSize
    switch self {
    case .float32NCHW(let p): return .float32NCHW(p + n * per)
    case .uint8NHWC(let p): return .uint8NHWC(p + n * per)
    }
  }
}

/// Images to the patch matrix the patch-embedding matmul consumes.
///
/// Output row (b * P + py * G + px) holds patch (py, px) of image b flattened in (channel,
/// row, column) order, matching Conv2d weights (width, C, p, p): the strided convolution is one
/// matrix product with the weight as a (width x C*p*p) matrix.
enum Patchify {
  /// `out` is float32, or bfloat16 (rounded) in bf16 precision.
  static func run(_ source: ImageInput, config: ModelConfig, batch: Int, into out: MatrixElements) {
    let c = config.channels, s = config.imageSize, p = config.patch
    let g = s / p, pd = c * p * p
    switch source {
    case .float32NCHW(let img):
      Parallel.forRanges(batch * g, grain: 1) { r in
        for bp in r {
          let b = bp / g, py = bp % g
          for px in 0..<g {
            let row = out.advanced(by: ((b * g + py) * g + px) * pd)
            for ch in 0..<c {
              for i in 0..<p {
                let src = img + ((b * c + ch) * s + py * p + i) * s + px * p
                switch row.advanced(by: (ch * p + i) * p) {
                case .f32(let dst): dst.update(from: src, count: p)
                case .bf16(let dst): BF16.convert(src, dst, count: p)
                }
              }
            }
          }
        }
      }
    case .uint8NHWC(let img):
      let mean = config.imageMean, std = config.imageStd
      // scale[ch], then shift[ch], on the stack.
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * c) { affine in
        for ch in 0..<c {
          affine[ch] = 1 / (255 * std[ch])
          affine[c + ch] = -mean[ch] / std[ch]
        }
        switch out {
        case .f32(let dst): uint8Patches(img, config: config, batch: batch, affine: affine.baseAddress!,
                                         into: Float32Writer(pointer: dst))
        case .bf16(let dst): uint8Patches(img, config: config, batch: batch, affine: affine.baseAddress!,
                                          into: BFloat16Writer(pointer: dst))
        }
      }
    }
  }

  /// The uint8 NHWC path, specialised per output type: x * scale[ch] + shift[ch] with the c
  /// scales then the c shifts in `affine`; each patch row's pixels are de-interleaved channel
  /// by channel into contiguous runs of the output row.
  private static func uint8Patches<W: ProductInputWriter>(_ img: UnsafePointer<UInt8>, config: ModelConfig, batch: Int,
                                                          affine: UnsafePointer<Float>, into out: W) {
    let c = config.channels, s = config.imageSize, p = config.patch
    let g = s / p, pd = c * p * p
    Parallel.forRanges(batch * g, grain: 1) { r in
      for bp in r {
        let b = bp / g, py = bp % g
        for px in 0..<g {
          let row = out.advanced(by: ((b * g + py) * g + px) * pd)
          for i in 0..<p {
            let src = img + ((b * s + py * p + i) * s + px * p) * c
            for ch in 0..<c {
              let scale = affine[ch], shift = affine[c + ch], dst = row.advanced(by: (ch * p + i) * p)
              for j in 0..<p { dst.store(Float(src[j * c + ch]) * scale + shift, at: j) }
            }
          }
        }
      }
    }
  }
}
