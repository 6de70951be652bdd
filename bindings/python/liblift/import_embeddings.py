"""Convert caption embeddings stored as parquet (the LIFT repository's embed.py output) into a
keyed liblift store.

    python3 -m liblift.import_embeddings caption_embeddings/ --out captions.h5
    python3 -m liblift.import_embeddings a.parquet b.parquet --out captions.h5 --dtype float32

Each parquet file holds a string column `key` (LIFT writes the image's file name, "<key>.<ext>")
and a list<float32> column `embedding`; folders are searched recursively for *.parquet and read
in path order (numbered files in numeric order). Rows whose embedding holds NaN or infinity are
skipped and counted, as LIFT's training skips them. The store gets a `keys` dataset and the key
index liblift's loader looks samples up with (a key matches with or without its image
extension). Memory is bounded by one parquet row group and the store writer's 16 MiB index runs,
whatever the number of rows. The output appears atomically when the conversion is complete.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["import_embeddings", "parquet_files", "ImportError_"]


class ImportError_(RuntimeError):  # noqa: N801 (not the builtin ImportError)
    """A parquet file or column that cannot be converted (the message names it)."""


def _natural(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def parquet_files(inputs) -> list:
    """The parquet files named by `inputs` (files, or folders searched recursively), in natural order."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"), key=_natural)
            if not found:
                raise ImportError_(f"{p}: no .parquet files inside")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ImportError_(f"{p}: no such file or folder")
    if not files:
        raise ImportError_("no parquet files given")
    return files


def _embedding_matrix(column, path: Path, first_row: int, name: str) -> np.ndarray:
    """A list / fixed-size-list column of floats as an (n, D) float32 array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        values = column.flatten()
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        offsets = np.asarray(column.offsets)
        lengths = np.diff(offsets)
        if len(lengths) and (lengths != lengths[0]).any():
            bad = int(np.argmax(lengths != lengths[0]))
            raise ImportError_(f"{path}: row {first_row + bad} of '{name}' has {int(lengths[bad])} values; "
                               f"row {first_row} has {int(lengths[0])}")
        width = int(lengths[0]) if len(lengths) else 0
        values = column.flatten()
    else:
        raise ImportError_(f"{path}: column '{name}' has type {column.type}; expected a list of floats")
    if column.null_count:
        raise ImportError_(f"{path}: column '{name}' has {column.null_count} null rows")
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise ImportError_(f"{path}: column '{name}' holds {values.type}; expected floats")
    return np.asarray(values.to_numpy(zero_copy_only=False), np.float32).reshape(len(column), width)


def import_embeddings(inputs, out, dtype: str = "float16", key_column: str = "key", embedding_column: str = "embedding",
                      overwrite: bool = False, batch_rows: int = 8192, quiet: bool = False,
                      text_column: str | None = None) -> dict:
    """Converts; returns {"rows": written, "skipped_non_finite": n, "files": n, "dim": D}.

    With `text_column`, each row's text (a string column, e.g. a caption or class prompt) goes to
    the store's text column instead of a key: a text store for `lift eval --suite ... --texts`."""
    string_column = text_column or key_column
    what = "text" if text_column else "key"
    import pyarrow.parquet as pq

    from .store import StoreWriter

    files = parquet_files(inputs)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ImportError_(f"{out} exists (pass --overwrite to replace it)")
    writer, dim = None, None
    written = skipped = 0
    examples = []
    start = time.monotonic()
    try:
        for number, path in enumerate(files, 1):
            try:
                parquet = pq.ParquetFile(path)
            except Exception as error:  # pyarrow raises several types for unreadable files
                raise ImportError_(f"{path}: not a readable parquet file ({error})") from None
            names = parquet.schema_arrow.names
            for needed in (string_column, embedding_column):
                if needed not in names:
                    raise ImportError_(f"{path}: no column '{needed}' (columns: {', '.join(names)})")
            row = 0
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=[string_column, embedding_column]):
                keys = batch.column(0).to_pylist()
                if any(k is None for k in keys):
                    raise ImportError_(f"{path}: row {row + keys.index(None)} has no {what}")
                matrix = _embedding_matrix(batch.column(1), path, row, embedding_column)
                if dim is None:
                    dim = matrix.shape[1]
                    if dim < 1:
                        raise ImportError_(f"{path}: embeddings have no values")
                    writer = StoreWriter(out, dim=dim, dtype=dtype, keys=not text_column, captions=bool(text_column),
                                         overwrite=overwrite)
                elif matrix.shape[1] != dim:
                    raise ImportError_(f"{path}: embeddings have {matrix.shape[1]} values; earlier files have {dim}")
                finite = np.isfinite(matrix).all(axis=1)
                if not finite.all():
                    skipped += int((~finite).sum())
                    examples += [str(keys[i]) for i in np.flatnonzero(~finite)[: max(0, 5 - len(examples))]]
                    matrix = matrix[finite]
                    keys = [k for k, ok in zip(keys, finite) if ok]
                if len(keys):
                    strings = [str(k) for k in keys]
                    writer.append(np.ascontiguousarray(matrix), **({"captions": strings} if text_column else {"keys": strings}))
                    written += len(keys)
                row += batch.num_rows
            if not quiet:
                rate = written / max(time.monotonic() - start, 1e-9)
                sys.stderr.write(f"\rimport_embeddings: {number}/{len(files)} files, {written} rows, "
                                 f"{skipped} skipped, {rate:.0f} rows/s")
                sys.stderr.flush()
        if writer is None:
            raise ImportError_("the parquet files hold no rows")
        writer.finish()
    finally:
        if writer is not None:
            writer.close()
    if not quiet:
        sys.stderr.write("\n")
    return {"rows": written, "skipped_non_finite": skipped, "skipped_examples": examples, "files": len(files),
            "dim": dim}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m liblift.import_embeddings", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="parquet files or folders of them (searched recursively)")
    parser.add_argument("--out", required=True, help="the store to write (HDF5)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                        help="stored element type (default float16, half the disk of float32)")
    parser.add_argument("--key-column", default="key")
    parser.add_argument("--embedding-column", default="embedding")
    parser.add_argument("--text-column", help="write this string column as the store's texts (a text store for "
                        "lift eval --suite ... --texts) instead of keys")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from ._lib import LiftError

    try:
        report = import_embeddings(args.inputs, args.out, args.dtype, args.key_column, args.embedding_column,
                                   args.overwrite, quiet=args.quiet, text_column=args.text_column)
    except (ImportError_, LiftError) as error:
        print(f"import_embeddings: {error}", file=sys.stderr)
        return 1
    skipped = (f"; skipped {report['skipped_non_finite']} rows with NaN/inf (e.g. {', '.join(report['skipped_examples'])})"
               if report["skipped_non_finite"] else "")
    print(f"wrote {args.out}: {report['rows']} rows of {report['dim']} from {report['files']} parquet files{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
