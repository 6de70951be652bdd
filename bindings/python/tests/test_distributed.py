"""Data-parallel training under mpirun (Open MPI + mpi4py): R ranks x B images per step must
equal one process stepping on R*B images, for every objective, with and without micro-batches;
a failing or dying rank must stop the whole job quickly."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env

import liblift
from cli_helpers import LIFT, bf16_supported, lift, make_tiny, train_args

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi" / "exactness.py"

# CI sets LIFT_REQUIRE_MPI=1 so that a missing install fails instead of skipping.
_missing = shutil.which("mpirun") is None
try:
    import mpi4py  # noqa: F401
except ImportError:
    _missing = True
if _missing and os.environ.get("LIFT_REQUIRE_MPI") == "1":
    raise RuntimeError("LIFT_REQUIRE_MPI=1 but mpirun or mpi4py is missing")
pytestmark = pytest.mark.skipif(_missing, reason="needs Open MPI (mpirun) and mpi4py")


def mpirun(n, *args, timeout=120):
    env = child_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
                    LIFT_NUM_THREADS="1")
    return subprocess.run(["mpirun", "-n", str(n), *args], env=env, capture_output=True, text=True, timeout=timeout)


def run_worker(tmp_path, n, *args):
    out = tmp_path / f"{n}-{'-'.join(args) or 'default'}.npz"
    if n == 0:
        r = subprocess.run([sys.executable, str(WORKER), "single", str(out), *args], capture_output=True, text=True,
                           timeout=120, env=child_env())
    else:
        r = mpirun(n, sys.executable, "-m", "mpi4py", str(WORKER), "distributed", str(out), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return np.load(out)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("objective", ["contrastive", "cosine", "sigmoid"])
@pytest.mark.parametrize("capacity", [0, 2], ids=["one-pass", "micro-batches"])
def test_two_ranks_equal_one_process_on_the_double_batch(tmp_path, objective, capacity):
    args = ["--objective", objective]
    single = run_worker(tmp_path, 0, *args)
    dist = run_worker(tmp_path, 2, *args, "--capacity", str(capacity))
    assert int(dist["size"]) == 2
    np.testing.assert_allclose(dist["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(dist["norms"], single["norms"], rtol=1e-5)
    # Clipping was active (norm above the 0.05 threshold), so the global norm mattered.
    assert single["norms"].min() > 0.05
    assert rel(dist["params"], single["params"]) < 1e-5
    # The parameters moved: the comparison is not between two initial states.
    assert rel(dist["params"], single["params"]) < 1e-3 * rel(single["params"], initial_model(objective).parameters)


def initial_model(objective="contrastive"):
    """The workers' model before training."""
    config = liblift.ModelConfig.preset("ViT-XS/4-32", 16, image_size=8, patch=4, width=32, depth=2, heads=2,
                                        objective=objective)
    return liblift.Model(config, seed=11)



