import CHDF5
import CLiftABI
import Glibc

/// Reads whole rows of an unfiltered dataset whose file type needs no conversion straight from
/// the file with pread, using HDF5 only for the layout metadata (dataset or chunk addresses).
///
/// Why: in HDF5 1.10 a hyperslab union of B scattered rows costs ~10 µs per row in selection
/// bookkeeping, several times the cost of the bytes themselves; shuffled mini-batches are exactly
/// that pattern. Datasets this cannot serve (compressed, needing type conversion such as
/// big-endian or float64 to float32, column-chunked, external or virtual storage, non-default
/// file drivers) keep the HDF5 hyperslab path.
final class DirectRowSource {
  enum Layout {
    /// Row r starts at address + r * rowBytes.
    case contiguous(address: UInt64)
    /// Chunks of `chunkRows` whole rows; chunk addresses are looked up in HDF5's chunk index on
    /// first use and kept in a direct-mapped cache of `cacheSlots` (chunk, address) pairs, so
    /// memory stays bounded however many chunks the dataset has.
    case chunked(chunkRows: Int64, base: UInt64, cache: UnsafeMutablePointer<(chunk: Int64, address: UInt64)>)
  }

  let fd: Int32
  let path: String
  let rowBytes: Int
  let layout: Layout
  private let dataset: hid_t
  private let rank: Int
  private static let unallocated = UInt64.max
  private static let cacheSlots = 1 << 15

  /// A direct source for `dataset` (shape `dims`; a row is everything after dims[0]) read as
  /// `memType`, or nil if the storage does not allow it: the file type must be identical to
  /// the memory type (so the bytes need no conversion), the default (sec2) driver, no filters
  /// or external storage, and contiguous layout or chunks of whole rows.
  static func make(file: hid_t, dataset: hid_t, path: String, fileType: hid_t, memType: hid_t,
                   dims: [UInt64]) -> DirectRowSource? {
    guard fileType >= 0, H5Tequal(fileType, memType) > 0, !dims.isEmpty else { return nil }
    let elementSize = H5Tget_size(memType)
    let rowElements = Int(dims.dropFirst().reduce(1, *))
    let fapl = H5Object(H5Fget_access_plist(file), .propertyList)
    guard fapl.id >= 0, H5Pget_driver(fapl.id) == H5FD_sec2_init() else { return nil }
    let fcpl = H5Object(H5Fget_create_plist(file), .propertyList)
    var userBlock: hsize_t = 0
    guard fcpl.id >= 0, H5Pget_userblock(fcpl.id, &userBlock) >= 0 else { return nil }
    let dcpl = H5Object(H5Dget_create_plist(dataset), .propertyList)
    guard dcpl.id >= 0, H5Pget_nfilters(dcpl.id) == 0, H5Pget_external_count(dcpl.id) == 0 else { return nil }
    let layout: Layout
    switch H5Pget_layout(dcpl.id) {
    case H5D_CONTIGUOUS:
      // H5Dget_offset is absolute (it includes the user block).
      let address = H5Dget_offset(dataset)
      guard address != HADDR_UNDEF_VALUE else { return nil }
      layout = .contiguous(address: UInt64(address))
    case H5D_CHUNKED:
      var chunk = [hsize_t](repeating: 0, count: dims.count)
      guard H5Pget_chunk(dcpl.id, Int32(dims.count), &chunk) == Int32(dims.count), chunk[0] > 0,
            zip(chunk.dropFirst(), dims.dropFirst()).allSatisfy({ UInt64($0) == $1 }) else { return nil }
      let cache = UnsafeMutablePointer<(chunk: Int64, address: UInt64)>.allocate(capacity: cacheSlots)
      cache.initialize(repeating: (-1, 0), count: cacheSlots)
      layout = .chunked(chunkRows: Int64(chunk[0]), base: UInt64(userBlock), cache: cache)
    default:
      return nil
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      if case .chunked(_, _, let cache) = layout { cache.deallocate() }
      return nil
    }
    return DirectRowSource(fd: fd, path: path, rowBytes: rowElements * elementSize, layout: layout, dataset: dataset,
                           rank: dims.count)
  }

