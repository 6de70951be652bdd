"""numpy <-> ctypes helpers: pass arrays without copying when their layout already fits."""
from __future__ import annotations

import ctypes

import numpy as np


def as_float_matrix(x, name: str, cols: int | None = None) -> np.ndarray:
    """A C-contiguous float32 2-D view of x (copied only if dtype or layout differ)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim == 1 and cols is not None and a.size == cols:
        a = a.reshape(1, cols)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    if cols is not None and a.shape[1] != cols:
        raise ValueError(f"{name} has {a.shape[1]} columns, expected {cols}")
    return a


def check_out(out, shape: tuple, dtype, name: str = "out") -> np.ndarray:
    """Validate a caller-supplied output array (exact shape and dtype, C-contiguous, writable)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array")
    if out.shape != shape or out.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must have shape {shape} and dtype {np.dtype(dtype)}, got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writable")
    return out


def fptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def i64ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


def cstrings(strings, name: str):
    """A ctypes char*[] of UTF-8 encoded strings (kept alive by the returned array)."""
    encoded = []
    for i, s in enumerate(strings):
        if isinstance(s, str):
            s = s.encode("utf-8")
        if not isinstance(s, (bytes, bytearray)):
            raise TypeError(f"{name}[{i}] must be str or bytes, got {type(s).__name__}")
        if b"\0" in s:
            raise ValueError(f"{name}[{i}] contains a NUL character")
        encoded.append(bytes(s))
    return (ctypes.c_char_p * len(encoded))(*encoded)
