"""Hostile inputs: crafted and corrupt files, absurd arguments. Each case runs in a child process
with a timeout, so a crash (a Swift trap is SIGILL/SIGTRAP, an abort SIGABRT) or a hang fails
the test instead of the test run; every case must end in a LiftError naming what was wrong."""
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env

import liblift

HERE = Path(__file__).resolve().parent


def run_case(code: str, timeout: float = 60) -> str:
    """Runs `code` (with liblift imported and `expect_error` defined) in a child process; returns
    its stdout. Fails on a signal, a non-zero exit or a timeout."""
    prelude = textwrap.dedent("""
        import sys, liblift, numpy as np
        def expect_error(status, fragment, call, *args, **kw):
            try:
                call(*args, **kw)
            except liblift.LiftError as e:
                assert e.status_name == status, (e.status_name, e.message)
                assert fragment in e.message, e.message
                print("OK", e.status_name, e.message)
                return
            raise AssertionError("no error")
    """)
    env = child_env()
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, f"child ended with {r.returncode}:\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "OK" in r.stdout, r.stdout + r.stderr
    return r.stdout


def read_safetensors(path: Path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors(path: Path, header: dict, data: bytes):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small training checkpoint after two steps (moments non-zero)."""
    d = tmp_path_factory.mktemp("ckpt")
    config = liblift.ModelConfig.preset("ViT-XS/4-32", 8, image_size=8, patch=4, width=16, depth=1, heads=1)
    trainer = liblift.Trainer(liblift.Model(config, seed=1), batch_capacity=4)
    rng = np.random.default_rng(0)
    for _ in range(2):
        trainer.step(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), rng.standard_normal((4, 8)).astype(np.float32))
    path = d / "ckpt.safetensors"
    trainer.save(path)
    return path


def edited(checkpoint: Path, tmp_path: Path, edit) -> Path:
    header, data = read_safetensors(checkpoint)
    data = bytearray(data)
    edit(header, data)
    out = tmp_path / "edited.safetensors"
    write_safetensors(out, header, bytes(data))
    return out


def test_checkpoint_declaring_a_huge_batch_capacity_is_refused_before_allocating(checkpoint, tmp_path):
    """A checkpoint whose train config declares batch_capacity 2^20 (a 4 TiB loss matrix and a
    workspace of gigabytes): refused by the memory budget, naming the field and the bytes, in under
    a second and under 200 MB peak RSS (measured by /usr/bin/time -v around the loading process)."""
    def edit(header, data):
        config = json.loads(header["__metadata__"]["lift.train_config"])
        config["batch_capacity"] = 1 << 20
        header["__metadata__"]["lift.train_config"] = json.dumps(config)
    path = edited(checkpoint, tmp_path, edit)
    code = textwrap.dedent(f"""
        import time, liblift
        start = time.perf_counter()
        try:
            liblift.Trainer.load({str(path)!r})
        except liblift.LiftError as e:
            print("refused", e.status_name, time.perf_counter() - start, e.message)
    """)
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    _, status, seconds, message = r.stdout.split(" ", 3)
    assert status == "LIFT_ERR_MEMORY", r.stdout
    assert "a trainer of batch capacity 1048576 (batch_capacity) needs" in message, message
    assert "loss logits 4398067" in message and "more than the memory budget" in message, message
    assert float(seconds) < 1.0, r.stdout
    rss_kb = int(next(line for line in r.stderr.splitlines() if "Maximum resident set size" in line).split()[-1])
    assert rss_kb < 200 * 1024, f"peak RSS {rss_kb} kB"


def test_writers_replace_only_regular_files(tmp_path):
    """Model.save, Trainer.save and StoreWriter(overwrite=True) never replace a FIFO, a symbolic
    link or a folder (nor a device): each is refused, naming what the path is, and stays."""
    config = liblift.ModelConfig.preset("ViT-XS/4-32", 8, image_size=8, patch=4, width=16, depth=1, heads=1)
    model = liblift.Model(config, seed=1)
    fifo, link, folder = tmp_path / "fifo", tmp_path / "link", tmp_path / "folder"
    os.mkfifo(fifo)
    (tmp_path / "target").write_bytes(b"keep")
    link.symlink_to(tmp_path / "target")
    folder.mkdir()
    for path, kind in [(fifo, "is a FIFO"), (link, "is a symbolic link"), (folder, "is a folder")]:
        with pytest.raises(liblift.LiftError) as e:
            model.save(path)
        assert kind in e.value.message and "replaces only regular files" in e.value.message, e.value.message
        with pytest.raises(liblift.LiftError) as e:
            with liblift.StoreWriter(path, dim=4, overwrite=True) as w:
                w.append(np.ones((1, 4), np.float32))
        assert kind in e.value.message, e.value.message
    assert fifo.is_fifo() and link.is_symlink() and folder.is_dir() and (tmp_path / "target").read_bytes() == b"keep"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_memory_limit_is_settable_and_refuses_before_allocating():
    run_case("""
        default = liblift.memory_limit()
        assert default >= 1 << 30, default
        liblift.set_memory_limit(8 << 20)
        assert liblift.memory_limit() == 8 << 20
        config = liblift.ModelConfig.preset("ViT-XS/4-32", 8, image_size=8, patch=4, width=16, depth=1, heads=1)
        model = liblift.Model(config, seed=1)
        expect_error("LIFT_ERR_MEMORY", "more than the memory budget of 8388608 bytes", liblift.Trainer, model,
                     batch_capacity=4096)
        liblift.set_memory_limit(0)
        assert liblift.memory_limit() == default
        for bad in (-1, 1 << 64):
            try:
                liblift.set_memory_limit(bad)
                raise AssertionError(f"{bad} accepted")
            except ValueError:
                pass
        liblift.Trainer(model, batch_capacity=4096)
    """)


def test_shape_whose_product_overflows(checkpoint, tmp_path):
    def edit(header, data):
        header["logit_scale"]["shape"] = [1 << 40, 1 << 40, 1 << 40]
    path = edited(checkpoint, tmp_path, edit)
    for call in ("liblift.Model.load", "liblift.Trainer.load"):
        run_case(f"expect_error('LIFT_ERR_FORMAT', 'impossible shape', {call}, {str(path)!r})")


@pytest.mark.parametrize("step", [str(2 ** 62), str(2 ** 63 - 1), "-1"])
def test_step_out_of_range(checkpoint, tmp_path, step):
    def edit(header, data):
        header["__metadata__"]["lift.step"] = step
    path = edited(checkpoint, tmp_path, edit)
    run_case(f"expect_error('LIFT_ERR_FORMAT', 'lift.step', liblift.Trainer.load, {str(path)!r})")


@pytest.mark.parametrize("moment,value,status", [("exp_avg", float("nan"), "LIFT_ERR_VALUE"),
                                                 ("exp_avg_sq", float("inf"), "LIFT_ERR_VALUE"),
                                                 ("exp_avg_sq", -1.0, "LIFT_ERR_VALUE")])
def test_bad_optimizer_moments(checkpoint, tmp_path, moment, value, status):
    name = f"optimizer.{moment}.visual.class_embedding"
    def edit(header, data):
        begin = header[name]["data_offsets"][0]
        data[begin:begin + 4] = struct.pack("<f", value)
    path = edited(checkpoint, tmp_path, edit)
    run_case(f"expect_error({status!r}, {name!r}, liblift.Trainer.load, {str(path)!r})")


@pytest.mark.parametrize("unlocked", [-2 ** 63, -1, 2 ** 62])
def test_locking_out_of_range(checkpoint, tmp_path, unlocked):
    def edit(header, data):
        config = json.loads(header["__metadata__"]["lift.train_config"])
        config["unlocked_groups"] = unlocked
        header["__metadata__"]["lift.train_config"] = json.dumps(config)
    path = edited(checkpoint, tmp_path, edit)
    run_case(f"expect_error('LIFT_ERR_FORMAT', 'unlocked', liblift.Trainer.load, {str(path)!r})")


@pytest.mark.parametrize("unlocked", [0, 1])
def test_locked_checkpoint_lacking_a_trained_moment(tmp_path, unlocked):
    """Frozen tensors have no moments in a checkpoint; a trained one must."""
    config = liblift.ModelConfig.preset("ViT-XS/4-32", 8, image_size=8, patch=4, width=16, depth=2, heads=1)
    trainer = liblift.Trainer(liblift.Model(config, seed=1), batch_capacity=4, unlocked_groups=unlocked)
    trainer.save(tmp_path / "c.safetensors")
    header, _ = read_safetensors(tmp_path / "c.safetensors")
    assert "optimizer.exp_avg.visual.conv1.weight" not in header
    name = "optimizer.exp_avg_sq.mlp_projector.projector.0.weight"
    def edit(header, data):
        header[name.replace("projector.0", "projector.9")] = header.pop(name)
    path = edited(tmp_path / "c.safetensors", tmp_path, edit)
    run_case(f"expect_error('LIFT_ERR_FORMAT', {name!r}, liblift.Trainer.load, {str(path)!r})")


def test_config_asking_for_a_huge_model_is_refused_before_allocating(checkpoint, tmp_path):
    def edit(header, data):
        config = json.loads(header["__metadata__"]["lift.model_config"])
        config.update(width=8192, depth=128, heads=128)
        header["__metadata__"]["lift.model_config"] = json.dumps(config)
    path = edited(checkpoint, tmp_path, edit)
    # 100 GB of parameters would be asked for; the file's missing tensors are found first.
    run_case(f"""
        import resource
        expect_error('LIFT_ERR_SHAPE', 'the model expects', liblift.Model.load, {str(path)!r})
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2_000_000, "allocated the model"
    """)


def test_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    run_case(f"""
        expect_error('LIFT_ERR_IO', 'not a regular file', liblift.Model.load, {str(fifo)!r})
        expect_error('LIFT_ERR_IO', 'FIFO', liblift.Store, {str(fifo)!r})
    """, timeout=20)


@pytest.fixture
def dataset(tmp_path):
    """A valid 2-class dataset of 6 images with 4 captions and class prompts."""
    rng = np.random.default_rng(1)
    path = tmp_path / "data.h5"
    images = rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    emb = rng.standard_normal((4, 16)).astype(np.float32)
    liblift.write_dataset(path, images, emb, [[0, 1], [2], [3], [0], [1, 2], [3]], labels=np.arange(6) % 2,
                          class_names=["a", "b"], class_prompts=[[0, 1], [2, 3]])
    return path


def rewrite(path: Path, name: str, data=None, **create):
    import h5py
    with h5py.File(path, "a") as f:
        del f[name]
        if data is not None:
            f[name] = data
        else:
            f.create_dataset(name, **create)


def test_prompt_offsets_out_of_order(dataset):
    rewrite(dataset, "classes/prompt_offsets", np.array([0, 100, 4]))
    run_case(f"expect_error('LIFT_ERR_FORMAT', 'prompt offsets', liblift.Dataset, {str(dataset)!r})")


def test_prompt_rows_of_absurd_length_are_refused_unread(dataset):
    rewrite(dataset, "classes/prompt_rows", shape=(1 << 40,), dtype="i8", chunks=(1 << 16,))
    run_case(f"expect_error('LIFT_ERR_FORMAT', 'at most', liblift.Dataset, {str(dataset)!r})", timeout=30)


def test_class_names_of_absurd_length_are_refused_unread(dataset):
    import h5py
    rewrite(dataset, "classes/names", shape=(1 << 40,), dtype=h5py.string_dtype(), chunks=(1 << 10,))
    run_case(f"expect_error('LIFT_ERR_FORMAT', 'at most', liblift.Dataset, {str(dataset)!r})", timeout=30)


@pytest.mark.parametrize("start", [(0, 10 ** 12), (2 ** 62, 0), (-1, 0)])
def test_loader_start_outside_the_data(dataset, start):
    run_case(f"""
        ds = liblift.Dataset({str(dataset)!r})
        expect_error('LIFT_ERR_ARGUMENT', 'start position', liblift.Loader, ds, 2, start={start!r})
    """)


@pytest.mark.parametrize("shape,status,fragment", [
    ((6, 0, 0, 1), "LIFT_ERR_FORMAT", "height and width"),
    ((6, 1 << 20, 8, 1), "LIFT_ERR_FORMAT", "height and width"),
    ((6, 1 << 31, 8, 1), "LIFT_ERR_FORMAT", "at most"),
    ((6, 1 << 40, 1 << 40, 1), "LIFT_ERR_FORMAT", "at most"),
    ((1 << 62, 8, 8, 1), "LIFT_ERR_SHAPE", "caption_offsets"),
])
def test_image_extents_out_of_range(dataset, shape, status, fragment):
    import h5py
    with h5py.File(dataset, "a") as f:
        del f["images/pixels"]
        chunks = None if 0 in shape else tuple(min(s, 4) for s in shape)
        f.create_dataset("images/pixels", shape=shape, dtype="u1", chunks=chunks)
    run_case(f"expect_error({status!r}, {fragment!r}, liblift.Dataset, {str(dataset)!r})", timeout=30)


def test_eval_offsets_that_would_read_past_the_arrays():
    # Called through the C functions directly: the Python wrappers build consistent offsets.
    run_case("""
        import ctypes
        from liblift._lib import lib
        f = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        i = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
        x = np.ones((2, 4), np.float32)
        offsets, rows = np.array([0, 3, 2], np.int64), np.array([0, 1], np.int64)
        i2t, t2i = (ctypes.c_double * 3)(), (ctypes.c_double * 3)()
        def retrieval():
            liblift._lib.check(lib.lift_eval_retrieval(f(x), 2, f(x), 2, 4, i(offsets), i(rows), i2t, t2i))
        expect_error('LIFT_ERR_ARGUMENT', 'caption offsets', retrieval)
        out = np.zeros((2, 4), np.float32)
        def classes(offsets, count):
            liblift._lib.check(lib.lift_eval_class_embeddings(f(x), 2, 4, i(offsets), i(rows), count, f(out)))
        expect_error('LIFT_ERR_ARGUMENT', 'offsets must not decrease', classes, np.array([0, 5, 2], np.int64), 2)
        expect_error('LIFT_ERR_ARGUMENT', 'classes must be at most', classes, offsets, 1 << 40)
    """)


def test_layout_addresses_beyond_any_file(tmp_path):
    """The data address of a contiguous dataset, replaced by huge values wherever its bytes occur
    in the file's metadata: every variant must open and read cleanly or fail with a LiftError."""
    import h5py
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:
        address = f.create_dataset("embeddings", data=np.ones((4, 8), np.float32)).id.get_offset()
    raw = path.read_bytes()
    needle = struct.pack("<Q", address)
    places = [i for i in range(len(raw) - 7) if raw[i:i + 8] == needle]
    assert places
    for place in places:
        for value in ((1 << 63) + 16, 1 << 62, (1 << 64) - 64):
            bad = bytearray(raw)
            bad[place:place + 8] = struct.pack("<Q", value)
            variant = tmp_path / f"bad-{place}-{value}.h5"
            variant.write_bytes(bytes(bad))
            run_case(f"""
                try:
                    with liblift.Store({str(variant)!r}) as s:
                        s.read_rows([1, 3]); s.read(0, 4)
                    print("OK read")
                except liblift.LiftError as e:
                    print("OK", e.status_name, e.message)
            """)


def test_absurd_sizes_are_memory_or_argument_errors(tmp_path):
    store = tmp_path / "s.h5"
    with liblift.StoreWriter(store, dim=8) as w:
        w.append(np.ones((10, 8), np.float32))
    run_case(f"""
        import ctypes
        from liblift._lib import lib, check
        from liblift.distributed import Communicator
        q = np.ones((2, 8), np.float32)
        idx = np.zeros(2, np.int64)
        with liblift.Store({str(store)!r}) as s:
            # nq = 2^40 queries claimed: refused when the work buffers cannot be had, before reading them.
            search = lambda: check(lib.lift_store_search(s._handle(), q.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                                         1 << 40, 8, 1, idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), None))
            expect_error('LIFT_ERR_MEMORY', 'unit queries', search)
        # A communicator claiming 2^31 - 1 ranks.
        class Huge(Communicator):
            def allgather_int64(self, value): return [value]
        trainer = liblift.Trainer(liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", 8, image_size=8, patch=4,
                                                                          width=16, depth=1, heads=1)), batch_capacity=2)
        images = np.zeros((2, 8, 8, 3), np.uint8)
        texts = np.ones((2, 8), np.float32)
        expect_error('LIFT_ERR_ARGUMENT', 'size must be in', trainer.step_distributed, images, texts, Huge(0, 2 ** 31 - 1))
    """)


# ---- the lift command ----------------------------------------------------------------------

from cli_helpers import LIFT, lift, make_tiny, train_args  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def one_line_error(r, fragment):
    assert r.returncode not in (0,) and r.returncode > 0, (r.returncode, r.stderr)  # an exit status, not a signal
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.stderr


@pytest.mark.parametrize("args,fragment", [
    (["train", "--batch-size", "abc"], "--batch-size"),
    (["eval"], "--model"),
    (["frobnicate"], "frobnicate"),
    (["train", "--epochs", "inf"], "--epochs"),
    (["train", "--epochs", "1e300"], "--epochs"),
    (["train", "--batch-size", "9223372036854775807"], "--batch-size"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--eval-every=-1"], "--eval-every"),
    (["train", "--steps", str(2 ** 62)], "--steps"),
    (["train", "--time-limit", "nan"], "--time-limit"),
    (["train", "--lr", "inf"], "--lr"),
])
def test_bad_options_are_one_line(tmp_path, args, fragment):
    r = lift(*args, "--out", tmp_path / "run", check=False, timeout=60) if args[0] == "train" else \
        lift(*args, check=False, timeout=60)
    one_line_error(r, fragment)
    assert not (tmp_path / "run").exists()


def test_training_data_without_images(tmp_path):
    empty = tmp_path / "empty.h5"
    liblift.write_dataset(empty, np.zeros((0, 8, 8, 1), np.uint8), np.ones((2, 16), np.float32), [])
    r = lift("train", "--data", empty, "--out", tmp_path / "run", "--preset", "ViT-XS/7-28", "--image-size", 8,
             "--patch", 4, check=False, timeout=60)
    one_line_error(r, "no images")


@pytest.mark.parametrize("key,value,fragment", [("lift.step", str(2 ** 62), "lift.step"),
                                                ("user.wait_seconds", "1e300", "impossible times"),
                                                ("user.batch", str(10 ** 12), "start position")])
def test_resume_from_an_edited_checkpoint_changes_nothing(tiny, tmp_path, key, value, fragment):
    run = tmp_path / "run"
    lift(*train_args(tiny, run, "--epochs", 1))
    header, data = read_safetensors(run / "checkpoint.safetensors")
    header["__metadata__"][key] = value
    write_safetensors(run / "checkpoint.safetensors", header, data)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = lift(*train_args(tiny, run, "--epochs", 2, "--resume"), check=False, timeout=60)
    one_line_error(r, fragment)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_cleans_up_after_a_killed_save_and_logs_each_step_once(tiny, tmp_path):
    run = tmp_path / "run"
    lift(*train_args(tiny, run, "--epochs", 2, "--stop-at", 6, "--log-every", 1))
    # A save killed by kill -9 leaves its temporary file; a later step's log line outlived the checkpoint.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run / f"checkpoint.safetensors.tmp-{dead.pid}-1a2b"
    live = run / f"checkpoint.safetensors.tmp-{os.getpid()}-3c4d"
    stale.write_bytes(b"partial"), live.write_bytes(b"someone else's")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n")
    lift(*train_args(tiny, run, "--epochs", 2, "--resume", "--log-every", 1))
    assert not stale.exists() and live.exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 12, steps
    # --restart starts a new log.
    lift(*train_args(tiny, run, "--epochs", 1, "--restart", "--log-every", 1))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 7)), steps