  private init(fd: Int32, path: String, rowBytes: Int, layout: Layout, dataset: hid_t, rank: Int) {
    self.fd = fd
    self.path = path
    self.rowBytes = rowBytes
    self.layout = layout
    self.dataset = dataset
    self.rank = rank
  }

  deinit {
    close(fd)
    if case .chunked(_, _, let cache) = layout { cache.deallocate() }
  }

  /// Reads shard-local rows [start, start + count) into dest (count * rowBytes bytes). Returns
  /// false, having read nothing useful, if some of those rows lie in a chunk that was never
  /// written (its fill value is HDF5's business): the caller then uses the hyperslab path.
  func read(start: Int64, count: Int64, into dest: UnsafeMutableRawPointer) throws(LiftError) -> Bool {
    switch layout {
    case .contiguous(let address):
      try preadFully(dest, bytes: Int(count) * rowBytes, at: try position(address, row: start))
      return true
    case .chunked(let chunkRows, let base, let cache):
      var row = start
      var written = 0
      while row < start + count {
        let chunk = row / chunkRows
        let within = row - chunk * chunkRows
        let n = min(chunkRows - within, start + count - row)
        let slot = Int(chunk) & (Self.cacheSlots - 1)
        var address = cache[slot].address
        if cache[slot].chunk != chunk {
          address = lookUpChunk(chunk, chunkRows: chunkRows, base: base)
          cache[slot] = (chunk, address)
        }
        if address == Self.unallocated { return false }
        try preadFully(dest + written, bytes: Int(n) * rowBytes, at: try position(address, row: within))
        row += n
        written += Int(n) * rowBytes
      }
      return true
    }
  }

  private func lookUpChunk(_ chunk: Int64, chunkRows: Int64, base: UInt64) -> UInt64 {
    var offset = [hsize_t](repeating: 0, count: rank)
    offset[0] = hsize_t(chunk * chunkRows)
    var mask: UInt32 = 0
    var address: haddr_t = 0
    var size: hsize_t = 0
    guard H5Dget_chunk_info_by_coord(dataset, &offset, &mask, &address, &size) >= 0,
          address != HADDR_UNDEF_VALUE, size > 0 else {
      H5Eclear2(lift_h5e_default())
      return Self.unallocated
    }
    // Chunk addresses are relative to the file's base address (after any user block).
    return UInt64(address) + base
  }

  /// File offset of row `row` after `address` (an address from the file's layout metadata):
  /// overflow-checked, and below 2^62 so that pread's signed offsets hold it.
  private func position(_ address: UInt64, row: Int64) throws(LiftError) -> UInt64 {
    let (within, o1) = UInt64(row).multipliedReportingOverflow(by: UInt64(rowBytes))
    let (offset, o2) = address.addingReportingOverflow(within)
    guard !o1, !o2, offset < 1 << 62 else {
      throw .format("'\(path)' is corrupt: its layout metadata puts a row at an impossible file offset (address \(address))")
    }
    return offset
  }

  private func preadFully(_ dest: UnsafeMutableRawPointer, bytes: Int, at offset: UInt64) throws(LiftError) {
    guard UInt64(bytes) <= (1 << 62) - offset else {
      throw .format("'\(path)' is corrupt: its layout metadata puts rows beyond any file size")
    }
    var done = 0
    while done < bytes {
      let n = pread(fd, dest + done, bytes - done, off_t(offset) + off_t(done))
      if n > 0 {
        done += n
      } else if n == 0 {
        throw .io("'\(path)' ends before byte \(offset + UInt64(bytes)): the file is truncated")
      } else if errno != EINTR {
        throw .io("reading '\(path)': \(String(cString: strerror(errno)))")
      }
    }
  }
}

/// HADDR_UNDEF is a macro Swift cannot import: all ones.
let HADDR_UNDEF_VALUE = haddr_t.max
