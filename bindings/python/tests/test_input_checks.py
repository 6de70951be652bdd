"""The `lift` command's input checks: before train, eval, encode or build opens an HDF5 file it
did not write (or check before), a child process reads the file in full; a file that crashes or
hangs libhdf5 is refused with one line and never opened in-process. The files are minimal
h5py-written ones damaged where libhdf5 1.10 itself faults (Tests/fixtures/make_hostile_hdf5.py)."""
import os
from pathlib import Path

import numpy as np

import liblift
from cli_helpers import lift


def known_files():
    path = Path(os.environ["XDG_STATE_HOME"]) / "liblift" / "known-files"
    return path.read_text().splitlines() if path.exists() else []


def listed(path, kind):
    return any(line.split("\t")[1:] == [kind, str(Path(path).resolve())] for line in known_files())


def model_for(fixtures, tmp_path):
    """A model trained for two steps on the clean fixture dataset (4x4 grey images, 4-d captions)."""
    run = tmp_path / "run"
    lift("train", "--data", fixtures / "clean-dataset.h5", "--out", run, "--preset", "ViT-XS/4-32", "--image-size", 4,
         "--patch", 2, "--width", 16, "--depth", 1, "--heads", 1, "--batch-size", 3, "--steps", 2, "--quiet")
    return run / "model.safetensors"


def test_files_that_crash_or_hang_libhdf5_are_refused_before_opening(hostile_hdf5, tmp_path):
    model = model_for(hostile_hdf5, tmp_path)
    crash, hang = hostile_hdf5 / "crash-dataset.h5", hostile_hdf5 / "hang-dataset.h5"
    # Read in this process, the file kills it inside libhdf5 (reading its class names).
    r = lift("info", "--trusted", crash, check=False, timeout=120)
    assert r.returncode < 0 or r.returncode > 128, (r.returncode, r.stderr)
    # With it (the default), one line names the file and why; the exit status is 1.
    r = lift("eval", "--model", model, "--data", crash, check=False, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"Error: reading '{crash}' crashed the checking process"), r.stderr
    assert "do not open it in-process" in r.stderr and len(r.stderr.splitlines()) == 1
    r = lift("eval", "--model", model, "--data", hang, check=False, timeout=120, env=dict(os.environ, LIFT_CHECK_TIMEOUT="3"))
    assert r.returncode == 1 and f"reading '{hang}' did not finish within 3 s" in r.stderr, r.stderr
    # Training: a damaged evaluation set stops the run before its first step, and nothing is written.
    run = tmp_path / "refused"
    r = lift("train", "--data", hostile_hdf5 / "clean-dataset.h5", "--eval-data", crash, "--out", run, "--preset",
             "ViT-XS/4-32", "--image-size", 4, "--patch", 2, "--steps", 2, "--quiet", check=False, timeout=120)
    assert r.returncode == 1 and "crashed the checking process" in r.stderr, r.stderr
    assert not (run / "checkpoint.safetensors").exists()
    # Embedding stores (--embeddings) are checked as stores.
    r = lift("encode", "--model", model, "--data", hostile_hdf5 / "clean-dataset.h5", "--embeddings",
             hostile_hdf5 / "crash-store.h5", "--out", tmp_path / "e.h5", check=False, timeout=120)
    assert r.returncode == 1 and "crash-store.h5' crashed the checking process" in r.stderr, r.stderr
    assert not (tmp_path / "e.h5").exists()
    # Files refused by liblift's own readers keep the reader's message.
    r = lift("eval", "--model", model, "--data", hostile_hdf5 / "clean-dataset.h5", "--embeddings",
             hostile_hdf5 / "clean-dataset.h5", check=False)
    assert r.returncode == 1 and "is not an embedding store: its content is an image-caption dataset" in r.stderr, r.stderr


def test_evaluation_texts_are_checked_with_their_text_column(hostile_hdf5, tmp_path):
    """A suite's --texts store keeps its strings in a `texts` (or `text`, `captions`) column that
    lift eval reads in-process: the check reads that column too, so a damaged one is refused."""
    from PIL import Image
    model = model_for(hostile_hdf5, tmp_path)
    root = tmp_path / "classes"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 100, np.uint8)).save(root / name / "a.png")
    crash = hostile_hdf5 / "crash-texts.h5"
    r = lift("eval", "--model", model, "--suite", "imagenet", "--root", root, "--texts", crash, check=False, timeout=120)
    assert r.returncode == 1 and f"reading '{crash}' crashed the checking process" in r.stderr, r.stderr
    r = lift("check", hostile_hdf5 / "crash-cache.h5", check=False, timeout=120)  # root string attributes
    assert r.returncode == 1 and "crashed the checking process" in r.stdout, r.stdout


