"""Image-caption datasets: reading (liblift), writing (h5py), the training data loader,
Pillow-exact preprocessing and the evaluation metrics."""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ._arrays import as_float_matrix, fptr, i64ptr
from ._lib import (OPEN_UNTRUSTED, BatchStruct, DatasetInfoStruct, Handle, LoaderOptionsStruct, SourceInfoStruct, check, lib)
from .images import preprocess
from .store import Store

__all__ = ["Dataset", "Source", "Loader", "Batch", "preprocess", "write_dataset", "class_embeddings", "zero_shot",
           "retrieval", "pairwise", "FORMAT_VERSION", "SAMPLE_PROBLEMS"]

# lift_sample_problem, in order.
SAMPLE_PROBLEMS = ["empty", "unsupported", "corrupt", "truncated", "too_large", "missing_embedding",
                   "non_finite_embedding", "duplicate_key"]
_SOURCE_KINDS = ["dataset", "tar", "folders", "index"]

FORMAT_VERSION = 1


def _csr(lists: Sequence[Sequence[int]], name: str):
    offsets = np.zeros(len(lists) + 1, np.int64)
    for i, lst in enumerate(lists):
        offsets[i + 1] = offsets[i] + len(lst)
    rows = np.fromiter((r for lst in lists for r in lst), np.int64, count=int(offsets[-1]))
    return offsets, rows


class Dataset(Handle):
    """One or more dataset files (README: "Datasets") read as one."""

    _free = "lift_dataset_free"
    _kind = "dataset"

    def __init__(self, paths, *, untrusted: bool = False):
        """`untrusted=True` reads each file in full in a separate process first (check_file)."""
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        encoded = [os.fsencode(p) for p in paths]
        if not encoded:
            raise ValueError("Dataset needs at least one file")
        self.paths = [os.fsdecode(p) for p in encoded]
        h = ctypes.c_void_p()
        check(lib.lift_dataset_open((ctypes.c_char_p * len(encoded))(*encoded), len(encoded),
                                    OPEN_UNTRUSTED if untrusted else 0, ctypes.byref(h)))
        self._h = h
        info = DatasetInfoStruct()
        check(lib.lift_dataset_get_info(h, ctypes.byref(info)))
        self.count, self.caption_count = info.images, info.captions
        self.image_shape = (info.height, info.width, info.channels)
        self.text_dim, self.has_labels, self.class_count = info.text_dim, bool(info.has_labels), info.classes

    def __len__(self):
        return self.count

    def pixels(self, images) -> np.ndarray:
        """The listed images' pixels, (n, H, W, C) uint8 (datasets of raw pixels)."""
        idx = np.ascontiguousarray(np.asarray(images, np.int64).reshape(-1))
        out = np.empty((idx.size, *self.image_shape), np.uint8)
        check(lib.lift_dataset_read_pixels(self._handle(), i64ptr(idx), idx.size, out.ctypes.data, out.size))
        return out

    def encoded_image(self, image: int) -> bytes:
        """The stored file (JPEG, PNG or WebP bytes) of one image of an encoded dataset."""
        n = ctypes.c_size_t()
        status = lib.lift_dataset_read_image(self._handle(), int(image), None, 0, ctypes.byref(n))
        if status != 9:
            check(status)
        buf = ctypes.create_string_buffer(max(n.value, 1))
        check(lib.lift_dataset_read_image(self._handle(), int(image), buf, n.value, ctypes.byref(n)))
        return buf.raw[: n.value]

    def labels(self, images) -> np.ndarray:
        """The listed images' class labels, int64."""
        idx = np.ascontiguousarray(np.asarray(images, np.int64).reshape(-1))
        out = np.empty(idx.size, np.int64)
        check(lib.lift_dataset_read_labels(self._handle(), i64ptr(idx), idx.size, i64ptr(out)))
        return out

    def _list(self, fn, arg) -> list:
        n = ctypes.c_size_t()
        status = fn(self._handle(), arg, None, 0, ctypes.byref(n))
        if status != 9:
            check(status)
        out = np.empty(max(n.value, 1), np.int64)
        check(fn(self._handle(), arg, i64ptr(out), n.value, ctypes.byref(n)))
        return out[: n.value].tolist()

    def caption_rows(self, image: int) -> list:
        """Rows of the captions store that describe image `image`."""
        return self._list(lib.lift_dataset_caption_rows, int(image))

    def class_prompts(self, k: int) -> list:
        """Rows of the captions store that are class `k`'s prompts."""
        return self._list(lib.lift_dataset_class_prompts, int(k))

    @property
    def class_names(self) -> list:
        names = []
        for k in range(self.class_count):
            n = ctypes.c_size_t()
            status = lib.lift_dataset_class_name(self._handle(), k, None, 0, ctypes.byref(n))
            if status != 9:
                check(status)
            buf = ctypes.create_string_buffer(n.value + 1)
            check(lib.lift_dataset_class_name(self._handle(), k, buf, n.value + 1, ctypes.byref(n)))
            names.append(buf.raw[: n.value].decode())
        return names

    @property
    def captions(self) -> Store:
        """The caption embeddings as a Store (rows are global caption rows)."""
        h = ctypes.c_void_p()
        check(lib.lift_dataset_captions(self._handle(), ctypes.byref(h)))
        return Store._wrap(h, self.paths, "captions/embeddings")


