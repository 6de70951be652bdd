"""Plot the training curves of a `lift train` run (loss, learning rate, zero-shot accuracy).

    python3 -m liblift.plot runs/fashion-mnist/metrics.jsonl -o curves.png
"""
from __future__ import annotations

import argparse
import json
import sys


def load(path):
    steps, evals = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not JSON") from None
            (evals if "eval" in row else steps).append(row)
    if not steps:
        raise ValueError(f"{path}: no training steps logged")
    return steps, evals


def plot(path, out, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, evals = load(path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["step"] for r in steps]
    axes[0].plot(x, [r["loss"] for r in steps], lw=1)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(x, [r["lr"] for r in steps], lw=1, color="tab:orange")
    axes[1].set(title="learning rate", xlabel="step")
    zs = [(r["step"], r["eval"]["zero_shot"]) for r in evals if "zero_shot" in r["eval"]]
    if zs:
        axes[2].plot([s for s, _ in zs], [100 * z["top1"] for _, z in zs], "o-", label="top-1")
        axes[2].plot([s for s, _ in zs], [100 * z["top5"] for _, z in zs], "s--", label="top-5")
        axes[2].legend()
    axes[2].set(title="zero-shot accuracy (%)", xlabel="step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m liblift.plot", description=__doc__.splitlines()[0])
    ap.add_argument("metrics", help="metrics.jsonl written by lift train")
    ap.add_argument("-o", "--out", default="curves.png")
    ap.add_argument("--title")
    a = ap.parse_args(argv)
    try:
        plot(a.metrics, a.out, a.title)
    except (OSError, ValueError, KeyError) as e:
        print(f"plot: error: {e}", file=sys.stderr)
        return 1
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
