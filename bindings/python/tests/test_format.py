"""The `lift` command's number formatting (Sources/LiftCLI/Format.swift), compiled alone with a
small driver: the file has no imports, so this needs swiftc but not the package build."""
import shutil
import subprocess

import pytest

from cli_helpers import ROOT

DRIVER = """
for line in CommandLine.arguments.dropFirst() {
  let parts = line.split(separator: " ")
  let x = Double(String(parts[1]))!
  switch parts[0] {
  case "sci": print(sci(x))
  case "fixed2": print(fixed(x, 2))
  case "fixed0": print(fixed(x, 0))
  case "percent": print(percent(x))
  default: print(formatDuration(x))
  }
}
"""

CASES = [
    # The mantissa is rounded before it is normalised: no "10.00e-04".
    ("sci", "9.9996e-4", "1.00e-03"), ("sci", "-9.9996e-4", "-1.00e-03"), ("sci", "9.995e-4", "1.00e-03"),
    ("sci", "9.9949e-4", "9.99e-04"), ("sci", "0.001", "1.00e-03"), ("sci", "3e-3", "3.00e-03"),
    ("sci", "9.9999", "1.00e+01"), ("sci", "99.996", "1.00e+02"), ("sci", "1", "1.00e+00"), ("sci", "0.5", "5.00e-01"),
    ("sci", "2.5e-7", "2.50e-07"), ("sci", "1e100", "1.00e+100"), ("sci", "1.7976931348623157e308", "1.80e+308"),
    ("sci", "5e-324", "4.94e-324"), ("sci", "0", "0"), ("sci", "inf", "inf"), ("sci", "nan", "nan"),
    ("fixed2", "9.999", "10.00"), ("fixed2", "-0.001", "0.00"), ("fixed2", "-2.345", "-2.35"), ("fixed2", "0.05", "0.05"),
    ("fixed0", "-1.5", "-2"), ("fixed2", "1e16", "1e+16"),
    ("percent", "0.8926", "89.26%"), ("percent", "1", "100.00%"),
    ("duration", "59.4", "0:59"), ("duration", "3599.6", "1:00:00"), ("duration", "3725", "1:02:05"),
    ("duration", "-1", "--:--"), ("duration", "inf", "--:--"),
]


@pytest.fixture(scope="module")
def formatter(tmp_path_factory):
    swiftc = shutil.which("swiftc")
    if swiftc is None:
        pytest.skip("swiftc is not installed")
    d = tmp_path_factory.mktemp("format")
    (d / "main.swift").write_text(DRIVER)
    exe = d / "format"
    subprocess.run([swiftc, ROOT / "Sources" / "LiftCLI" / "Format.swift", d / "main.swift", "-lm", "-o", exe],
                   check=True, capture_output=True)
    return exe


def test_formatting_edge_cases(formatter):
    out = subprocess.run([formatter, *(f"{f} {x}" for f, x, _ in CASES)], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    got = [(f, x, o) for (f, x, _), o in zip(CASES, out)]
    assert got == CASES
