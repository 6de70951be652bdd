import CHDF5
import CLiftABI
import Glibc

/// Owns one HDF5 identifier and closes it when released.
final class H5Object {
  enum Kind { case file, dataset, dataspace, datatype, propertyList }
  let id: hid_t
  let kind: Kind

  init(_ id: hid_t, _ kind: Kind) {
    self.id = id
    self.kind = kind
  }

  deinit {
    switch kind {
    case .file: H5Fclose(id)
    case .dataset: H5Dclose(id)
    case .dataspace: H5Sclose(id)
    case .datatype: H5Tclose(id)
    case .propertyList: H5Pclose(id)
    }
  }
}

/// HDF5 plumbing shared by the store reader and writer.
enum HDF5 {
  /// Silences HDF5's automatic error-stack printing on the calling thread (the setting is
  /// per-thread in thread-safe builds); errors are reported through `LiftError` instead.
  /// Call at the start of every operation that touches HDF5.
  static func prepareThread() {
    H5Eset_auto2(lift_h5e_default(), nil, nil)
  }

  /// The most specific description on the calling thread's HDF5 error stack, then clears it.
  static func takeErrorDescription() -> String {
    var descriptions: [String] = []
    withUnsafeMutablePointer(to: &descriptions) { box in
      _ = H5Ewalk2(lift_h5e_default(), H5E_WALK_DOWNWARD, { _, entry, client in
        if let entry, let desc = entry.pointee.desc, let client {
          client.assumingMemoryBound(to: [String].self).pointee.append(String(cString: desc))
        }
        return 0
      }, box)
    }
    H5Eclear2(lift_h5e_default())
    // Walking downward ends at the innermost frame, where the error was first detected.
    guard let innermost = descriptions.last(where: { !$0.isEmpty }) else { return "unknown HDF5 error" }
    if let outermost = descriptions.first, outermost != innermost, !outermost.isEmpty {
      return "\(outermost): \(innermost)"
    }
    return innermost
  }

  /// Little-endian IEEE 754 binary16, defined as h5py defines it so h5py maps it to numpy float16.
  static let halfLE: hid_t = {
    let t = H5Tcopy(lift_h5t_ieee_f32le())
    H5Tset_fields(t, 15, 10, 5, 0, 10)
    H5Tset_size(t, 2)
    H5Tset_ebias(t, 15)
    H5Tlock(t)
    return t
  }()

  /// Variable-length UTF-8 string type (h5py's `string_dtype()`).
  static let variableUTF8: hid_t = {
    let t = H5Tcopy(lift_h5t_c_s1())
    H5Tset_size(t, lift_h5t_variable())
    H5Tset_cset(t, H5T_CSET_UTF8)
    H5Tlock(t)
    return t
  }()