def _paths(value) -> list:
    if isinstance(value, (str, bytes, os.PathLike)):
        return [os.fsencode(value)]
    return [os.fsencode(p) for p in value]


class Source(Handle):
    """Image-caption data as it is on disk (README: "Data sources"): a liblift dataset, webdataset
    tar shards (files, a folder of them, or a brace pattern such as "shards/{00000..00099}.tar"),
    image folders (the LIFT layout images/<shard>/<key>.<ext>) or an image folder with an `index`
    file. `embeddings` names the store(s) holding each sample's caption embedding under its key."""

    _free = "lift_source_free"
    _kind = "source"

    def __init__(self, paths, embeddings=(), index=None):
        encoded = _paths(paths)
        stores = _paths(embeddings) if embeddings else []
        if not encoded:
            raise ValueError("Source needs at least one path")
        h = ctypes.c_void_p()
        check(lib.lift_source_open((ctypes.c_char_p * len(encoded))(*encoded), len(encoded),
                                   (ctypes.c_char_p * max(len(stores), 1))(*stores) if stores else None, len(stores),
                                   os.fsencode(index) if index is not None else None, ctypes.byref(h)))
        self._h = h
        info = SourceInfoStruct()
        check(lib.lift_source_get_info(h, ctypes.byref(info)))
        self.kind, self.text_dim = _SOURCE_KINDS[info.kind], info.text_dim
        self.count, self.shards = info.samples, info.shards

    def __len__(self):
        return self.count

    @property
    def summary(self) -> str:
        return _string(lib.lift_source_summary, self._handle())


def _string(fn, *args) -> str:
    n = ctypes.c_size_t()
    status = fn(*args, None, 0, ctypes.byref(n))
    if status != 9:
        check(status)
    buf = ctypes.create_string_buffer(n.value + 1)
    check(fn(*args, buf, n.value + 1, ctypes.byref(n)))
    return buf.raw[: n.value].decode("utf-8", "replace")


@dataclass
class Batch:
    images: np.ndarray        # (count, S, S, C) uint8
    texts: np.ndarray         # (count, text_dim) float32
    indices: np.ndarray       # (count,) int64
    caption_rows: np.ndarray  # (count,) int64
    global_count: int
    epoch: int
    batch: int
    wait_seconds: float
    skipped: int = 0          # samples of this part left out as bad
    keys: list = None         # sample keys ("" where a source has none)

    @property
    def count(self) -> int:
        """Samples in this part of the batch."""
        return len(self.indices)


def _loader_options_default() -> LoaderOptionsStruct:
    o = LoaderOptionsStruct()
    check(lib.lift_loader_options_default(ctypes.byref(o)))
    return o


_LOADER_DEFAULT = _loader_options_default()


