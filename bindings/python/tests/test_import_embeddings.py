"""Caption embeddings in the LIFT repository's parquet layout, converted into a keyed store and
looked up by key. The parquet files are written exactly as LIFT's embed.py writes them."""
import subprocess
import sys

import numpy as np
import pytest

import liblift
from liblift import LiftError
from liblift.import_embeddings import ImportError_, import_embeddings

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")

from conftest import child_env  # noqa: E402


def save_like_lift(embeddings, keys, path):
    """LIFT's embed_label/embed.py save_tensor_as_parquet."""
    numpy_as_arrow = pa.array(embeddings.tolist(), type=pa.list_(pa.float32()))
    filenames_as_arrow = pa.array(keys, type=pa.string())
    pq.write_table(pa.Table.from_arrays([filenames_as_arrow, numpy_as_arrow], names=["key", "embedding"]), path)


def lift_layout(root, rng, shards=2, files=3, rows=40, dim=8, nan_rows=()):
    """caption_embeddings/<shard>/<n>.parquet; returns {key: embedding} of the finite rows."""
    expected = {}
    for s in range(shards):
        folder = root / "caption_embeddings" / f"train-{s:05d}-of-{shards:05d}"
        folder.mkdir(parents=True)
        for n in range(files):
            keys = [f"{s:03d}{n:03d}{i:06d}.jpg" for i in range(rows)]
            emb = rng.standard_normal((rows, dim)).astype(np.float32)
            for i in nan_rows:
                emb[i, 1] = np.nan
            save_like_lift(emb, keys, folder / f"{n}.parquet")
            expected.update({k: e for k, e in zip(keys, emb) if np.isfinite(e).all()})
    return expected


def test_lift_parquet_becomes_a_keyed_store(tmp_path, rng):
    expected = lift_layout(tmp_path, rng, nan_rows=(3, 17))
    report = import_embeddings([tmp_path / "caption_embeddings"], tmp_path / "captions.h5", dtype="float32", quiet=True)
    assert report["rows"] == len(expected) == 2 * 3 * 38
    assert report["skipped_non_finite"] == 2 * 3 * 2
    store = liblift.Store(tmp_path / "captions.h5")
    assert (store.rows, store.dim) == (len(expected), 8)
    keys = list(expected)
    for i, key in enumerate(keys):
        query = key if i % 2 else key[: -len(".jpg")]  # image file names carry the extension, tar keys do not
        rows = store.rows_for_key(query)
        assert len(rows) == 1 and store.string("keys", rows[0]) == key
        np.testing.assert_array_equal(store.read_rows(rows)[0], expected[key])
    assert store.rows_for_key("000000000003") == []  # a NaN row is not in the store
    with h5py.File(tmp_path / "captions.h5") as f:
        hashes = f["key_index/hashes"][:]
        assert (np.diff(hashes.astype(np.float64)) >= 0).all() and sorted(f["key_index/rows"][:]) == list(range(store.rows))


def test_command_line_and_its_errors(tmp_path, rng):
    lift_layout(tmp_path, rng, shards=1, files=2)
    command = [sys.executable, "-m", "liblift.import_embeddings", str(tmp_path / "caption_embeddings"), "--out",
               str(tmp_path / "c.h5")]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "80 rows of 8 from 2 parquet files" in done.stdout
    assert liblift.Store(tmp_path / "c.h5").rows == 80
    again = subprocess.run(command, capture_output=True, text=True, env=child_env())
    assert again.returncode == 1 and "exists (pass --overwrite" in again.stderr
    # Wrong columns, ragged rows, a file that is not parquet: one-line errors naming the file.
    pq.write_table(pa.table({"name": ["a"], "embedding": [[1.0, 2.0]]}), tmp_path / "nokey.parquet")
    with pytest.raises(ImportError_, match=r"nokey.parquet: no column 'key'"):
        import_embeddings([tmp_path / "nokey.parquet"], tmp_path / "x.h5", quiet=True)
    pq.write_table(pa.table({"key": ["a", "b"], "embedding": [[1.0, 2.0], [1.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(ImportError_, match=r"ragged.parquet: row 1 of 'embedding' has 1 values; row 0 has 2"):
        import_embeddings([tmp_path / "ragged.parquet"], tmp_path / "x.h5", quiet=True)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ImportError_, match=r"junk.parquet: not a readable parquet file"):
        import_embeddings([tmp_path / "junk.parquet"], tmp_path / "x.h5", quiet=True)
    assert not (tmp_path / "x.h5").exists()


def test_stores_with_keys_from_other_tools(tmp_path, rng):
    """h5py-written keys without liblift's index: indexed in memory; repeated keys are several rows."""
    with h5py.File(tmp_path / "h5py.h5", "w") as f:
        f["embeddings"] = rng.standard_normal((30, 4)).astype(np.float32)
        f.create_dataset("keys", data=[f"k{i % 10}.PNG" for i in range(30)], dtype=h5py.string_dtype())
    store = liblift.Store(tmp_path / "h5py.h5")
    assert store.rows_for_key("k3") == [3, 13, 23] == store.rows_for_key("k3.jpeg")
    assert store.rows_for_key("k30") == []
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["embeddings"] = np.ones((2, 4), np.float32)
    with pytest.raises(LiftError, match="no 'keys'"):
        liblift.Store(plain).rows_for_key("a")


def test_a_damaged_key_index_is_an_error_not_a_wrong_row(tmp_path, rng):
    with liblift.StoreWriter(tmp_path / "s.h5", dim=4, keys=True) as w:
        w.append(rng.standard_normal((50, 4)).astype(np.float32), keys=[f"k{i}" for i in range(50)])
    with h5py.File(tmp_path / "s.h5", "a") as f:
        h = f["key_index/hashes"][:]
        f["key_index/hashes"][:] = h[::-1]
    with pytest.raises(LiftError, match=r"'key_index/hashes' in '.*s.h5' is not sorted"):
        liblift.Store(tmp_path / "s.h5").rows_for_key("k1")
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f["key_index/hashes"][:] = h
        f["key_index/rows"][5] = 999
    with pytest.raises(LiftError, match=r"names row 999 .* the store has 50 rows"):
        liblift.Store(tmp_path / "s.h5").rows_for_key("k1")
