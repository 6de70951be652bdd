// Number and time formatting for the `lift` command's output, without Foundation. Pure
// functions with no imports, so a test can compile this file alone
// (bindings/python/tests/test_format.py).

/// Seconds as M:SS or H:MM:SS (an ETA); "--:--" when unknown.
func formatDuration(_ s: Double) -> String {
  guard s.isFinite, s >= 0, s < 1e12 else { return "--:--" }
  let t = Int(s.rounded())
  return t >= 3600 ? "\(t / 3600):\(pad2((t / 60) % 60)):\(pad2(t % 60))" : "\(t / 60):\(pad2(t % 60))"
}

func pad2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// A fixed number of decimals, without Foundation.
func fixed(_ x: Double, _ digits: Int) -> String {
  // Beyond 1e15 the integer conversions below would overflow: Swift's own notation then.
  guard x.isFinite, abs(x) < 1e15, digits >= 0, digits <= 6 else { return "\(x)" }
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let r = (abs(x) * scale).rounded()
  var whole = String(Int(r / scale))
  let frac = Int(r.truncatingRemainder(dividingBy: scale))
  if x < 0 && r > 0 { whole = "-" + whole }
  if digits == 0 { return whole }
  let f = String(frac)
  return whole + "." + String(repeating: "0", count: digits - f.count) + f
}

/// Scientific notation with 2 decimals (learning rates). The mantissa is rounded first and
/// normalised after, so a value just below a power of ten (9.9996e-4) prints as 1.00e-03, not
/// as 10.00e-04.
func sci(_ x: Double) -> String {
  guard x != 0, x.isFinite else { return x == 0 ? "0" : "\(x)" }
  var (m, e) = decimalMantissa(abs(x))
  // Rounding to 2 decimals may carry into a new digit (9.996 -> 10.00): one more digit then.
  if (m * 100).rounded() >= 1000 {
    m /= 10
    e += 1
  }
  return (x < 0 ? "-" : "") + fixed(m, 2) + "e" + (e < 0 ? "-" : "+") + pad2(abs(e))
}

/// (m, e) with x = m * 10^e and m in [1, 10), for a finite x > 0.
func decimalMantissa(_ x: Double) -> (Double, Int) {
  var m = x, e = 0
  while m >= 10 { m /= 10; e += 1 }
  while m < 1 { m *= 10; e -= 1 }
  return (m, e)
}

func percent(_ x: Double) -> String { fixed(100 * x, 2) + "%" }
