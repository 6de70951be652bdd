#!/usr/bin/env python3
"""Decode + random-resized crop + resize to 224 px, images per second on one core: liblift
against Pillow + torchvision's RandomResizedCrop (the path OpenCLIP and LIFT train with), on the
same JPEG files, measured side by side in one run.

    python3 bench/decode_bench.py [--torch-python /work/venv-torch/bin/python] [--images 48] [--repeats 5]

The files are photo-like JPEGs (quality 90) made here with Pillow in three size classes. Both
sides use scale (0.9, 1.0), ratio (3/4, 4/3), bicubic. torchvision runs in the interpreter given
by --torch-python (a venv with torch and torchvision), one thread; its figure is given for the
PIL image (Pillow decode + crop + resize) and for the normalised tensor the model takes
(+ ToTensor + Normalize). liblift's output is the uint8 image its trainer takes (normalisation
happens inside the patch embedding). Prints medians over the repeats, the ratios, and how far
liblift's reduced-scale JPEG decode lands from Pillow's full decode + resize.
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"256-512 px": (256, 512), "1024-1536 px": (1024, 1536)}


def photo(rng, h, w):
    """Smooth colour fields with edges and mild noise: compresses like a photograph."""
    small = (rng.random((h // 24 + 2, w // 24 + 2, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    base += rng.integers(-6, 7, base.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def corpus(folder: Path, count: int, seed=0):
    rng = np.random.default_rng(seed)
    files = {}
    for name, (lo, hi) in SIZES.items():
        paths = []
        for i in range(count):
            h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
            p = folder / f"{name[:4].strip('-')}_{i:03d}.jpg"
            p.write_bytes(photo(rng, h, w))
            paths.append(str(p))
        files[name] = paths
    return files


# The torchvision side runs in another interpreter (the venv that has torch).
TORCH_SIDE = r'''
import io, json, sys, time
import torch
from PIL import Image
from torchvision import transforms
torch.set_num_threads(1)
torch.manual_seed(0)
files = json.loads(sys.argv[1])
crop = transforms.RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=transforms.InterpolationMode.BICUBIC)
tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                                          (0.26862954, 0.26130258, 0.27577711))])
blobs = [open(p, "rb").read() for p in files]
result = {}
for name, to_tensor in (("pil", False), ("tensor", True)):
    start = time.perf_counter()
    for b in blobs:
        im = crop(Image.open(io.BytesIO(b)).convert("RGB"))
        if to_tensor:
            tensor(im)
    result[name] = len(blobs) / (time.perf_counter() - start)
print(json.dumps(result))
'''


def liblift_rate(blobs, reduced, rng):
    import liblift

    # RandomResizedCrop's parameters, drawn as torchvision draws them (scale 0.9-1, ratio 3/4-4/3).
    def params(w, h):
        area = w * h
        for _ in range(10):
            target = area * rng.uniform(0.9, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
        return 0, 0, w, h
    sizes = [liblift.image_info(b) for b in blobs]
    crops = [params(s["width"], s["height"]) for s in sizes]
    start = time.perf_counter()
    for b, c in zip(blobs, crops):
        liblift.preprocess(b, 224, crop=c, filter="bicubic", reduced_decode=reduced)
    return len(blobs) / (time.perf_counter() - start)


def agreement(blobs):
    """Mean / 99th-percentile / max absolute difference (grey levels) between liblift with
    reduced-scale decode and Pillow's full decode + bicubic resize, centre view."""
    import liblift

    diffs = []
    for b in blobs:
        im = Image.open(io.BytesIO(b)).convert("RGB")
        w, h = im.size
        nw, nh = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
        left, top = int(round((nw - 224) / 2)), int(round((nh - 224) / 2))
        ref = np.asarray(im.resize((nw, nh), Image.BICUBIC).crop((left, top, left + 224, top + 224))).astype(int)
        diffs.append(np.abs(liblift.preprocess(b, 224, filter="bicubic", reduced_decode=True).astype(int) - ref))
    d = np.stack(diffs)
    exact = all(np.array_equal(liblift.preprocess(b, 224, filter="bicubic", reduced_decode=False),
                               np.asarray(torchvision_free_centre(b))) for b in blobs[:4])
    return float(d.mean()), float(np.percentile(d, 99)), int(d.max()), exact


def torchvision_free_centre(b):
    im = Image.open(io.BytesIO(b)).convert("RGB")
    w, h = im.size
    nw, nh = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
    left, top = int(round((nw - 224) / 2)), int(round((nh - 224) / 2))
    return im.resize((nw, nh), Image.BICUBIC).crop((left, top, left + 224, top + 224))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch-python", default="/work/venv-torch/bin/python",
                    help="an interpreter with torch and torchvision (skipped if missing)")
    ap.add_argument("--images", type=int, default=48, help="JPEGs per size class")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("LIFT_NUM_THREADS", "1")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; one thread per side; {args.repeats} interleaved repeats, medians")
    have_torch = Path(args.torch_python).exists()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        files = corpus(Path(d), args.images)
        print(f"{'JPEGs':>14} {'bytes/img':>10} {'liblift':>9} {'(exact)':>9} {'PIL+tv':>9} {'+tensor':>9} "
              f"{'ratio':>7} {'vs tensor':>9}")
        for name, paths in files.items():
            blobs = [open(p, "rb").read() for p in paths]
            runs = {"liblift": [], "exact": [], "pil": [], "tensor": []}
            for _ in range(args.repeats):
                runs["liblift"].append(liblift_rate(blobs, True, rng))
                runs["exact"].append(liblift_rate(blobs, False, rng))
                if have_torch:
                    out = subprocess.run([args.torch_python, "-c", TORCH_SIDE, json.dumps(paths)], check=True,
                                         capture_output=True, text=True).stdout
                    r = json.loads(out)
                    runs["pil"].append(r["pil"])
                    runs["tensor"].append(r["tensor"])
            m = {k: statistics.median(v) if v else float("nan") for k, v in runs.items()}
            size = statistics.mean(len(b) for b in blobs)
            print(f"{name:>14} {size:10.0f} {m['liblift']:9.1f} {m['exact']:9.1f} {m['pil']:9.1f} {m['tensor']:9.1f} "
                  f"{m['liblift'] / m['pil']:6.2f}x {m['liblift'] / m['tensor']:8.2f}x")
            mean, p99, worst, exact = agreement(blobs[:16])
            print(f"{'':>14} reduced-scale decode vs Pillow full decode + bicubic (centre 224): mean |diff| {mean:.2f}, "
                  f"99th percentile {p99:.0f}, max {worst}; without reduction bit-exact: {exact}")
    if not have_torch:
        print(f"({args.torch_python} not found: the torchvision columns are empty)")


if __name__ == "__main__":
    main()
