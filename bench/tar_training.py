#!/usr/bin/env python3
"""A real ViT training from JPEG webdataset shards: how long the step waits for data.

    python3 bench/tar_training.py [--preset ViT-Ti/16] [--images 2048] [--steps 40] [--precision bf16]

Writes photo-like JPEGs of 256-640 px (Pillow, quality 90) into webdataset tar shards
({key}.jpg, {key}.txt, {key}.json) with 4096-d caption embeddings in a keyed store, then runs
`lift train` on them at 224 px with OpenCLIP's augmentation (random-resized crop, scale 0.9-1,
bicubic) and prints images/s and the share of step time spent waiting for data (from
metrics.jsonl and the run's summary), plus the disk bytes per image of each format.
"""
import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from decode_bench import photo  # noqa: E402


def make_data(folder: Path, images: int, shards: int, dim: int, seed: int = 0):
    import liblift

    rng = np.random.default_rng(seed)
    keys, total = [], 0
    per = images // shards
    (folder / "shards").mkdir()
    for s in range(shards):
        with tarfile.open(folder / "shards" / f"{s:05d}.tar", "w") as tar:
            for i in range(per):
                key = f"{s * per + i:09d}"
                h, w = (int(v) for v in rng.integers(256, 641, 2))
                data = photo(rng, h, w)
                total += len(data)
                for ext, payload in (("jpg", data), ("txt", f"caption {key}".encode()), ("json", b"{}")):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                keys.append(key)
    with liblift.StoreWriter(folder / "captions.h5", dim=dim, dtype="float16", keys=True) as w:
        for start in range(0, len(keys), 1024):
            chunk = keys[start:start + 1024]
            w.append(rng.standard_normal((len(chunk), dim)).astype(np.float32), keys=chunk)
    return total / len(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="ViT-Ti/16")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--lift", default=str(ROOT / "bin" / "lift"))
    args = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        jpeg_bytes = make_data(d, args.images, args.shards, 4096)
        run = subprocess.run([args.lift, "train", "--data", d / "shards", "--embeddings", d / "captions.h5", "--out", d / "run",
                              "--preset", args.preset, "--precision", args.precision, "--batch-size", str(args.batch_size),
                              "--steps", str(args.steps), "--augment", "--crop-scale", "0.9", "--filter", "bicubic",
                              "--log-every", "1", "--eval-every", "0"],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr)
        lines = [json.loads(l) for l in (d / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
        summary = next(l for l in run.stderr.splitlines() if l.startswith("trained"))
        # Steady state: after the first step (which also waits for the loader's first batch).
        steady = lines[-1]["train_seconds"] - lines[0]["train_seconds"]
        print(f"CPU: {cpu}; {args.preset} {args.precision}, batch {args.batch_size}, 224 px, {args.steps} steps, "
              f"{args.images} JPEGs of 256-640 px in {args.shards} tar shards, 4096-d captions")
        print(summary)
        print(f"data wait: {lines[-1]['data_wait_fraction'] * 100:.2f} % of step time over the run; "
              f"{(args.steps - 1) * args.batch_size / steady:.1f} images/s after the first step")
        raw = 224 * 224 * 3
        print(f"disk per image: JPEG {jpeg_bytes / 1024:.1f} KiB (in the tar shards), raw 224 px pixels {raw / 1024:.1f} KiB "
              f"({raw / jpeg_bytes:.1f}x)")


if __name__ == "__main__":
    main()
