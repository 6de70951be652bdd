"""Model and trainer through the Python bindings, checked against an independent numpy encoder
and the PyTorch state_dict layout."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import liblift
import liblift.distributed
from liblift import LiftError, Model, ModelConfig, TrainConfig, Trainer

import reference


def small_config(**changes):
    base = dict(image_size=16, channels=3, patch=4, width=32, depth=2, heads=2, text_dim=12, mlp_ratio=2,
                head_layers=2)
    base.update(changes)
    return ModelConfig(**base)


@pytest.mark.parametrize("changes", [{}, {"pool": "tok"}, {"channels": 1}, {"head_layers": 3, "objective": "sigmoid"},
                                     {"head_layers": 1, "heads": 4}])
def test_encoder_matches_numpy_reference_through_safetensors(tmp_path, rng, changes):
    config = small_config(**changes)
    model = Model(config, seed=3)
    path = tmp_path / "model.safetensors"
    model.save(path)
    sd = load_file(str(path))  # what torch's safetensors loader would see
    c = dataclasses.asdict(config)
    assert {k: tuple(v.shape) for k, v in sd.items()} == reference.expected_state_dict_shapes(c)
    assert all(v.dtype == np.float32 for v in sd.values())
    images = rng.standard_normal((5, config.channels, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(model.encode(images), reference.encode(sd, c, images), atol=2e-5)
    # uint8 input is normalised with the config's mean/std.
    raw = rng.integers(0, 256, (5, 16, 16, config.channels), dtype=np.uint8)
    mean = np.array(model.config.image_mean, np.float64)
    std = np.array(model.config.image_std, np.float64)
    normalised = ((raw / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(model.encode(raw), reference.encode(sd, c, normalised), atol=2e-5)


def test_parameter_views_and_names(rng):
    model = Model(small_config(), seed=1)
    tensors = model.tensors()
    assert tensors[0].name == "visual.conv1.weight" and tensors[0].offset == 0
    assert all(t.offset % 16 == 0 for t in tensors)
    assert [t.decays for t in tensors if t.name == "visual.positional_embedding"] == [True]
    assert [t.decays for t in tensors if t.name == "visual.class_embedding"] == [False]
    w = model.tensor("visual.transformer.resblocks.0.attn.in_proj_weight")
    assert w.shape == (96, 32)
    w[0, 0] = 123.0  # a view: writes reach the model
    assert model.parameters[tensors[[t.name for t in tensors].index(
        "visual.transformer.resblocks.0.attn.in_proj_weight")].offset] == 123.0
    assert float(model.tensor("logit_scale")) == pytest.approx(np.log(1 / 0.07), rel=1e-6)
    view = model.parameters
    del model  # the view keeps the model alive
    assert np.isfinite(view).all()
    with pytest.raises(LiftError) as e:
        Model(small_config()).tensor("nope")
    assert e.value.status_name == "LIFT_ERR_NOT_FOUND"


def batch(rng, n=6, d=12):
    return rng.standard_normal((n, 3, 16, 16)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


def test_training_learns_and_split_form_is_identical(rng):
    images, texts = batch(rng)
    a = Trainer(Model(small_config(), seed=2), batch_capacity=8, warmup_steps=2, total_steps=50)
    b = Trainer(Model(small_config(), seed=2), batch_capacity=8, warmup_steps=2, total_steps=50)
    losses = []
    for _ in range(25):
        s = a.step(images, texts)
        features = b.forward(images)
        loss, grad = b.loss(features, texts)
        b.backward(grad)
        t = b.apply()
        assert s == t
        losses.append(s.loss)
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_array_equal(a.model.parameters, b.model.parameters)
    assert a.step_count == 25


def test_external_gradient_buffer_and_workers(rng):
    """Two simulated workers: each computes its rows' gradient, the buffers are averaged
    externally, and the update equals the single-worker one."""
    images, texts = batch(rng, 8)
    single = Trainer(Model(small_config(), seed=4), batch_capacity=8)
    single.step(images, texts)
    workers = [Trainer(Model(small_config(), seed=4), batch_capacity=4) for _ in range(2)]
    feats = [w.forward(images[4 * r: 4 * r + 4]) for r, w in enumerate(workers)]
    allfeats = np.concatenate(feats)
    for r, w in enumerate(workers):
        _, g = w.loss(allfeats, texts, local_start=4 * r, local_count=4, world_size=2)
        w.backward(g)
    mean = (workers[0].gradients + workers[1].gradients) / 2
    for w in workers:
        w.gradients[:] = mean
        w.apply()
    np.testing.assert_allclose(workers[0].model.parameters, single.model.parameters, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(workers[0].model.parameters, workers[1].model.parameters)


class SoloCommunicator(liblift.distributed.Communicator):
    """One rank, collectives in-process (no MPI); `fail` makes the named collective raise."""

    def __init__(self, fail=None):
        super().__init__(0, 1)
        self.fail, self.calls = fail, []

    def _maybe_fail(self, name):
        self.calls.append(name)
        if name == self.fail:
            raise ValueError(f"{name} broke")

    def allgather_int64(self, value):
        self._maybe_fail("allgather_int64")
        return [value]

    def allgatherv_float(self, send, recv, counts):
        self._maybe_fail("allgatherv_float")
        recv[:] = send

    def allreduce_sum_float(self, data):
        self._maybe_fail("allreduce_sum_float")


def test_step_distributed_through_python_callbacks(rng):
    images, texts = batch(rng)
    a = Trainer(Model(small_config(), seed=2), batch_capacity=8)
    b = Trainer(Model(small_config(), seed=2), batch_capacity=8)
    comm = SoloCommunicator()
    assert a.step(images, texts) == b.step_distributed(images, texts, comm)
    np.testing.assert_array_equal(a.model.parameters, b.model.parameters)
    assert comm.calls == ["allgather_int64", "allgatherv_float", "allgatherv_float"]  # size 1: no all-reduce
    # An exception inside a callback comes back out of step_distributed; nothing is updated.
    before = b.model.parameters.copy()
    with pytest.raises(ValueError, match="allgatherv_float broke"):
        b.step_distributed(images, texts, SoloCommunicator(fail="allgatherv_float"))
    np.testing.assert_array_equal(b.model.parameters, before)
    assert b.step_count == 1 and not b.gradients.any()
    with pytest.raises(ValueError, match="rank 1"):
        liblift.distributed.Communicator(1, 1)


def test_checkpoint_resume_is_exact(tmp_path, rng):
    data = [batch(rng) for _ in range(6)]
    straight = Trainer(Model(small_config(objective="sigmoid"), seed=5), batch_capacity=8, seed=9)
    for images, texts in data:
        straight.step(images, texts)
    first = Trainer(Model(small_config(objective="sigmoid"), seed=5), batch_capacity=8, seed=9)
    for images, texts in data[:3]:
        first.step(images, texts)
    first.save(tmp_path / "ckpt.safetensors", metadata={"epoch": 2, "note": "ünï"})
    resumed = Trainer.load(tmp_path / "ckpt.safetensors")
    assert resumed.metadata("epoch") == "2" and resumed.metadata("note") == "ünï" and resumed.metadata("x") is None
    assert resumed.step_count == 3 and resumed.config == first.config
    assert resumed.random() == first.random()
    for images, texts in data[3:]:
        resumed.step(images, texts)
    np.testing.assert_array_equal(resumed.model.parameters, straight.model.parameters)
    np.testing.assert_array_equal(resumed.exp_avg_sq, straight.exp_avg_sq)
    # The training checkpoint also loads as a plain model.
    m = Model.load(tmp_path / "ckpt.safetensors")
    np.testing.assert_array_equal(m.encode(data[0][0]), first.model.encode(data[0][0]))


def test_accumulation_matches_a_large_batch(rng):
    images, texts = batch(rng, 12)
    big = Trainer(Model(small_config(), seed=6), batch_capacity=12)
    small = Trainer(Model(small_config(), seed=6), batch_capacity=5)
    s1, s2 = big.step(images, texts), small.step(images, texts)
    assert s1.loss == pytest.approx(s2.loss, rel=1e-6)
    assert s1.grad_norm == pytest.approx(s2.grad_norm, rel=1e-5)
    np.testing.assert_allclose(big.model.parameters, small.model.parameters, rtol=1e-4, atol=1e-7)


def test_bad_inputs(tmp_path, rng):
    t = Trainer(Model(small_config(), seed=7), batch_capacity=4)
    before = t.model.parameters.copy()
    images, texts = batch(rng, 4)
    with pytest.raises(ValueError):
        t.step(images[:, :, :8], texts)
    with pytest.raises(ValueError):
        t.step(images, texts[:3])
    with pytest.raises(LiftError) as e:
        t.step(images[:1], texts[:1])
    assert e.value.status_name == "LIFT_ERR_ARGUMENT" and "at least 2" in e.value.message
    images[2, 1, 3, 3] = np.nan
    with pytest.raises(LiftError) as e:
        t.step(images, texts)
    assert e.value.status_name == "LIFT_ERR_VALUE" and "image 2" in e.value.message
    with pytest.raises(LiftError) as e:
        t.backward(np.zeros((4, 12), np.float32))
    assert e.value.status_name == "LIFT_ERR_STATE"
    np.testing.assert_array_equal(t.model.parameters, before)
    for bad in [dict(heads=3), dict(image_size=18), dict(channels=2), dict(text_dim=0)]:
        with pytest.raises(LiftError) as e:
            Model(small_config(**bad))
        assert e.value.status_name == "LIFT_ERR_ARGUMENT"
    with pytest.raises(ValueError):
        Model(small_config(pool="max"))
    with pytest.raises(LiftError, match="warm-up"):
        Trainer(Model(small_config()), warmup_steps=100, total_steps=10)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(LiftError) as e:
        Model.load(tmp_path / "junk.safetensors")
    assert e.value.status_name == "LIFT_ERR_FORMAT"
    with pytest.raises(LiftError, match="unknown preset"):
        ModelConfig.preset("ViT-Q/9", 8)


def test_bf16_precision_saves_and_stays_close_to_fp32(tmp_path, rng):
    config = small_config(precision="bf16")
    try:
        model = Model(config, seed=3)
        embeddings = model.encode(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    except LiftError as e:
        assert e.status_name == "LIFT_ERR_UNSUPPORTED" and "AVX512-BF16" in e.message
        pytest.skip("this CPU has no bfloat16 dot products")
    model.save(tmp_path / "m.safetensors")
    back = Model.load(tmp_path / "m.safetensors")
    assert back.config.precision == "bf16"
    images = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    reference_model = Model(small_config(), seed=3)
    mixed, exact = back.encode(images), reference_model.encode(images)
    assert np.abs(mixed - exact).max() < 2e-2
    assert np.abs(mixed - exact).max() > 1e-6  # bf16 really rounds
    with pytest.raises(ValueError):
        small_config(precision="fp16")._struct()


def test_bf16_on_a_cpu_without_bf16_is_a_clear_error(tmp_path):
    # DNNL_MAX_CPU_ISA caps what oneDNN (and so liblift) may use: a CPU without AVX512-BF16.
    script = """
import liblift
c = liblift.ModelConfig.preset("ViT-XS/4-32", 8)
liblift.Trainer(liblift.Model(c))  # fp32 still works
try:
    liblift.Trainer(liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", 8, precision="bf16")))
except liblift.LiftError as e:
    print(e.status_name, e.message)
"""
    env = dict(os.environ, DNNL_MAX_CPU_ISA="AVX512_CORE")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LIFT_ERR_UNSUPPORTED"), r.stdout
    assert "AVX512-BF16" in r.stdout and "use fp32" in r.stdout
