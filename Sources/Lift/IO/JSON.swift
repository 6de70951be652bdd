/// A small JSON value with a strict parser and a compact writer: enough for safetensors
/// headers and liblift's config metadata, without Foundation.
public enum JSON: Equatable {
  case null
  case bool(Bool)
  case number(Double)
  case string(String)
  case array([JSON])
  /// Keys in document order (safetensors headers are read in order for error messages).
  case object([(String, JSON)])

  public static func == (a: JSON, b: JSON) -> Bool {
    switch (a, b) {
    case (.null, .null): return true
    case let (.bool(x), .bool(y)): return x == y
    case let (.number(x), .number(y)): return x == y
    case let (.string(x), .string(y)): return x == y
    case let (.array(x), .array(y)): return x == y
    case let (.object(x), .object(y)):
      return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    default: return false
    }
  }

  public subscript(key: String) -> JSON? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.0 == key }?.1
  }

  public var string: String? { if case .string(let s) = self { return s }; return nil }
  public var number: Double? { if case .number(let n) = self { return n }; return nil }
  public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }
  public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }

  /// An integer value, if the number is integral and in range.
  public var int: Int? {
    guard case .number(let n) = self, n == n.rounded(), abs(n) <= 9.007_199_254_740_992e15 else { return nil }
    return Int(n)
  }

  // MARK: Writing

  public var serialized: String {
    var out = ""
    write(into: &out)
    return out
  }

  private func write(into out: inout String) {
    switch self {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .number(let n):
      if n == n.rounded(), abs(n) < 1e15 { out += String(Int64(n)) } else { out += "\(n)" }
    case .string(let s): JSON.writeString(s, into: &out)
    case .array(let items):
      out += "["
      for (i, item) in items.enumerated() {
        if i > 0 { out += "," }
        item.write(into: &out)
      }
      out += "]"
    case .object(let members):
      out += "{"
      for (i, (k, v)) in members.enumerated() {
        if i > 0 { out += "," }
        JSON.writeString(k, into: &out)
        out += ":"
        v.write(into: &out)
      }
      out += "}"
    }
  }

  private static func writeString(_ s: String, into out: inout String) {
    out += "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if u.value < 0x20 {
          let hex = String(u.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    out += "\""
  }

  // MARK: Parsing

  /// Parses a complete JSON document; throws a format error naming the byte offset.
  public static func parse(_ bytes: [UInt8], what: String) throws(LiftError) -> JSON {
    var p = Parser(bytes: bytes, what: what)
    let value = try p.value(depth: 0)
    p.skipSpace()
    guard p.i == bytes.count else { throw p.error("unexpected data after the JSON value") }
    return value
  }

  private struct Parser {
    let bytes: [UInt8]
    let what: String
    var i = 0

    init(bytes: [UInt8], what: String) {
      self.bytes = bytes
      self.what = what
    }

    func error(_ message: String) -> LiftError { .format("\(what): invalid JSON at byte \(i): \(message)") }

    mutating func skipSpace() {
      while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    mutating func expect(_ literal: String) throws(LiftError) {
      for b in literal.utf8 {
        guard i < bytes.count, bytes[i] == b else { throw error("expected '\(literal)'") }
        i += 1
      }
    }

    mutating func value(depth: Int) throws(LiftError) -> JSON {
      guard depth < 64 else { throw error("nesting deeper than 64") }
      skipSpace()
      guard i < bytes.count else { throw error("unexpected end") }
      switch bytes[i] {
      case UInt8(ascii: "{"):
        i += 1
        var members: [(String, JSON)] = []
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
          skipSpace()
          guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a key string") }
          let key = try string()
          skipSpace()
          try expect(":")
          members.append((key, try value(depth: depth + 1)))
          skipSpace()
          guard i < bytes.count else { throw error("unterminated object") }
          if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
          if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
          throw error("expected ',' or '}'")
        }
      case UInt8(ascii: "["):
        i += 1
        var items: [JSON] = []
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
          items.append(try value(depth: depth + 1))
          skipSpace()
          guard i < bytes.count else { throw error("unterminated array") }
          if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
          if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
          throw error("expected ',' or ']'")
        }
      case UInt8(ascii: "\""): return .string(try string())
      case UInt8(ascii: "t"): try expect("true"); return .bool(true)
      case UInt8(ascii: "f"): try expect("false"); return .bool(false)
      case UInt8(ascii: "n"): try expect("null"); return .null
      default: return .number(try number())
      }
    }

    mutating func string() throws(LiftError) -> String {
      i += 1  // opening quote
      var scalars = String.UnicodeScalarView()
      var raw: [UInt8] = []
      func flush() { if !raw.isEmpty { scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars); raw = [] } }
      while true {
        guard i < bytes.count else { throw error("unterminated string") }
        let b = bytes[i]
        i += 1
        if b == UInt8(ascii: "\"") { break }
        if b < 0x20 { throw error("control character in string") }
        if b != UInt8(ascii: "\\") { raw.append(b); continue }
        guard i < bytes.count else { throw error("unterminated escape") }
        let e = bytes[i]
        i += 1
        flush()
        switch e {
        case UInt8(ascii: "\""): scalars.append("\"")
        case UInt8(ascii: "\\"): scalars.append("\\")
        case UInt8(ascii: "/"): scalars.append("/")
        case UInt8(ascii: "b"): scalars.append("\u{08}")
        case UInt8(ascii: "f"): scalars.append("\u{0C}")
        case UInt8(ascii: "n"): scalars.append("\n")
        case UInt8(ascii: "r"): scalars.append("\r")
        case UInt8(ascii: "t"): scalars.append("\t")
        case UInt8(ascii: "u"):
          var code = try hex4()
          if (0xD800..<0xDC00).contains(code) {
            try expect("\\u")
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("invalid surrogate pair") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
          scalars.append(scalar)
        default: throw error("invalid escape")
        }
      }
      flush()
      return String(scalars)
    }

    mutating func hex4() throws(LiftError) -> UInt32 {
      guard i + 4 <= bytes.count else { throw error("short \\u escape") }
      var v: UInt32 = 0
      for _ in 0..<4 {
        let c = bytes[i]
        i += 1
        let d: UInt32
        switch c {
        case 0x30...0x39: d = UInt32(c - 0x30)
        case 0x41...0x46: d = UInt32(c - 0x41 + 10)
        case 0x61...0x66: d = UInt32(c - 0x61 + 10)
        default: throw error("invalid hex digit")
        }
        v = v * 16 + d
      }
      return v
    }

    mutating func number() throws(LiftError) -> Double {
      let start = i
      if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
      while i < bytes.count, (0x30...0x39).contains(bytes[i]) || bytes[i] == UInt8(ascii: ".")
              || bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") || bytes[i] == UInt8(ascii: "+")
              || bytes[i] == UInt8(ascii: "-") { i += 1 }
      guard i > start, let v = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else {
        i = start
        throw error("invalid value")
      }
      return v
    }
  }
}
