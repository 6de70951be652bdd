#!/usr/bin/env python3
"""The PyTorch side of bench/compare_pytorch.py: one training-step measurement in this process.

The model is the LIFT image encoder written with stock PyTorch modules the way OpenCLIP's
VisionTransformer builds it (Conv2d patch embedding without bias, class and positional
embeddings, ln_pre, pre-norm blocks of nn.MultiheadAttention and a GELU MLP, ln_post, average
pooling over the patch tokens) plus LIFT's 2-layer projection head; contrastive loss with a
learnable logit scale; AdamW (lr 1e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on >= 2-D
tensors) and gradient-norm clipping at 1.0: the same step lift-bench times.

    python3 bench/torch_step.py --preset ViT-Ti/16 --batch 32 --precision bf16 --steps 7

prints one JSON line (median step time, images/s, peak RSS). `--precision bf16` wraps forward
and loss in torch.autocast("cpu", torch.bfloat16), the one-line change a PyTorch user makes.
Needs torch (a CPU wheel from PyPI); never run in CI.
"""
import argparse
import json
import math
import resource
import statistics
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = {"ViT-Ti/16": (224, 16, 192, 12, 3), "ViT-S/16": (224, 16, 384, 12, 6), "ViT-B/16": (224, 16, 768, 12, 12)}


class Block(nn.Module):
    def __init__(self, width, heads, mlp_ratio=4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, mlp_ratio * width), gelu=nn.GELU(),
                                             c_proj=nn.Linear(mlp_ratio * width, width)))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, image_size, patch, width, depth, heads, text_dim, head_layers=2, channels=3):
        super().__init__()
        tokens = (image_size // patch) ** 2 + 1
        self.conv1 = nn.Conv2d(channels, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(tokens, width) * width ** -0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.resblocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width)
        layers = [nn.Linear(width, text_dim)]
        for _ in range(head_layers - 1):
            layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
        self.projector = nn.Sequential(*layers)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images):
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.resblocks(self.ln_pre(x))
        x = self.ln_post(x)[:, 1:].mean(dim=1)
        return F.normalize(self.projector(x), dim=-1)


def contrastive_loss(images, texts, logit_scale):
    logits = logit_scale.exp() * images @ texts.t()
    labels = torch.arange(images.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def train_step(model, opt, images, texts, bf16):
    """One step: forward and loss (under bf16 autocast when asked), backward, clipping at 1,
    AdamW, logit scale clamped to [0, ln 100]; returns the loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = contrastive_loss(model(images), texts, model.logit_scale)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="ViT-Ti/16", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--text-dim", type=int, default=4096)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    size, patch, width, depth, heads = PRESETS[args.preset]
    model = Encoder(size, patch, width, depth, heads, args.text_dim)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    images = torch.randn(args.batch, 3, size, size)
    texts = F.normalize(torch.randn(args.batch, args.text_dim), dim=-1)
    times = []
    loss = None
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = train_step(model, opt, images, texts, args.precision == "bf16")
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "config": args.preset, "batch": args.batch,
                      "precision": args.precision, "threads": torch.get_num_threads(),
                      "step_s_median": round(step_s, 4), "images_per_s": round(args.batch / step_s, 2),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "final_loss": round(loss.item(), 4)}), flush=True)


if __name__ == "__main__":
    main()
