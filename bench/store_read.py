#!/usr/bin/env python3
"""Benchmark: shuffled mini-batch reads of float16 embeddings, liblift vs h5py, same run.

Reads a (rows x dim) float16 store in shuffled batches (every row once per epoch) through
liblift (`Store.read_rows`) and through h5py (the fastest h5py idiom for random rows: sort the
batch, one fancy-indexed read, then undo the sort), alternating the two so machine noise hits
both. Prints one JSON line per file layout with median rows/s of each and their ratio.

    python3 bench/store_read.py [--rows 100000] [--dim 1024] [--batch 1024] [--repeats 5]
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import h5py
import numpy as np

import liblift


def make_files(folder, rows, dim):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16)
    contiguous = os.path.join(folder, "h5py_contiguous.h5")
    with h5py.File(contiguous, "w") as f:
        f.create_dataset("embeddings", data=data)
    chunked = os.path.join(folder, "liblift_chunked.h5")
    with liblift.StoreWriter(chunked, dim, dtype="float16") as w:
        for start in range(0, rows, 8192):
            w.append(data[start:start + 8192].astype(np.float32))
    return data, {"h5py-contiguous": contiguous, "liblift-chunked": chunked}


def epoch_liblift(store, order, batch, out):
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        store.read_rows(idx, out=out[: len(idx)])


def epoch_h5py(ds, order, batch):
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        perm = np.argsort(idx)
        rows = ds[idx[perm]]  # h5py requires increasing indices
        out = np.empty((len(idx), rows.shape[1]), dtype=np.float32)
        out[perm] = rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5, help="epochs per reader (median reported)")
    ap.add_argument("--epoch-rows", type=int, default=20_480,
                    help="rows read per timed epoch (a shuffled subset of all rows)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as folder:
        data, files = make_files(folder, args.rows, args.dim)
        rng = np.random.default_rng(1)
        for layout, path in files.items():
            times = {"liblift": [], "h5py": []}
            with liblift.Store(path) as store, h5py.File(path, "r") as f:
                ds = f["embeddings"]
                out = np.empty((args.batch, args.dim), dtype=np.float32)
                check = rng.permutation(args.rows)[: args.batch]
                assert np.array_equal(store.read_rows(check), data[check].astype(np.float32))
                for rep in range(args.repeats + 1):  # first round warms the page cache
                    order = rng.permutation(args.rows)[: args.epoch_rows]
                    t0 = time.perf_counter()
                    epoch_liblift(store, order, args.batch, out)
                    t1 = time.perf_counter()
                    epoch_h5py(ds, order, args.batch)
                    t2 = time.perf_counter()
                    if rep > 0:
                        times["liblift"].append(t1 - t0)
                        times["h5py"].append(t2 - t1)
            lift_rate = args.epoch_rows / statistics.median(times["liblift"])
            h5py_rate = args.epoch_rows / statistics.median(times["h5py"])
            print(json.dumps({
                "benchmark": "shuffled-batch read", "layout": layout, "rows": args.rows, "dim": args.dim,
                "dtype": "float16", "batch": args.batch, "repeats": args.repeats,
                "liblift_rows_per_s": round(lift_rate), "h5py_rows_per_s": round(h5py_rate),
                "ratio": round(lift_rate / h5py_rate, 2), "h5py_version": h5py.__version__,
            }))


if __name__ == "__main__":
    main()
