"""Image-caption data as it is on disk: webdataset tar shards (written with Python's tarfile and
with the webdataset package), the LIFT repository's images/<shard>/<key>.<ext> + parquet caption
embeddings, and an image folder with an index file; decoded and paired by the loader, with bad
samples skipped and counted."""
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

import liblift
from liblift import LiftError, Loader, Source, StoreWriter

DIM = 8


def photo(rng, h, w, fmt="JPEG", **options):
    small = (rng.random((h // 8 + 2, w // 8 + 2, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder, rng, shards=3, per_shard=10, start=0, members=None):
    """img2dataset-style shards: {key}.jpg, {key}.txt, {key}.json; returns {key: image bytes}."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{start + s * per_shard + i:09d}"
                data = photo(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                images[key] = data
                add_member(tar, f"{key}.jpg", data)
                add_member(tar, f"{key}.txt", f"caption {key}".encode())
                add_member(tar, f"{key}.json", json.dumps({"key": key}).encode())
                for ext, payload in (members(key) if members else {}).items():
                    add_member(tar, f"{key}.{ext}", payload)
    return images


def keyed_store(path, keys, rng, dtype="float32"):
    emb = {k: rng.standard_normal(DIM).astype(np.float32) for k in keys}
    with StoreWriter(path, dim=DIM, dtype=dtype, keys=True) as w:
        w.append(np.stack([emb[k] for k in keys]), keys=list(keys))
    return emb


def all_batches(loader, epochs=1):
    return [loader.next() for _ in range(loader.batches_per_epoch * epochs)]


def test_tar_shards_decode_and_pair_by_key(tmp_path, rng):
    images = write_shards(tmp_path / "shards", rng)
    emb = keyed_store(tmp_path / "emb.h5", [k + ".jpg" for k in images], rng)  # keys with extensions: still match
    source = Source(str(tmp_path / "shards/{00000..00002}.tar"), embeddings=tmp_path / "emb.h5")
    assert (source.kind, source.count, source.shards, source.text_dim) == ("tar", 30, 3, DIM)
    assert "webdataset tar shards: 3 files, 30 samples" in source.summary
    loader = Loader(source, batch_size=7, image_size=32, seed=1, max_bad_fraction=0)
    assert loader.batches_per_epoch == 30 // 7
    seen = []
    for b in all_batches(loader, epochs=2):
        assert b.count == len(b.keys) == b.images.shape[0] and b.skipped == 0
        for image, text, key in zip(b.images, b.texts, b.keys):
            np.testing.assert_array_equal(image, liblift.preprocess(images[key], 32, filter="bicubic", reduced_decode=True))
            np.testing.assert_array_equal(text, emb[key + ".jpg"])
        seen += b.keys
    assert len(seen) == len(set(seen[:28])) + len(seen[28:]) and set(seen) <= set(images)
    # A folder of shards is the same source.
    assert Source(tmp_path / "shards", embeddings=tmp_path / "emb.h5").count == 30


def test_webdataset_written_shards_and_member_embeddings(tmp_path, rng):
    wds = pytest.importorskip("webdataset")
    (tmp_path / "w").mkdir()
    expected = {}
    with wds.TarWriter(str(tmp_path / "w" / "shard-000.tar")) as sink:
        for i in range(12):
            key = f"sample{i:04d}"
            vector = rng.standard_normal(DIM).astype(np.float32)
            expected[key] = vector
            sample = {"__key__": key, "png": photo(rng, 30, 40, "PNG"), "txt": "a caption"}
            if i % 2:
                sample["npy"] = vector  # webdataset writes it with np.save
            else:
                sample["emb"] = vector.tobytes()
            sink.write(sample)
    source = Source(tmp_path / "w")  # no store: the samples carry their embeddings
    assert (source.count, source.text_dim) == (12, DIM)
    loader = Loader(source, batch_size=12, image_size=16, shuffle=False, max_bad_fraction=0)
    b = loader.next()
    assert sorted(b.keys) == sorted(expected)
    for text, key in zip(b.texts, b.keys):
        np.testing.assert_array_equal(text, expected[key])


def bad_shard(path, rng, store_keys):
    """One of every bad-sample kind, and good samples around them."""
    good = photo(rng, 40, 50)
    header = b"\x89PNG\r\n\x1a\n"
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    bomb = (header + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    samples = [
        ("good0", "jpg", good), ("corrupt", "jpg", b"\xff\xd8\xff" + bytes(300)), ("truncated", "jpg", good[: len(good) // 2]),
        ("empty", "jpg", b""), ("gif", "gif", gif.getvalue()), ("bomb", "png", bomb), ("noembedding", "jpg", good),
        ("nanembedding", "jpg", good), ("good1", "jpg", good), ("good0", "jpg", good),  # good0 again: a duplicate key
    ]
    with tarfile.open(path, "w") as tar:
        for key, ext, data in samples:
            add_member(tar, f"{key}.{ext}", data)
            add_member(tar, f"{key}.txt", b"caption")
    keys = [k for k in dict.fromkeys(k for k, _, _ in samples) if k != "noembedding"]
    emb = rng.standard_normal((len(keys), DIM)).astype(np.float32)
    with StoreWriter(store_keys, dim=DIM, dtype="float32", keys=True) as w:
        w.append(emb, keys=keys)
    import h5py
    with h5py.File(store_keys, "a") as f:  # a NaN in nanembedding's row
        f["embeddings"][keys.index("nanembedding"), 2] = np.nan
    return len(samples)


def test_every_bad_sample_kind_is_skipped_and_counted(tmp_path, rng):
    n = bad_shard(tmp_path / "bad.tar", rng, tmp_path / "emb.h5")
    source = Source(tmp_path / "bad.tar", embeddings=tmp_path / "emb.h5")
    assert source.count == n
    loader = Loader(source, batch_size=n, image_size=16, shuffle=False, max_bad_fraction=1)
    b = loader.next()
    assert sorted(b.keys) == ["good0", "good1"] and b.skipped == n - 2
    report = loader.bad_samples()
    assert report["seen"] == n
    assert report["counts"] == {"empty": 1, "unsupported": 1, "corrupt": 1, "truncated": 1, "too_large": 1,
                                "missing_embedding": 1, "non_finite_embedding": 1, "duplicate_key": 1}
    assert "noembedding" in report["report"] and "GIF images are not supported" in report["report"]
    # Over the allowed fraction (default 1 %): an error naming the kinds and examples.
    strict = Loader(source, batch_size=n, image_size=16, shuffle=False)
    with pytest.raises(LiftError, match=r"8 of 10 samples .* more than the allowed 1.0 %: 1 empty \(empty"):
        strict.next()


def test_streams_resume_exactly_and_ranks_read_disjoint_shards(tmp_path, rng):
    images = write_shards(tmp_path / "s", rng, shards=4, per_shard=9)
    keyed_store(tmp_path / "e.h5", list(images), rng)
    source = Source(tmp_path / "s", embeddings=tmp_path / "e.h5")

    def run(start=(0, 0), steps=12, rank=0, workers=1, block=5):
        loader = Loader(source, batch_size=6, image_size=8, seed=4, start=start, rank=rank, workers=workers,
                        shuffle_block=block, augment=True, crop_scale=(0.5, 1))
        return [loader.next() for _ in range(steps)]

    full = run()
    per_epoch = 36 // 6
    resumed = run(start=(1, 2), steps=12 - per_epoch - 2)
    for a, b in zip(full[per_epoch + 2:], resumed):
        assert a.keys == b.keys and (a.epoch, a.batch) == (b.epoch, b.batch)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.texts, b.texts)
    # Every sample once in the first epoch; the order is shuffled across shards.
    first_epoch = [k for b in full[:per_epoch] for k in b.keys]
    assert sorted(first_epoch) == sorted(images) and first_epoch != sorted(first_epoch)
    # Two ranks: each step's parts come from different shards (4 shards: 2 per rank per epoch).
    r0, r1 = run(rank=0, workers=2, steps=per_epoch), run(rank=1, workers=2, steps=per_epoch)
    shard_of = lambda key: int(key) // 9  # noqa: E731
    shards0 = {shard_of(k) for b in r0 for k in b.keys}
    shards1 = {shard_of(k) for b in r1 for k in b.keys}
    assert len(shards0) == len(shards1) == 2 and not shards0 & shards1
    assert all(b.count == 3 for b in r0 + r1)
    with pytest.raises(LiftError, match="4 shards cannot feed 5 ranks"):
        Loader(source, batch_size=10, image_size=8, workers=5)


def save_parquet(embeddings, keys, path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.Table.from_arrays([pa.array(keys, type=pa.string()), pa.array(embeddings.tolist(), type=pa.list_(pa.float32()))],
                                 names=["key", "embedding"])
    pq.write_table(table, path)


def test_the_lift_layout_from_images_and_parquet(tmp_path, rng):
    from liblift.import_embeddings import import_embeddings

    expected = {}
    for s in range(2):
        shard = f"train-{s:05d}-of-00002"
        (tmp_path / "images" / shard).mkdir(parents=True)
        (tmp_path / "caption_embeddings" / shard).mkdir(parents=True)
        keys = []
        for i in range(8):
            key = f"{s:06d}{i:06d}.jpg"
            data = photo(rng, 48, 64)
            (tmp_path / "images" / shard / key).write_bytes(data)
            keys.append(key)
            expected[key] = data
        emb = rng.standard_normal((8, DIM)).astype(np.float32)
        save_parquet(emb, keys, tmp_path / "caption_embeddings" / shard / "0.parquet")
        expected.update({k + "#emb": e for k, e in zip(keys, emb)})
    import_embeddings([tmp_path / "caption_embeddings"], tmp_path / "captions.h5", dtype="float32", quiet=True)
    source = Source(tmp_path, embeddings=tmp_path / "captions.h5")  # the root: its images/ folder is found
    assert (source.kind, source.count, source.shards) == ("folders", 16, 2)
    loader = Loader(source, batch_size=16, image_size=24, max_bad_fraction=0)
    b = loader.next()
    assert sorted(b.keys) == sorted(k for k in expected if not k.endswith("#emb"))
    for image, text, key in zip(b.images, b.texts, b.keys):
        np.testing.assert_array_equal(text, expected[key + "#emb"])
        np.testing.assert_array_equal(image, liblift.preprocess(expected[key], 24, filter="bicubic", reduced_decode=True))


def test_an_image_folder_with_an_index_file(tmp_path, rng):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    names = [f"sub/p{i}.png" if i % 2 else f"p{i}.jpg" for i in range(6)]
    for name in names:
        (tmp_path / "photos" / name).write_bytes(photo(rng, 30, 30, "PNG" if name.endswith("png") else "JPEG"))
    (tmp_path / "index.csv").write_text("image,key,caption\n" + "".join(
        f'{n},id{i},"a photo, number {i}"\n' for i, n in enumerate(names)) + f"{names[0]},id0,another caption\n")
    emb = keyed_store(tmp_path / "e.h5", [f"id{i}" for i in range(6)], rng)
    source = Source(tmp_path / "photos", embeddings=tmp_path / "e.h5", index=tmp_path / "index.csv")
    assert (source.kind, source.count, source.shards) == ("index", 6, 0)
    b = Loader(source, batch_size=6, image_size=16).next()
    assert sorted(b.keys) == [f"id{i}" for i in range(6)]
    for text, key in zip(b.texts, b.keys):
        np.testing.assert_array_equal(text, emb[key])
    (tmp_path / "escape.csv").write_text("image\n../outside.jpg\n")
    with pytest.raises(LiftError, match=r"escape.csv' line 2: image '../outside.jpg' must be a path inside"):
        Source(tmp_path / "photos", embeddings=tmp_path / "e.h5", index=tmp_path / "escape.csv")


def test_sources_explain_what_is_missing(tmp_path, rng):
    write_shards(tmp_path / "s", rng, shards=1, per_shard=3)
    with pytest.raises(LiftError, match="carry no caption embeddings"):
        Source(tmp_path / "s")
    keyed_store(tmp_path / "k.h5", ["a"], rng)
    (tmp_path / "notatar.tar").write_bytes(b"hello" * 200)
    with pytest.raises(LiftError, match="notatar.tar' is not a tar file"):
        Source(tmp_path / "notatar.tar", embeddings=tmp_path / "k.h5")
    with pytest.raises(LiftError, match="a '{' without '}'"):
        Source(str(tmp_path / "s/{0000.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiftError, match="holds no image files"):
        Source(tmp_path / "empty", embeddings=tmp_path / "k.h5")


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_in_gnu_and_pax_headers(tmp_path, rng, fmt):
    keys = ["deep/" + "x" * 120 + f"{i:03d}" for i in range(3)] + ["caf\u00e9-\u00fcml\u00e4ut"]
    with tarfile.open(tmp_path / "long.tar", "w", format=fmt) as tar:
        for key in keys:
            data = photo(rng, 20, 24, "PNG")
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    emb = keyed_store(tmp_path / "e.h5", keys, rng)
    loader = Loader(Source(tmp_path / "long.tar", embeddings=tmp_path / "e.h5"), batch_size=4, image_size=8, shuffle=False)
    b = loader.next()
    assert b.keys == keys
    for text, key in zip(b.texts, b.keys):
        np.testing.assert_array_equal(text, emb[key])


def test_embedding_members_that_lie_about_their_shape_are_bad_samples(tmp_path, rng):
    """An .npy header declaring an absurd shape (whose size overflows) or data of the wrong size
    makes its sample unusable; the shard's other samples train."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (16777216, 16777216, 16777216), }"
    header += " " * (63 - len(header) % 64) + "\n"
    lying = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(32)
    good = io.BytesIO()
    np.save(good, rng.standard_normal(DIM).astype(np.float32))
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for key, npy in (("a", good.getvalue()), ("b", lying), ("c", good.getvalue()[:-4])):
            for ext, data in (("png", photo(rng, 10, 10, "PNG")), ("npy", npy)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    loader = Loader(Source(tmp_path / "s.tar"), batch_size=3, image_size=8, shuffle=False, max_bad_fraction=1)
    assert loader.next().keys == ["a"]
    report = loader.bad_samples()
    assert report["counts"] == {"corrupt": 2} and "more than 2^24 values" in report["report"]