class Loader(Handle):
    """Shuffled, preprocessed batches from a Dataset or a Source; see lift_loader_create.
    `batch_size` is the global batch, split over `workers` ranks (this loader yields rank `rank`'s
    part). Iterating yields one epoch of Batch objects with arrays copied out of the loader (set
    copy=False for zero-copy views that are only valid until the next batch); `next()` goes on
    forever. Bad samples are left out and counted (`bad_samples()`); past `max_bad_fraction` the
    loader raises."""

    _free = "lift_loader_free"
    _kind = "loader"

    def __init__(self, data, batch_size: int, image_size: int | None = None, channels: int | None = None, *,
                 seed: int = _LOADER_DEFAULT.seed, shuffle: bool = bool(_LOADER_DEFAULT.shuffle),
                 augment: bool = bool(_LOADER_DEFAULT.augment),
                 crop_scale=(_LOADER_DEFAULT.crop_scale_min, _LOADER_DEFAULT.crop_scale_max),
                 flip: bool = bool(_LOADER_DEFAULT.flip), rank: int = 0, workers: int = 1,
                 prefetch: bool = bool(_LOADER_DEFAULT.prefetch), start=(0, 0), copy: bool = True, filter: str = "bicubic",
                 reduced_decode: bool = bool(_LOADER_DEFAULT.reduced_decode), max_pixels: int = _LOADER_DEFAULT.max_pixels,
                 decode_threads: int = _LOADER_DEFAULT.decode_threads, shuffle_block: int = _LOADER_DEFAULT.shuffle_block,
                 max_bad_fraction: float = _LOADER_DEFAULT.max_bad_fraction):
        from .images import FILTERS

        o = LoaderOptionsStruct()
        check(lib.lift_loader_options_default(ctypes.byref(o)))
        shape = getattr(data, "image_shape", (224, 224, 3))
        o.batch_size = int(batch_size)
        o.image_size = int(image_size or shape[0] or 224)
        o.channels = int(channels or shape[2] or 3)
        o.seed, o.shuffle, o.augment = int(seed), int(shuffle), int(augment)
        o.crop_scale_min, o.crop_scale_max, o.flip = float(crop_scale[0]), float(crop_scale[1]), int(flip)
        o.rank, o.workers, o.prefetch = int(rank), int(workers), int(prefetch)
        o.start_epoch, o.start_batch = int(start[0]), int(start[1])
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)} (got {filter!r})")
        o.filter, o.reduced_decode, o.max_pixels = FILTERS[filter], int(reduced_decode), int(max_pixels)
        o.decode_threads, o.shuffle_block, o.max_bad_fraction = int(decode_threads), int(shuffle_block), float(max_bad_fraction)
        h = ctypes.c_void_p()
        if isinstance(data, Dataset):
            check(lib.lift_loader_create(data._handle(), ctypes.byref(o), ctypes.byref(h)))
        elif isinstance(data, Source):
            check(lib.lift_loader_create_from_source(data._handle(), ctypes.byref(o), ctypes.byref(h)))
        else:
            raise TypeError(f"Loader reads a Dataset or a Source, not {type(data).__name__}")
        self._h = h
        self.dataset = data
        self.text_dim = data.text_dim
        self.image_shape = (o.image_size, o.image_size, o.channels)
        self.copy = copy
        n = ctypes.c_int64()
        check(lib.lift_loader_batches_per_epoch(h, ctypes.byref(n)))
        self.batches_per_epoch = n.value

    def next(self) -> Batch:
        """The next batch; at the end of an epoch the loader goes on with the next."""
        b = BatchStruct()
        check(lib.lift_loader_next(self._handle(), ctypes.byref(b)))
        n = b.count
        wrap = (lambda a: a.copy()) if self.copy else (lambda a: a)
        images = np.ctypeslib.as_array(b.images, shape=(n, *self.image_shape)) if n else np.empty((0, *self.image_shape), np.uint8)
        texts = np.ctypeslib.as_array(b.texts, shape=(n, self.text_dim)) if n else np.empty((0, self.text_dim), np.float32)
        keys = [b.keys[i].decode("utf-8", "replace") for i in range(n)]
        return Batch(wrap(images), wrap(texts), np.ctypeslib.as_array(b.indices, shape=(n,)).copy(),
                     np.ctypeslib.as_array(b.caption_rows, shape=(n,)).copy(), b.global_count, b.epoch, b.batch,
                     b.wait_seconds, b.skipped, keys)

    def __iter__(self):
        """One epoch's batches (from wherever the loader stands)."""
        for _ in range(self.batches_per_epoch):
            yield self.next()

    def bad_samples(self) -> dict:
        """{"seen": n, "counts": {problem: n}, "report": text} up to the last batch returned."""
        seen = ctypes.c_int64()
        counts = np.zeros(len(SAMPLE_PROBLEMS), np.int64)
        check(lib.lift_loader_bad_samples(self._handle(), ctypes.byref(seen), i64ptr(counts), counts.size))
        return {"seen": seen.value, "counts": {k: int(v) for k, v in zip(SAMPLE_PROBLEMS, counts) if v},
                "report": _string(lib.lift_loader_bad_report, self._handle())}


