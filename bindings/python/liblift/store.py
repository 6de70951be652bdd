"""Embedding stores: HDF5 files of precomputed text embeddings, read and written through liblift."""
from __future__ import annotations

import ctypes
import os
import re
from typing import Iterable, Sequence

import numpy as np

from ._arrays import as_float_matrix, check_out, cstrings, fptr, i64ptr
from ._lib import OPEN_UNTRUSTED, Handle, LiftError, check, error_for, lib

__all__ = ["Store", "StoreWriter", "DEFAULT_DATASET"]

DEFAULT_DATASET = "embeddings"
_NORMALIZE = 1
_SKIP_FINITE_CHECK = 2
_WRITER_KEYS = 1
_WRITER_CAPTIONS = 2
_WRITER_OVERWRITE = 4
_DTYPES = {0: "float32", 1: "float16", 2: "float64"}
_DTYPE_CODES = {"float32": 0, "float16": 1}
# The library's hint for an existing file names its own switch ("pass the overwrite flag",
# LIFT_WRITER_OVERWRITE in C); in Python that switch is the overwrite=True argument.
_OVERWRITE_HINT = re.compile(r"\(pass [^()]*overwrite[^()]*\)", re.IGNORECASE)


def _encode(path) -> bytes:
    return os.fsencode(path)


