"""Files from untrusted sources: read them in full in a separate process before opening them."""
from __future__ import annotations

import ctypes
import os

from ._lib import check, lib

__all__ = ["FILE_KINDS", "check_file", "read_file", "memory_limit", "set_memory_limit"]

# lift_file_kind of lift.h, by name.
FILE_KINDS = {"any": 0, "model": 1, "store": 2, "dataset": 3, "captions": 4, "feature_cache": 5, "image_source": 6}


def _kind(kind: str) -> int:
    try:
        return FILE_KINDS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {', '.join(FILE_KINDS)}, got {kind!r}") from None


def _summary(call, path, kind, *extra) -> str:
    buf = ctypes.create_string_buffer(4096)
    n = ctypes.c_size_t(0)
    check(call(os.fsencode(path), _kind(kind), *extra, buf, len(buf), ctypes.byref(n)))
    return buf.value.decode("utf-8", "replace")


def check_file(path, kind: str = "any", timeout: float = 120.0) -> str:
    """Reads the file at `path` in full (every tensor, row, image, caption and string liblift
    would read) in a separate process, under a time limit and the memory budget
    (LIFT_MEMORY_LIMIT), and returns a one-line summary of what it holds. Raises LiftError with
    the reader's status when liblift refuses the file, and with status LIFT_ERR_UNSAFE when
    reading it crashed or hung the checking process (a fault in libhdf5): such a file must not
    be opened in this process. `kind` is one of FILE_KINDS ("any": judged from the content)."""
    return _summary(lib.lift_file_check, path, kind, ctypes.c_double(timeout))


def read_file(path, kind: str = "any") -> str:
    """The same full read in this process (no protection against a crash in libhdf5)."""
    return _summary(lib.lift_file_read_all, path, kind)


def memory_limit() -> int:
    """The memory budget in bytes: the most one operation may allocate when its sizes come from
    a file or an argument (LIFT_MEMORY_LIMIT, default half the physical memory)."""
    return int(lib.lift_memory_limit())


def set_memory_limit(nbytes: int) -> None:
    """Replaces the memory budget for this process (0: back to the default)."""
    if not 0 <= nbytes < 1 << 64:
        raise ValueError(f"the memory limit must be in [0, 2^64) bytes, got {nbytes}")
    check(lib.lift_set_memory_limit(int(nbytes)))
