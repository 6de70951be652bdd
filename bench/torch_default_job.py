#!/usr/bin/env python3
"""The default job (Fashion-MNIST, `lift train`) against the same job written in PyTorch.

    python3 bench/torch_default_job.py --torch-python /path/to/venv/bin/python [--repeats 3]

Runs, in turn and each in its own process, `bin/lift train` (bf16 and fp32) and this file's
PyTorch version of the same job (bf16 autocast and fp32), --repeats times, and prints the median
wall time of each (process start to exit: data reading, training, the four evaluations during
the run and the final one), its final zero-shot top-1 and the ratios.

The PyTorch job is the one `lift train` runs by default, written with stock modules
(bench/torch_step.py's encoder): a 28 px, 1-channel ViT (patch 14, width 128, depth 4, 2 heads,
MLP ratio 4, ln_pre, LayerNorm on the tokens then the mean of the patch tokens, 2-layer projection
head to the 384-d caption embeddings), contrastive loss with a learnable logit scale clamped to
[0, ln 100], AdamW (lr 1e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on tensors of two or
more dimensions), gradient-norm clipping at 1, OpenCLIP's cosine schedule with warm-up
min(500, total / 10), batch 256 (each epoch a random permutation split into ceil(60000 / 256)
batches whose sizes differ by at most one), 7 epochs, every image drawing one of its captions
afresh each time it is seen, zero-shot evaluation on the 10,000 test images after every fifth of
the run. It reads the dataset files `lift train` writes (data/fashion-mnist/{train,test}.h5), so
run the default job once first. The PyTorch side needs torch, numpy and h5py (a CPU wheel from
PyPI); not run in CI.

`--worker pytorch` runs only the PyTorch job in this process and prints one JSON line.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, BATCH, EPOCHS = 60000, 256, 7


def pytorch_job(data_dir: Path, precision: str, seed: int):
    """Trains and evaluates the default job in PyTorch; returns (top-1, train seconds, steps)."""
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(ROOT / "bench"))
    from torch_step import Encoder, train_step

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)

    def read(name):
        with h5py.File(data_dir / "fashion-mnist" / name) as f:
            pixels = torch.from_numpy(f["images/pixels"][:]).permute(0, 3, 1, 2).float().div_(255).sub_(0.5).div_(0.5)
            captions = F.normalize(torch.from_numpy(f["captions/embeddings"][:].astype(np.float32)), dim=-1)
            return (pixels, f["images/labels"][:], f["images/caption_offsets"][:], f["images/caption_rows"][:],
                    captions, f["classes/prompt_offsets"][:], f["classes/prompt_rows"][:])

    pixels, _, offsets, rows, captions, _, _ = read("train.h5")
    test_pixels, test_labels, _, _, test_captions, prompt_offsets, prompt_rows = read("test.h5")
    # Class embeddings: the normalised mean of each class's normalised prompt embeddings.
    classes = F.normalize(torch.stack([test_captions[prompt_rows[a:b]].mean(0)
                                       for a, b in zip(prompt_offsets[:-1], prompt_offsets[1:])]), dim=-1)
    test_labels = torch.from_numpy(test_labels)

    model = Encoder(28, 14, 128, 4, 2, 384, channels=1)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    base_lr = 1e-3
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=base_lr, betas=(0.9, 0.98), eps=1e-6)
    batches_per_epoch = math.ceil(TRAIN_IMAGES / BATCH)
    total = math.ceil(EPOCHS * batches_per_epoch)
    warmup = min(500, total // 10)
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def lr_at(step):
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) * base_lr

    def zero_shot():
        model.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            embeddings = torch.cat([model(test_pixels[i:i + 500]).float() for i in range(0, len(test_pixels), 500)])
        model.train()
        return ((embeddings @ classes.t()).argmax(1) == test_labels).float().mean().item()

    start, step, top1 = time.perf_counter(), 0, None
    for epoch in range(EPOCHS):
        for batch in np.array_split(generator.permutation(TRAIN_IMAGES), batches_per_epoch):
            first, count = offsets[batch], offsets[batch + 1] - offsets[batch]
            texts = captions[rows[first + generator.integers(0, count)]]
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            train_step(model, opt, pixels[batch], texts, precision == "bf16")
            step += 1
            if step % (total // 5) == 0 or step == total:
                top1 = zero_shot()
    return top1, time.perf_counter() - start, step


def run_timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return time.perf_counter() - t0, r.stdout


def measure(kind, precision, args):
    """(wall seconds, top-1) of one job in its own process."""
    if kind == "pytorch":
        seconds, out = run_timed([args.torch_python, __file__, "--worker", "pytorch", "--precision", precision,
                                  "--data-dir", args.data_dir])
        return seconds, json.loads(out.splitlines()[-1])["top1"]
    with tempfile.TemporaryDirectory() as work:
        seconds, _ = run_timed([args.lift, "train", "--precision", precision, "--data-dir", args.data_dir,
                                "--out", Path(work) / "run", "--quiet"])
        result = json.loads((Path(work) / "run" / "eval.json").read_text())
    return seconds, result["zero_shot"]["top1"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", default=os.environ.get("LIFT_TORCH_PYTHON", sys.executable),
                    help="Python with torch, numpy and h5py (default: $LIFT_TORCH_PYTHON or this Python)")
    ap.add_argument("--lift", default=str(ROOT / "bin" / "lift"))
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--worker", choices=["pytorch"])
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        top1, seconds, steps = pytorch_job(Path(args.data_dir), args.precision, args.seed)
        import torch
        print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "precision": args.precision,
                          "threads": torch.get_num_threads(), "steps": steps, "train_seconds": round(seconds, 2),
                          "top1": top1}), flush=True)
        return
    if not (Path(args.data_dir) / "fashion-mnist" / "train.h5").exists():
        raise SystemExit(f"{args.data_dir}/fashion-mnist is missing: run `bin/lift train --data-dir {args.data_dir}` once")

    runs = [(kind, p) for p in args.precisions.split(",") for kind in ("liblift", "pytorch")]
    results = {run: [] for run in runs}
    for repeat in range(args.repeats):
        for kind, precision in runs:
            seconds, top1 = measure(kind, precision, args)
            results[(kind, precision)].append((seconds, top1))
            print(f"repeat {repeat + 1}/{args.repeats} {kind} {precision}: {seconds:.1f} s, top-1 {100 * top1:.2f} %",
                  file=sys.stderr, flush=True)

    median = {run: statistics.median(s for s, _ in values) for run, values in results.items()}
    print(f"\ndefault job, {args.repeats} interleaved repeats (median wall seconds, range, final zero-shot top-1)\n")
    print("| run | seconds | range | top-1 |")
    print("|---|---|---|---|")
    for (kind, precision), values in results.items():
        seconds = [s for s, _ in values]
        top1 = ", ".join(f"{100 * t:.2f}" for _, t in values)
        print(f"| {kind} {precision} | {median[(kind, precision)]:.1f} | {min(seconds):.1f}-{max(seconds):.1f} | {top1} % |")
    print()
    for precision in args.precisions.split(","):
        print(f"liblift {precision} / pytorch {precision} time: "
              f"{median[('liblift', precision)] / median[('pytorch', precision)]:.2f}")


if __name__ == "__main__":
    main()
