import CLiftABI
import Glibc

// Plumbing shared by every @_cdecl export: error capture, argument validation, handles.

/// The calling thread's last error message (a malloc'd C string owned by a pthread key).
enum LastError {
  static let key: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
  }()

  /// Immutable after initialisation: shared read-only by every thread.
  nonisolated(unsafe) static let empty: UnsafePointer<CChar> = {
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    p[0] = 0
    return UnsafePointer(p)
  }()

  static func set(_ message: String) {
    let old = pthread_getspecific(key)
    pthread_setspecific(key, strdup(message))
    free(old)
  }

  static var current: UnsafePointer<CChar> {
    guard let p = pthread_getspecific(key) else { return empty }
    return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
  }
}

/// Runs the body of a C entry point: LIFT_OK, or the error's status with its message recorded.
@inline(__always)
func capi(_ body: () throws(LiftError) -> Void) -> lift_status {
  do {
    try body()
    return LIFT_OK
  } catch {
    LastError.set(error.message)
    return error.status
  }
}

/// A non-null pointer argument, or an argument error naming it.
@inline(__always)
func required<T>(_ p: UnsafePointer<T>?, _ name: @autoclosure () -> String) throws(LiftError) -> UnsafePointer<T> {
  guard let p else { throw .argument("\(name()) is NULL") }
  return p
}

@inline(__always)
func required<T>(_ p: UnsafeMutablePointer<T>?, _ name: @autoclosure () -> String) throws(LiftError) -> UnsafeMutablePointer<T> {
  guard let p else { throw .argument("\(name()) is NULL") }
  return p
}

@inline(__always)
func requiredRaw(_ p: UnsafeRawPointer?, _ name: @autoclosure () -> String) throws(LiftError) -> UnsafeRawPointer {
  guard let p else { throw .argument("\(name()) is NULL") }
  return p
}

/// A C string argument decoded as UTF-8.
func requiredString(_ p: UnsafePointer<CChar>?, _ name: @autoclosure () -> String) throws(LiftError) -> String {
  guard let p else { throw .argument("\(name()) is NULL") }
  return String(cString: p)
}

/// A size_t argument (imported as Int): must not exceed the signed range.
func requiredSize(_ n: Int, _ name: @autoclosure () -> String) throws(LiftError) -> Int {
  guard n >= 0 else { throw .argument("\(name()) is too large") }
  return n
}

// MARK: - Sized structs

/// A lift.h struct: it begins with `size_t struct_size`, which the caller sets to the sizeof it
/// was compiled with. This library knows its own size (`MemoryLayout.stride`, C's sizeof) and the
/// sizes of earlier releases of the same major version (`olderSizes`: fields are only ever
/// appended): it reads such a struct's prefix (later fields take their zero defaults) and writes
/// only that prefix back. Any other size is refused before the struct is touched.
protocol SizedCStruct {
  static var cName: String { get }
  /// sizeof this struct in earlier headers of this major version, oldest first.
  static var olderSizes: [Int] { get }
  var struct_size: Int { get set }
  init()
}

extension SizedCStruct {
  static var knownSize: Int { MemoryLayout<Self>.stride }
  static var olderSizes: [Int] { [] }

  /// The size of an earlier version of the struct that ended just before `field`.
  static func size<V>(before field: KeyPath<Self, V>) -> Int {
    let end = MemoryLayout<Self>.offset(of: field)!, align = MemoryLayout<Self>.alignment
    return (end + align - 1) / align * align
  }

  /// Checks the size field at `raw` (which every version of the struct begins with) and
  /// returns it.
  @discardableResult
  static func checkSize(at raw: UnsafeRawPointer, _ argument: String) throws(LiftError) -> Int {
    let declared = raw.load(as: Int.self)
    guard declared == knownSize || olderSizes.contains(declared) else {
      let sizes = (olderSizes + [knownSize]).map(String.init).joined(separator: " or ")
      throw .argument("\(argument): \(cName).struct_size is \(declared), but liblift \(liftVersion) knows only \(sizes) "
                      + "(sizeof(\(cName)) in its lift.h and earlier ones); set struct_size = sizeof(\(cName)) and build "
                      + "against a lift.h of this major version")
    }
    return declared
  }

  /// This struct with its size field set, ready to hand back to a caller.
  var sized: Self {
    var copy = self
    copy.struct_size = Self.knownSize
    return copy
  }
}

extension lift_model_config: SizedCStruct {
  static var cName: String { "lift_model_config" }
  /// 0.2 ended at `precision`.
  static var olderSizes: [Int] { [size(before: \.patch_bias)] }
}
extension lift_import_options: SizedCStruct { static var cName: String { "lift_import_options" } }
extension lift_tensor_info: SizedCStruct { static var cName: String { "lift_tensor_info" } }
extension lift_train_config: SizedCStruct {
  static var cName: String { "lift_train_config" }
  /// 0.2 ended at `batch_capacity`.
  static var olderSizes: [Int] { [size(before: \.lock_image)] }
}
extension lift_step_stats: SizedCStruct { static var cName: String { "lift_step_stats" } }
extension lift_dataset_info: SizedCStruct { static var cName: String { "lift_dataset_info" } }
extension lift_loader_options: SizedCStruct {
  static var cName: String { "lift_loader_options" }
  /// 0.3 ended at `start_batch`.
  static var olderSizes: [Int] { [size(before: \.filter)] }
}
extension lift_batch: SizedCStruct {
  static var cName: String { "lift_batch" }
  /// 0.3 ended at `wait_seconds`.
  static var olderSizes: [Int] { [size(before: \.skipped)] }
}
extension lift_source_info: SizedCStruct { static var cName: String { "lift_source_info" } }
extension lift_comm: SizedCStruct { static var cName: String { "lift_comm" } }

