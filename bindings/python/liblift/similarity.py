"""Cosine similarity and top-k through liblift (sgemm inside)."""
from __future__ import annotations

import numpy as np

from ._arrays import as_float_matrix, check_out, fptr, i64ptr
from ._lib import check, lib

__all__ = ["cosine_similarity", "topk"]


def cosine_similarity(a, b, out: np.ndarray | None = None) -> np.ndarray:
    """(n, m) cosine similarities between the rows of a (n, d) and b (m, d)."""
    a = as_float_matrix(a, "a")
    b = as_float_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} columns but b has {b.shape[1]}")
    shape = (a.shape[0], b.shape[0])
    out = np.empty(shape, dtype=np.float32) if out is None else check_out(out, shape, np.float32)
    check(lib.lift_cosine_similarity(fptr(a), a.shape[0], fptr(b), b.shape[0], a.shape[1], fptr(out), out.size))
    return out


def topk(scores, k: int):
    """Per row, the k largest scores best first: (indices int64 (n, k), values float32 (n, k))."""
    s = as_float_matrix(scores, "scores")
    n, m = s.shape
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    idx = np.empty((n, k), dtype=np.int64)
    val = np.empty((n, k), dtype=np.float32)
    check(lib.lift_topk(fptr(s), n, m, int(k), i64ptr(idx), fptr(val)))
    return idx, val
