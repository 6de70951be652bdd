import Glibc

/// The safetensors format: 8-byte little-endian header length N, N bytes of JSON header
/// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
/// the raw little-endian tensor data; offsets are relative to the end of the header.
/// liblift writes float32 ("F32") tensors only.
enum SafeTensors {
  struct Entry {
    let name: String
    let shape: [Int]
    let data: UnsafePointer<Float>
    var count: Int { shape.reduce(1, *) }
  }

  /// Writes `entries` atomically: a temporary file next to `path`, fsync, rename over `path`,
  /// fsync of the folder. A failure at any point leaves any previous file at `path` intact.
  static func write(path: String, entries: [Entry], metadata: [(String, String)]) throws(LiftError) {
    guard !path.isEmpty else { throw .argument("the output path is empty") }
    try FileSystem.requireReplaceable(path)
    var header: [(String, JSON)] = [("__metadata__", .object(metadata.map { ($0.0, .string($0.1)) }))]
    var offset = 0
    for e in entries {
      let bytes = e.count * 4
      header.append((e.name, .object([
        ("dtype", .string("F32")),
        ("shape", .array(e.shape.map { .number(Double($0)) })),
        ("data_offsets", .array([.number(Double(offset)), .number(Double(offset + bytes))])),
      ])))
      offset += bytes
    }
    var headerBytes = Array(JSON.object(header).serialized.utf8)
    while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
    let temporary = "\(path).tmp-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io("cannot create '\(temporary)' (for '\(path)'): \(String(cString: strerror(errno)))") }
    do throws(LiftError) {
      let length = UInt64(headerBytes.count).littleEndian
      var prefix = [UInt8](repeating: 0, count: 8)
      for i in 0..<8 { prefix[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
      try writeAll(fd, prefix + headerBytes, temporary)
      for e in entries where e.count > 0 {
        try writeAll(fd, UnsafeRawPointer(e.data), e.count * 4, temporary)
      }
      guard fsync(fd) == 0 else { throw .io("cannot fsync '\(temporary)': \(String(cString: strerror(errno)))") }
      guard close(fd) == 0 else { throw .io("cannot close '\(temporary)': \(String(cString: strerror(errno)))") }
    } catch {
      close(fd)
      unlink(temporary)
      throw error
    }
    do throws(LiftError) {
      try FileSystem.requireReplaceable(path)  // again: it may have been replaced meanwhile
    } catch {
      unlink(temporary)
      throw error
    }
    guard rename(temporary, path) == 0 else {
      let reason = String(cString: strerror(errno))
      unlink(temporary)
      throw .io("cannot rename '\(temporary)' to '\(path)': \(reason)")
    }
    try FileSystem.fsyncDirectory(of: path)
  }

  /// Writes all of `bytes` to fd (retrying short writes and EINTR).
  static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws(LiftError) {
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
    defer { buffer.deallocate() }
    bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    try writeAll(fd, UnsafeRawPointer(buffer), bytes.count, path)
  }

  private static func writeAll(_ fd: Int32, _ data: UnsafeRawPointer, _ count: Int, _ path: String) throws(LiftError) {
    var done = 0
    while done < count {
      let n = Glibc.write(fd, data + done, min(count - done, 1 << 30))
      if n > 0 { done += n; continue }
      if n < 0 && errno == EINTR { continue }
      throw .io("writing '\(path)': \(String(cString: strerror(errno)))")
    }
  }

  /// A safetensors file opened for reading: the header is parsed and checked against the file
  /// size; tensor data is read on demand with pread.
  final class Reader {
    struct Tensor {
      let dtype: String
      let shape: [Int]
      let begin: Int
      let end: Int
    }

    let path: String
    let tensors: [String: Tensor]
    let names: [String]
    let metadata: [String: String]
    private let fd: Int32
    private let dataStart: Int

    init(path: String) throws(LiftError) {
      self.path = path
      try HDF5.requireReadableFile(path)
      // O_NONBLOCK: a path swapped for a FIFO after the check above must not block the open.
      let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
      guard fd >= 0 else { throw .io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
      self.fd = fd
      do throws(LiftError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io("cannot stat '\(path)': \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .io("cannot open '\(path)': not a regular file") }
        let size = Int(st.st_size)
        guard size >= 8 else { throw .format("'\(path)' is not a safetensors file: only \(size) bytes") }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        defer { scratch.deallocate() }
        try Reader.readAll(fd, scratch, 8, at: 0, path)
        let headerLength = UInt64(littleEndian: scratch.load(as: UInt64.self))
        guard headerLength >= 2, headerLength <= UInt64(size - 8), headerLength <= 100 << 20 else {
          throw .format("'\(path)' is not a safetensors file (header length \(headerLength), file size \(size))")
        }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Int(headerLength), alignment: 8)
        defer { raw.deallocate() }
        try Reader.readAll(fd, raw, Int(headerLength), at: 8, path)
        let header = Array(UnsafeRawBufferPointer(start: raw, count: Int(headerLength)))
        let json = try JSON.parse(header, what: "'\(path)' header")
        guard case .object(let members) = json else { throw .format("'\(path)' header is not a JSON object") }
        dataStart = 8 + Int(headerLength)
        let dataLength = size - dataStart
        var tensors: [String: Tensor] = [:]
        var names: [String] = []
        var metadata: [String: String] = [:]
        var maxEnd = 0
        for (name, value) in members {
          if name == "__metadata__" {
            guard case .object(let entries) = value else { throw .format("'\(path)': __metadata__ is not an object") }
            for (k, v) in entries {
              guard let s = v.string else { throw .format("'\(path)': metadata '\(k)' is not a string") }
              metadata[k] = s
            }
            continue
          }
          guard let dtype = value["dtype"]?.string, let shapeJSON = value["shape"]?.array,
                let offsets = value["data_offsets"]?.array, offsets.count == 2,
                let begin = offsets[0].int, let end = offsets[1].int else {
            throw .format("'\(path)': tensor '\(name)' lacks dtype, shape or data_offsets")
          }
          var shape: [Int] = []
          var elements = 1
          for d in shapeJSON {
            guard let v = d.int, v >= 0, v <= 1 << 40 else { throw .format("'\(path)': tensor '\(name)' has an invalid shape") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: v)
            guard !overflow, product <= Int.max / 8 else {
              throw .format("'\(path)': tensor '\(name)' has an impossible shape \(shapeJSON.compactMap(\.int))")
            }
            elements = product
            shape.append(v)
          }
          guard begin >= 0, begin <= end, end <= dataLength else {
            throw .format("'\(path)' is truncated or corrupt: tensor '\(name)' spans bytes \(begin)..<\(end) of a \(dataLength)-byte data section")
          }
          let elementSize = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1][dtype]
          // elements * elementSize cannot overflow: elements <= Int.max / 8.
          if let elementSize, elements * elementSize != end - begin {
            throw .format("'\(path)': tensor '\(name)' has \(end - begin) bytes for shape \(shape) of \(dtype)")
          }
          tensors[name] = Tensor(dtype: dtype, shape: shape, begin: begin, end: end)
          names.append(name)
          maxEnd = max(maxEnd, end)
        }
        guard maxEnd == dataLength else {
          throw .format("'\(path)' is corrupt: the data section has \(dataLength) bytes but the tensors use \(maxEnd)")
        }
        self.tensors = tensors
        self.names = names
        self.metadata = metadata
      } catch {
        close(fd)
        throw error
      }
    }

    deinit { close(fd) }

    /// Reads float32 tensor `name`, which must have `shape`, into `out`.
    func read(_ name: String, shape: [Int], into out: UnsafeMutablePointer<Float>) throws(LiftError) {
      guard let t = tensors[name] else { throw .format("'\(path)' has no tensor '\(name)'") }
      guard t.dtype == "F32" else { throw .format("'\(path)': tensor '\(name)' is \(t.dtype); expected F32") }
      guard t.shape == shape else {
        throw .shape("'\(path)': tensor '\(name)' has shape \(t.shape); the model expects \(shape)")
      }
      try Reader.readAll(fd, UnsafeMutableRawPointer(out), t.end - t.begin, at: dataStart + t.begin, path)
    }

    /// Reads tensor `name` of any float dtype (F32, F16, BF16, F64) into `out` as float32;
    /// `out` must hold its element count. Pretrained weights come in all four.
    func readConverted(_ name: String, into out: UnsafeMutablePointer<Float>) throws(LiftError) {
      guard let t = tensors[name] else { throw .format("'\(path)' has no tensor '\(name)'") }
      let count = t.shape.reduce(1, *)
      switch t.dtype {
      case "F32":
        try Reader.readAll(fd, UnsafeMutableRawPointer(out), t.end - t.begin, at: dataStart + t.begin, path)
      case "F16", "BF16", "F64":
        let raw = try allocateElements(max(t.end - t.begin, 1), of: UInt8.self, what: "tensor '\(name)' of '\(path)'")
        defer { raw.deallocate() }
        try Reader.readAll(fd, UnsafeMutableRawPointer(raw), t.end - t.begin, at: dataStart + t.begin, path)
        let bytes = UnsafeRawPointer(raw)
        switch t.dtype {
        case "F16": VectorOps.halfToFloat(bytes, out, count)
        case "BF16":
          for i in 0..<count {
            out[i] = Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
          }
        default:
          for i in 0..<count { out[i] = Float(bytes.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        }
      default:
        throw .format("'\(path)': tensor '\(name)' is \(t.dtype); expected a float type (F32, F16, BF16, F64)")
      }
    }

    private static func readAll(_ fd: Int32, _ dest: UnsafeMutableRawPointer, _ count: Int, at offset: Int,
                                _ path: String) throws(LiftError) {
      var done = 0
      while done < count {
        let n = pread(fd, dest + done, count - done, off_t(offset + done))
        if n > 0 { done += n; continue }
        if n == 0 { throw .format("'\(path)' is truncated (ends before byte \(offset + count))") }
        if errno == EINTR { continue }
        throw .io("reading '\(path)': \(String(cString: strerror(errno)))")
      }
    }
  }
}
