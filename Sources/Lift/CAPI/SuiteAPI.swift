import CLiftABI
import Glibc

// Benchmark suites through the C ABI (lift.h, "Benchmark suites"): open a layout, list its texts,
// evaluate a model with a text store, read the result as JSON or a table.

extension lift_suite_options: SizedCStruct { static var cName: String { "lift_suite_options" } }
extension lift_suite_run_options: SizedCStruct { static var cName: String { "lift_suite_run_options" } }

/// A suite, its distinct texts (listed once) and its last result; `lock` serialises evaluation.
final class SuiteHandle {
  let suite: BenchmarkSuite
  let texts: [String]
  var result: SuiteResult?
  let lock = Lock()

  init(_ suite: BenchmarkSuite) {
    self.suite = suite
    texts = suite.texts
  }
}

@_cdecl("lift_suite_options_default")
public func cLiftSuiteOptionsDefault(_ out: UnsafeMutablePointer<lift_suite_options>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try requiredStruct(out, "out")
    out.pointee = lift_suite_options()
  }
}

@_cdecl("lift_suite_run_options_default")
public func cLiftSuiteRunOptionsDefault(_ out: UnsafeMutablePointer<lift_suite_run_options>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try requiredStruct(out, "out")
    var o = lift_suite_run_options()
    o.batch = 128
    o.filter = Int32(LIFT_FILTER_BICUBIC.rawValue)
    o.decode_threads = 1
    o.reduced_decode = 1
    out.pointee = o
  }
}

@_cdecl("lift_suite_open")
public func cLiftSuiteOpen(_ options: UnsafePointer<lift_suite_options>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> lift_status {
  capi { () throws(LiftError) in
    let out = try required(out, "out")
    let o = try requiredStruct(options, "options")
    let nameText = try requiredString(o.name, "options->name")
    guard let name = BenchmarkSuite.Name(rawValue: nameText) else {
      throw .argument("unknown suite '\(nameText)'; known: \(BenchmarkSuite.Name.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    var at = BenchmarkSuite.Location(root: try requiredString(o.root, "options->root"))
    at.annotations = o.annotations.map { String(cString: $0) }
    at.classes = o.classes.map { String(cString: $0) }
    at.templates = o.templates.map { String(cString: $0) }
    guard o.captions_per_image >= 0, o.captions_per_image <= Int64(Int32.max) else {
      throw .argument("options->captions_per_image must be >= 0 (0: all; got \(o.captions_per_image))")
    }
    at.captionsPerImage = Int(o.captions_per_image)
    if let split = o.split { at.split = String(cString: split) }
    out.pointee = makeHandle(SuiteHandle(try BenchmarkSuite.open(name, at: at)))
  }
}

@_cdecl("lift_suite_free")
public func cLiftSuiteFree(_ handle: OpaquePointer?) { releaseHandle(handle) }

@_cdecl("lift_suite_counts")
public func cLiftSuiteCounts(_ handle: OpaquePointer?, _ images: UnsafeMutablePointer<Int64>?,
                             _ texts: UnsafeMutablePointer<Int64>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SuiteHandle.self, "suite")
    images?.pointee = Int64(h.suite.images.count)
    texts?.pointee = Int64(h.texts.count)
  }
}

@_cdecl("lift_suite_text")
public func cLiftSuiteText(_ handle: OpaquePointer?, _ index: Int64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                           _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SuiteHandle.self, "suite")
    guard index >= 0, index < Int64(h.texts.count) else { throw .argument("text \(index) is out of range: the suite has \(h.texts.count)") }
    try copyCString(Array(h.texts[Int(index)].utf8), into: buffer, capacity: capacity, length: length, what: "text \(index)")
  }
}

@_cdecl("lift_suite_evaluate")
public func cLiftSuiteEvaluate(_ handle: OpaquePointer?, _ modelHandle: OpaquePointer?, _ storeHandle: OpaquePointer?,
                               _ options: UnsafePointer<lift_suite_run_options>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SuiteHandle.self, "suite")
    let model = try object(modelHandle, as: Model.self, "model")
    let store = try object(storeHandle, as: EmbeddingStore.self, "texts")
    let run = try suiteRunOptions(try requiredStruct(options, "options"))
    try h.lock.withLock { () throws(LiftError) in
      h.result = nil
      h.result = try SuiteRunner.run(h.suite, model: model, texts: store, options: run)
    }
  }
}

private func suiteRunOptions(_ o: lift_suite_run_options) throws(LiftError) -> SuiteRunner.Options {
  var run = SuiteRunner.Options()
  guard o.batch >= 1, o.batch <= 1 << 16 else { throw .argument("options->batch must be in [1, 65536] (got \(o.batch))") }
  run.encoding.batch = Int(o.batch)
  guard o.filter == Int32(LIFT_FILTER_BILINEAR.rawValue) || o.filter == Int32(LIFT_FILTER_BICUBIC.rawValue) else {
    throw .argument("options->filter must be LIFT_FILTER_BILINEAR or LIFT_FILTER_BICUBIC (got \(o.filter))")
  }
  run.encoding.filter = o.filter == Int32(LIFT_FILTER_BILINEAR.rawValue) ? .bilinear : .bicubic
  guard o.resize >= 0 else { throw .argument("options->resize must be >= 0 (got \(o.resize))") }
  run.encoding.resize = o.resize == 0 ? nil : Int(o.resize)
  guard o.decode_threads >= 1, o.decode_threads <= 256 else { throw .argument("options->decode_threads must be in [1, 256]") }
  run.encoding.decodeThreads = Int(o.decode_threads)
  run.encoding.reducedDecode = o.reduced_decode != 0
  run.imageCache = o.image_cache.map { String(cString: $0) }
  return run
}

@_cdecl("lift_suite_result")
public func cLiftSuiteResult(_ handle: OpaquePointer?, _ format: Int32, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                             _ length: UnsafeMutablePointer<Int>?) -> lift_status {
  capi { () throws(LiftError) in
    let h = try object(handle, as: SuiteHandle.self, "suite")
    try h.lock.withLock { () throws(LiftError) in
      guard let result = h.result else { throw .state("the suite has not been evaluated") }
      guard format == 0 || format == 1 else { throw .argument("format must be 0 (JSON) or 1 (table); got \(format)") }
      let text = format == 0 ? result.json.serialized : result.table
      try copyCString(Array(text.utf8), into: buffer, capacity: capacity, length: length, what: "the result")
    }
  }
}