class Store(Handle):
    """One or more HDF5 shard files read as one (rows, dim) float32 matrix.

    >>> with Store(["part0.h5", "part1.h5"]) as s:
    ...     batch = s.read_rows([5, 17, 3])

    Reads return new float32 arrays, or fill `out=` (C-contiguous float32) without a copy.
    `normalize=True` L2-normalises rows on read; `check_finite=False` skips the NaN/Inf check.
    `untrusted=True` reads each shard in full in a separate process first (check_file), once
    per process per version of the file: a file that would crash libhdf5 raises LiftError
    (LIFT_ERR_UNSAFE) instead of taking this process down.
    """

    _free = "lift_store_free"
    _kind = "store"

    def __init__(self, paths, dataset: str | None = None, *, normalize: bool = False,
                 check_finite: bool = True, buffer_bytes: int | None = None, untrusted: bool = False):
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise ValueError("Store needs at least one file")
        encoded = [_encode(p) for p in paths]
        arr = (ctypes.c_char_p * len(encoded))(*encoded)
        flags = (_NORMALIZE if normalize else 0) | (0 if check_finite else _SKIP_FINITE_CHECK) | \
            (OPEN_UNTRUSTED if untrusted else 0)
        handle = ctypes.c_void_p()
        ds = dataset.encode("utf-8") if dataset is not None else None
        check(lib.lift_store_open(arr, len(encoded), ds, flags, ctypes.byref(handle)))
        self._adopt_store(handle, [os.fsdecode(p) for p in encoded], dataset or DEFAULT_DATASET)
        if buffer_bytes is not None:
            self.set_buffer_bytes(buffer_bytes)

    @classmethod
    def _wrap(cls, handle, paths, dataset: str) -> "Store":
        """A Store around a handle the library returned (e.g. a dataset's captions)."""
        store = cls.__new__(cls)
        store._adopt_store(handle, paths, dataset)
        return store

    def _adopt_store(self, handle, paths, dataset: str) -> None:
        self._h = handle
        self.paths = list(paths)
        self.dataset = dataset
        rows, dim = ctypes.c_int64(), ctypes.c_int64()
        check(lib.lift_store_shape(self._h, ctypes.byref(rows), ctypes.byref(dim)))
        self.rows, self.dim = rows.value, dim.value

    @property
    def shape(self) -> tuple:
        return (self.rows, self.dim)

    def __len__(self) -> int:
        return self.rows

    @property
    def shard_dtypes(self) -> list:
        n = ctypes.c_int64()
        check(lib.lift_store_shard_count(self._handle(), ctypes.byref(n)))
        out = []
        for i in range(n.value):
            code = ctypes.c_int()
            check(lib.lift_store_shard_dtype(self._handle(), i, ctypes.byref(code)))
            out.append(_DTYPES[code.value])
        return out

    def set_buffer_bytes(self, nbytes: int) -> None:
        """Bytes of the read-ahead buffer each shard keeps (lift_store_set_buffer_bytes)."""
        check(lib.lift_store_set_buffer_bytes(self._handle(), int(nbytes)))

    # -- reading --------------------------------------------------------------------------
    def read(self, start: int = 0, count: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, start + count) as a (count, dim) float32 array."""
        if count is None:
            count = self.rows - start
        if out is None:
            out = np.empty((max(count, 0), self.dim), dtype=np.float32)
        else:
            check_out(out, (count, self.dim), np.float32)
        check(lib.lift_store_read_range(self._handle(), int(start), int(count), fptr(out), out.size))
        return out

    def read_rows(self, rows: Iterable[int], out: np.ndarray | None = None) -> np.ndarray:
        """The listed rows (any order, repeats allowed) as a (len(rows), dim) float32 array."""
        idx = np.ascontiguousarray(np.asarray(rows, dtype=np.int64).reshape(-1))
        if out is None:
            out = np.empty((idx.size, self.dim), dtype=np.float32)
        else:
            check_out(out, (idx.size, self.dim), np.float32)
        check(lib.lift_store_read_rows(self._handle(), i64ptr(idx), idx.size, fptr(out), out.size))
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += self.rows
            if not 0 <= i < self.rows:
                raise IndexError(f"row {int(key)} is out of range for a store of {self.rows} rows")
            return self.read(i, 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.rows)
            if step == 1:
                return self.read(start, max(0, stop - start))
            return self.read_rows(range(start, stop, step))
        return self.read_rows(key)

    def validate(self) -> None:
        """Scan every row; raise LiftError naming the first row with NaN/Inf."""
        check(lib.lift_store_validate(self._handle()))

    # -- strings --------------------------------------------------------------------------
    def has_strings(self, name: str) -> bool:
        """Whether the store has a string column `name` (keys, captions, texts, ...) with one string per row."""
        present = ctypes.c_int()
        check(lib.lift_store_has_strings(self._handle(), name.encode("utf-8"), ctypes.byref(present)))
        return bool(present.value)

    def rows_for_key(self, key) -> list:
        """Rows whose key is `key` (str or bytes), compared without a trailing image extension
        ("0001.jpg" matches "0001"); several rows are alternative captions. [] if none."""
        k = key.encode() if isinstance(key, str) else bytes(key)
        n = ctypes.c_size_t()
        status = lib.lift_store_rows_for_key(self._handle(), k, None, 0, ctypes.byref(n))
        if status != 9:
            check(status)
        if n.value == 0:
            return []
        out = np.empty(n.value, np.int64)
        check(lib.lift_store_rows_for_key(self._handle(), k, out.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), n.value,
                                          ctypes.byref(n)))
        return out[: n.value].tolist()

    def string(self, name: str, row: int) -> str:
        """Entry `row` of the per-row string dataset `name` ("keys", "captions", ...)."""
        return self.string_bytes(name, row).decode("utf-8", "replace")

    def string_bytes(self, name: str, row: int) -> bytes:
        """The raw bytes of row `row` of string column `name`."""
        n = ctypes.c_size_t()
        key = name.encode("utf-8")
        status = lib.lift_store_read_string(self._handle(), key, int(row), None, 0, ctypes.byref(n))
        if status != 9:  # LIFT_ERR_BUFFER is the expected answer to a size query
            check(status)
        buf = ctypes.create_string_buffer(n.value + 1)
        check(lib.lift_store_read_string(self._handle(), key, int(row), buf, n.value + 1, ctypes.byref(n)))
        return buf.raw[: n.value]

    def strings(self, name: str, rows: Iterable[int] | None = None) -> list:
        """The strings of column `name` for `rows` (default: every row)."""
        rows = range(self.rows) if rows is None else rows
        return [self.string(name, r) for r in rows]

    # -- search ---------------------------------------------------------------------------
    def search(self, queries, k: int):
        """Cosine nearest neighbours: (indices int64 (nq, k), scores float32 (nq, k)), best first."""
        q = as_float_matrix(queries, "queries", cols=self.dim)
        idx = np.empty((q.shape[0], k), dtype=np.int64) if k > 0 else None
        val = np.empty((q.shape[0], k), dtype=np.float32) if k > 0 else None
        check(lib.lift_store_search(self._handle(), fptr(q), q.shape[0], q.shape[1], int(k),
                                    i64ptr(idx) if idx is not None else None,
                                    fptr(val) if val is not None else None))
        return idx, val


def _in_python_terms(error: LiftError) -> LiftError:
    """The error with the library's overwrite hint phrased as this module's argument."""
    message = _OVERWRITE_HINT.sub("(pass overwrite=True to replace it)", error.message)
    return error if message == error.message else error_for(error.status, message)


class StoreWriter(Handle):
    """Writes a store file: float32 rows appended, stored as float32 or float16.

    The file appears at `path` only when `finish()` succeeds (leaving a `with` block without an
    exception finishes); closing an unfinished writer deletes its temporary file.
    """

    _free = "lift_store_writer_free"
    _kind = "writer"

    def __init__(self, path, dim: int, dtype: str = "float16", dataset: str | None = None, *,
                 keys: bool = False, captions: bool = False, overwrite: bool = False):
        if dtype not in _DTYPE_CODES:
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        flags = ((_WRITER_KEYS if keys else 0) | (_WRITER_CAPTIONS if captions else 0)
                 | (_WRITER_OVERWRITE if overwrite else 0))
        handle = ctypes.c_void_p()
        ds = dataset.encode("utf-8") if dataset is not None else None
        try:
            check(lib.lift_store_writer_create(_encode(path), ds, int(dim), _DTYPE_CODES[dtype], flags,
                                               ctypes.byref(handle)))
        except LiftError as e:
            raise _in_python_terms(e) from None
        self._h = handle
        self.path = os.fsdecode(_encode(path))
        self.dim = int(dim)
        self.finished = False

    def append(self, rows, keys: Sequence | None = None, captions: Sequence | None = None) -> None:
        """Append (n, dim) rows, with one key and one caption per row if the writer has those columns."""
        a = as_float_matrix(rows, "rows", cols=self.dim)
        for name, strings in (("keys", keys), ("captions", captions)):
            if strings is not None and len(strings) != a.shape[0]:
                raise ValueError(f"{len(strings)} {name} given for {a.shape[0]} rows")
        k = cstrings(keys, "keys") if keys is not None else None
        c = cstrings(captions, "captions") if captions is not None else None
        check(lib.lift_store_writer_append(self._handle(), fptr(a), a.shape[0], k, c))

    @property
    def rows(self) -> int:
        n = ctypes.c_int64()
        check(lib.lift_store_writer_rows(self._handle(), ctypes.byref(n)))
        return n.value

    def finish(self) -> None:
        """Write the file and move it into place; the writer takes no more rows."""
        check(lib.lift_store_writer_finish(self._handle()))
        self.finished = True

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and not self.finished:
                self.finish()
        finally:
            self.close()
