"""Build a liblift dataset file from an image folder, a captions file and a local embedding model.

    python3 -m liblift.build_dataset --images DIR --captions captions.csv --model MODEL_DIR --out data.h5

The captions file is CSV (a header with `image` and `caption` columns) or JSONL (one
{"image": ..., "caption": ...} object per line); image paths are relative to --images and an
image may appear on several lines (several captions). Each distinct caption is embedded once
with the model (see liblift.embedder).

Images are stored as they are (--store encoded, the default): the file's own JPEG, PNG or WebP
bytes, checked by decoding them once with liblift, and decoded by the data loader at training
time at whatever size the model takes (random-resized crops work on the full image). Images in
other formats (GIF, BMP, TIFF, ...) are converted to PNG with Pillow (lossless). --store pixels
keeps the older layout instead: decoded, converted to RGB or grey and resized to --image-size
with liblift's preprocessing (centre view, bicubic), 10-20x the disk of JPEG.

The build is resumable: work goes to OUT.partial (an HDF5 file that grows as captions are
embedded and images stored); rerun with --resume after an interruption to continue where it
stopped. Unreadable images are skipped and listed (--on-error skip, the default) or stop the
build (--on-error fail). With --label-column and one or more --template, images get class labels
and each class a set of prompt embeddings for zero-shot evaluation.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["build", "read_captions", "BuildError"]


class BuildError(RuntimeError):
    pass


def read_captions(path: Path, label_column: str | None = None):
    """[(image, caption, label or None)] in file order."""
    rows = []
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BuildError(f"{path}:{n}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or "image" not in obj or "caption" not in obj:
                    raise BuildError(f"{path}:{n}: each line needs \"image\" and \"caption\"")
                if label_column and label_column not in obj:
                    raise BuildError(f"{path}:{n}: no \"{label_column}\" field")
                rows.append((str(obj["image"]), str(obj["caption"]), str(obj[label_column]) if label_column else None))
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            for need in ["image", "caption"] + ([label_column] if label_column else []):
                if need not in fields:
                    raise BuildError(f"{path}: the header has no '{need}' column (columns: {', '.join(fields)})")
            for n, r in enumerate(reader, 2):
                if not r["image"] or r["caption"] is None:
                    raise BuildError(f"{path}:{n}: empty image or caption")
                rows.append((r["image"], r["caption"], r[label_column] if label_column else None))
    if not rows:
        raise BuildError(f"{path}: no captions")
    return rows


class _Progress:
    def __init__(self, what: str, total: int, quiet: bool):
        self.what, self.total, self.quiet = what, total, quiet
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, force: bool = False):
        if self.quiet:
            return
        t = time.monotonic()
        if not force and t - self.last < 0.2:
            return
        self.last = t
        rate = done / max(t - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        eta_text = f"{int(eta) // 60}:{int(eta) % 60:02d}" if eta != float("inf") else "--:--"
        end = "\n" if done >= self.total else ""
        sys.stderr.write(f"\r{self.what} [{bar}] {done}/{self.total} {rate:.0f}/s ETA {eta_text}{end}")
        sys.stderr.flush()


def _encoded_image(path: Path):
    """The bytes to store for an image file: its own if liblift decodes it (JPEG, PNG, WebP), else
    a lossless PNG made with Pillow. Raises OSError/ValueError for files that are not images."""
    from PIL import Image

    from ._lib import LiftError
    from .images import decode_image

    data = path.read_bytes()
    try:
        decode_image(data)
        return data
    except LiftError as e:
        if e.status_name != "LIFT_ERR_UNSUPPORTED":
            raise ValueError(str(e)) from None
    with Image.open(path) as im:  # another format Pillow reads: stored as PNG
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        out = io.BytesIO()
        im.save(out, format="PNG")
        return out.getvalue()


def build(images_dir, captions_file, model_dir, out, image_size: int = 224, channels: int = 3, dtype: str = "float16",
          on_error: str = "skip", resume: bool = False, overwrite: bool = False, backend: str = "auto",
          label_column: str | None = None, templates=(), batch_size: int = 64, quiet: bool = False,
          store: str = "encoded") -> dict:
    """Builds the dataset; returns a report {images, captions, skipped: [(path, reason)], classes}.
    `store` is "encoded" (the images' own bytes) or "pixels" (resized to image_size)."""
    import h5py
    from PIL import Image, UnidentifiedImageError

    from .data import FORMAT_VERSION, preprocess
    from .embedder import SentenceEmbedder

    images_dir, out = Path(images_dir), Path(out)
    partial = Path(str(out) + ".partial")
    if on_error not in ("skip", "fail"):
        raise ValueError("on_error must be skip or fail")
    if store not in ("encoded", "pixels"):
        raise ValueError("store must be encoded or pixels")
    if channels not in (1, 3):
        raise ValueError("channels must be 1 or 3")
    if out.exists() and not overwrite:
        raise BuildError(f"{out} exists (pass --overwrite to replace it)")
    if partial.exists() and not resume:
        raise BuildError(f"{partial} holds an interrupted build: pass --resume to continue it, or delete it")
    if resume and not partial.exists():
        raise BuildError(f"--resume: {partial} does not exist")
    if label_column and not templates:
        raise BuildError("--label-column needs at least one --template for the class prompts")

    rows = read_captions(Path(captions_file), label_column)
    image_order, captions_of, label_of = [], {}, {}
    for img, cap, lab in rows:
        if img not in captions_of:
            image_order.append(img)
            captions_of[img] = []
        captions_of[img].append(cap)
        if lab is not None:
            if label_of.setdefault(img, lab) != lab:
                raise BuildError(f"image {img} has two labels ({label_of[img]!r}, {lab!r})")
    class_names = sorted(set(label_of.values())) if label_column else []
    prompts = [t.format(c) for c in class_names for t in templates]
    distinct = list(dict.fromkeys([c for _, c, _ in rows] + prompts))
    row_of = {c: i for i, c in enumerate(distinct)}

    embedder = SentenceEmbedder(model_dir, backend=backend, batch_size=batch_size)
    with h5py.File(partial, "a") as f:
        if "captions/embeddings" not in f:
            f.attrs["liblift_format"] = "dataset"
            f.attrs["liblift_version"] = str(FORMAT_VERSION)
            f.attrs["caption_count"] = len(distinct)
            f.create_dataset("captions/embeddings", shape=(0, embedder.dim), maxshape=(None, embedder.dim),
                             dtype=dtype, chunks=(max(1, 32768 // embedder.dim), embedder.dim))
            f.create_dataset("captions/text", data=distinct, dtype=h5py.string_dtype())
            f.attrs["store"] = store
            if store == "encoded":
                f.attrs["channels"] = str(channels)
                f.create_dataset("images/encoded", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(1 << 16,))
                f.create_dataset("images/encoded_offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(4096,))
            else:
                f.create_dataset("images/pixels", shape=(0, image_size, image_size, channels),
                                 maxshape=(None, image_size, image_size, channels), dtype=np.uint8,
                                 chunks=(max(1, 65536 // (image_size * image_size * channels)), image_size, image_size, channels))
            for name in ("images/caption_rows", "images/caption_counts", "images/source_index"):
                f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        elif (f.attrs.get("caption_count") != len(distinct) or f.attrs.get("store", "pixels") != store
              or (store == "pixels" and f["images/pixels"].shape[1:] != (image_size, image_size, channels))
              or f["captions/embeddings"].shape[1] != embedder.dim):
            raise BuildError(f"{partial} was started with other inputs or settings; delete it to start over")
        emb = f["captions/embeddings"]
        bar = _Progress("embedding captions", len(distinct), quiet)
        while emb.shape[0] < len(distinct):
            start = emb.shape[0]
            chunk = distinct[start:start + 8 * batch_size]
            vectors = embedder.encode(chunk)
            if not np.isfinite(vectors).all():
                raise BuildError("the embedding model produced non-finite values")
            emb.resize(start + len(chunk), axis=0)
            emb[start:] = vectors.astype(dtype)
            f.flush()
            bar.update(emb.shape[0])
        bar.update(len(distinct), force=True)

        crow = f["images/caption_rows"]
        counts, source = f["images/caption_counts"], f["images/source_index"]
        sink = _EncodedSink(f) if store == "encoded" else _PixelSink(f, image_size, channels)
        skipped = json.loads(f.attrs.get("skipped", "[]"))
        done = int(f.attrs.get("images_done", 0))
        bar = _Progress("storing images", len(image_order), quiet)
        while done < len(image_order):
            block = image_order[done:done + 256]
            items, lists, kept = [], [], []
            for k, name in enumerate(block):
                path = images_dir / name
                try:
                    items.append(sink.prepare(path))
                except (OSError, UnidentifiedImageError, ValueError) as e:
                    if on_error == "fail":
                        raise BuildError(f"cannot read image {path}: {e}") from None
                    skipped.append([name, str(e)])
                    continue
                lists.append([row_of[c] for c in captions_of[name]])
                kept.append(done + k)
            if items:
                sink.append(items)
                flat = [r for lst in lists for r in lst]
                c0 = crow.shape[0]
                crow.resize(c0 + len(flat), axis=0)
                crow[c0:] = flat
                for ds, values in ((counts, [len(lst) for lst in lists]), (source, kept)):
                    s0 = ds.shape[0]
                    ds.resize(s0 + len(values), axis=0)
                    ds[s0:] = values
            done += len(block)
            f.attrs["images_done"] = done
            f.attrs["skipped"] = json.dumps(skipped)
            f.flush()
            bar.update(done)
        bar.update(len(image_order), force=True)

        # Finish: offsets, keys, labels, classes.
        n = sink.count
        if n == 0:
            raise BuildError("no image could be read")
        if "images/caption_offsets" not in f:
            f["images/caption_offsets"] = np.concatenate([[0], np.cumsum(counts[()])]).astype(np.int64)
            names = [image_order[i] for i in source[()]]
            f.create_dataset("images/keys", data=names, dtype=h5py.string_dtype())
            if class_names:
                index = {c: k for k, c in enumerate(class_names)}
                f["images/labels"] = np.array([index[label_of[m]] for m in names], np.int64)
                f.create_dataset("classes/names", data=class_names, dtype=h5py.string_dtype())
                t = len(templates)
                f["classes/prompt_offsets"] = np.arange(0, t * len(class_names) + 1, t, dtype=np.int64)
                f["classes/prompt_rows"] = np.array([row_of[p] for p in prompts], np.int64)
            # Build bookkeeping, now folded into the offsets and keys.
            del f["images/caption_counts"]
            del f["images/source_index"]
        report = {"images": n, "captions": len(distinct), "skipped": skipped, "classes": class_names}
    os.replace(partial, out)
    if not quiet:
        stored = "as encoded files" if store == "encoded" else f"({image_size}x{image_size}x{channels})"
        print(f"wrote {out}: {report['images']} images {stored}, "
              f"{report['captions']} distinct captions ({embedder.dim}-d {dtype}), {len(skipped)} skipped", file=sys.stderr)
        for name, reason in skipped[:20]:
            print(f"  skipped {name}: {reason}", file=sys.stderr)
    return report


class _EncodedSink:
    """images/encoded + images/encoded_offsets: each image's file bytes, back to back."""

    def __init__(self, f):
        self.bytes, self.offsets = f["images/encoded"], f["images/encoded_offsets"]

    @property
    def count(self):
        return self.offsets.shape[0] - 1

    def prepare(self, path):
        return _encoded_image(path)

    def append(self, items):
        sizes = np.array([len(b) for b in items], np.int64)
        b0, o0 = self.bytes.shape[0], self.offsets.shape[0]
        self.bytes.resize(b0 + int(sizes.sum()), axis=0)
        self.bytes[b0:] = np.frombuffer(b"".join(items), np.uint8)
        self.offsets.resize(o0 + len(items), axis=0)
        self.offsets[o0:] = b0 + np.cumsum(sizes)


class _PixelSink:
    """images/pixels: decoded with Pillow, resized with liblift's preprocessing."""

    def __init__(self, f, image_size, channels):
        self.pixels, self.size, self.channels = f["images/pixels"], image_size, channels

    @property
    def count(self):
        return self.pixels.shape[0]

    def prepare(self, path):
        from PIL import Image

        from .images import preprocess

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB" if self.channels == 3 else "L"), np.uint8)
        return preprocess(arr, self.size, self.channels, filter="bicubic")

    def append(self, items):
        n0 = self.pixels.shape[0]
        self.pixels.resize(n0 + len(items), axis=0)
        self.pixels[n0:] = np.stack(items)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m liblift.build_dataset", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="folder the captions file's image paths are relative to")
    ap.add_argument("--captions", required=True, help="CSV (image,caption columns) or JSONL file")
    ap.add_argument("--model", required=True, help="local sentence-transformers model folder")
    ap.add_argument("--out", required=True, help="output dataset file (.h5)")
    ap.add_argument("--store", default="encoded", choices=("encoded", "pixels"),
                    help="encoded: the images' own JPEG/PNG/WebP bytes (default); pixels: decoded and resized to --image-size")
    ap.add_argument("--image-size", type=int, default=224, help="with --store pixels: the stored size")
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    ap.add_argument("--on-error", default="skip", choices=("skip", "fail"), help="unreadable images: skip and list, or stop")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted build (OUT.partial)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    ap.add_argument("--backend", default="auto", choices=("auto", "numpy", "sentence-transformers"))
    ap.add_argument("--label-column", help="column/field with each image's class name (enables zero-shot classes)")
    ap.add_argument("--template", action="append", default=[], help="class prompt template such as 'a photo of a {}.'")
    ap.add_argument("--batch-size", type=int, default=64, help="captions per embedding batch")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        build(a.images, a.captions, a.model, a.out, image_size=a.image_size, channels=a.channels, dtype=a.dtype,
              on_error=a.on_error, resume=a.resume, overwrite=a.overwrite, backend=a.backend,
              label_column=a.label_column, templates=a.template, batch_size=a.batch_size, quiet=a.quiet, store=a.store)
    except (BuildError, OSError, ValueError) as e:
        print(f"build_dataset: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nbuild_dataset: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
