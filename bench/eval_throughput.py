#!/usr/bin/env python3
"""Evaluation throughput: liblift against PyTorch/OpenCLIP's encode_image, interleaved in one run.

For ViT-Ti/16 and ViT-S/16 at 224 px (random weights, 512-d embeddings), fp32 and bf16:

  tower    images/s of the image tower alone on a batch of 64 decoded, preprocessed images:
           liblift Model.encode (uint8 input, normalisation included) vs OpenCLIP
           VisionTransformer + normalize (bench/torch_encode.py --mode model)
  files    images/s of a whole evaluation from JPEG files (640x480, as COCO's): liblift's
           `lift eval --suite captions` (decode, resize, crop, encode, metrics) vs PIL + OpenCLIP's
           eval transform + a torch DataLoader with one worker + encode_image

Each configuration runs in its own process; the configurations take turns --repeats times and the
table gives medians. Both sides use the machine's two cores.

    python3 bench/eval_throughput.py --torch-python /path/to/venv/bin/python [--repeats 3]

PyTorch lives in its own virtual environment (pip install torch torchvision open_clip_torch);
liblift's release build (make) and its Python bindings are used from this checkout. Not run in CI.
"""
import argparse
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
sys.path.insert(0, str(ROOT / "bindings" / "python"))
os.environ.setdefault("LIBLIFT_PATH", str(ROOT / ".build" / "release" / "liblift.so"))
import liblift  # noqa: E402

LIFT = ROOT / "bin" / "lift"
MODELS = ["ViT-Ti/16", "ViT-S/16"]
DIM = 512


def make_data(folder: Path, count: int):
    """count photo-like 640x480 JPEGs (smooth gradients plus noise), a captions JSONL, a text store."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    yy, xx = np.mgrid[0:480, 0:640]
    lines = []
    for i in range(count):
        base = (np.sin(xx / (20 + i % 17)) + np.cos(yy / (15 + i % 11))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 12, (480, 640, 3)) + rng.integers(-40, 40, 3), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / "images" / f"{i:06d}.jpg", quality=90)
        lines.append(json.dumps({"image": f"{i:06d}.jpg", "caption": f"caption {i}"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "files.txt").write_text("\n".join(str(folder / "images" / f"{i:06d}.jpg") for i in range(count)) + "\n")
    with liblift.StoreWriter(folder / "texts.h5", dim=DIM, dtype="float32", captions=True) as w:
        w.append(rng.standard_normal((count, DIM)).astype(np.float32), captions=[f"caption {i}" for i in range(count)])
    for name in MODELS:
        liblift.Model(liblift.ModelConfig.preset(name, text_dim=DIM)).save(folder / (name.replace("/", "-") + ".safetensors"))


def liblift_tower(folder: Path, model: str, precision: str, images: int) -> float:
    code = f"""
import json, time, numpy as np, liblift
m = liblift.Model.load({str(folder / (model.replace('/', '-') + '.safetensors'))!r})
c = m.config; c.precision = {precision!r}
m2 = liblift.Model(c); m2.parameters[:] = m.parameters
x = np.random.default_rng(0).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8)
m2.encode(x[:4])
t = time.perf_counter(); n = 0
while n < {images}:
    m2.encode(x); n += 64
print(json.dumps({{"images_per_s": n / (time.perf_counter() - t)}}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bindings" / "python"))
    return run_json([sys.executable, "-c", code], env=env)


def liblift_files(folder: Path, model: str, precision: str) -> float:
    r = subprocess.run([str(LIFT), "eval", "--model", folder / (model.replace("/", "-") + ".safetensors"), "--precision", precision,
                        "--suite", "captions", "--root", folder / "images", "--annotations", folder / "captions.jsonl",
                        "--texts", folder / "texts.h5", "--batch", "64", "--json", folder / "r.json", "--overwrite"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"lift eval failed:\n{r.stderr}")
    result = json.loads((folder / "r.json").read_text())
    return result["images"] / result["seconds"]


def torch_run(python: str, model: str, precision: str, images: int, files: Path | None) -> float:
    cmd = [python, str(ROOT / "bench" / "torch_encode.py"), "--model", model, "--precision", precision, "--dim", str(DIM),
           "--images", str(images)] + (["--files", str(files)] if files else [])
    return run_json(cmd)


def run_json(cmd, env=None) -> float:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])["images_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch-python", required=True, help="python of a venv with torch, torchvision, open_clip_torch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=128, help="images per measurement")
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    precisions = ["fp32", "bf16"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.images)
        configs = [(m, p, side, mode) for m in MODELS for p in precisions for mode in ("tower", "files")
                   for side in ("liblift", "pytorch")]
        results = {c: [] for c in configs}
        for r in range(args.repeats):
            for (m, p, side, mode) in configs:
                if side == "liblift":
                    v = liblift_tower(folder, m, p, args.images) if mode == "tower" else liblift_files(folder, m, p)
                else:
                    v = torch_run(args.torch_python, m, p, args.images, folder / "files.txt" if mode == "files" else None)
                results[(m, p, side, mode)].append(v)
                print(f"repeat {r + 1}: {m} {p} {mode} {side}: {v:.1f} images/s", file=sys.stderr)
    print(f"\n{cpu}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, {args.images} images, medians of {args.repeats}\n")
    print("| model | precision | what | liblift images/s | PyTorch/OpenCLIP images/s | ratio |")
    print("|---|---|---|---|---|---|")
    for m in MODELS:
        for p in precisions:
            for mode in ("tower", "files"):
                a = statistics.median(results[(m, p, "liblift", mode)])
                b = statistics.median(results[(m, p, "pytorch", mode)])
                print(f"| {m} | {p} | {'tower on a batch' if mode == 'tower' else 'JPEG files, whole evaluation'} "
                      f"| {a:.1f} | {b:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
