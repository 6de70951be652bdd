"""`lift train / eval / encode / info` on data as users have it: webdataset tar shards with a
keyed caption store (and an image folder in the LIFT layout), resumed exactly, with bad samples
skipped, summarised and, past --max-bad-fraction, stopping the run."""
import io
import json
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

import liblift
from cli_helpers import lift

DIM = 16


def tiny_image(rng, label):
    """A 12x12 RGB image whose bright half (left or right) is its class."""
    x = rng.integers(0, 40, (12, 12, 3)).astype(np.uint8)
    if label == 0:
        x[:, :6] = 220
    else:
        x[:, 6:] = 220
    out = io.BytesIO()
    Image.fromarray(x).save(out, format="PNG")
    return out.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """train/ (4 shards of 24) and test/ (1 shard of 20) tar folders; captions.h5 keyed by sample:
    each sample's caption is its class's embedding plus a little noise."""
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(3)
    classes = rng.standard_normal((2, DIM)).astype(np.float32)
    keys, rows = [], []
    for split, count, per in (("train", 96, 24), ("test", 20, 20)):
        (d / split).mkdir()
        for s in range(count // per):
            with tarfile.open(d / split / f"{s:05d}.tar", "w") as tar:
                for i in range(per):
                    key = f"{split}{s * per + i:06d}"
                    label = (s * per + i) % 2
                    add(tar, f"{key}.png", tiny_image(rng, label))
                    add(tar, f"{key}.txt", b"left" if label == 0 else b"right")
                    keys.append(key)
                    rows.append(classes[label] + 0.05 * rng.standard_normal(DIM).astype(np.float32))
    with liblift.StoreWriter(d / "captions.h5", dim=DIM, dtype="float32", keys=True) as w:
        w.append(np.stack(rows), keys=keys)
    return d


def train(shards, out, *extra):
    return ["train", "--data", shards / "train", "--embeddings", shards / "captions.h5", "--eval-data", shards / "test",
            "--out", out, "--preset", "ViT-XS/7-28", "--image-size", 12, "--patch", 4, "--width", 32, "--depth", 1,
            "--heads", 2, "--batch-size", 16, "--lr", 3e-3, "--quiet", *extra]


def test_train_eval_encode_from_tar_shards(shards, tmp_path):
    out = tmp_path / "run"
    lift(*train(shards, out, "--steps", 30))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "loss" in l]
    assert steps[-1]["step"] == 30 and steps[0]["loss"] > steps[-1]["loss"] and steps[-1]["bad_samples"] == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["retrieval"]["images"] == 20 and result["retrieval"]["captions"] == 20
    assert result["retrieval"]["image_to_text"]["R@10"] > 0.5  # the class is in the caption
    r = lift("eval", "--model", out / "model.safetensors", "--data", shards / "test", "--embeddings", shards / "captions.h5",
             "--json", tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["retrieval"] == result["retrieval"]
    lift("encode", "--model", out / "model.safetensors", "--data", shards / "test", "--embeddings", shards / "captions.h5",
         "--out", tmp_path / "emb.h5")
    with liblift.Store(tmp_path / "emb.h5") as s:
        assert s.shape == (20, DIM) and s.string("keys", 3) == "test000003" and s.rows_for_key("test000007") == [7]
    info = lift("info", shards / "train", str(shards / "train/{00000..00001}.tar")).stdout
    assert "4 files, 96 samples" in info and "2 files, 48 samples" in info


def test_resume_in_the_middle_of_a_shard_is_bit_identical(shards, tmp_path):
    args = ("--steps", 14, "--augment", "--crop-scale", 0.8, "--shuffle-block", 10, "--eval-every", 0)
    lift(*train(shards, tmp_path / "whole", *args))
    lift(*train(shards, tmp_path / "parts", *args, "--stop-at", 5))  # 5 x 16 samples: inside the 4th shard read
    lift(*train(shards, tmp_path / "parts", *args, "--resume"))
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "parts" / "model.safetensors").read_bytes()


