#!/usr/bin/env python3
"""Write Fashion-MNIST's test images as benchmark layouts, to try `lift eval --suite` offline.

    python3 tools/fashion_mnist_folders.py --out data/fashion-mnist-folders

From Debian's dataset-fashion-mnist IDX files it writes, under --out:
  test/<class>/<index>.png   the 10,000 test images as 28x28 grey PNGs in class folders (an
                             ImageNet-style layout: --suite imagenet --root OUT/test); folder names
                             are the class names with '_' for spaces
  templates.txt              the 16 prompt templates the default model was trained with
  captions.jsonl             {"image", "caption"} for the first --caption-images images of each
                             class, captioned "a photo of a <class>." (--suite captions)
"""
import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fashion_captions import CLASSES, TEMPLATES  # noqa: E402


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idx", default="/usr/share/datasets/fashion-mnist", help="folder of the IDX files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--caption-images", type=int, default=10, help="images per class in captions.jsonl")
    args = ap.parse_args()
    idx, out = Path(args.idx), Path(args.out)

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (idx / name).exists():
                return idx / name
        raise SystemExit(f"{idx}: no {stem}[.gz] (apt-get install dataset-fashion-mnist)")

    images = read_idx(find("t10k-images-idx3-ubyte"))
    labels = read_idx(find("t10k-labels-idx1-ubyte"))
    folders = [c.replace(" ", "_") for c in CLASSES]
    per_class = {k: 0 for k in range(10)}
    lines = []
    for i, (x, k) in enumerate(zip(images, labels)):
        path = out / "test" / folders[k] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(path)
        if per_class[k] < args.caption_images:
            per_class[k] += 1
            lines.append(json.dumps({"image": f"{folders[k]}/{i:05d}.png", "caption": f"a photo of a {CLASSES[k]}."}))
    (out / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(images)} images under {out / 'test'}, {out / 'templates.txt'}, {out / 'captions.jsonl'}")


if __name__ == "__main__":
    main()
