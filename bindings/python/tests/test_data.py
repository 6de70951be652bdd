"""Datasets, the data loader, preprocessing and evaluation metrics through the bindings,
checked against h5py, Pillow and numpy."""
import h5py
import numpy as np
import pytest
from PIL import Image

import liblift
from liblift import Dataset, LiftError, Loader


def make(path, rng, n=12, shape=(6, 7, 3), captions=5, d=4, labels=True, dtype="float16"):
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    emb = rng.standard_normal((captions, d)).astype(np.float32)
    lists = [[i % captions] + ([(i + 1) % captions] if i % 2 else []) for i in range(n)]
    liblift.write_dataset(path, images, emb, lists, labels=[i % 3 for i in range(n)] if labels else None,
                          class_names=["cat", "dog", "eel"], class_prompts=[[0, 1], [2], [3, 4]],
                          caption_texts=[f"caption {k}" for k in range(captions)], dtype=dtype)
    return images, emb, lists


def test_h5py_written_dataset_reads_in_liblift(tmp_path, rng):
    a = make(tmp_path / "a.h5", rng)
    b = make(tmp_path / "b.h5", rng, n=5, captions=3)
    ds = Dataset([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert (ds.count, ds.caption_count, ds.image_shape, ds.text_dim) == (17, 8, (6, 7, 3), 4)
    assert ds.class_names == ["cat", "dog", "eel"] and ds.class_prompts(2) == [3, 4]
    idx = [16, 0, 12, 3]
    expected = np.concatenate([a[0], b[0]])[idx]
    np.testing.assert_array_equal(ds.pixels(idx), expected)
    np.testing.assert_array_equal(ds.labels(idx), [1, 0, 0, 0])
    # Image 13 is image 1 of b: captions 1, 2 of b -> global 6, 7.
    assert ds.caption_rows(13) == [6, 7]
    caps = ds.captions
    np.testing.assert_array_equal(caps.read_rows([6, 7]), b[1][[1, 2]].astype(np.float16).astype(np.float32))
    assert caps.string("captions/text", 6) == "caption 1"
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["liblift_format"] == "dataset"
    with pytest.raises(LiftError) as e:
        ds.pixels([17])
    assert e.value.status_name == "LIFT_ERR_ARGUMENT"


def test_malformed_datasets(tmp_path, rng):
    make(tmp_path / "a.h5", rng)
    with h5py.File(tmp_path / "a.h5", "a") as f:
        del f["images/caption_offsets"]
        f["images/caption_offsets"] = np.arange(5)
    with pytest.raises(LiftError) as e:
        Dataset(tmp_path / "a.h5")
    assert e.value.status_name == "LIFT_ERR_SHAPE" and "caption_offsets" in e.value.message
    make(tmp_path / "f.h5", rng)
    with h5py.File(tmp_path / "f.h5", "a") as f:
        del f["images/pixels"]
        f["images/pixels"] = np.zeros((12, 6, 7, 3), np.float32)
    with pytest.raises(LiftError, match="uint8"):
        Dataset(tmp_path / "f.h5")
    with pytest.raises(ValueError, match="no captions"):
        liblift.write_dataset(tmp_path / "g.h5", np.zeros((2, 2, 2, 1), np.uint8), np.ones((1, 2)), [[0], []])


@pytest.mark.parametrize("src_shape,size,channels,box", [
    ((28, 28, 1), 28, 1, None),            # identity
    ((28, 28, 1), 56, 3, None),            # upscale, grey -> RGB
    ((64, 48, 3), 20, 3, None),            # downscale with antialias, centre view
    ((64, 48, 3), 20, 1, None),            # ... and RGB -> grey
    ((33, 50, 3), 32, 3, (5.0, 2.0, 40.0, 31.0)),   # an arbitrary crop box
    ((7, 300, 3), 16, 3, (100.0, 0.0, 107.0, 7.0)),
])
def test_preprocessing_matches_pillow(rng, src_shape, size, channels, box):
    img = rng.integers(0, 256, src_shape, dtype=np.uint8)
    ours = liblift.preprocess(img, size, channels, box=box)
    h, w, c = src_shape
    pil = Image.fromarray(img[..., 0] if c == 1 else img)
    if channels == 1 and c == 3:
        pil = pil.convert("L")
    elif channels == 3 and c == 1:
        pil = pil.convert("RGB")
    if box is None:  # the centre view: Resize(size) of the short side, then CenterCrop(size)
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))
        ref = np.asarray(pil.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size)))
    else:
        ref = np.asarray(pil.resize((size, size), Image.BILINEAR, box=box))
    ref = ref.reshape(size, size, channels)
    # Pillow converts channels before resizing, liblift after: identical for grey->RGB; for
    # RGB->grey the two orders may differ by rounding, at most 1.
    tolerance = 1 if (channels == 1 and c == 3) else 0
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= tolerance
    flipped = liblift.preprocess(img, size, channels, box=box, flip=True)
    np.testing.assert_array_equal(flipped, ours[:, ::-1])


