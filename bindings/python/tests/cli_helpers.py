"""Shared by the `lift` command tests: where the command is, how to run it, a tiny dataset."""
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np

import liblift

ROOT = Path(__file__).resolve().parents[3]
LIFT = os.environ.get("LIFT_BIN", str(ROOT / "bin" / "lift"))


def lift(*args, check=True, **kw):
    r = subprocess.run([LIFT, *map(str, args)], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"lift {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


def make_tiny(d: Path) -> Path:
    """Two classes of 8x8 grey images (bright left half vs bright right half), 6 captions each,
    as d/train.h5 (96 images) and d/test.h5 (40, with compositional pairs)."""
    rng = np.random.default_rng(0)
    def images(n):
        labels = np.arange(n) % 2
        x = rng.integers(0, 40, (n, 8, 8, 1)).astype(np.uint8)
        for i, k in enumerate(labels):
            x[i, :, (0 if k == 0 else 4):(4 if k == 0 else 8)] = 220
        return x, labels
    emb = rng.standard_normal((12, 16)).astype(np.float32)
    prompts = [list(range(0, 6)), list(range(6, 12))]
    for name, n in (("train", 96), ("test", 40)):
        x, labels = images(n)
        liblift.write_dataset(d / f"{name}.h5", x, emb, [prompts[k] for k in labels], labels=labels,
                              class_names=["left", "right"], class_prompts=prompts)
    with h5py.File(d / "test.h5", "a") as f:  # compositional pairs: own class caption vs the other class's
        f["compositional/image"] = np.arange(10)
        f["compositional/positive"] = emb[[0 if k == 0 else 6 for k in np.arange(10) % 2]]
        f["compositional/negative"] = emb[[6 if k == 0 else 0 for k in np.arange(10) % 2]]
        f.create_dataset("compositional/type", data=["swap-side"] * 10, dtype=h5py.string_dtype())
    return d


def train_args(tiny, out, *extra):
    return ["train", "--data", tiny / "train.h5", "--eval-data", tiny / "test.h5", "--out", out, "--preset", "ViT-XS/7-28",
            "--image-size", 8, "--patch", 4, "--width", 32, "--depth", 1, "--heads", 2, "--batch-size", 16,
            "--epochs", 6, "--lr", 3e-3, "--quiet", *extra]


def bf16_supported():
    """Whether this CPU runs bf16 precision (LIFT_ERR_UNSUPPORTED otherwise)."""
    try:
        liblift.Trainer(liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", 8, precision="bf16")))
    except liblift.LiftError as e:
        if e.status_name == "LIFT_ERR_UNSUPPORTED":
            return False
        raise
    return True
