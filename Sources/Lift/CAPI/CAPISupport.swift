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
