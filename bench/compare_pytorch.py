#!/usr/bin/env python3
"""liblift against PyTorch on the same training step, interleaved in one run.

For each model (ViT-Ti/16 and ViT-S/16 at 224 px, batch 32, 4096-d text, contrastive loss,
AdamW, gradient clipping) it times the full step (forward, loss, backward, optimiser) in four
configurations, each in its own process so peak RSS is its own:

  pytorch fp32        bench/torch_step.py (stock modules as OpenCLIP builds the ViT)
  pytorch bf16        the same inside torch.autocast("cpu", torch.bfloat16)
  liblift fp32        lift-bench --precision fp32
  liblift bf16        lift-bench --precision bf16 (skipped where the CPU lacks bf16 dot products)

The configurations take turns --repeats times (machine noise hits them all alike); the table
gives the median images/s of the repeats, the spread, peak RSS, and the ratios.

    python3 bench/compare_pytorch.py --torch-python /path/to/venv/bin/python [--repeats 3]

PyTorch lives in its own virtual environment (a CPU wheel from PyPI: pip install torch numpy);
liblift's release build must exist (swift build -c release -Xswiftc -static-stdlib). Not run in
CI.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".build" / "release" / "lift-bench"
TORCH_STEP = ROOT / "bench" / "torch_step.py"


def run_json(cmd, env=None):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if "images_per_s" in line][0]


def measure(kind, precision, preset, batch, args):
    if kind == "pytorch":
        cmd = [args.torch_python, TORCH_STEP, "--preset", preset, "--batch", batch, "--precision", precision,
               "--steps", args.steps, "--warmup", args.warmup, "--threads", args.threads]
    else:
        cmd = [BENCH, "--only", f"{preset}:{batch}", "--precision", precision, "--steps", args.steps,
               "--warmup", args.warmup]
    env = dict(os.environ, LIFT_NUM_THREADS=str(args.threads))
    result = run_json(cmd, env)
    return result["images_per_s"], result["peak_rss_mb"]


def bf16_supported():
    r = subprocess.run([str(BENCH), "--products", "--only", "ViT-Ti/16:1"], capture_output=True, text=True)
    first = next((json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")), {})
    return "onednn-bf16" in first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", default=os.environ.get("LIFT_TORCH_PYTHON", sys.executable),
                    help="Python with torch installed (default: $LIFT_TORCH_PYTHON or this Python)")
    ap.add_argument("--configs", default="ViT-Ti/16,ViT-S/16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not BENCH.exists():
        raise SystemExit(f"{BENCH} is missing: build liblift first (swift build -c release -Xswiftc -static-stdlib)")

    runs = [("pytorch", "fp32"), ("pytorch", "bf16"), ("liblift", "fp32")]
    if bf16_supported():
        runs.append(("liblift", "bf16"))
    presets = args.configs.split(",")
    results = {(p, k, q): [] for p in presets for k, q in runs}
    for repeat in range(args.repeats):
        for preset in presets:
            for kind, precision in runs:
                ips, rss = measure(kind, precision, preset, args.batch, args)
                results[(preset, kind, precision)].append((ips, rss))
                print(f"repeat {repeat + 1}/{args.repeats} {preset} {kind} {precision}: {ips:.2f} images/s, "
                      f"{rss} MiB", file=sys.stderr, flush=True)

    def median(preset, kind, precision):
        values = results.get((preset, kind, precision))
        return statistics.median(v[0] for v in values) if values else None

    print(f"\nbatch {args.batch}, {args.threads} threads, {args.repeats} interleaved repeats, "
          f"{args.steps} timed steps each (median images/s, range, peak RSS MiB)\n")
    print("| model | run | images/s | range | peak RSS |")
    print("|---|---|---|---|---|")
    for preset in presets:
        for kind, precision in runs:
            values = results[(preset, kind, precision)]
            ips = [v[0] for v in values]
            print(f"| {preset} | {kind} {precision} | {statistics.median(ips):.2f} | {min(ips):.2f}-{max(ips):.2f} | "
                  f"{max(v[1] for v in values)} |")
    print("\n| model | liblift bf16 / pytorch bf16 | liblift fp32 / pytorch fp32 | liblift best / pytorch best |")
    print("|---|---|---|---|")
    for preset in presets:
        t32, t16 = median(preset, "pytorch", "fp32"), median(preset, "pytorch", "bf16")
        l32, l16 = median(preset, "liblift", "fp32"), median(preset, "liblift", "bf16")
        bf = f"{l16 / t16:.2f}x" if l16 else "n/a"
        best = max(x for x in (l32, l16) if x) / max(t32, t16)
        print(f"| {preset} | {bf} | {l32 / t32:.2f}x | {best:.2f}x |")


if __name__ == "__main__":
    main()
