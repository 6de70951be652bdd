import CLiftABI

/// Architecture of the image tower and LIFT head (OpenCLIP VisionTransformer semantics).
public struct ModelConfig: Equatable {
  public enum Pooling: Int32 { case average = 0, token = 1 }

  /// Training objective. It belongs to the model because it decides which scalar parameters
  /// exist (logit_bias for sigmoid) and how logit_scale is initialised.
  public enum Objective: Int32 {
    /// CLIP/InfoNCE over image->text and text->image, learnable temperature.
    case contrastive = 0
    /// LIFT's simplistic cosine loss: mean(1 - cos(image, text)).
    case cosine = 1
    /// SigLIP's pairwise sigmoid loss with learnable scale and bias.
    case sigmoid = 2
  }

  /// The MLP activation of the residual blocks (the LIFT head always uses exact GELU).
  public enum Activation: Int32 {
    /// Exact GELU, x * Phi(x) (OpenCLIP, timm, DINOv2).
    case gelu = 0
    /// QuickGELU, x * sigmoid(1.702 x) (OpenAI's CLIP weights).
    case quickGELU = 1

    public var name: String { self == .gelu ? "gelu" : "quick_gelu" }
    public init?(name: String) {
      switch name {
      case "gelu": self = .gelu
      case "quick_gelu": self = .quickGELU
      default: return nil
      }
    }
  }

  /// Where the final LayerNorm (`ln_post`) applies.
  public enum FinalNorm: Int32 {
    /// On every token, then pooling (OpenCLIP's default; timm's `norm`).
    case tokens = 0
    /// On the pooled feature (timm's `fc_norm` with average pooling; OpenCLIP's
    /// `final_ln_after_pool`).
    case pooled = 1

    public var name: String { self == .tokens ? "tokens" : "pooled" }
    public init?(name: String) {
      switch name {
      case "tokens": self = .tokens
      case "pooled": self = .pooled
      default: return nil
      }
    }
  }

  /// Arithmetic of the matrix products (torch.autocast-style mixed precision). Weights, AdamW
  /// moments, the loss, softmax and LayerNorm statistics and every reduction stay float32 in both.
  public enum Precision: Int32 {
    /// float32 everywhere (the reference numerics).
    case fp32 = 0
    /// Every matrix product (patch embedding, qkv, attention scores and values, projections, MLP,
    /// head, and their backward products) takes bfloat16 inputs rounded to nearest even, with
    /// float32 accumulation and float32 results. Needs a CPU with bfloat16 dot products
    /// (AVX512-BF16 or AMX).
    case bf16 = 1

    public var name: String { self == .fp32 ? "fp32" : "bf16" }
    public init?(name: String) {
      switch name {
      case "fp32": self = .fp32
      case "bf16": self = .bf16
      default: return nil
      }
    }
  }

  public var imageSize: Int
  public var channels: Int
  public var patch: Int
  public var width: Int
  public var depth: Int
  public var heads: Int
  /// MLP hidden size = mlpRatio * width.
  public var mlpRatio: Int
  /// Linear layers of the LIFT projection head (>= 1): Linear(width, D), then (GELU, Linear(D, D)) per extra layer.
  public var headLayers: Int
  /// Dimension D of the fixed text embeddings the image embeddings align with.
  public var textDim: Int
  public var pooling: Pooling
  public var objective: Objective
  /// Per-channel normalisation applied to uint8 images: (x / 255 - mean) / std.
  public var imageMean: [Float]
  public var imageStd: [Float]
  /// How the matrix products compute (training and `encode`).
  public var precision: Precision

  // What pretrained encoders of other families need (the defaults are LIFT's own model).
  /// The patch embedding has a bias (`visual.conv1.bias`; timm, DINOv2).
  public var patchBias = false
  /// `ln_pre` normalises the tokens before the first block (OpenCLIP, CLIP); timm's plain ViTs
  /// and DINOv2 have none.
  public var lnPre = true
  /// The blocks' MLP activation.
  public var activation = Activation.gelu
  /// LayerScale: each residual branch is scaled per channel by a learned vector
  /// (`ls_1.gamma`, `ls_2.gamma`; DeiT-III, DINOv2).
  public var layerScale = false
  /// Register tokens (learned, no positional embedding) after the class token (DINOv2 with
  /// registers). Token order: class, registers, patches.
  public var registers = 0
  /// Where `ln_post` applies.
  public var finalNorm = FinalNorm.tokens
  /// Epsilon of every LayerNorm of the tower (1e-5 in OpenCLIP and CLIP, 1e-6 in timm and DINOv2).
  public var layerNormEps: Float = 1e-5

  public var gridSize: Int { imageSize / patch }
  public var patches: Int { gridSize * gridSize }
  /// Tokens before the patches: the class token and the registers.
  public var prefixTokens: Int { 1 + registers }
  public var tokens: Int { patches + prefixTokens }
  public var headDim: Int { width / heads }
  public var hidden: Int { mlpRatio * width }
  public var patchDim: Int { channels * patch * patch }

