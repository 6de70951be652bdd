import CHDF5
import Glibc

/// What kind of liblift file a path holds, judged from its content rather than its name: the
/// first bytes tell a safetensors file from an HDF5 file, and an HDF5 file's datasets tell its
/// layout (README: "The embedding store", "Datasets").
public enum LiftFileKind: Sendable, Equatable {
  /// A model or a training checkpoint.
  case safetensors
  /// An image-caption dataset (`images/pixels` or `images/encoded`).
  case dataset
  /// Caption embeddings and class prompts without images (`captions/embeddings`), the layout of
  /// assets/fashion-mnist-captions.h5 (see `CaptionsFile`).
  case captions
  /// An embedding store (`embeddings`).
  case store
  /// Pooled features of a locked tower (`features`, root attribute `lift.kind` = "feature_cache";
  /// see `FeatureCache`).
  case featureCache
  /// An HDF5 file with none of those datasets.
  case otherHDF5
  /// Neither safetensors nor HDF5.
  case unknown

  /// The kind of the file at `path`; an IO error if it cannot be read.
  public static func of(path: String) throws(LiftError) -> LiftFileKind {
    try HDF5.requireReadableFile(path)
    if try isSafeTensors(path) { return .safetensors }
    HDF5.prepareThread()
    guard H5Fis_hdf5(path) > 0 else {
      H5Eclear2(lift_h5e_default())
      return .unknown
    }
    let file = try HDF5.openReadOnly(path)
    // An image-caption dataset also holds captions/embeddings: look for the images first.
    for (name, kind) in [("images/pixels", LiftFileKind.dataset), ("images/encoded", .dataset), ("captions/embeddings", .captions),
                         ("embeddings", .store)]
      where HDF5.exists(file.id, name) {
      return kind
    }
    if HDF5.exists(file.id, "features"),
       (try? HDF5.readStringAttribute(file.id, "lift.kind", path: path)) == FeatureCache.kind {
      return .featureCache
    }
    return .otherHDF5
  }

  /// Whether the file starts as safetensors does: an 8-byte little-endian header length N that
  /// fits the file, then the header's JSON object.
  public static func isSafeTensors(_ path: String) throws(LiftError) -> Bool {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    var head = [UInt8](repeating: 0, count: 9)
    guard fstat(fd, &st) == 0, pread(fd, &head, 9, 0) == 9 else { return false }
    let length = head[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    return length >= 2 && length <= UInt64(st.st_size) - 8 && head[8] == UInt8(ascii: "{")
  }
}
