"""Embedding store: files written by h5py read by liblift, files written by liblift read by h5py."""
import threading

import h5py
import numpy as np
import pytest

import liblift
from liblift import LiftError, Store, StoreWriter


def f16(x):
    return x.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f4", ">f2"])
@pytest.mark.parametrize("layout", ["contiguous", "chunked", "gzip", "userblock"])
def test_h5py_written_files_read_back(tmp_path, rng, dtype, layout):
    data = rng.standard_normal((257, 48)).astype(dtype)
    path = tmp_path / "e.h5"
    kwargs = {"contiguous": {}, "chunked": {"chunks": (16, 48)}, "gzip": {"chunks": (32, 48), "compression": "gzip"},
              "userblock": {}}[layout]
    file_kwargs = {"userblock_size": 512} if layout == "userblock" else {}
    with h5py.File(path, "w", **file_kwargs) as f:
        f.create_dataset("embeddings", data=data, **kwargs)
    expected = data.astype(np.float32)
    with Store(path) as s:
        assert s.shape == (257, 48)
        assert s.shard_dtypes == [{"f2": "float16", "f4": "float32", "f8": "float64"}[dtype[1:]]]
        np.testing.assert_array_equal(s.read(), expected)
        idx = rng.integers(0, 257, size=300)
        np.testing.assert_array_equal(s.read_rows(idx), expected[idx])
        np.testing.assert_array_equal(s[10:20], expected[10:20])
        np.testing.assert_array_equal(s[5], expected[5])
        np.testing.assert_array_equal(s[-1], expected[-1])
        np.testing.assert_array_equal(s[1:30:7], expected[1:30:7])


def test_liblift_written_files_read_by_h5py(tmp_path, rng):
    data = rng.standard_normal((100, 20)).astype(np.float32)
    keys = [f"img-{i:04d}" for i in range(100)]
    caps = [f"a photo of thing {i} — ünïcödé" for i in range(100)]
    for dtype in ["float16", "float32"]:
        path = tmp_path / f"w-{dtype}.h5"
        with StoreWriter(path, 20, dtype=dtype, keys=True, captions=True) as w:
            w.append(data[:60], keys=keys[:60], captions=caps[:60])
            w.append(data[60:], keys=keys[60:], captions=caps[60:])
            assert w.rows == 100
        with h5py.File(path, "r") as f:
            ds = f["embeddings"]
            assert ds.dtype == np.dtype(dtype)
            assert ds.shape == (100, 20)
            np.testing.assert_array_equal(ds[()], data.astype(dtype))
            assert [k.decode() for k in f["keys"][()]] == keys
            assert f["captions"][7].decode() == caps[7]
        with Store(path) as s:
            assert s.string("captions", 99) == caps[99]
            assert s.strings("keys", [0, 42]) == ["img-0000", "img-0042"]


def test_float16_rounding_matches_numpy(tmp_path):
    values = np.array([[0.1, 1 / 3, 65504.0, -2.0e-5, 1e-7, 0.0123456]], dtype=np.float32)
    path = tmp_path / "h.h5"
    with StoreWriter(path, values.shape[1]) as w:
        w.append(values)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["embeddings"][()].view(np.uint16), values.astype(np.float16).view(np.uint16))


def test_strings_written_by_h5py(tmp_path, rng):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = rng.standard_normal((3, 4)).astype(np.float32)
        f["keys"] = np.array([b"a", b"bb", b"ccc"])  # fixed-length
        f.create_dataset("captions", data=["x", "ÿÿ", ""], dtype=h5py.string_dtype())
    with Store(path) as s:
        assert s.has_strings("keys") and s.has_strings("captions") and not s.has_strings("labels")
        assert s.strings("keys") == ["a", "bb", "ccc"]
        assert s.strings("captions") == ["x", "ÿÿ", ""]
        with pytest.raises(LiftError) as e:
            s.string("labels", 0)
        assert e.value.status_name == "LIFT_ERR_NOT_FOUND" and "labels" in e.value.message