  /// OpenAI CLIP's RGB statistics (OpenCLIP's defaults); grey images default to 0.5 / 0.5.
  static func defaultMean(_ channels: Int) -> [Float] {
    channels == 3 ? [0.481_454_66, 0.457_827_5, 0.408_210_73] : [Float](repeating: 0.5, count: channels)
  }
  static func defaultStd(_ channels: Int) -> [Float] {
    channels == 3 ? [0.268_629_54, 0.261_302_58, 0.275_777_11] : [Float](repeating: 0.5, count: channels)
  }

  public init(imageSize: Int, channels: Int = 3, patch: Int, width: Int, depth: Int, heads: Int,
              mlpRatio: Int = 4, headLayers: Int = 2, textDim: Int, pooling: Pooling = .average,
              objective: Objective = .contrastive, imageMean: [Float]? = nil, imageStd: [Float]? = nil,
              precision: Precision = .fp32) {
    self.imageSize = imageSize
    self.channels = channels
    self.patch = patch
    self.width = width
    self.depth = depth
    self.heads = heads
    self.mlpRatio = mlpRatio
    self.headLayers = headLayers
    self.textDim = textDim
    self.pooling = pooling
    self.objective = objective
    self.imageMean = imageMean ?? Self.defaultMean(channels)
    self.imageStd = imageStd ?? Self.defaultStd(channels)
    self.precision = precision
  }

  /// Named architectures. ViT-*/16 are the 224-px models of the paper's family; the small ones
  /// suit 28-32 px images (e.g. Fashion-MNIST, CIFAR).
  public static let presetNames = ["ViT-Ti/16", "ViT-S/16", "ViT-B/16", "ViT-XS/7-28", "ViT-XS/14-28", "ViT-XS/4-32"]

  public static func preset(_ name: String, textDim: Int) throws(LiftError) -> ModelConfig {
    switch name {
    case "ViT-Ti/16": return ModelConfig(imageSize: 224, patch: 16, width: 192, depth: 12, heads: 3, textDim: textDim)
    case "ViT-S/16": return ModelConfig(imageSize: 224, patch: 16, width: 384, depth: 12, heads: 6, textDim: textDim)
    case "ViT-B/16": return ModelConfig(imageSize: 224, patch: 16, width: 768, depth: 12, heads: 12, textDim: textDim)
    case "ViT-XS/7-28":
      return ModelConfig(imageSize: 28, channels: 1, patch: 7, width: 128, depth: 4, heads: 2, textDim: textDim)
    case "ViT-XS/14-28":
      return ModelConfig(imageSize: 28, channels: 1, patch: 14, width: 128, depth: 4, heads: 2, textDim: textDim)
    case "ViT-XS/4-32": return ModelConfig(imageSize: 32, patch: 4, width: 192, depth: 6, heads: 3, textDim: textDim)
    default:
      throw .argument("unknown preset '\(name)'; known: \(presetNames.joined(separator: ", "))")
    }
  }

  /// Throws an argument error naming the first inconsistent field.
  public func validate() throws(LiftError) {
    func require(_ ok: Bool, _ message: @autoclosure () -> String) throws(LiftError) {
      if !ok { throw .argument("model config: \(message())") }
    }
    try require(channels == 1 || channels == 3, "channels must be 1 or 3 (got \(channels))")
    try require(patch >= 1 && patch <= 64, "patch must be in [1, 64] (got \(patch))")
    try require(imageSize >= patch && imageSize <= 1024, "image size must be in [patch, 1024] (got \(imageSize))")
    try require(imageSize % patch == 0, "image size \(imageSize) is not divisible by patch \(patch)")
    try require(width >= 1 && width <= 8192, "width must be in [1, 8192] (got \(width))")
    try require(heads >= 1 && heads <= width, "heads must be in [1, width] (got \(heads))")
    try require(width % heads == 0, "width \(width) is not divisible by heads \(heads)")
    try require(depth >= 0 && depth <= 128, "depth must be in [0, 128] (got \(depth))")
    try require(mlpRatio >= 1 && mlpRatio <= 16, "mlp ratio must be in [1, 16] (got \(mlpRatio))")
    try require(headLayers >= 1 && headLayers <= 8, "head layers must be in [1, 8] (got \(headLayers))")
    try require(textDim >= 1 && textDim <= 65536, "text dim must be in [1, 65536] (got \(textDim))")
    try require(pooling != .average || patches >= 1, "average pooling needs at least one patch")
    try require(registers >= 0 && registers <= 64, "registers must be in [0, 64] (got \(registers))")
    try require(layerNormEps.isFinite && layerNormEps > 0 && layerNormEps <= 0.1,
                "LayerNorm eps must be in (0, 0.1] (got \(layerNormEps))")
    try require(imageMean.count == channels && imageStd.count == channels,
                "image mean/std need \(channels) values each")
    try require(imageMean.allSatisfy(\.isFinite), "image mean must be finite")
    try require(imageStd.allSatisfy { $0.isFinite && $0 > 0 }, "image std must be positive and finite")
  }
}
