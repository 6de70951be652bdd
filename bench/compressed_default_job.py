#!/usr/bin/env python3
"""The default job (Fashion-MNIST) from compressed image shards against raw pixels.

    python3 bench/compressed_default_job.py [--data-dir data] [--steps N]

Takes the default job's dataset files (data/fashion-mnist/{train,test}.h5, written by
`lift train` on first use), writes copies whose images are PNG files (Pillow, lossless) in
images/encoded instead of images/pixels, trains the default model on both with the same
settings, and prints the zero-shot accuracy, training time and disk bytes per image of each.
PNG is lossless and liblift decodes it exactly, so both runs see the same pixels: the models are
expected to be bit-identical.
"""
import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def encode_copy(raw: Path, out: Path):
    """`raw` with images/pixels replaced by PNG files in images/encoded (+ offsets)."""
    with h5py.File(raw) as src, h5py.File(out, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and name != "images/pixels":
                src.copy(obj, dst, name=name)
        src.visititems(copy)
        pixels = src["images/pixels"]
        blobs = []
        for i in range(pixels.shape[0]):
            image = pixels[i]
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
            blobs.append(buffer.getvalue())
        sizes = np.array([len(b) for b in blobs], np.int64)
        dst.create_dataset("images/encoded", data=np.frombuffer(b"".join(blobs), np.uint8), chunks=(1 << 16,))
        dst["images/encoded_offsets"] = np.concatenate([[0], np.cumsum(sizes)])
        dst.attrs["channels"] = str(pixels.shape[3])
        return pixels.shape[0], int(np.prod(pixels.shape[1:])), float(sizes.mean())


def train(lift, data, test, out, steps):
    args = [lift, "train", "--data", data, "--eval-data", test, "--out", out, "--quiet"]
    if steps:
        args += ["--steps", str(steps)]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(run.stderr)
    result = json.loads((Path(out) / "eval.json").read_text())
    seconds = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if "train_seconds" in l][-1]
    return result["zero_shot"]["top1"], seconds["train_seconds"], (Path(out) / "model.safetensors").read_bytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--steps", type=int, default=None, help="shorten the job (default: the full default job)")
    ap.add_argument("--lift", default=str(ROOT / "bin" / "lift"))
    args = ap.parse_args()
    folder = Path(args.data_dir) / "fashion-mnist"
    if not (folder / "train.h5").exists():
        subprocess.run([args.lift, "prepare-fashion-mnist", "--data-dir", args.data_dir], check=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n, raw_bytes, png_bytes = encode_copy(folder / "train.h5", d / "train-png.h5")
        encode_copy(folder / "test.h5", d / "test-png.h5")
        a = train(args.lift, folder / "train.h5", folder / "test.h5", d / "raw", args.steps)
        b = train(args.lift, d / "train-png.h5", d / "test-png.h5", d / "png", args.steps)
    print(f"CPU: {cpu}; the default job{'' if not args.steps else f' shortened to {args.steps} steps'}, {n} training images")
    print(f"{'images':>10} {'bytes/img':>10} {'top-1':>8} {'train s':>8}")
    print(f"{'raw':>10} {raw_bytes:10.0f} {a[0] * 100:7.2f}% {a[1]:8.1f}")
    print(f"{'PNG':>10} {png_bytes:10.0f} {b[0] * 100:7.2f}% {b[1]:8.1f}")
    print(f"models bit-identical: {a[2] == b[2]}")


if __name__ == "__main__":
    main()
