"""Benchmark suites read from their published layouts: ImageNet-style zero-shot classification
(class folders), COCO and Flickr30k retrieval, SugarCrepe's compositional subsets, and any
image-caption JSONL ("captions").

    suite = liblift.Suite("coco", "/data/coco")
    suite.write_texts("texts.jsonl")          # embed these with your text model -> texts.h5
    results = suite.evaluate(liblift.Model.load("model.safetensors"), "texts.h5")
    print(results["coco"]["image_to_text"]["R@1"])

Texts are looked up by exact text in a store with a text column (python3 -m liblift.embed
writes one). Results are the JSON `lift eval --suite` writes, as a dict; `suite.table` is the
last result as text.
"""
from __future__ import annotations

import ctypes
import json
import os

from ._lib import Handle, SuiteOptionsStruct, SuiteRunOptionsStruct, check, lib
from .data import _string
from .images import FILTERS
from .store import Store

__all__ = ["Suite", "SUITES"]

SUITES = ("imagenet", "coco", "flickr30k", "sugarcrepe", "captions")


def _path(p):
    return os.fsencode(p) if p is not None else None


class Suite(Handle):
    """A benchmark suite (see `lift eval --help` and docs/evaluation.md for each layout).

    name: imagenet, coco, flickr30k, sugarcrepe or captions; root: its image folder (coco: the
    folder holding val2017/ and annotations/); annotations: its annotation file or folder;
    classes / templates: imagenet's class table and prompt templates (a file, or "lift",
    "simple", "openai"); captions_per_image: retrieval with each image's first N captions (0:
    all); split: flickr30k's split."""

    _free = "lift_suite_free"
    _kind = "suite"

    def __init__(self, name: str, root, *, annotations=None, classes=None, templates=None,
                 captions_per_image: int = 0, split: str = "test"):
        o = SuiteOptionsStruct()
        check(lib.lift_suite_options_default(ctypes.byref(o)))
        o.name, o.root = name.encode(), os.fsencode(root)
        o.annotations, o.classes = _path(annotations), _path(classes)
        o.templates = os.fsencode(templates) if templates is not None else None
        o.captions_per_image, o.split = int(captions_per_image), split.encode()
        h = ctypes.c_void_p()
        check(lib.lift_suite_open(ctypes.byref(o), ctypes.byref(h)))
        self._h = h
        self.name = name
        images, texts = ctypes.c_int64(), ctypes.c_int64()
        check(lib.lift_suite_counts(h, ctypes.byref(images), ctypes.byref(texts)))
        self.image_count, self.text_count = images.value, texts.value

    def texts(self) -> list:
        """Every distinct text the suite needs (class prompts, captions, negatives), in order."""
        h = self._handle()
        return [_string(lib.lift_suite_text, h, i) for i in range(self.text_count)]

    def write_texts(self, path) -> int:
        """Writes the texts as JSON lines {"text": ...} (what `lift eval --list-texts` writes);
        returns their number."""
        texts = self.texts()
        with open(path, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        return len(texts)

    def evaluate(self, model, texts, *, batch: int = 128, filter: str = "bicubic", resize: int | None = None,
                 decode_threads: int = 1, reduced_decode: bool = True, image_cache=None) -> dict:
        """Evaluates `model` (a liblift.Model) with the text embeddings in `texts` (a Store, or
        the path(s) of store files with a text column); returns the results as a dict."""
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {sorted(FILTERS)}, got {filter!r}")
        o = SuiteRunOptionsStruct()
        check(lib.lift_suite_run_options_default(ctypes.byref(o)))
        o.batch, o.filter, o.resize = int(batch), FILTERS[filter], int(resize or 0)
        o.decode_threads, o.reduced_decode = int(decode_threads), int(bool(reduced_decode))
        o.image_cache = _path(image_cache)
        store = texts if isinstance(texts, Store) else Store(texts)
        try:
            check(lib.lift_suite_evaluate(self._handle(), model._handle(), store._handle(), ctypes.byref(o)))
        finally:
            if store is not texts:
                store.close()
        return json.loads(_string(lib.lift_suite_result, self._h, 0))

    @property
    def table(self) -> str:
        """The last result as a text table."""
        return _string(lib.lift_suite_result, self._handle(), 1)

    def __repr__(self):
        return f"Suite({self.name!r}, {self.image_count} images, {self.text_count} texts)"
