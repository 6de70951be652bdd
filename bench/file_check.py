#!/usr/bin/env python3
"""What reading an untrusted file in a separate process first costs.

    python3 bench/file_check.py [--gib 1] [--repeats 3] [--dir /tmp]

Writes an embedding store of about --gib GiB (float32, 1024-d, with keys), then times, in turns,
--repeats times each: one full read in this process (liblift.read_file, the same read the check
makes) and liblift.check_file (that read in a child process: spawn, load liblift, read, verdict).
The page cache is warm for both (the file was just written). Prints the medians and their ratio.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import liblift


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    dim, chunk = 1024, 16384
    rows = int(args.gib * (1 << 30) / (dim * 4)) // chunk * chunk
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        path = Path(work) / "store.h5"
        with liblift.StoreWriter(path, dim=dim, dtype="float32", keys=True) as w:
            rng = np.random.default_rng(0)
            for first in range(0, rows, chunk):
                w.append(rng.standard_normal((chunk, dim), dtype=np.float32),
                         keys=[str(first + i) for i in range(chunk)])
        size = path.stat().st_size
        times = {"read in this process": [], "check in a child process": []}
        for _ in range(args.repeats):
            for name, call in [("read in this process", lambda: liblift.read_file(path)),
                               ("check in a child process", lambda: liblift.check_file(path, timeout=3600))]:
                start = time.perf_counter()
                summary = call()
                times[name].append(time.perf_counter() - start)
        print(f"{path.name}: {size / (1 << 30):.2f} GiB, {summary}; {args.repeats} interleaved repeats, medians")
        for name, values in times.items():
            print(f"  {name:26s} {statistics.median(values):7.2f} s  (range {min(values):.2f}-{max(values):.2f})")
        ratio = statistics.median(times["check in a child process"]) / statistics.median(times["read in this process"])
        print(f"  check / read: {ratio:.2f}")


if __name__ == "__main__":
    main()