def test_loader_epochs_ranks_and_resume(tmp_path, rng):
    images, emb, lists = make(tmp_path / "a.h5", rng, n=21, shape=(4, 4, 1))
    ds = Dataset(tmp_path / "a.h5")
    loader = Loader(ds, batch_size=5, image_size=4, channels=3, seed=3)
    assert loader.batches_per_epoch == 5
    seen, batches = [], []
    for b in (loader.next() for _ in range(10)):
        batches.append(b)
        for i, k in enumerate(b.indices):
            np.testing.assert_array_equal(b.images[i], np.repeat(images[k], 3, axis=2))
            assert b.caption_rows[i] in lists[k]
            np.testing.assert_array_equal(b.texts[i], emb[b.caption_rows[i]].astype(np.float16).astype(np.float32))
        seen += list(b.indices)
    assert sorted(seen[:21]) == list(range(21)) and sorted(seen[21:]) == list(range(21))
    assert seen[:21] != seen[21:]
    resumed = Loader(ds, batch_size=5, image_size=4, channels=3, seed=3, start=(1, 2))
    b = resumed.next()
    np.testing.assert_array_equal(b.indices, batches[7].indices)
    np.testing.assert_array_equal(b.caption_rows, batches[7].caption_rows)
    parts = [Loader(ds, batch_size=6, image_size=4, seed=3, rank=r, workers=2) for r in range(2)]
    union = []
    for _ in range(parts[0].batches_per_epoch):
        x, y = parts[0].next(), parts[1].next()
        assert x.global_count == len(x.indices) + len(y.indices)
        union += list(x.indices) + list(y.indices)
    assert sorted(union) == list(range(21))
    with pytest.raises(LiftError, match="rank"):
        Loader(ds, batch_size=3, rank=2, workers=2)
    with pytest.raises(LiftError, match="crop scale"):
        Loader(ds, batch_size=3, augment=True, crop_scale=(0.5, 0.2))


def test_metrics_against_numpy(rng):
    images = rng.standard_normal((40, 8)).astype(np.float32)
    prompts = rng.standard_normal((12, 8)).astype(np.float32)
    groups = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9], [10], [11]]
    classes = liblift.class_embeddings(prompts, groups)
    unit = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    ref = np.stack([unit[g].mean(0) for g in groups])
    np.testing.assert_allclose(classes, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
    labels = rng.integers(0, 6, 40)
    scores = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ classes.T
    order = np.argsort(-scores, axis=1)
    top1, top5 = liblift.zero_shot(images, classes, labels)
    assert top1 == pytest.approx((order[:, 0] == labels).mean())
    assert top5 == pytest.approx((order[:, :5] == labels[:, None]).any(1).mean())
    texts = rng.standard_normal((60, 8)).astype(np.float32)
    owned = [list(range(3 * i, 3 * i + 3)) for i in range(20)]
    r = liblift.retrieval(images[:20], texts, owned)
    sim = (images[:20] / np.linalg.norm(images[:20], axis=1, keepdims=True)) @ (texts / np.linalg.norm(texts, axis=1, keepdims=True)).T
    for k in (1, 5, 10):
        i2t = np.mean([bool(set(np.argsort(-sim[i])[:k]) & set(owned[i])) for i in range(20)])
        t2i = np.mean([(c // 3) in np.argsort(-sim[:, c])[:k] for c in range(60)])
        assert r["image_to_text"][f"R@{k}"] == pytest.approx(i2t)
        assert r["text_to_image"][f"R@{k}"] == pytest.approx(t2i)
    pos, neg = rng.standard_normal((2, 40, 8)).astype(np.float32)
    cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_array_equal(liblift.pairwise(images, pos, neg), cos(images, pos) > cos(images, neg))