/// Name and size of every struct of lift.h (what lift_struct_size answers).
let sizedCStructs: [(name: String, size: Int)] = [
  (lift_model_config.cName, lift_model_config.knownSize), (lift_tensor_info.cName, lift_tensor_info.knownSize),
  (lift_train_config.cName, lift_train_config.knownSize), (lift_step_stats.cName, lift_step_stats.knownSize),
  (lift_dataset_info.cName, lift_dataset_info.knownSize), (lift_loader_options.cName, lift_loader_options.knownSize),
  (lift_batch.cName, lift_batch.knownSize), (lift_comm.cName, lift_comm.knownSize),
  (lift_import_options.cName, lift_import_options.knownSize), (lift_image_info.cName, lift_image_info.knownSize),
  (lift_preprocess_options.cName, lift_preprocess_options.knownSize), (lift_source_info.cName, lift_source_info.knownSize),
  (lift_suite_options.cName, lift_suite_options.knownSize), (lift_suite_run_options.cName, lift_suite_run_options.knownSize),
]

/// A caller's struct of a known size as the library writes it: only the caller's size.
struct SizedOutput<T: SizedCStruct> {
  let raw: UnsafeMutableRawPointer
  /// The caller's struct_size (at most T.knownSize).
  let size: Int

  /// Reading gives the caller's prefix (later fields zero); writing stores the first `size`
  /// bytes of the value, with struct_size set to the caller's.
  var pointee: T {
    get {
      var value = T()
      withUnsafeMutableBytes(of: &value) { $0.baseAddress!.copyMemory(from: raw, byteCount: size) }
      return value
    }
    nonmutating set {
      var value = newValue
      value.struct_size = size
      withUnsafeBytes(of: &value) { raw.copyMemory(from: $0.baseAddress!, byteCount: size) }
    }
  }
}

/// A struct the caller passes in: non-null, of a known size; fields it does not have are zero.
func requiredStruct<T: SizedCStruct>(_ p: UnsafePointer<T>?, _ name: @autoclosure () -> String) throws(LiftError) -> T {
  let p = try required(p, name())
  let size = try T.checkSize(at: UnsafeRawPointer(p), name())
  var value = T()
  withUnsafeMutableBytes(of: &value) { $0.baseAddress!.copyMemory(from: UnsafeRawPointer(p), byteCount: size) }
  value.struct_size = T.knownSize
  return value
}

/// A struct the library fills: non-null, of a known size (checked before the call does anything).
func requiredStruct<T: SizedCStruct>(_ p: UnsafeMutablePointer<T>?,
                                     _ name: @autoclosure () -> String) throws(LiftError) -> SizedOutput<T> {
  let p = try required(p, name())
  return SizedOutput(raw: UnsafeMutableRawPointer(p), size: try T.checkSize(at: UnsafeRawPointer(p), name()))
}

/// An optional struct the library fills: NULL, or of a known size.
func optionalStruct<T: SizedCStruct>(_ p: UnsafeMutablePointer<T>?,
                                     _ name: @autoclosure () -> String) throws(LiftError) -> SizedOutput<T>? {
  guard let p else { return nil }
  return SizedOutput(raw: UnsafeMutableRawPointer(p), size: try T.checkSize(at: UnsafeRawPointer(p), name()))
}

// MARK: - Handles

/// A retained Swift object as an opaque C handle.
func makeHandle(_ object: AnyObject) -> OpaquePointer {
  OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

/// The object behind a handle; NULL and handles of another type are argument errors.
func object<T: AnyObject>(_ handle: OpaquePointer?, as type: T.Type, _ name: String) throws(LiftError) -> T {
  guard let handle else { throw .argument("\(name) handle is NULL") }
  guard let object = Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue() as? T else {
    throw .argument("handle passed as \(name) is a different kind of liblift handle")
  }
  return object
}

/// Releases the reference a handle holds (NULL is a no-op).
func releaseHandle(_ handle: OpaquePointer?) {
  guard let handle else { return }
  Unmanaged<AnyObject>.fromOpaque(UnsafeRawPointer(handle)).release()
}

/// Copies bytes as a NUL-terminated string into a caller buffer of `capacity` bytes. Sets
/// *length to the byte count (without NUL); LIFT_ERR_BUFFER (nothing copied) if it does not fit.
func copyCString(_ bytes: [UInt8], into buffer: UnsafeMutablePointer<CChar>?, capacity: Int,
                 length: UnsafeMutablePointer<Int>?, what: String) throws(LiftError) {
  let cap = try requiredSize(capacity, "cap")
  length?.pointee = bytes.count
  guard cap >= bytes.count + 1 else {
    throw .buffer("\(what) needs \(bytes.count + 1) bytes; the buffer holds \(cap)")
  }
  let buffer = try required(buffer, "buf")
  if !bytes.isEmpty {
    bytes.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
  }
  buffer[bytes.count] = 0
}
