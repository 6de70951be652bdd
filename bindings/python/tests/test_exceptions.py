"""The binding's errors are Python's: each lift_status raises a LiftError subclass that is also
the built-in exception callers catch, stores behave as sequences, and a closed object never
leaves a numpy view pointing into freed memory."""
import errno
import gc

import numpy as np
import pytest

import liblift
from liblift import LiftError, Status


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.h5"
    with liblift.StoreWriter(path, dim=3, keys=True) as w:
        w.append(np.arange(15, dtype=np.float32).reshape(5, 3), keys=list("abcde"))
    with liblift.Store(path) as s:
        yield s


def small_model():
    return liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", 4, image_size=8, patch=4, width=16, depth=1, heads=1))


def test_a_store_is_a_sequence(store):
    assert len(store) == 5
    rows = list(store)  # __getitem__ until IndexError
    assert len(rows) == 5 and np.array_equal(rows[4], [12, 13, 14])
    assert np.array_equal(store[-1], rows[4])
    for bad in (5, -6, 10**12):
        with pytest.raises(IndexError, match="out of range for a store of 5 rows"):
            store[bad]


def test_each_status_is_a_builtin_exception(tmp_path, store):
    cases = [
        # (call, built-in class, status)
        (lambda: liblift.Store(tmp_path / "missing.h5"), FileNotFoundError, Status.ERR_IO),
        (lambda: store.read(3, 5), ValueError, Status.ERR_ARGUMENT),
        (lambda: small_model().tensor("no.such.tensor"), KeyError, Status.ERR_NOT_FOUND),
        (lambda: liblift.Model.load(store.paths[0]), ValueError, Status.ERR_FORMAT),
    ]
    for call, builtin, status in cases:
        with pytest.raises(builtin) as e:
            call()
        assert isinstance(e.value, LiftError) and e.value.status == status, (e.value, status)
        assert e.value.status_name == status.c_name and str(e.value).endswith(f"[{status.c_name}]")
    with pytest.raises(FileNotFoundError) as e:
        liblift.Dataset(tmp_path / "missing.h5")
    assert e.value.errno == errno.ENOENT and "missing.h5" in e.value.message
    text = tmp_path / "notes.txt"
    text.write_text("not HDF5")
    with pytest.raises(OSError) as e:  # not FileNotFoundError: the file exists
        liblift.Store(text)
    assert not isinstance(e.value, FileNotFoundError) and e.value.status == Status.ERR_IO
    # A finished writer is a call out of order.
    w = liblift.StoreWriter(tmp_path / "w.h5", dim=2)
    w.finish()
    with pytest.raises(RuntimeError) as e:
        w.finish()
    assert e.value.status == Status.ERR_STATE
    # Above the memory budget.
    previous = liblift.memory_limit()
    liblift.set_memory_limit(1 << 20)
    try:
        with pytest.raises(MemoryError) as e:
            liblift.Trainer(small_model(), batch_capacity=4096)
        assert e.value.status == Status.ERR_MEMORY
    finally:
        liblift.set_memory_limit(previous)
    # The classes are distinct per status and all LiftError.
    from liblift._lib import ERROR_CLASSES
    assert len(set(ERROR_CLASSES.values())) == len(ERROR_CLASSES)
    assert all(issubclass(c, LiftError) for c in ERROR_CLASSES.values())
    assert issubclass(liblift.LiftUnsafeFileError, OSError) and issubclass(liblift.LiftUnsupportedError, NotImplementedError)


def test_close_keeps_memory_alive_for_views():
    model = small_model()
    params = model.parameters
    params[:] = 0.5
    first = model.tensor(model.tensors()[0].name)
    model.close()
    with pytest.raises(ValueError, match="closed"):
        model.parameters
    # The views still read and write the model's memory: it is freed only after them.
    assert params.sum() == pytest.approx(0.5 * params.size) and float(first.flat[0]) == 0.5
    params[:3] = 2.0
    assert model._deferred is not None and model._live_views == 2
    del params, first
    gc.collect()
    assert model._live_views == 0 and model._deferred is None
    # Without views, close() frees at once.
    trainer = liblift.Trainer(small_model(), batch_capacity=2)
    grads = trainer.gradients
    trainer.close()
    assert trainer._live_views == 1
    del grads
    gc.collect()
    assert trainer._deferred is None
    other = small_model()
    other.close()
    assert getattr(other, "_deferred", None) is None


def test_training_defaults_come_from_the_library():
    import ctypes
    from liblift._lib import TrainConfigStruct, lib
    c = TrainConfigStruct()
    assert lib.lift_train_config_default(ctypes.byref(c)) == 0
    d = liblift.TrainConfig()
    assert (d.learning_rate, d.beta2, d.weight_decay, d.warmup_steps, d.batch_capacity) == \
        (c.learning_rate, c.beta2, c.weight_decay, c.warmup_steps, c.batch_capacity)
