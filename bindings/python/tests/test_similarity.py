import ctypes

import numpy as np
import pytest

import liblift
from liblift import LiftError, Store, StoreWriter, cosine_similarity, topk


def reference_cosine(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def test_cosine_similarity(rng):
    a = rng.standard_normal((31, 70)) * 5
    b = rng.standard_normal((45, 70))
    np.testing.assert_allclose(cosine_similarity(a, b), reference_cosine(a, b), atol=2e-6)
    out = np.empty((31, 45), np.float32)
    assert cosine_similarity(a, b, out=out) is out
    with pytest.raises(ValueError):
        cosine_similarity(a, b[:, :5])
    a[3] = 0
    with pytest.raises(LiftError, match="a row 3"):
        cosine_similarity(a, b)


def test_topk_matches_numpy_with_ties(rng):
    s = rng.integers(0, 5, size=(50, 80)).astype(np.float32)
    idx, val = topk(s, 6)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :6]  # stable: lower index first among ties
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(val, np.take_along_axis(s, ref, axis=1))
    with pytest.raises(ValueError):
        topk(s, 81)
    s[4, 7] = np.nan
    with pytest.raises(LiftError, match="row 4 column 7"):
        topk(s, 2)


def test_store_search_matches_brute_force(tmp_path, rng):
    data = rng.standard_normal((1500, 24)).astype(np.float32)
    path = tmp_path / "s.h5"
    with StoreWriter(path, 24, dtype="float32") as w:
        w.append(data)
    q = rng.standard_normal((5, 24)).astype(np.float32)
    with Store(path, buffer_bytes=10_000) as s:
        idx, sc = s.search(q, 10)
    ref = reference_cosine(q, data)
    order = np.argsort(-ref, axis=1)[:, :10]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(sc, np.take_along_axis(ref, order, axis=1), atol=2e-6)


def test_raw_c_calls_report_errors_not_crashes():
    lib = liblift._lib.lib
    assert lib.lift_topk(None, 1, 1, 1, None, None) == 1
    assert b"scores is NULL" in lib.lift_last_error()
    assert lib.lift_store_shape(None, None, None) == 1
    assert lib.lift_status_name(5) == b"LIFT_ERR_VALUE"
    assert liblift.version().count(".") == 2
    h = ctypes.c_void_p()
    assert lib.lift_store_writer_create(b"/nonexistent-dir/x.h5", None, 4, 1, 0, ctypes.byref(h)) == 2
    assert b"/nonexistent-dir/x.h5" in lib.lift_last_error()
