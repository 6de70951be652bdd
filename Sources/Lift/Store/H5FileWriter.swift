import CHDF5
import Glibc

/// A new HDF5 file built from extensible datasets, written under a temporary name next to
/// `path` and moved into place by `finish()` (flush, fsync, rename or link, fsync of the
/// folder). Readers never see a partial file; a writer that is dropped before `finish()`
/// deletes its temporary file, and whatever was at `path` stays untouched.
final class H5FileWriter {
  let path: String
  let overwrite: Bool
  let temporaryPath: String
  private(set) var file: H5Object?
  private(set) var finished = false
  private var datasets: [ExtensibleDataset] = []

  init(path: String, overwrite: Bool) throws(LiftError) {
    guard !path.isEmpty else { throw .argument("output path is empty") }
    try FileSystem.requireReplaceable(path)
    var st = stat()
    if lstat(path, &st) == 0, !overwrite { throw .io("'\(path)' already exists (pass the overwrite flag to replace it)") }
    self.path = path
    self.overwrite = overwrite
    self.temporaryPath = "\(path).tmp-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    HDF5.prepareThread()
    let fid = H5Fcreate(temporaryPath, lift_h5f_acc_excl(), lift_h5p_default(), lift_h5p_default())
    guard fid >= 0 else {
      throw .io("cannot create '\(temporaryPath)' (for '\(path)'): \(HDF5.takeErrorDescription())")
    }
    file = H5Object(fid, .file)
  }

  deinit {
    if !finished {
      closeHandles()
      unlink(temporaryPath)
    }
  }

  private func closeHandles() {
    datasets.forEach { $0.close() }
    datasets = []
    file = nil
  }

  /// A chunked dataset of shape (0, rowShape...) that grows along rows, about 64 KiB a chunk.
  func createDataset(_ name: String, rowShape: [Int], type: hid_t) throws(LiftError) -> ExtensibleDataset {
    guard let file else { throw .state("the writer for '\(path)' is already finished") }
    // Parent groups ("images/pixels" needs "images").
    var prefix = ""
    for part in name.split(separator: "/").dropLast() {
      prefix = prefix.isEmpty ? String(part) : prefix + "/" + part
      if !HDF5.exists(file.id, prefix) {
        let g = H5Gcreate2(file.id, prefix, lift_h5p_default(), lift_h5p_default(), lift_h5p_default())
        guard g >= 0 else { throw .io("cannot create group '\(prefix)' in '\(temporaryPath)': \(HDF5.takeErrorDescription())") }
        H5Gclose(g)
      }
    }
    let rowBytes = max(1, rowShape.reduce(1, *) * H5Tget_size(type))
    let chunkRows = max(1, min(1 << 16, (64 << 10) / rowBytes))
    let rank = Int32(rowShape.count + 1)
    var current = [hsize_t(0)] + rowShape.map { hsize_t($0) }
    var maximum = [lift_h5s_unlimited()] + rowShape.map { hsize_t($0) }
    var chunk = [hsize_t(chunkRows)] + rowShape.map { hsize_t($0) }
    let space = H5Object(H5Screate_simple(rank, &current, &maximum), .dataspace)
    let dcpl = H5Object(H5Pcreate(lift_h5p_dataset_create()), .propertyList)
    H5Pset_chunk(dcpl.id, rank, &chunk)
    let id = H5Dcreate2(file.id, name, type, space.id, lift_h5p_default(), dcpl.id, lift_h5p_default())
    guard id >= 0 else { throw .io("cannot create dataset '\(name)' in '\(temporaryPath)': \(HDF5.takeErrorDescription())") }
    let dataset = ExtensibleDataset(H5Object(id, .dataset), name: name, rowShape: rowShape, path: temporaryPath)
    datasets.append(dataset)
    return dataset
  }

  /// Sets a string attribute on the root group.
  func setAttribute(_ name: String, _ value: String) throws(LiftError) {
    guard let file else { throw .state("the writer for '\(path)' is already finished") }
    let space = H5Object(H5Screate(H5S_SCALAR), .dataspace)
    let attr = H5Acreate2(file.id, name, HDF5.variableUTF8, space.id, lift_h5p_default(), lift_h5p_default())
    guard attr >= 0 else { throw .io("cannot create attribute '\(name)': \(HDF5.takeErrorDescription())") }
    defer { H5Aclose(attr) }
    let status = value.withCString { (p) -> herr_t in
      var pointer: UnsafePointer<CChar>? = p
      return H5Awrite(attr, HDF5.variableUTF8, &pointer)
    }
    guard status >= 0 else { throw .io("cannot write attribute '\(name)': \(HDF5.takeErrorDescription())") }
  }

