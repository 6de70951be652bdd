#!/usr/bin/env python3
"""OpenCLIP's encode_image timed on the CPU (PyTorch's side of bench/eval_throughput.py).

The image tower is open_clip.transformer.VisionTransformer (what open_clip.create_model builds
for a CLIP model's `visual`), randomly initialised, in eval mode under torch.inference_mode; bf16
runs inside torch.autocast("cpu", torch.bfloat16). Two modes:

  model   encode_image on a preprocessed float batch, repeated (the tower alone)
  files   the images listed in --files, opened with PIL, converted to RGB, Resize(224, bicubic),
          CenterCrop(224), ToTensor, Normalize (OpenCLIP's eval transform), batched by a
          torch DataLoader with one worker process, then encode_image (what an evaluation runs)

Prints one JSON line {"images_per_s": ...}. Runs in a virtual environment with torch,
torchvision and open_clip_torch from PyPI.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

SHAPES = {"ViT-Ti/16": (192, 12, 3), "ViT-S/16": (384, 12, 6), "ViT-B/16": (768, 12, 12)}


def tower(name: str, dim: int) -> torch.nn.Module:
    width, layers, heads = SHAPES[name]
    return VisionTransformer(image_size=224, patch_size=16, width=width, layers=layers, heads=heads, mlp_ratio=4.0,
                             output_dim=dim).eval()


def encode_image(visual, x):
    return F.normalize(visual(x), dim=-1)  # CLIP.encode_image(x, normalize=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-Ti/16", choices=sorted(SHAPES))
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=128, help="model mode: images encoded")
    ap.add_argument("--files", help="files mode: a text file listing image paths")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    visual = tower(args.model, args.dim)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), autocast:
        encode_image(visual, torch.randn(4, 3, 224, 224))  # warm-up
        if args.files:
            from PIL import Image
            from torchvision import transforms

            paths = open(args.files).read().split("\n")
            paths = [p for p in paths if p]
            transform = transforms.Compose([
                transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])

            class Files(torch.utils.data.Dataset):
                def __len__(self):
                    return len(paths)

                def __getitem__(self, i):
                    return transform(Image.open(paths[i]).convert("RGB"))

            loader = torch.utils.data.DataLoader(Files(), batch_size=args.batch, num_workers=1)
            start = time.perf_counter()
            n = 0
            for x in loader:
                encode_image(visual, x)
                n += len(x)
        else:
            x = torch.randn(args.batch, 3, 224, 224)
            start = time.perf_counter()
            n = 0
            while n < args.images:
                encode_image(visual, x)
                n += args.batch
    print(json.dumps({"images_per_s": n / (time.perf_counter() - start), "images": n}))


if __name__ == "__main__":
    main()