def test_bad_samples_are_skipped_counted_and_stop_the_run_past_the_limit(shards, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (shards / "train" / "00000.tar").read_bytes()
    (bad / "00000.tar").write_bytes(good)
    with tarfile.open(bad / "00001.tar", "w") as tar:  # 2 of 28 samples unusable: ~7 %
        for i in range(24):
            add(tar, f"extra{i:04d}.png", tiny_image(np.random.default_rng(i), i % 2))
        add(tar, "broken.png", b"\x89PNG\r\n\x1a\n" + bytes(40))
        add(tar, "orphan.png", tiny_image(np.random.default_rng(9), 0))  # no caption embedding
    keys = [f"extra{i:04d}" for i in range(24)] + ["broken"]
    with liblift.StoreWriter(tmp_path / "more.h5", dim=DIM, dtype="float32", keys=True) as w:
        w.append(np.random.default_rng(1).standard_normal((25, DIM)).astype(np.float32), keys=keys)
    common = ["train", "--data", bad, "--embeddings", shards / "captions.h5", "--embeddings", tmp_path / "more.h5",
              "--preset", "ViT-XS/7-28", "--image-size", 12, "--patch", 4, "--width", 32, "--depth", 1, "--heads", 2,
              "--batch-size", 16, "--steps", 6]
    r = lift(*common, "--out", tmp_path / "lenient", "--max-bad-fraction", 0.2)
    assert re.search(r"left out \d+ of \d+ samples read .*\d corrupt \(broken: image: PNG: .*\d missing_embedding \(orphan: no caption",
                     r.stderr), r.stderr
    lines = [json.loads(l) for l in (tmp_path / "lenient" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert lines[-1]["bad_samples"] >= 2
    assert set(lines[-1]["bad_by_kind"]) == {"corrupt", "missing_embedding"}
    assert lines[-1]["bad_examples"]["corrupt"][0].startswith("broken: image: PNG")
    check = lift("check", bad).stdout
    assert "ok: webdataset tar shards: 2 files, 50 samples" in check and "1 cannot be used" in check and "broken" in check
    r = lift(*common, "--out", tmp_path / "strict", "--quiet", check=False)
    assert r.returncode != 0
    assert "could not be used, more than the allowed 1.0 %" in r.stderr and "corrupt" in r.stderr


def test_an_image_folder_in_the_lift_layout(shards, tmp_path):
    images = tmp_path / "lift" / "images"
    with tarfile.open(shards / "train" / "00000.tar") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".png"):
                shard = images / f"train-{int(member.name[5:11]) % 2:05d}-of-00002"
                shard.mkdir(parents=True, exist_ok=True)
                (shard / member.name).write_bytes(tar.extractfile(member).read())
    r = lift("train", "--data", tmp_path / "lift", "--embeddings", shards / "captions.h5", "--out", tmp_path / "run",
             "--preset", "ViT-XS/7-28", "--image-size", 12, "--patch", 4, "--width", 32, "--depth", 1, "--heads", 2,
             "--batch-size", 8, "--steps", 3)
    assert "image folders under" in r.stderr and "2 shards, 24 images" in r.stderr


def test_lift_build_writes_encoded_dataset_shards(shards, tmp_path):
    out = tmp_path / "built"
    r = lift("build", "--data", shards / "train", "--embeddings", shards / "captions.h5", "--out", out, "--shard-size", 40)
    assert "wrote 96 samples in 3 shards" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000.h5", "00001.h5", "00002.h5"]
    originals = {}
    for tar_path in sorted((shards / "train").iterdir()):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    originals[m.name[:-4]] = tar.extractfile(m).read()
    store = liblift.Store(shards / "captions.h5")
    ds = liblift.Dataset(out / "00001.h5")
    assert ds.count == 40 and ds.image_shape == (0, 0, 3)
    import h5py
    with h5py.File(out / "00001.h5") as f:
        keys = [k.decode() for k in f["images/keys"][:]]
    for i, key in enumerate(keys):
        assert ds.encoded_image(i) == originals[key]  # the file's own bytes
        np.testing.assert_allclose(ds.captions.read_rows(ds.caption_rows(i)), store.read_rows(store.rows_for_key(key)), atol=1e-2)
    # A folder of built shards is a dataset: lift train reads it.
    lift("train", "--data", out, "--out", tmp_path / "run", "--preset", "ViT-XS/7-28", "--image-size", 12, "--patch", 4,
         "--width", 32, "--depth", 1, "--heads", 2, "--batch-size", 16, "--steps", 2, "--quiet")
    # --resume keeps complete shards and writes the missing ones.
    (out / "00002.h5").unlink()
    before = (out / "00000.h5").stat().st_mtime_ns
    assert lift("build", "--data", shards / "train", "--embeddings", shards / "captions.h5", "--out", out,
                "--shard-size", 40, check=False).returncode != 0
    lift("build", "--data", shards / "train", "--embeddings", shards / "captions.h5", "--out", out, "--shard-size", 40,
         "--resume", "--quiet")
    assert (out / "00000.h5").stat().st_mtime_ns == before and liblift.Dataset(out / "00002.h5").count == 16
