#!/usr/bin/env python3
"""Benchmark: `lift train` as 1 process vs 2 MPI ranks on this machine, same run, interleaved.

For each workload it trains --repeats times in each configuration (the configurations take
turns, so machine noise hits all of them) and prints a table of median throughput, the ratio to
one process using every core, and the time rank 0 spends in the collectives (all-gather of
features/texts, all-reduce of the gradient; waiting for the slower rank included), from
LIFT_PROFILE. Then it projects the communication share of ViT-B/16 at 64 ranks from the
per-step byte formula, with this machine's measured FLOP rate as the per-rank compute.

    python3 bench/mpi_scaling.py [--repeats 3] [--data data/fashion-mnist/train.h5]

Needs the release build (bin/lift), Open MPI (mpirun) and the Fashion-MNIST dataset
(`bin/lift prepare-fashion-mnist`).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import liblift

ROOT = Path(__file__).resolve().parents[1]
LIFT = str(ROOT / "bin" / "lift")
CORES = os.cpu_count() or 1

# (label, ranks, threads per rank)
CONFIGS = [(f"1 process x {CORES} threads", 1, CORES), ("1 process x 1 thread", 1, 1),
           (f"2 ranks x {max(CORES // 2, 1)} thread(s)", 2, max(CORES // 2, 1))]


def run(data, workload, ranks, threads, folder):
    out = Path(tempfile.mkdtemp(dir=folder))
    cmd = [LIFT, "train", "--data", data, "--out", out, "--restart", *workload["args"]]
    env = dict(os.environ, LIFT_PROFILE="1", LIFT_NUM_THREADS=str(threads))
    if ranks > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = ["mpirun", "--oversubscribe", "-x", "LIFT_PROFILE", "-x", "LIFT_NUM_THREADS", "-n", str(ranks), *cmd]
    r = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr}")
    last = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l][-1]
    profile = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+)", r.stderr.split("profile (ms per step):")[1]))
    steps = last["step"]
    return {"images_per_s": steps * workload["batch"] / last["train_seconds"],
            "step_ms": 1000 * last["train_seconds"] / steps,
            "comm_ms": profile.get("gather", 0) + profile.get("allReduce", 0)}


def projection(flops_per_s):
    """Per-step traffic and its share of the step for ViT-B/16, 4096-d text, G = 16384, R = 64."""
    g, r, d = 16384, 64, 4096
    config = liblift.ModelConfig.preset("ViT-B/16", d)
    model = liblift.Model(config)
    p = model.parameters.size
    step_flops = model.step_flops(g // r)
    gather = 2 * (r - 1) / r * g * d * 4      # features + texts, ring all-gather, bytes in (= out)
    reduce = 2 * (r - 1) / r * p * 4          # ring all-reduce of the flat float32 gradient
    compute = step_flops / flops_per_s
    rows = []
    for name, bandwidth in (("10 Gb/s Ethernet", 1.25e9), ("100 Gb/s InfiniBand", 12.5e9)):
        comm = (gather + reduce) / bandwidth
        rows.append({"network": name, "comm_s": comm, "compute_s": compute, "share": comm / (comm + compute)})
    return {"parameters": p, "gather_bytes": gather, "allreduce_bytes": reduce, "rank_step_flops": step_flops,
            "flops_per_s": flops_per_s, "rows": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "data" / "fashion-mnist" / "train.h5"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    workloads = [
        {"name": "ViT-XS/14-28 (default job), batch 256", "batch": 256, "args": ["--steps", 60]},
        {"name": "ViT-Ti/16 at 224 px, batch 64", "batch": 64,
         "args": ["--preset", "ViT-Ti/16", "--batch-size", 64, "--steps", 6]},
    ]
    flop_rate = None
    with tempfile.TemporaryDirectory() as folder:
        for w in workloads:
            results = {c[0]: [] for c in CONFIGS}
            for _ in range(a.repeats):
                for label, ranks, threads in CONFIGS:
                    results[label].append(run(a.data, w, ranks, threads, folder))
            base = statistics.median(x["images_per_s"] for x in results[CONFIGS[0][0]])
            print(f"\n{w['name']} ({a.repeats} runs each, medians)")
            print(f"{'configuration':<28} {'img/s':>8} {'vs 1 process':>13} {'step ms':>9} {'collectives ms':>15} {'share':>7}")
            for label, _, _ in CONFIGS:
                ips = statistics.median(x["images_per_s"] for x in results[label])
                step = statistics.median(x["step_ms"] for x in results[label])
                comm = statistics.median(x["comm_ms"] for x in results[label])
                print(f"{label:<28} {ips:>8.0f} {ips / base:>12.2f}x {step:>9.1f} {comm:>15.2f} {comm / step:>6.1%}")
            if w["batch"] == 64:
                m = liblift.Model(liblift.ModelConfig.preset("ViT-Ti/16", 384))
                flop_rate = m.step_flops(64) / (statistics.median(x["step_ms"] for x in results[CONFIGS[0][0]]) / 1000)
    proj = projection(flop_rate)
    print(f"\nProjection: ViT-B/16 ({proj['parameters'] / 1e6:.1f} M parameters), 4096-d text embeddings, global batch "
          f"16384 over 64 ranks (256 per rank)")
    print(f"  per rank per step: all-gather {proj['gather_bytes'] / 1e6:.0f} MB + all-reduce {proj['allreduce_bytes'] / 1e6:.0f} MB; "
          f"compute {proj['rank_step_flops'] / 1e12:.1f} TFLOP at this machine's {flop_rate / 1e9:.0f} GFLOP/s (ViT-Ti/16 step above)")
    for row in proj["rows"]:
        print(f"  {row['network']:<20} communication {row['comm_s']:.2f} s vs compute {row['compute_s']:.0f} s: "
              f"{row['share']:.2%} of the step")


if __name__ == "__main__":
    main()