def test_shards_are_one_matrix(tmp_path, rng):
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 0, 17, 1)]
    paths = []
    for i, p in enumerate(parts):
        path = tmp_path / f"shard{i}.h5"
        with h5py.File(path, "w") as f:
            f["emb"] = p.astype(np.float16 if i % 2 else np.float32)
            f.create_dataset("keys", data=[f"{i}-{j}" for j in range(len(p))], dtype=h5py.string_dtype())
        paths.append(path)
    expected = np.concatenate([p.astype(np.float16 if i % 2 else np.float32).astype(np.float32) for i, p in enumerate(parts)])
    with Store(paths, dataset="emb") as s:
        assert s.shape == (23, 8)
        np.testing.assert_array_equal(s.read(), expected)
        idx = np.array([22, 4, 5, 21, 0, 5])
        np.testing.assert_array_equal(s.read_rows(idx), expected[idx])
        assert s.string("keys", 5) == "2-0"
        assert s.string("keys", 22) == "3-0"


def test_shard_dimension_mismatch(tmp_path):
    for name, d in [("a.h5", 4), ("b.h5", 5)]:
        with h5py.File(tmp_path / name, "w") as f:
            f["embeddings"] = np.ones((2, d), np.float32)
    with pytest.raises(LiftError) as e:
        Store([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert e.value.status_name == "LIFT_ERR_SHAPE"
    assert "b.h5" in e.value.message and "5 columns" in e.value.message


def test_file_larger_than_read_buffer(tmp_path, rng):
    rows, dim = 20_000, 64  # 2.5 MB of float16 through a 4 KiB staging buffer
    data = rng.standard_normal((rows, dim)).astype(np.float16)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = data
    with Store(path, buffer_bytes=4096) as s:
        out = np.empty((rows, dim), np.float32)
        s.read(out=out)
        np.testing.assert_array_equal(out, data.astype(np.float32))
        idx = rng.permutation(rows)[:5000]
        np.testing.assert_array_equal(s.read_rows(idx), data[idx].astype(np.float32))
        s.validate()
        i, _ = s.search(data[[123]].astype(np.float32), 1)
        assert i[0, 0] == 123


def test_normalize_and_nonfinite(tmp_path):
    data = np.ones((10, 4), np.float32)
    data[2] = [3, 4, 0, 0]
    data[6] = 0
    data[8, 1] = np.nan
    path = tmp_path / "n.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = data
    with Store(path, normalize=True, check_finite=False) as s:
        np.testing.assert_allclose(s[2], [0.6, 0.8, 0, 0], rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(s.read(0, 5), axis=1), 1, rtol=1e-6)
        with pytest.raises(LiftError, match="row 6"):
            s.read_rows([1, 6])
    with Store(path) as s:
        with pytest.raises(LiftError) as e:
            s.read()
        assert e.value.status_name == "LIFT_ERR_VALUE"
        assert "row 8" in e.value.message and "n.h5" in e.value.message and "column 1" in e.value.message
        with pytest.raises(LiftError, match="row 8"):
            s.validate()
        s.read_rows([0, 9, 7])  # good rows still read
    with Store(path, check_finite=False) as s:
        assert np.isnan(s[8][1])


def test_open_errors(tmp_path):
    def status_of(*args, **kwargs):
        with pytest.raises(LiftError) as e:
            Store(*args, **kwargs)
        return e.value

    e = status_of(tmp_path / "missing.h5")
    assert e.status_name == "LIFT_ERR_IO" and "missing.h5" in e.message
    (tmp_path / "text.h5").write_text("not hdf5")
    e = status_of(tmp_path / "text.h5")
    assert e.status_name == "LIFT_ERR_IO" and "not an HDF5 file" in e.message
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["rank3"] = np.zeros((2, 3, 4), np.float32)
        f["ints"] = np.zeros((2, 3), np.int64)
        f["strs"] = np.array([b"a", b"b"])
        f.create_group("grp")
    e = status_of(tmp_path / "bad.h5")
    assert e.status_name == "LIFT_ERR_NOT_FOUND" and "embeddings" in e.message
    e = status_of(tmp_path / "bad.h5", dataset="rank3")
    assert e.status_name == "LIFT_ERR_FORMAT" and "rank 3" in e.message
    e = status_of(tmp_path / "bad.h5", dataset="ints")
    assert e.status_name == "LIFT_ERR_FORMAT" and "int64" in e.message
    e = status_of(tmp_path / "bad.h5", dataset="strs")
    assert e.status_name == "LIFT_ERR_FORMAT"
    e = status_of(tmp_path / "bad.h5", dataset="grp")
    assert e.status_name == "LIFT_ERR_FORMAT" and "grp" in e.message
    with pytest.raises(ValueError):
        Store([])


def test_read_errors(tmp_path):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f["embeddings"] = np.ones((5, 3), np.float32)
    with Store(path) as s:
        for bad in ([5], [-1], [0, 1, 99]):
            with pytest.raises(LiftError) as e:
                s.read_rows(bad)
            assert e.value.status_name == "LIFT_ERR_ARGUMENT" and "out of range" in e.value.message
        with pytest.raises(LiftError, match="out of range"):
            s.read(3, 3)
        with pytest.raises(ValueError):
            s.read(0, 2, out=np.empty((2, 4), np.float32))
        with pytest.raises(ValueError):
            s.read(0, 2, out=np.empty((2, 3), np.float64))
        with pytest.raises(ValueError):
            s.read(0, 2, out=np.empty((3, 2), np.float32).T)
        out = np.empty((2, 3), np.float32)
        assert s.read(1, 2, out=out) is out
    with pytest.raises(ValueError, match="closed"):
        s.read()


def test_writer_errors_and_atomicity(tmp_path):
    path = tmp_path / "w.h5"
    with StoreWriter(path, 3) as w:
        w.append(np.ones((2, 3)))
    with pytest.raises(LiftError) as e:
        StoreWriter(path, 3)
    assert e.value.status_name == "LIFT_ERR_IO" and "already exists" in e.value.message
    # The hint speaks Python: the overwrite= argument, not the C flag.
    assert e.value.message.endswith("already exists (pass overwrite=True to replace it)"), e.value.message
    assert "overwrite=True" in str(e.value) and "flag" not in str(e.value)
    # An exception inside the block discards the new file and keeps the old one.
    with pytest.raises(RuntimeError):
        with StoreWriter(path, 3, overwrite=True) as w:
            w.append(np.zeros((7, 3)))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]
    with Store(path) as s:
        assert s.rows == 2
    w = StoreWriter(tmp_path / "v.h5", 3, keys=True)
    with pytest.raises(LiftError) as e:
        w.append(np.array([[1, 2, np.inf]]), keys=["a"])
    assert e.value.status_name == "LIFT_ERR_VALUE" and "row 0" in e.value.message
    with pytest.raises(LiftError, match="overflows float16"):
        w.append(np.array([[1, 2, 1e6]]), keys=["a"])
    with pytest.raises(LiftError, match="keys"):
        w.append(np.ones((1, 3)))
    with pytest.raises(ValueError, match="2 keys given for 1 rows"):
        w.append(np.ones((1, 3)), keys=["a", "b"])
    with pytest.raises(ValueError, match="columns"):
        w.append(np.ones((1, 4)), keys=["a"])
    with pytest.raises(ValueError, match="NUL"):
        w.append(np.ones((1, 3)), keys=["a\0b"])
    assert w.rows == 0
    w.append(np.ones((1, 3)), keys=["ok"])
    w.finish()
    with pytest.raises(LiftError) as e:
        w.append(np.ones((1, 3)), keys=["late"])
    assert e.value.status_name == "LIFT_ERR_STATE"
    w.close()
    with Store(tmp_path / "v.h5") as s:
        assert s.rows == 1 and s.string("keys", 0) == "ok"
    with pytest.raises(ValueError):
        StoreWriter(tmp_path / "x.h5", 3, dtype="float64")
    with pytest.raises(LiftError, match="dim"):
        StoreWriter(tmp_path / "x.h5", 0)


def test_concurrent_reads_share_one_store(tmp_path, rng):
    data = rng.standard_normal((3000, 32)).astype(np.float32)
    path = tmp_path / "c.h5"
    with StoreWriter(path, 32, dtype="float32") as w:
        w.append(data)
    errors = []
    with Store(path) as s:
        def worker(seed):
            r = np.random.default_rng(seed)
            for _ in range(50):
                idx = r.integers(0, 3000, 64)
                if not np.array_equal(s.read_rows(idx), data[idx]):
                    errors.append(seed)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_error_message_is_thread_local(tmp_path):
    with pytest.raises(LiftError):
        Store(tmp_path / "nope.h5")
    seen = []
    t = threading.Thread(target=lambda: seen.append(liblift._lib.lib.lift_last_error()))
    t.start()
    t.join()
    assert seen == [b""]
    assert b"nope.h5" in liblift._lib.lib.lift_last_error()
