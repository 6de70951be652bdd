"""liblift.plot: the training-curve figure of a metrics.jsonl."""
import json

import pytest

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
from liblift import plot  # noqa: E402


def write_metrics(path, eval_steps):
    lines = [{"step": s, "loss": 5 - s / 100, "lr": 1e-3} for s in range(10, 101, 10)]
    lines += [{"step": s, "eval": {"zero_shot": {"top1": 0.8926, "top5": 0.9976}}} for s in eval_steps]
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return path


def test_a_final_only_evaluation_is_two_labelled_points_on_the_run_axis(tmp_path):
    fig = plot.figure(*plot.load(write_metrics(tmp_path / "m.jsonl", [100])))
    ax = fig.axes[2]
    assert sorted(t.get_text() for t in ax.texts) == ["89.3", "99.8"]
    assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 100 and ax.get_ylim() == (100 * 0.8926 - 5, 105)


def test_many_evaluations_label_the_last_only_and_none_say_so(tmp_path):
    ax = plot.figure(*plot.load(write_metrics(tmp_path / "m.jsonl", range(10, 101, 10)))).axes[2]
    assert sorted(t.get_text() for t in ax.texts) == ["89.3", "99.8"] and len(ax.lines) == 2
    ax = plot.figure(*plot.load(write_metrics(tmp_path / "n.jsonl", []))).axes[2]
    assert [t.get_text() for t in ax.texts] == ["no zero-shot evaluation logged"]
    out = tmp_path / "curves.png"
    assert plot.main([str(tmp_path / "m.jsonl"), "-o", str(out)]) == 0 and out.stat().st_size > 10_000
