#!/usr/bin/env python3
"""Build an embedding store from numpy with liblift, read it back in shuffled batches, and find
nearest neighbours by cosine similarity.

    python3 examples/python/store_search.py [OUT_DIR]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

import liblift


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="liblift-"))
    try:  # the store writer creates files, not folders
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"store_search.py: cannot create the output folder {out_dir}: {e.strerror}")
    rng = np.random.default_rng(0)
    # Ten "topics", 300 captions each: embeddings scattered around a topic centre.
    centres = rng.standard_normal((10, 128)).astype(np.float32)
    topic = np.repeat(np.arange(10), 300)
    emb = centres[topic] + 0.3 * rng.standard_normal((3000, 128)).astype(np.float32)
    captions = [f"caption {i} about topic {t}" for i, t in enumerate(topic)]

    # Two shards, as a large precomputation would produce.
    paths = [out_dir / "captions-0.h5", out_dir / "captions-1.h5"]
    for part, path in enumerate(paths):
        rows = slice(part * 1500, (part + 1) * 1500)
        with liblift.StoreWriter(path, 128, dtype="float16", captions=True, overwrite=True) as w:
            w.append(emb[rows], captions=captions[rows])

    with liblift.Store(paths, normalize=True) as store:
        print(f"liblift {liblift.version()}: store of {store.rows} x {store.dim} ({', '.join(store.shard_dtypes)})")
        order = rng.permutation(store.rows)
        batch = np.empty((256, store.dim), np.float32)
        for start in range(0, store.rows, 256):
            idx = order[start:start + 256]
            store.read_rows(idx, out=batch[: len(idx)])  # a shuffled training batch, unit-norm rows
        assert np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)

        queries = centres[[2, 7]]
        idx, scores = store.search(queries, k=3)
        for q, t in enumerate([2, 7]):
            print(f"nearest to topic {t}:")
            for i, s in zip(idx[q], scores[q]):
                print(f"  {s:.3f}  {store.string('captions', i)}")
            assert all(topic[i] == t for i in idx[q])

    sims = liblift.cosine_similarity(centres, centres)
    best, _ = liblift.topk(sims, 1)
    assert (best[:, 0] == np.arange(10)).all()
    print("ok")


if __name__ == "__main__":
    main()