  /// Flushes, closes, fsyncs and renames the file into place. The file is closed before the
  /// fsync (no reference to it is kept past `closeHandles`), so libhdf5's last writes at close
  /// are in the synced and renamed file.
  func finish() throws(LiftError) {
    guard !finished, let fileID = file?.id else { throw .state("the writer for '\(path)' is already finished") }
    HDF5.prepareThread()
    guard H5Fflush(fileID, H5F_SCOPE_GLOBAL) >= 0 else {
      throw .io("cannot flush '\(temporaryPath)': \(HDF5.takeErrorDescription())")
    }
    closeHandles()
    try FileSystem.fsyncFile(temporaryPath)
    let inode = WrittenFiles.inode(ofTemporary: temporaryPath)
    if overwrite {
      try FileSystem.requireReplaceable(path)
      guard rename(temporaryPath, path) == 0 else {
        throw .io("cannot rename '\(temporaryPath)' to '\(path)': \(String(cString: strerror(errno)))")
      }
    } else {
      // link() fails if path exists, so a file that appeared meanwhile is never replaced.
      guard link(temporaryPath, path) == 0 else {
        let reason = errno == EEXIST ? "it already exists" : String(cString: strerror(errno))
        finished = true  // keep the temporary file: it holds the data
        throw .io("cannot create '\(path)': \(reason); the data is kept in '\(temporaryPath)'")
      }
      unlink(temporaryPath)
    }
    try FileSystem.fsyncDirectory(of: path)
    finished = true
    WrittenFiles.finished(path, inode: inode)
  }
}

/// A dataset of an `H5FileWriter` that grows by appending rows.
final class ExtensibleDataset {
  let name: String
  let rowShape: [Int]
  let path: String
  private(set) var handle: H5Object?
  private(set) var rows: Int64 = 0

  init(_ handle: H5Object, name: String, rowShape: [Int], path: String) {
    self.handle = handle
    self.name = name
    self.rowShape = rowShape
    self.path = path
  }

  func close() { handle = nil }

  private func dims(_ rowCount: Int64) -> [hsize_t] { [hsize_t(rowCount)] + rowShape.map { hsize_t($0) } }

  /// Appends `count` rows of elements of `memType` from `data`. On failure the dataset keeps
  /// its previous rows.
  func append(_ data: UnsafeRawPointer, count: Int64, memType: hid_t) throws(LiftError) {
    guard let handle else { throw .state("dataset '\(name)' is closed") }
    guard count > 0 else { return }
    var newDims = dims(rows + count)
    guard H5Dset_extent(handle.id, &newDims) >= 0 else {
      throw .io("cannot grow '\(name)' in '\(path)' to \(rows + count) rows: \(HDF5.takeErrorDescription())")
    }
    let space = H5Object(H5Dget_space(handle.id), .dataspace)
    var offset = [hsize_t](repeating: 0, count: rowShape.count + 1)
    offset[0] = hsize_t(rows)
    var extent = dims(count)
    H5Sselect_hyperslab(space.id, H5S_SELECT_SET, &offset, nil, &extent, nil)
    let memSpace = H5Object(H5Screate_simple(Int32(extent.count), &extent, nil), .dataspace)
    guard H5Dwrite(handle.id, memType, memSpace.id, space.id, lift_h5p_default(), data) >= 0 else {
      var oldDims = dims(rows)
      H5Dset_extent(handle.id, &oldDims)
      throw .io("writing rows \(rows)..<\(rows + count) of '\(name)' in '\(path)': \(HDF5.takeErrorDescription())")
    }
    rows += count
  }

  /// Appends int64 values (a rank-1 integer dataset).
  func append(int64s values: [Int64]) throws(LiftError) {
    guard !values.isEmpty else { return }
    let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: values.count)
    defer { buffer.deallocate() }
    buffer.initialize(from: values, count: values.count)
    try append(UnsafeRawPointer(buffer), count: Int64(values.count), memType: lift_h5t_native_int64())
  }

  /// Appends variable-length UTF-8 strings (a rank-1 string dataset).
  func append(strings: [[UInt8]]) throws(LiftError) {
    guard !strings.isEmpty else { return }
    // Every string NUL-terminated in one buffer, and the array of pointers HDF5's vlen strings read.
    let total = strings.reduce(0) { $0 + $1.count + 1 }
    let blob = UnsafeMutablePointer<CChar>.allocate(capacity: total)
    defer { blob.deallocate() }
    let pointers = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: strings.count)
    defer { pointers.deallocate() }
    var offset = 0
    for (i, s) in strings.enumerated() {
      if !s.isEmpty {
        s.withUnsafeBytes { UnsafeMutableRawPointer(blob + offset).copyMemory(from: $0.baseAddress!, byteCount: s.count) }
      }
      blob[offset + s.count] = 0
      pointers[i] = UnsafePointer(blob + offset)
      offset += s.count + 1
    }
    try append(UnsafeRawPointer(pointers), count: Int64(strings.count), memType: HDF5.variableUTF8)
  }

  /// Removes rows beyond `count` (undoing appends of a failed multi-dataset operation).
  func truncate(to count: Int64) {
    guard let handle, count < rows else { return }
    var newDims = dims(count)
    if H5Dset_extent(handle.id, &newDims) >= 0 { rows = count }
  }
}
