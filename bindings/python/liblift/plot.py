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


def figure(steps, evals, title=None):
    """The three panels (loss, learning rate, zero-shot accuracy) of logged steps and evaluations."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["step"] for r in steps]
    axes[0].plot(x, [r["loss"] for r in steps], lw=1)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(x, [r["lr"] for r in steps], lw=1, color="tab:orange")
    axes[1].set(title="learning rate", xlabel="step")
    zero_shot_panel(axes[2], evals, x[-1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def zero_shot_panel(ax, evals, last_step):
    """Top-1 and top-5 at each evaluation, on the run's whole step axis, each point labelled with
    its value when there are few (a run that evaluated only at the end shows two labelled
    points where they were measured, not two bare dots on an empty axis)."""
    ax.set(title="zero-shot accuracy (%)", xlabel="step", xlim=(0, 1.05 * max(last_step, 1)))
    zs = [(r["step"], r["eval"]["zero_shot"]) for r in evals if "zero_shot" in r["eval"]]
    if not zs:
        ax.text(0.5, 0.5, "no zero-shot evaluation logged", transform=ax.transAxes, ha="center", color="gray")
        return
    # From a little below the lowest value to 100% plus room for the labels.
    ax.set_ylim(max(0, min(100 * min(z["top1"], z["top5"]) for _, z in zs) - 5), 105)
    for key, style, label in (("top1", "o-", "top-1"), ("top5", "s--", "top-5")):
        points = [(s, 100 * z[key]) for s, z in zs]
        ax.plot(*zip(*points), style, label=label)
        for s, v in points if len(points) <= 6 else points[-1:]:
            ax.annotate(f"{v:.1f}", (s, v), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    ax.legend(loc="best")


def plot(path, out, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(*load(path), title=title)
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