LIBHDF5_FINDINGS = HERE.parents[2] / "Fuzz" / "libhdf5" / "strings"


def test_lift_check_isolates_files_that_crash_or_hang_libhdf5(tmp_path):
    """Found by the fuzzer: corrupt string heaps on which libhdf5 1.10 itself segfaults or loops.
    `lift check` reads them in a child process and reports them; the caller survives."""
    crash, hang = LIBHDF5_FINDINGS / "crash-vlen-heap.h5", LIBHDF5_FINDINGS / "hang-vlen-heap.h5"
    good = tmp_path / "good.h5"
    with liblift.StoreWriter(good, dim=4, keys=True) as w:
        w.append(np.ones((2, 4), np.float32), keys=["a", "b"])
    r = lift("check", "--timeout", 10, good, crash, hang, check=False, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{good}: ok: embedding store of 2 x 4")
    assert "crashed the checking process" in lines[1] and "do not open it in-process" in lines[1]
    assert "did not finish within 10 s" in lines[2]
    # Opening them without reading the strings is safe: liblift reads strings only when asked.
    for path in (crash, hang):
        run_case(f"""
            try:
                with liblift.Store({str(path)!r}) as s:
                    s.read(0, s.rows)
                print("OK read")
            except liblift.LiftError as e:
                print("OK", e.status_name)
        """, timeout=30)


def test_check_file_isolates_files_that_crash_or_hang_libhdf5(tmp_path):
    """liblift.check_file (lift_file_check): the same isolation as `lift check`, from the library,
    with a verdict as a status. The calling process survives the crash and the hang."""
    crash, hang = LIBHDF5_FINDINGS / "crash-vlen-heap.h5", LIBHDF5_FINDINGS / "hang-vlen-heap.h5"
    good = tmp_path / "good.h5"
    with liblift.StoreWriter(good, dim=4, keys=True) as w:
        w.append(np.ones((2, 4), np.float32), keys=["a", "b"])
    assert liblift.check_file(good) == "embedding store of 2 x 4"
    assert liblift.check_file(good, kind="store", timeout=30) == "embedding store of 2 x 4"
    with pytest.raises(liblift.LiftError) as e:
        liblift.check_file(crash, timeout=30)
    assert e.value.status_name == "LIFT_ERR_UNSAFE" and "crashed the checking process" in e.value.message
    assert str(crash) in e.value.message
    with pytest.raises(liblift.LiftError) as e:
        liblift.check_file(hang, timeout=2)
    assert e.value.status_name == "LIFT_ERR_UNSAFE" and "did not finish within 2 s" in e.value.message
    # liblift's own refusals keep their status and message.
    with pytest.raises(liblift.LiftError) as e:
        liblift.check_file(good, kind="model")
    assert e.value.status_name == "LIFT_ERR_FORMAT" and "is not a model or training checkpoint" in e.value.message
    text = tmp_path / "notes.txt"
    text.write_text("not a liblift file")
    with pytest.raises(liblift.LiftError) as e:
        liblift.check_file(text)
    assert e.value.status_name == "LIFT_ERR_FORMAT" and "neither safetensors nor HDF5" in e.value.message
    with pytest.raises(liblift.LiftError) as e:
        liblift.check_file(good, timeout=0)
    assert e.value.status_name == "LIFT_ERR_ARGUMENT"
    with pytest.raises(ValueError):
        liblift.check_file(good, kind="picture")
    # The in-process read gives the same summary.
    assert liblift.read_file(good) == "embedding store of 2 x 4"


def test_untrusted_opens_check_each_file_once(checkpoint, tmp_path):
    """untrusted=True (LIFT_OPEN_UNTRUSTED): files that crash or hang libhdf5 are refused with
    LIFT_ERR_UNSAFE and the process survives; clean files open; a file is checked once per
    process per version (device, inode, size, mtime): with the checking program gone, a file
    checked before still opens, a new one does not."""
    crash, hang = LIBHDF5_FINDINGS / "crash-vlen-heap.h5", LIBHDF5_FINDINGS / "hang-vlen-heap.h5"
    run_case(f"""
        import os
        expect_error("LIFT_ERR_UNSAFE", "crashed the checking process", liblift.Store, {str(crash)!r}, untrusted=True)
        good = {str(tmp_path / 'good.h5')!r}
        with liblift.StoreWriter(good, dim=4, keys=True) as w:
            w.append(np.ones((2, 4), np.float32), keys=["a", "b"])
        with liblift.Store(good, untrusted=True) as s:
            assert s.rows == 2
        model = liblift.Model.load({str(checkpoint)!r}, untrusted=True)
        trainer = liblift.Trainer.load({str(checkpoint)!r}, untrusted=True)
        os.environ["LIFT_FILE_CHECK_HELPER"] = "/nonexistent/lift-file-check"
        with liblift.Store(good, untrusted=True) as s:   # checked before: not again
            assert s.rows == 2
        liblift.Model.load({str(checkpoint)!r}, untrusted=True)
        other = {str(tmp_path / 'other.h5')!r}
        with liblift.StoreWriter(other, dim=4) as w:
            w.append(np.ones((2, 4), np.float32))
        expect_error("LIFT_ERR_IO", "the checking program is missing", liblift.Store, other, untrusted=True)
        with liblift.Store(other) as s:                  # trusted opens need no check
            assert s.rows == 2
        # A rewritten file is a new version: checked again.
        with liblift.StoreWriter(good, dim=4, overwrite=True) as w:
            w.append(np.ones((3, 4), np.float32))
        expect_error("LIFT_ERR_IO", "the checking program is missing", liblift.Store, good, untrusted=True)
    """)
    # A store opened as a dataset: the check names what the file is instead.
    run_case(f"""
        expect_error("LIFT_ERR_FORMAT", "is not an image-caption dataset", liblift.Dataset, {str(hang)!r}, untrusted=True)
    """)


def test_untrusted_opens_refuse_the_script_made_fixtures(hostile_hdf5):
    """The minimal h5py files of Tests/fixtures/make_hostile_hdf5.py (a store and a dataset whose
    string heap crashes or hangs libhdf5): check_file and untrusted=True refuse each with
    LIFT_ERR_UNSAFE and the process survives; their clean originals pass and open."""
    run_case(f"""
        import os
        os.environ["LIFT_CHECK_TIMEOUT"] = "3"
        d = {str(hostile_hdf5)!r}
        for kind, opener in (("store", liblift.Store), ("dataset", liblift.Dataset)):
            for how, fragment in (("crash", "crashed the checking process"), ("hang", "did not finish within 3 s")):
                path = f"{{d}}/{{how}}-{{kind}}.h5"
                expect_error("LIFT_ERR_UNSAFE", fragment, liblift.check_file, path, kind=kind, timeout=3)
                expect_error("LIFT_ERR_UNSAFE", fragment, opener, path, untrusted=True)
            clean = f"{{d}}/clean-{{kind}}.h5"
            assert liblift.check_file(clean, kind=kind)
            opener(clean, untrusted=True)
        os.environ["LIFT_CHECK_TIMEOUT"] = "soon"
        expect_error("LIFT_ERR_ARGUMENT", "LIFT_CHECK_TIMEOUT must be seconds", liblift.Store, f"{{d}}/crash-store.h5",
                     untrusted=True)
    """, timeout=120)


def test_check_file_from_a_threaded_host_with_the_memory_budget(tmp_path):
    """Checks from several threads at once (posix_spawn, no fork of the threaded host), under a
    small LIFT_MEMORY_LIMIT: a file whose read needs more than the budget fails cleanly."""
    run_case(f"""
        import threading
        good = {str(tmp_path / 'big.h5')!r}
        with liblift.StoreWriter(good, dim=1024) as w:
            w.append(np.ones((4096, 1024), np.float32))
        results = []
        def check():
            results.append(liblift.check_file(good, timeout=60))
        threads = [threading.Thread(target=check) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert results == ["embedding store of 4096 x 1024"] * 4, results
        print("OK threads")
    """)
    # An 88 MB model (ViT-S/16) read under a 64 MiB budget: refused, naming the allocation.
    model = tmp_path / "s16.safetensors"
    liblift.Model(liblift.ModelConfig.preset("ViT-S/16", 512), seed=1).save(model)
    env_case = f"""
        try:
            liblift.check_file({str(model)!r}, timeout=60)
        except liblift.LiftError as e:
            assert e.status_name == "LIFT_ERR_MEMORY", (e.status_name, e.message)
            assert "model parameters needs 88503360 bytes, more than the memory budget of 67108864" in e.message, e.message
            print("OK", e.status_name, e.message)
    """
    env = child_env()
    env["LIFT_MEMORY_LIMIT"] = "64M"
    prelude = "import liblift, numpy as np\n"
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(env_case)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_lift_check_knows_each_kind_of_file_by_its_content(tmp_path):
    asset = HERE.parents[2] / "assets" / "fashion-mnist-captions.h5"
    text = tmp_path / "model.safetensors"  # a misleading name: the content decides
    text.write_text("not a model")
    r = lift("check", asset, text, check=False, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{asset}: ok: captions file of 160 captions, 10 classes", lines
    assert lines[1].startswith(f"{text}: unusable:") and "neither safetensors nor HDF5" in lines[1], lines