def test_known_files_are_opened_without_a_second_check(hostile_hdf5, tmp_path):
    """A file is checked once per version: after a check passes (or after lift wrote the file),
    later commands open it directly; a new version, --untrusted-data, or a list others could
    write bring the check back. An invalid LIFT_CHECK_TIMEOUT shows whether a check ran."""
    model = model_for(hostile_hdf5, tmp_path)
    data = tmp_path / "data.h5"
    data.write_bytes((hostile_hdf5 / "clean-dataset.h5").read_bytes())
    no_check = dict(os.environ, LIFT_CHECK_TIMEOUT="never")

    def evaluate(*extra, env=no_check):
        return lift("eval", "--model", model, "--data", data, "--no-retrieval", *extra, check=False, env=env)

    def checked(result):
        """Whether the command ran a check (which the invalid LIFT_CHECK_TIMEOUT stops)."""
        if "LIFT_CHECK_TIMEOUT must be seconds in (0, 86400], got 'never'" in result.stderr:
            assert result.returncode == 1
            return True
        assert result.returncode == 0, result.stderr
        return False

    assert checked(evaluate())
    assert not checked(evaluate("--trust-inputs"))
    assert evaluate(env=None).returncode == 0          # checked, and remembered
    assert listed(data, "dataset")
    assert not checked(evaluate())                     # known: not checked again
    assert checked(evaluate("--untrusted-data"))       # checks everything
    os.utime(data, ns=(1, 1))                          # another version of the file
    assert checked(evaluate())
    assert evaluate(env=None).returncode == 0
    # The same bytes in a new file (copied, or unpacked with the old timestamps) are another version.
    copy = tmp_path / "copy.h5"
    copy.write_bytes(data.read_bytes())
    data.unlink()
    copy.rename(data)
    os.utime(data, ns=(1, 1))
    assert checked(evaluate())
    assert evaluate(env=None).returncode == 0
    # What lift writes is known as written: the store encode makes opens without a check.
    out = tmp_path / "images.h5"
    lift("encode", "--model", model, "--data", data, "--out", out)
    assert listed(out, "written")
    r = lift("eval", "--model", model, "--data", data, "--embeddings", out, check=False, env=no_check)
    assert r.returncode == 1 and "carries its caption embeddings" in r.stderr, r.stderr  # opened: no check ran
    ledger = Path(os.environ["XDG_STATE_HOME"]) / "liblift" / "known-files"
    assert ledger.stat().st_mode & 0o777 == 0o600
    lines = ledger.read_text().splitlines()
    assert len(lines) == len(set(lines)), "an entry is listed twice"
    # A list that others could write is not trusted: everything is checked.
    ledger.chmod(0o666)
    try:
        assert checked(evaluate())
    finally:
        ledger.chmod(0o600)
    r = lift("eval", "--model", model, "--data", data, "--untrusted-data", "--trust-inputs", check=False)
    assert r.returncode == 64 and "exclude each other" in r.stderr, r.stderr


def test_image_sources_are_checked_with_untrusted_data(tmp_path):
    """Tar shards are read by liblift's own code and decoded sample by sample (bad samples are
    skipped and counted), so by default they are not checked; --untrusted-data decodes every image
    in the checking process first."""
    import io
    import tarfile
    from PIL import Image
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for key in ("a", "b"):
            buffer = io.BytesIO()
            Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(buffer, format="PNG")
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(buffer.getvalue())
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
    with liblift.StoreWriter(tmp_path / "emb.h5", dim=4, keys=True) as w:
        w.append(np.ones((2, 4), np.float32), keys=["a", "b"])
    args = ["build", "--data", shard, "--embeddings", tmp_path / "emb.h5", "--quiet"]
    no_check = dict(os.environ, LIFT_CHECK_TIMEOUT="never")
    # The store is known after its first check; the shard is not checked by default ...
    lift(*args, "--out", tmp_path / "b1")
    assert lift(*args, "--out", tmp_path / "b2", env=no_check).returncode == 0
    # ... but is with --untrusted-data (as is the known store).
    r = lift(*args, "--out", tmp_path / "b3", "--untrusted-data", check=False, env=no_check)
    assert r.returncode == 1 and "LIFT_CHECK_TIMEOUT" in r.stderr, r.stderr
    lift(*args, "--out", tmp_path / "b4", "--untrusted-data")
    assert listed(shard, "imageSource")
