#!/usr/bin/env python3
"""Replays fuzzer findings and says where each one fails: in liblift's own code (a bug to fix)
or inside libhdf5 (outside liblift's control; see the README's threat model).

    python3 Fuzz/classify.py TARGET FILE...

Prints one line per file ("libhdf5: ..." or "liblift: ...") and exits 1 if any finding is in
liblift. A finding's place is the first stack frame that is neither the sanitizer/fuzzer runtime
nor the C or C++ runtime library; an out-of-memory finding is libhdf5's when libhdf5 is on the
stack (replayed with a malloc limit, so that an oversized allocation shows where it was made).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

BINARY = Path(__file__).resolve().parents[1] / ".build" / "fuzz" / "lift-fuzz"
RUNTIME = re.compile(r"compiler-rt|sanitizer|fuzzer::|libc\.so|libstdc\+\+|libgcc_s|/include/c\+\+/|/sysdeps/|string/|libpthread|\?\?\s*$")
FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (?:in )?(.*)$")


def place(target: str, path: str) -> str:
    env = dict(os.environ, LIFT_FUZZ_TARGET=target)
    # -malloc_limit_mb: a single oversized allocation is reported with its stack (an RSS-limit
    # report, by the fuzzer's watchdog thread, has none).
    r = subprocess.run([str(BINARY), "-timeout=20", "-rss_limit_mb=4096", "-malloc_limit_mb=4096", path],
                       capture_output=True, text=True, env=env, timeout=120)
    if r.returncode == 0:
        return "passes now"
    frames = [m.group(1) for m in map(FRAME.match, r.stderr.splitlines()) if m]
    if "out-of-memory" in r.stderr and any("libhdf5" in f for f in frames):
        # Memory use crossed the limit while libhdf5 was running (its own allocations).
        return "libhdf5: out of memory in " + next(f for f in frames if "libhdf5" in f)[:160]
    for line in r.stderr.splitlines():
        m = FRAME.match(line)
        if not m or RUNTIME.search(m.group(1)):
            continue
        return ("libhdf5: " if "libhdf5" in m.group(1) else "liblift: ") + m.group(1)[:160]
    return "liblift: no stack (" + (r.stderr.strip().splitlines() or ["?"])[-1][:160] + ")"


def main():
    target, files = sys.argv[1], sys.argv[2:]
    bad = False
    for f in files:
        where = place(target, f)
        print(f"{Path(f).name}: {where}")
        bad |= where.startswith("liblift")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