def write_dataset(path, images, caption_embeddings: np.ndarray, image_captions: Sequence[Sequence[int]],
                  labels=None, class_names=None, class_prompts=None, caption_texts=None, keys=None,
                  dtype: str = "float16", overwrite: bool = False) -> None:
    """Write a dataset file with h5py (same layout liblift writes; README "Datasets"). `images` is
    a uint8 (N, H, W, C) array of pixels, or a list of N encoded files (JPEG, PNG or WebP bytes)."""
    import h5py

    encoded = isinstance(images, (list, tuple)) and all(isinstance(b, (bytes, bytearray)) for b in images)
    if not encoded:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, H, W, C) with C = 1 or 3, or a list of encoded files; "
                             f"got {images.dtype} {images.shape}")
    emb = np.asarray(caption_embeddings, np.float32)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise ValueError("caption embeddings must be a finite 2-D array")
    if len(image_captions) != len(images):
        raise ValueError(f"{len(image_captions)} caption lists for {len(images)} images")
    offsets, rows = _csr(image_captions, "image_captions")
    if (np.diff(offsets) < 1).any():
        raise ValueError(f"image {int(np.argmax(np.diff(offsets) < 1))} has no captions")
    if rows.size and (rows.min() < 0 or rows.max() >= len(emb)):
        raise ValueError("caption rows must index caption_embeddings")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True)")
    tmp = f"{path}.tmp-{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        f.attrs["liblift_format"] = "dataset"
        f.attrs["liblift_version"] = str(FORMAT_VERSION)
        if encoded:
            sizes = np.array([len(b) for b in images], np.int64)
            f.create_dataset("images/encoded", data=np.frombuffer(b"".join(images), np.uint8), maxshape=(None,),
                             chunks=(1 << 16,))
            f["images/encoded_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        else:
            per_chunk = max(1, min(len(images), 65536 // int(np.prod(images.shape[1:]))))
            f.create_dataset("images/pixels", data=images, chunks=(per_chunk, *images.shape[1:]) if len(images) else None)
        f["images/caption_offsets"] = offsets
        f["images/caption_rows"] = rows
        if labels is not None:
            f["images/labels"] = np.asarray(labels, np.int64)
        if keys is not None:
            f.create_dataset("images/keys", data=list(keys), dtype=h5py.string_dtype())
        f["captions/embeddings"] = emb.astype(dtype)
        if caption_texts is not None:
            f.create_dataset("captions/text", data=list(caption_texts), dtype=h5py.string_dtype())
        if class_names is not None:
            f.create_dataset("classes/names", data=list(class_names), dtype=h5py.string_dtype())
            po, pr = _csr(class_prompts, "class_prompts")
            f["classes/prompt_offsets"] = po
            f["classes/prompt_rows"] = pr
    os.replace(tmp, path)


# -- evaluation ----------------------------------------------------------------------------

def class_embeddings(prompts, class_prompts: Sequence[Sequence[int]]) -> np.ndarray:
    p = as_float_matrix(prompts, "prompts")
    offsets, rows = _csr(class_prompts, "class_prompts")
    out = np.empty((len(class_prompts), p.shape[1]), np.float32)
    check(lib.lift_eval_class_embeddings(fptr(p), p.shape[0], p.shape[1], i64ptr(offsets), i64ptr(rows) if rows.size else None,
                                         len(class_prompts), fptr(out)))
    return out


def zero_shot(images, classes, labels):
    """(top1, top5) accuracy of predicting `labels` by the most similar class embedding."""
    a, c = as_float_matrix(images, "images"), as_float_matrix(classes, "classes")
    lab = np.ascontiguousarray(np.asarray(labels, np.int64))
    if lab.size != a.shape[0] or a.shape[1] != c.shape[1]:
        raise ValueError("need one label per image and equal embedding widths")
    t1, t5 = ctypes.c_double(), ctypes.c_double()
    check(lib.lift_eval_zero_shot(fptr(a), a.shape[0], fptr(c), c.shape[0], a.shape[1], i64ptr(lab),
                                  ctypes.byref(t1), ctypes.byref(t5)))
    return t1.value, t5.value


def retrieval(images, texts, image_captions: Sequence[Sequence[int]]) -> dict:
    a, t = as_float_matrix(images, "images"), as_float_matrix(texts, "texts")
    if a.shape[1] != t.shape[1]:
        raise ValueError("images and texts must have the same width")
    if len(image_captions) != a.shape[0]:
        raise ValueError("need one caption list per image")
    offsets, rows = _csr(image_captions, "image_captions")
    i2t, t2i = (ctypes.c_double * 3)(), (ctypes.c_double * 3)()
    check(lib.lift_eval_retrieval(fptr(a), a.shape[0], fptr(t), t.shape[0], a.shape[1], i64ptr(offsets),
                                  i64ptr(rows) if rows.size else None, i2t, t2i))
    return {"image_to_text": dict(zip(("R@1", "R@5", "R@10"), list(i2t))),
            "text_to_image": dict(zip(("R@1", "R@5", "R@10"), list(t2i)))}


def pairwise(images, positives, negatives) -> np.ndarray:
    a, p, n = (as_float_matrix(x, name) for x, name in ((images, "images"), (positives, "positives"), (negatives, "negatives")))
    if not (a.shape == p.shape == n.shape):
        raise ValueError("images, positives and negatives must have the same shape")
    out = np.empty(a.shape[0], np.uint8)
    check(lib.lift_eval_pairwise(fptr(a), fptr(p), fptr(n), a.shape[0], a.shape[1], out.ctypes.data))
    return out.astype(bool)
