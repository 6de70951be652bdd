"""The `lift` command end to end on a tiny generated dataset."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import child_env

import liblift
from cli_helpers import LIFT, ROOT, lift, make_tiny, train_args


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def test_train_eval_encode_info_export(tiny, tmp_path):
    out = tmp_path / "run"
    r = lift(*train_args(tiny, out))
    assert "zero-shot classification (40 images)" in r.stdout
    result = json.loads((out / "eval.json").read_text())
    assert result["zero_shot"]["top1"] >= 0.9
    assert result["compositional"]["swap-side"] >= 0.9
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "loss" in l]
    assert steps[-1]["step"] == 36 and steps[0]["loss"] > steps[-1]["loss"]
    assert 0 <= steps[-1]["data_wait_fraction"] < 1
    # eval, encode, info, export on the result.
    r = lift("eval", "--model", out / "model.safetensors", "--data", tiny / "test.h5", "--json", tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["zero_shot"] == result["zero_shot"]
    lift("encode", "--model", out / "model.safetensors", "--data", tiny / "test.h5", "--out", tmp_path / "emb.h5")
    with liblift.Store(tmp_path / "emb.h5") as s:
        assert s.shape == (40, 16) and s.string("keys", 3) == "3"
        np.testing.assert_allclose(np.linalg.norm(s.read(), axis=1), 1, atol=1e-2)
    info = lift("info", tiny / "test.h5", out / "checkpoint.safetensors", tmp_path / "emb.h5").stdout
    assert "dataset of 40 images 8x8x1" in info and "training checkpoint at step 36" in info and "embedding store of 40 x 16" in info
    lift("export", "--checkpoint", out / "checkpoint.safetensors", "--out", tmp_path / "m.safetensors")
    m = liblift.Model.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(m.parameters, liblift.Model.load(out / "model.safetensors").parameters)
    png = tmp_path / "curves.png"
    subprocess.run([sys.executable, "-m", "liblift.plot", out / "metrics.jsonl", "-o", png], check=True, capture_output=True,
                   env=child_env())
    assert png.stat().st_size > 10_000


def test_progress_in_a_log_is_rate_limited(tiny, tmp_path):
    """With stderr not a terminal (a log file), evaluation and encoding print their first and
    last progress update, not a line per batch (1,300 images are 6 batches of 216-217)."""
    lift(*train_args(tiny, tmp_path / "run", "--steps", 1))
    model = tmp_path / "run" / "model.safetensors"
    many = tmp_path / "many.h5"
    rng = np.random.default_rng(1)
    liblift.write_dataset(many, rng.integers(0, 256, (1300, 8, 8, 1), dtype=np.uint8),
                          rng.standard_normal((2, 16)).astype(np.float32), [[i % 2] for i in range(1300)])
    err = lift("eval", "--model", model, "--data", many).stderr
    assert [l for l in err.splitlines() if "evaluating" in l] == ["evaluating: encoded 216/1300 images",
                                                                  "evaluating: encoded 1300/1300 images"], err
    err = lift("encode", "--model", model, "--data", many, "--out", tmp_path / "emb.h5").stderr
    assert [l for l in err.splitlines() if "encoded" in l] == ["encoded 216/1300 images", "encoded 1300/1300 images"], err


def test_evaluations_default_to_five_evenly_spaced(tiny, tmp_path):
    """Without --eval-every a run evaluates at 1/5 .. 4/5 of its steps and at the end (five
    points for the zero-shot curve); --eval-every 0 evaluates at the end only."""
    def eval_steps(out):
        return [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    lift(*train_args(tiny, tmp_path / "default", "--steps", 10))
    assert eval_steps(tmp_path / "default") == [2, 4, 6, 8, 10]
    lift(*train_args(tiny, tmp_path / "end", "--steps", 10, "--eval-every", 0))
    assert eval_steps(tmp_path / "end") == [10]
    lift(*train_args(tiny, tmp_path / "every", "--steps", 10, "--eval-every", 3))
    assert eval_steps(tmp_path / "every") == [3, 6, 9, 10]
    r = lift(*train_args(tiny, tmp_path / "bad", "--eval-every=-1"), check=False)
    assert r.returncode != 0 and "--eval-every must be in [0, " in r.stderr


def test_outputs_are_replaced_only_with_overwrite(tiny, tmp_path):
    """eval --json, encode and export refuse an existing output file, naming --overwrite, which
    replaces it; a folder is never replaced."""
    lift(*train_args(tiny, tmp_path / "run", "--steps", 1))
    model = tmp_path / "run" / "model.safetensors"
    commands = [("e.json", ["eval", "--model", model, "--data", tiny / "test.h5", "--json"]),
                ("emb.h5", ["encode", "--model", model, "--data", tiny / "test.h5", "--out"]),
                ("m.safetensors", ["export", "--checkpoint", tmp_path / "run" / "checkpoint.safetensors", "--out"])]
    for name, args in commands:
        target = tmp_path / name
        target.write_bytes(b"old")
        r = lift(*args, target, check=False)
        assert r.returncode == 1 and r.stderr == f"Error: '{target}' already exists (pass --overwrite to replace it)\n"
        assert target.read_bytes() == b"old"
        lift(*args, target, "--overwrite")
        assert target.read_bytes() != b"old"
        r = lift(*args, tmp_path, "--overwrite", check=False)
        assert r.returncode == 1 and "is a folder" in r.stderr, r.stderr
        # A FIFO or a symbolic link is never replaced either (nor a device), and nothing is
        # written beside it.
        fifo, link = tmp_path / f"fifo-{name}", tmp_path / f"link-{name}"
        os.mkfifo(fifo)
        link.symlink_to(target)
        for special in (fifo, link):
            r = lift(*args, special, "--overwrite", check=False)
            assert r.returncode == 1 and "is not a regular file" in r.stderr, r.stderr
        assert fifo.is_fifo() and link.is_symlink()
    assert not (tmp_path / "open_clip_config.json").exists()
    r = lift("export", "--checkpoint", tmp_path / "run" / "checkpoint.safetensors", "--scheme", "openclip", "--out",
             tmp_path / "fifo-m.safetensors", "--overwrite", check=False)
    assert r.returncode == 1 and "is not a regular file" in r.stderr, r.stderr
    assert not (tmp_path / "open_clip_config.json").exists()
    r = lift(*train_args(tiny, tmp_path / "fc", "--feature-cache", tmp_path / "cache.h5"), check=False)
    assert r.returncode == 1 and "needs --lock-image" in r.stderr, r.stderr
    with liblift.Store(tmp_path / "emb.h5") as s:
        assert s.shape == (40, 16)
    assert json.loads((tmp_path / "e.json").read_text())["zero_shot"]["images"] == 40
    liblift.Model.load(tmp_path / "m.safetensors")


def test_augment_is_a_flag_and_a_config_boolean(tiny, tmp_path):
    """--augment / --no-augment (default off); a --config file says "augment": true or false, or
    the old "on" / "off"; augmentation is part of what a resume must match."""
    def augments(out):
        identity = [l for l in lift("info", out / "checkpoint.safetensors").stdout.splitlines() if "identity" in l]
        return '"augment":true' in identity[0]
    lift(*train_args(tiny, tmp_path / "a", "--steps", 4, "--stop-at", 2, "--augment"))
    assert augments(tmp_path / "a")
    r = lift(*train_args(tiny, tmp_path / "a", "--resume"), check=False)
    assert r.returncode == 1 and "other data settings" in r.stderr
    lift(*train_args(tiny, tmp_path / "a", "--resume", "--augment"))
    lift(*train_args(tiny, tmp_path / "b", "--steps", 1, "--no-augment"))
    assert not augments(tmp_path / "b")
    for i, (value, expected) in enumerate([("true", True), ("false", False), ('"on"', True), ('"off"', False)]):
        (tmp_path / "c.json").write_text(f'{{"augment": {value}}}')
        lift(*train_args(tiny, tmp_path / f"c{i}", "--steps", 1), "--config", tmp_path / "c.json")
        assert augments(tmp_path / f"c{i}") == expected, value
    lift(*train_args(tiny, tmp_path / "d", "--steps", 1, "--no-augment"), "--config", tmp_path / "c.json")
    (tmp_path / "c.json").write_text('{"augment": "yes"}')
    r = lift(*train_args(tiny, tmp_path / "e", "--steps", 1), "--config", tmp_path / "c.json", check=False)
    assert r.returncode == 1 and r.stderr == "Error: config 'augment' must be true or false\n"
    r = lift(*train_args(tiny, tmp_path / "f", "--steps", 1, "--augment", "on"), check=False)
    assert r.returncode == 64 and "'on'" in r.stderr


def test_info_tells_what_each_file_is(tiny, tmp_path):
    """lift info reads what a file is from its content: model, checkpoint, dataset, the captions
    asset's layout, embedding store; anything else is a one-line error saying what was expected."""
    lift(*train_args(tiny, tmp_path / "run", "--steps", 2))
    run = tmp_path / "run"
    (run / "model.safetensors").rename(run / "model.bin")  # the name does not matter
    with liblift.StoreWriter(tmp_path / "store.h5", 4, keys=True) as w:
        w.append(np.ones((3, 4)), keys=["a", "b", "c"])
    captions = ROOT / "assets" / "fashion-mnist-captions.h5"
    out = lift("info", run / "model.bin", run / "checkpoint.safetensors", tiny / "test.h5", captions,
               tmp_path / "store.h5").stdout.splitlines()
    assert out[0].startswith(f"{run / 'model.bin'}: model ViT 8px/4 width 32 depth 1")
    assert out[2].startswith("  training checkpoint at step 2 of 2")
    assert f"{tiny / 'test.h5'}: dataset of 40 images 8x8x1, 12 captions (16-d), labels" in out
    assert f"{captions}: captions file of 160 captions (384-d, float16) with texts, embedded by " \
           "sentence-transformers/all-MiniLM-L6-v2" in out
    assert "  10 classes of 16 prompts: t-shirt, pair of trousers, pullover, dress, coat, sandal, shirt, sneaker, bag, " \
           "ankle boot" in out
    assert out[-1] == f"{tmp_path / 'store.h5'}: embedding store of 3 x 4 (float16) with keys"
    # HDF5 files are described by a child lift process unless --trusted; the output is the same.
    assert lift("info", "--trusted", run / "model.bin", run / "checkpoint.safetensors", tiny / "test.h5", captions,
                tmp_path / "store.h5").stdout.splitlines() == out
    # A captions file of h5py's making: no texts, a fixed-length attribute, classes of 1 and 2 prompts.
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["captions/embeddings"] = np.ones((3, 4), np.float32)
        f.create_dataset("classes/names", data=["x", "y"], dtype=h5py.string_dtype())
        f["classes/prompt_offsets"], f["classes/prompt_rows"] = [0, 1, 3], [0, 1, 2]
        f.attrs["model"] = np.bytes_(b"my-model")
    assert lift("info", tmp_path / "c.h5").stdout.splitlines() == [
        f"{tmp_path / 'c.h5'}: captions file of 3 captions (4-d, float32), embedded by my-model", "  2 classes of 1-2 prompts: x, y"]
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["pixels"] = np.zeros((2, 2))
    (tmp_path / "notes.txt").write_text("hello")
    for path, expected in [(tmp_path / "other.h5", "an HDF5 file without liblift's datasets: expected images/pixels"),
                           (tmp_path / "notes.txt", "is not a liblift file: expected a model or checkpoint (safetensors)"),
                           (tmp_path / "missing.h5", "No such file")]:
        r = lift("info", path, check=False)
        assert r.returncode == 1 and expected in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_resume_after_interrupt_matches_uninterrupted(tiny, tmp_path):
    long = ("--epochs", 100, "--checkpoint-every", 5)
    straight = tmp_path / "straight"
    lift(*train_args(tiny, straight, *long))
    # Interrupt a second run with SIGINT, then resume it.
    run = tmp_path / "run"
    p = subprocess.Popen([LIFT, *map(str, train_args(tiny, run, *long))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "metrics.jsonl").exists() or "step" not in (run / "metrics.jsonl").read_text():
        assert time.time() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert p.returncode == 130 and "checkpoint saved" in err
    assert not (run / "model.safetensors").exists()
    lift(*train_args(tiny, run, *long, "--resume"))
    a = liblift.Model.load(straight / "model.safetensors").parameters
    b = liblift.Model.load(run / "model.safetensors").parameters
    np.testing.assert_array_equal(a, b)


def test_user_errors_are_one_line_and_change_nothing(tiny, tmp_path):
    out = tmp_path / "run"
    lift(*train_args(tiny, out, "--epochs", 1))
    before = (out / "checkpoint.safetensors").read_bytes()
    cases = [
        (train_args(tiny, out), "already holds a run"),
        (train_args(tiny, tmp_path / "x", "--data", tmp_path / "missing.h5"), "missing.h5"),
        (["eval", "--model", out / "model.safetensors", "--data", tiny / "train.h5", "--json", out / "eval.json"], "already exists"),
        (["eval", "--model", tiny / "train.h5", "--data", tiny / "test.h5"], "train.h5"),
        (train_args(tiny, tmp_path / "y", "--objective", "hinge"), "--objective"),
        (train_args(tiny, tmp_path / "z", "--width", 33), "divisible"),
        (train_args(tiny, tmp_path / "p", "--precision", "fp16"), "--precision must be fp32 or bf16"),
        # The run trains in fp32; a resume keeps its precision.
        (train_args(tiny, out, "--resume", "--precision", "bf16"), "trains in fp32; resume keeps it"),
        (["eval", "--model", out / "model.safetensors", "--data", tiny / "test.h5", "--precision", "f32"], "--precision"),
        # Every option is range-checked before anything runs, on --resume too.
        (train_args(tiny, out, "--resume", "--width", 33), "divisible"),
        (train_args(tiny, out, "--resume", "--image-mean", "0.5,0.5"), "image mean/std need 1 values"),
        (train_args(tiny, out, "--resume", "--lr=-1"), "--lr must be in [0, 10]"),
        (train_args(tiny, out, "--resume", "--weight-decay=-0.1"), "--weight-decay must be in [0, 10]"),
        (train_args(tiny, out, "--resume", "--weight-decay", "9.2e18"), "--weight-decay must be in [0, 10]"),
        (train_args(tiny, out, "--resume", "--clip", "9.2e18"), "--clip must be in [0, 1000000]"),
        (train_args(tiny, out, "--resume", "--beta2", 1), "--beta2 must be in [0, 1)"),
        (train_args(tiny, out, "--resume", "--clip=-1"), "--clip must be in [0, 1000000]"),
        # A negative number as the next word is the option's value, not an unknown option.
        (train_args(tiny, out, "--resume", "--lr", "-1"), "--lr must be in [0, 10] (got -1.0)"),
        (train_args(tiny, out, "--resume", "--seed", "-3"), "--seed must be >= 0"),
        (train_args(tiny, out, "--resume", "--image-mean", "-0.5,0.5"), "image mean/std need 1 values"),
        (train_args(tiny, out, "--resume", "--steps", "--quiet"), "The value '--quiet' is invalid for '--steps"),
        (["eval", "--suite", "coco", "--root", tmp_path, "--captions-per-image", "-1"], "--captions-per-image must be in"),
        (["eval", "--suite", "coco", "--root", tmp_path, "--batch", "0"], "--batch must be in [1, 65536]"),
    ]
    for args, fragment in cases:
        r = lift(*args, check=False)
        assert r.returncode != 0, args
        message = [l for l in r.stderr.splitlines() if l.strip()]
        assert fragment in r.stderr, (args, r.stderr)
        assert len(message) <= 2, r.stderr
    assert (out / "checkpoint.safetensors").read_bytes() == before
    for text, fragment in [('{"warmup": "long"}', "warmup"), ('{"bogus": 1}', "unknown option 'bogus'"), ('[1]', "JSON object")]:
        (tmp_path / "bad.json").write_text(text)
        r = lift(*train_args(tiny, tmp_path / "w"), "--config", tmp_path / "bad.json", check=False)
        assert r.returncode != 0 and fragment in r.stderr, r.stderr
    # Options from a config file apply; the command line wins over them.
    (tmp_path / "good.json").write_text('{"steps": 3, "batch-size": 999}')
    lift(*train_args(tiny, tmp_path / "v"), "--config", tmp_path / "good.json")
    steps = [json.loads(l) for l in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert steps[-1]["step"] == 3 and steps[-1]["epoch"] == 0.5  # batch 16 from the command line: 6 steps/epoch


def test_prepare_fashion_mnist_from_idx_files_reads_back_in_h5py(tmp_path):
    """The Swift dataset writer, fed synthetic IDX files, produces files h5py and liblift agree on."""
    import gzip
    import struct

    idx = tmp_path / "idx"
    idx.mkdir()
    rng = np.random.default_rng(3)
    splits = {"train": 30, "t10k": 12}
    truth = {}
    for prefix, n in splits.items():
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        truth[prefix] = (pixels, labels)
        with gzip.open(idx / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pixels.tobytes())
        with gzip.open(idx / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    out = lift("prepare-fashion-mnist", "--idx-dir", idx, "--data-dir", tmp_path / "data",
               "--captions", ROOT / "assets" / "fashion-mnist-captions.h5").stdout.split()
    assert out == [str(tmp_path / "data" / "fashion-mnist" / "train.h5"), str(tmp_path / "data" / "fashion-mnist" / "test.h5")]
    for prefix, path in zip(splits, out):
        pixels, labels = truth[prefix]
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["images/pixels"][()][..., 0], pixels)
            np.testing.assert_array_equal(f["images/labels"][()], labels)
            offsets, rows = f["images/caption_offsets"][()], f["images/caption_rows"][()]
            assert (np.diff(offsets) == 16).all()
            np.testing.assert_array_equal(rows[offsets[3]:offsets[4]], np.arange(16) + 16 * labels[3])
            assert f["classes/names"][3].decode() == "dress" and f["captions/embeddings"].shape == (160, 384)
        ds = liblift.Dataset(path)
        assert ds.count == len(labels) and ds.caption_rows(3) == list(range(16 * labels[3], 16 * labels[3] + 16))
    # A truncated IDX file is a clear error.
    raw = gzip.open(idx / "train-images-idx3-ubyte.gz").read()
    with gzip.open(idx / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:1000])
    r = lift("prepare-fashion-mnist", "--idx-dir", idx, "--data-dir", tmp_path / "other", "--captions",
             ROOT / "assets" / "fashion-mnist-captions.h5", check=False)
    assert r.returncode != 0 and "train-images-idx3-ubyte.gz" in r.stderr and "ends early" in r.stderr