def test_two_ranks_equal_one_process_in_bf16(tmp_path):
    """bf16: the ranks round the same values the single process rounds, so the results agree to
    float32 summation order, unless a tiny float32 difference moves a value across a bfloat16
    rounding boundary (one bf16 step is 0.4 % of that value). Measured: losses, gradient norms
    and parameters within ~2e-8 relative (as in fp32); the bound is fp32's 1e-5."""
    if not bf16_supported():
        pytest.skip("this CPU has no bfloat16 dot products")
    args = ["--precision", "bf16"]
    single = run_worker(tmp_path, 0, *args)
    dist = run_worker(tmp_path, 2, *args, "--capacity", "2")
    np.testing.assert_allclose(dist["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(dist["norms"], single["norms"], rtol=1e-5)
    assert rel(dist["params"], single["params"]) < 1e-5
    # Not float32: the bf16 run differs from the fp32 one far more than summation order does.
    fp32 = run_worker(tmp_path, 0)
    assert rel(single["params"], fp32["params"]) > 10 * rel(dist["params"], single["params"])


def test_two_ranks_equal_one_process_on_pooled_features(tmp_path):
    """The head-only step of a locked tower, on each rank's pooled features."""
    single = run_worker(tmp_path, 0, "--features")
    dist = run_worker(tmp_path, 2, "--features")
    np.testing.assert_allclose(dist["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(dist["norms"], single["norms"], rtol=1e-5)
    assert rel(dist["params"], single["params"]) < 1e-5
    # Only the head trained, and it moved.
    model = initial_model()
    initial = model.parameters
    head = next(t.offset for t in model.tensors() if t.name.startswith("mlp_projector"))
    assert np.array_equal(dist["params"][:head], initial[:head])
    assert not np.array_equal(dist["params"][head:], initial[head:])


def test_three_ranks_with_uneven_parts(tmp_path):
    # 10 images over 3 ranks: parts of 3, 3 and 4.
    single = run_worker(tmp_path, 0, "--batch", "10")
    dist = run_worker(tmp_path, 3, "--batch", "10", "--capacity", "2")
    np.testing.assert_allclose(dist["losses"], single["losses"], rtol=1e-5)
    assert rel(dist["params"], single["params"]) < 1e-5


def test_a_rank_failing_on_bad_input_stops_the_whole_job(tmp_path):
    # Rank 1 raises LiftError (NaN pixel) while rank 0 waits in the step's all-gather;
    # `python -m mpi4py` turns the uncaught exception into MPI_Abort.
    start = time.monotonic()
    r = mpirun(2, sys.executable, "-m", "mpi4py", str(WORKER), "distributed", str(tmp_path / "x.npz"),
               "--steps", "50", "--poison-rank", "1", timeout=60)
    assert r.returncode != 0
    assert "non-finite pixel value" in r.stderr, r.stderr
    assert time.monotonic() - start < 30
    assert not (tmp_path / "x.npz").exists()


# --- `lift train` under mpirun -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def lift_mpi(n, *args, timeout=180):
    return mpirun(n, LIFT, *map(str, args), timeout=timeout)


def test_lift_train_under_mpirun_matches_one_process_and_resumes_on_other_rank_counts(tiny, tmp_path):
    run = ("--epochs", 2, "--checkpoint-every", 3)  # 12 steps of 16 images
    single = tmp_path / "single"
    lift(*train_args(tiny, single, *run))
    dist = tmp_path / "dist"
    r = lift_mpi(2, *train_args(tiny, dist, *run, "--stop-at", 5))
    assert r.returncode == 0, r.stderr
    assert liblift.Trainer.load(dist / "checkpoint.safetensors").step_count == 5
    r = lift_mpi(3, *train_args(tiny, dist, *run, "--stop-at", 8, "--resume"))  # parts of 6, 5, 5
    assert r.returncode == 0, r.stderr
    assert liblift.Trainer.load(dist / "checkpoint.safetensors").step_count == 8
    lift(*train_args(tiny, dist, *run, "--resume"))  # the last 4 steps in one process
    a = liblift.Model.load(single / "model.safetensors").parameters
    b = liblift.Model.load(dist / "model.safetensors").parameters
    assert rel(b, a) < 1e-5
    losses = {}
    for name in ("single", "dist"):
        for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if "loss" in entry:
                losses.setdefault(name, {})[entry["step"]] = entry["loss"]
    assert losses["dist"].keys() == losses["single"].keys()
    for step, value in losses["single"].items():
        assert abs(losses["dist"][step] - value) <= 1e-5 * abs(value), step


def test_lift_train_rank_with_bad_data_stops_the_job_with_its_message(tiny, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes((tiny / "train.h5").read_bytes()[:5000])  # truncated copy
    args = train_args(tiny, tmp_path / "run", "--steps", 100000)
    bad_args = train_args(tiny, tmp_path / "run", "--steps", 100000, "--data", bad)
    start = time.monotonic()
    r = mpirun(1, LIFT, *map(str, args), ":", "-n", "1", LIFT, *map(str, bad_args), timeout=60)
    assert r.returncode != 0
    assert "rank 1 of 2" in r.stderr and "bad.h5" in r.stderr, r.stderr
    assert time.monotonic() - start < 30


def _rank_pid(rank, launcher):
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and b"lift" in (proc / "cmdline").read_bytes() \
                    and f"OMPI_LIFT_TEST={launcher}".encode() in env:
                return int(proc.name)
        except OSError:
            continue
    return None


def test_lift_train_killed_rank_stops_the_job_and_checkpoints_stay_whole(tiny, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_LIFT_TEST=str(os.getpid()))
    p = subprocess.Popen(["mpirun", "-x", "OMPI_LIFT_TEST", "-n", "2", LIFT,
                          *map(str, train_args(tiny, out, "--steps", 100000, "--checkpoint-every", 1))],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.safetensors").exists():
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)
        pid = _rank_pid(1, os.getpid())
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        p.communicate(timeout=30)
        assert time.monotonic() - start < 15
        assert p.returncode != 0
    finally:
        if p.poll() is None:
            p.kill()
    # Rank 0 was writing a checkpoint every step; the file in place is always a whole one.
    t = liblift.Trainer.load(out / "checkpoint.safetensors")
    assert t.step_count >= 1


def test_lift_train_under_mpirun_stops_with_a_checkpoint_on_sigusr1(tiny, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    p = subprocess.Popen(["mpirun", "-n", "2", LIFT, *map(str, train_args(tiny, out, "--steps", 100000))],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() or "step" not in (out / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "checkpoint saved" in err
    t = liblift.Trainer.load(out / "checkpoint.safetensors")
    assert 10 <= t.step_count < 100000


def test_lift_train_under_mpirun_time_limit_stops_every_rank(tiny, tmp_path):
    out = tmp_path / "run"
    r = lift_mpi(2, *train_args(tiny, out, "--steps", 100000, "--time-limit", 1), timeout=120)
    assert r.returncode == 0, r.stderr
    step = liblift.Trainer.load(out / "checkpoint.safetensors").step_count
    assert 1 <= step < 100000
    assert liblift.Model.load(out / "model.safetensors").parameters.size > 0


from test_cli_sources import shards, train as train_on_shards  # noqa: E402,F401  (the tar-shard fixture)


def test_lift_train_from_tar_shards_under_mpirun_resumes_exactly_on_as_many_ranks(shards, tmp_path):  # noqa: F811
    """Two ranks stream disjoint tar shards; a run stopped and resumed on two ranks equals one that
    ran through; resuming on another number of ranks is refused (the stream depends on it)."""
    run = ("--steps", 10, "--eval-every", 0, "--shuffle-block", 8)
    r = lift_mpi(2, *train_on_shards(shards, tmp_path / "whole", *run))
    assert r.returncode == 0, r.stderr
    r = lift_mpi(2, *train_on_shards(shards, tmp_path / "parts", *run, "--stop-at", 4))
    assert r.returncode == 0, r.stderr
    refused = lift(*train_on_shards(shards, tmp_path / "parts", *run, "--resume"), check=False)
    assert refused.returncode != 0 and "as many ranks" in refused.stderr
    r = lift_mpi(2, *train_on_shards(shards, tmp_path / "parts", *run, "--resume"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "parts" / "model.safetensors").read_bytes()