  /// Whether `path` names an existing regular file; a clear IO error otherwise.
  static func requireReadableFile(_ path: String) throws(LiftError) {
    var st = stat()
    guard stat(path, &st) == 0 else {
      throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))")
    }
    // Only regular files: opening a FIFO blocks until a writer appears, a device may never end.
    switch st.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: throw .io("cannot open '\(path)': is a directory")
    case S_IFIFO: throw .io("cannot open '\(path)': is a FIFO, not a regular file")
    default: throw .io("cannot open '\(path)': not a regular file")
    }
    guard access(path, R_OK) == 0 else {
      throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))")
    }
  }

  /// Opens an existing HDF5 file read-only.
  static func openReadOnly(_ path: String) throws(LiftError) -> H5Object {
    try requireReadableFile(path)
    let isHDF5 = H5Fis_hdf5(path)
    if isHDF5 == 0 { throw .io("'\(path)' is not an HDF5 file") }
    if isHDF5 < 0 { throw .io("cannot open '\(path)': \(takeErrorDescription())") }
    // No data sieving: scattered row reads would each pull a whole sieve block (64 KiB).
    let fapl = H5Object(H5Pcreate(lift_h5p_file_access()), .propertyList)
    H5Pset_sieve_buf_size(fapl.id, 0)
    let id = H5Fopen(path, lift_h5f_acc_rdonly(), fapl.id)
    if id < 0 { throw .io("cannot open '\(path)': \(takeErrorDescription())") }
    return H5Object(id, .file)
  }

  /// Whether `name` (a path inside the file, e.g. "embeddings" or "group/emb") resolves to an object.
  static func exists(_ file: hid_t, _ name: String) -> Bool {
    // H5Lexists only checks the last link: walk each prefix so a missing group is "absent", not an error.
    var prefix = ""
    for part in name.split(separator: "/", omittingEmptySubsequences: true) {
      prefix = prefix.isEmpty ? String(part) : prefix + "/" + part
      if H5Lexists(file, prefix, lift_h5p_default()) <= 0 {
        H5Eclear2(lift_h5e_default())
        return false
      }
    }
    return !prefix.isEmpty
  }

  /// Opens dataset `name` of `file`, or a not-found / format error naming both.
  static func openDataset(_ file: hid_t, _ name: String, path: String,
                          access: hid_t = lift_h5p_default()) throws(LiftError) -> H5Object {
    guard exists(file, name) else { throw .notFound("'\(path)' has no dataset '\(name)'") }
    let id = H5Dopen2(file, name, access)
    if id < 0 { throw .format("'\(name)' in '\(path)' is not a readable dataset: \(takeErrorDescription())") }
    return H5Object(id, .dataset)
  }

  /// The extent of a simple dataspace.
  static func dims(of dataset: hid_t) throws(LiftError) -> [UInt64] {
    let space = H5Dget_space(dataset)
    if space < 0 { throw .format("cannot read dataspace: \(takeErrorDescription())") }
    defer { H5Sclose(space) }
    let rank = H5Sget_simple_extent_ndims(space)
    if rank < 0 { throw .format("cannot read dataspace rank: \(takeErrorDescription())") }
    var dims = [hsize_t](repeating: 0, count: Int(rank))
    if rank > 0 { H5Sget_simple_extent_dims(space, &dims, nil) }
    return dims.map { UInt64($0) }
  }

  /// A readable name for a datatype ("int32", "uint8", "string", "float16"), for error messages.
  static func describe(type t: hid_t) -> String {
    let size = H5Tget_size(t)
    switch H5Tget_class(t) {
    case H5T_INTEGER:
      let signed = H5Tget_sign(t) == H5T_SGN_2
      return "\(signed ? "int" : "uint")\(size * 8)"
    case H5T_FLOAT: return "float\(size * 8)"
    case H5T_STRING: return "string"
    case H5T_COMPOUND: return "compound"
    case H5T_ENUM: return "enum"
    case H5T_ARRAY: return "array"
    case H5T_VLEN: return "vlen"
    case H5T_REFERENCE: return "reference"
    case H5T_OPAQUE: return "opaque"
    case H5T_BITFIELD: return "bitfield"
    default: return "unknown type"
    }
  }

  static func shapeString(_ dims: [UInt64]) -> String {
    "(" + dims.map(String.init).joined(separator: ", ") + ")"
  }

  /// Entry `index` of a rank-1 string dataset (variable- or fixed-length), as bytes without
  /// the terminating NUL (fixed-length: up to the first NUL; space padding removed).
  static func readString(_ dataset: hid_t, index local: Int64, name: String, path: String) throws(LiftError) -> [UInt8] {
    try readStrings(dataset, from: local, count: 1, name: name, path: path)[0]
  }

  /// Strings local ..< local + count of rank-1 string dataset `dataset` (UTF-8 bytes as stored).
  static func readStrings(_ dataset: hid_t, from local: Int64, count: Int, name: String, path: String) throws(LiftError) -> [[UInt8]] {
    guard count > 0 else { return [] }
    let fileType = H5Object(H5Dget_type(dataset), .datatype)
    let space = H5Object(H5Dget_space(dataset), .dataspace)
    var offset: [hsize_t] = [hsize_t(local)]
    var n: [hsize_t] = [hsize_t(count)]
    H5Sselect_hyperslab(space.id, H5S_SELECT_SET, &offset, nil, &n, nil)
    let memSpace = H5Object(H5Screate_simple(1, &n, nil), .dataspace)
    let memType = H5Object(H5Tcopy(lift_h5t_c_s1()), .datatype)
    H5Tset_cset(memType.id, H5Tget_cset(fileType.id))
    let failure = { () -> LiftError in
      .io("reading strings \(local) ..< \(local + Int64(count)) of '\(name)' in '\(path)': \(HDF5.takeErrorDescription())")
    }
    if H5Tis_variable_str(fileType.id) > 0 {
      H5Tset_size(memType.id, lift_h5t_variable())
      let pointers = try allocateElements(count, of: UnsafeMutablePointer<CChar>?.self, what: "\(count) string pointers")
      pointers.initialize(repeating: nil, count: count)
      defer { pointers.deallocate() }
      guard H5Dread(dataset, memType.id, memSpace.id, space.id, lift_h5p_default(), pointers) >= 0 else { throw failure() }
      defer { H5Dvlen_reclaim(memType.id, memSpace.id, lift_h5p_default(), pointers) }
      return (0..<count).map { i in
        pointers[i].map { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) } ?? []
      }
    }
    let size = H5Tget_size(fileType.id)
    guard size > 0 else { return [[UInt8]](repeating: [], count: count) }
    H5Tset_size(memType.id, size)
    H5Tset_strpad(memType.id, H5Tget_strpad(fileType.id))
    let total = try checkedCount(Int64(count), Int64(size), "strings of '\(name)'")
    let bytes = try allocateElements(total, of: UInt8.self, what: "\(count) strings of \(size) bytes")
    defer { bytes.deallocate() }
    guard H5Dread(dataset, memType.id, memSpace.id, space.id, lift_h5p_default(), bytes) >= 0 else { throw failure() }
    let spacePadded = H5Tget_strpad(fileType.id) == H5T_STR_SPACEPAD
    return (0..<count).map { i in
      var s = Array(UnsafeBufferPointer(start: bytes + i * size, count: size))
      if let nul = s.firstIndex(of: 0) { s.removeSubrange(nul...) }
      if spacePadded { while s.last == UInt8(ascii: " ") { s.removeLast() } }
      return s
    }
  }

  /// The scalar string attribute `name` of `object` (variable- or fixed-length, at most 64 KiB),
  /// or nil if there is none.
  /// The names of the attributes of `object` (at most 4096).
  static func attributeNames(_ object: hid_t) -> [String] {
    var names: [String] = []
    var buffer = [CChar](repeating: 0, count: 1024)
    for index in 0..<4096 {
      let n = H5Aget_name_by_idx(object, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), &buffer, buffer.count,
                                 lift_h5p_default())
      guard n >= 0 else { break }
      names.append(String(cString: buffer))
    }
    H5Eclear2(lift_h5e_default())
    return names
  }

  /// Every single-string attribute of the file's root group, read as `readStringAttribute`
  /// reads one (attributes of other types are left alone: liblift reads none).
  static func readRootStringAttributes(_ path: String) throws(LiftError) -> Int {
    let file = try openReadOnly(path)
    var read = 0
    for name in attributeNames(file.id) {
      let attribute = H5Aopen(file.id, name, lift_h5p_default())
      guard attribute >= 0 else { throw .io("cannot open attribute '\(name)' of '\(path)': \(takeErrorDescription())") }
      let type = H5Object(H5Aget_type(attribute), .datatype)
      let space = H5Object(H5Aget_space(attribute), .dataspace)
      let isString = H5Tget_class(type.id) == H5T_STRING && H5Sget_simple_extent_npoints(space.id) == 1
      H5Aclose(attribute)
      guard isString else { continue }
      _ = try readStringAttribute(file.id, name, path: path)
      read += 1
    }
    return read
  }

  static func readStringAttribute(_ object: hid_t, _ name: String, path: String) throws(LiftError) -> String? {
    guard H5Aexists(object, name) > 0 else {
      H5Eclear2(lift_h5e_default())
      return nil
    }
    let attribute = H5Aopen(object, name, lift_h5p_default())
    guard attribute >= 0 else { throw .io("cannot open attribute '\(name)' of '\(path)': \(takeErrorDescription())") }
    defer { H5Aclose(attribute) }
    let fileType = H5Object(H5Aget_type(attribute), .datatype)
    let space = H5Object(H5Aget_space(attribute), .dataspace)
    guard H5Tget_class(fileType.id) == H5T_STRING, H5Sget_simple_extent_npoints(space.id) == 1 else {
      throw .format("attribute '\(name)' of '\(path)' is not one string")
    }
    let memType = H5Object(H5Tcopy(lift_h5t_c_s1()), .datatype)
    H5Tset_cset(memType.id, H5Tget_cset(fileType.id))
    let failure = { () -> LiftError in .io("reading attribute '\(name)' of '\(path)': \(HDF5.takeErrorDescription())") }
    if H5Tis_variable_str(fileType.id) > 0 {
      H5Tset_size(memType.id, lift_h5t_variable())
      var pointer: UnsafeMutablePointer<CChar>? = nil
      guard H5Aread(attribute, memType.id, &pointer) >= 0 else { throw failure() }
      guard let pointer else { return "" }
      defer { H5free_memory(pointer) }
      return String(decoding: UnsafeRawBufferPointer(start: pointer, count: min(strlen(pointer), 1 << 16)), as: UTF8.self)
    }
    let size = H5Tget_size(fileType.id)
    guard size > 0, size <= 1 << 16 else { throw .format("attribute '\(name)' of '\(path)' holds a \(size)-byte string") }
    H5Tset_size(memType.id, size)
    H5Tset_strpad(memType.id, H5Tget_strpad(fileType.id))
    var bytes = [UInt8](repeating: 0, count: size)
    guard bytes.withUnsafeMutableBytes({ H5Aread(attribute, memType.id, $0.baseAddress) }) >= 0 else { throw failure() }
    if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
    while bytes.last == UInt8(ascii: " ") { bytes.removeLast() }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Every entry of a rank-1 string dataset `name` (for small tables such as class names).
  /// Entries of a rank-1 string dataset, counted without reading them.
  static func stringListCount(_ file: hid_t, _ name: String, path: String) throws(LiftError) -> Int64 {
    let ds = try openDataset(file, name, path: path)
    let dims = try HDF5.dims(of: ds.id)
    guard dims.count == 1 else { throw .format("'\(name)' in '\(path)' has rank \(dims.count); expected a list of strings") }
    let type = H5Object(H5Dget_type(ds.id), .datatype)
    guard H5Tget_class(type.id) == H5T_STRING else {
      throw .format("'\(name)' in '\(path)' has dtype \(describe(type: type.id)); expected strings")
    }
    guard dims[0] <= UInt64(Int64.max) else { throw .format("'\(name)' in '\(path)' claims \(dims[0]) entries") }
    return Int64(dims[0])
  }

  /// Every string of a rank-1 string dataset of at most `limit` entries (more is a format error,
  /// found before anything is read).
  static func readAllStrings(_ file: hid_t, _ name: String, path: String, limit: Int) throws(LiftError) -> [String] {
    let ds = try openDataset(file, name, path: path)
    let dims = try HDF5.dims(of: ds.id)
    guard dims.count == 1 else { throw .format("'\(name)' in '\(path)' has rank \(dims.count); expected a list of strings") }
    guard dims[0] <= UInt64(max(limit, 0)) else {
      throw .format("'\(name)' in '\(path)' has \(dims[0]) entries; expected at most \(limit)")
    }
    let type = H5Object(H5Dget_type(ds.id), .datatype)
    guard H5Tget_class(type.id) == H5T_STRING else {
      throw .format("'\(name)' in '\(path)' has dtype \(describe(type: type.id)); expected strings")
    }
    var out: [String] = []
    for i in 0..<Int64(dims[0]) {
      out.append(String(decoding: try readString(ds.id, index: i, name: name, path: path), as: UTF8.self))
    }
    return out
  }
}
