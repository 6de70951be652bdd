"""Loading liblift.so and declaring the C prototypes of Include/lift.h."""
from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_float, c_int, c_int64, c_size_t, c_uint32, c_void_p
from pathlib import Path

__all__ = ["lib", "library_path", "LiftError", "check", "STATUS_NAMES", "ModelConfigStruct", "TensorInfoStruct",
           "TrainConfigStruct", "StepStatsStruct", "Handle", "CommStruct", "ALLGATHER_INT64",
           "ALLGATHERV_FLOAT", "ALLREDUCE_SUM_FLOAT",
           "DatasetInfoStruct", "LoaderOptionsStruct", "BatchStruct"]

_ENV = "LIBLIFT_PATH"


def _candidates():
    here = Path(__file__).resolve().parent
    # A source checkout: bindings/python/liblift -> the package root three levels up.
    roots = [here.parents[2], Path.cwd(), *Path.cwd().parents]
    for root in roots:
        for config in ("release", "debug"):
            yield root / ".build" / config / "liblift.so"
    # A copy bundled by `pip install ./bindings/python` after a release build.
    yield here / "liblift.so"


def _find_library() -> Path:
    env = os.environ.get(_ENV)
    if env:
        path = Path(env)
        if path.is_dir():
            path = path / "liblift.so"
        if not path.is_file():
            raise OSError(f"{_ENV}={env!r} does not name liblift.so")
        return path
    for path in _candidates():
        if path.is_file():
            return path
    raise OSError(
        "liblift.so not found: build it with `swift build -c release -Xswiftc -static-stdlib` "
        f"in the liblift checkout, or set {_ENV} to its path"
    )


library_path = _find_library()
lib = ctypes.CDLL(str(library_path))

STATUS_NAMES = {
    0: "LIFT_OK",
    1: "LIFT_ERR_ARGUMENT",
    2: "LIFT_ERR_IO",
    3: "LIFT_ERR_FORMAT",
    4: "LIFT_ERR_SHAPE",
    5: "LIFT_ERR_VALUE",
    6: "LIFT_ERR_NOT_FOUND",
    7: "LIFT_ERR_MEMORY",
    8: "LIFT_ERR_STATE",
    9: "LIFT_ERR_BUFFER",
    10: "LIFT_ERR_UNSUPPORTED",
    99: "LIFT_ERR_INTERNAL",
}


class LiftError(Exception):
    """A liblift call failed. `status` is the lift_status code, `status_name` its constant name
    and `message` the library's explanation (naming the file, dataset, shape or row)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, f"status {status}")
        self.message = message
        super().__init__(f"{message} [{self.status_name}]")


def check(status: int) -> None:
    """Raise LiftError carrying the thread's last error message unless status is LIFT_OK."""
    if status != 0:
        raise LiftError(status, lib.lift_last_error().decode("utf-8", "replace"))


class ModelConfigStruct(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "image_size", "channels", "patch", "width", "depth", "heads", "mlp_ratio", "head_layers", "text_dim",
        "pool", "objective")] + [("image_mean", ctypes.c_float * 3), ("image_std", ctypes.c_float * 3),
                                 ("precision", ctypes.c_int32)]


class TensorInfoStruct(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("ndim", ctypes.c_int32), ("shape", ctypes.c_int64 * 4),
                ("offset", ctypes.c_int64), ("count", ctypes.c_int64), ("decays", ctypes.c_int32)]


class TrainConfigStruct(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in (
        "learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip")] + [
        ("warmup_steps", ctypes.c_int64), ("total_steps", ctypes.c_int64), ("batch_capacity", ctypes.c_int64)]


class StepStatsStruct(ctypes.Structure):
    _fields_ = [(name, ctypes.c_double) for name in (
        "loss", "learning_rate", "logit_scale", "logit_bias", "grad_norm")] + [("step", ctypes.c_int64)]


class DatasetInfoStruct(ctypes.Structure):
    _fields_ = [("images", ctypes.c_int64), ("captions", ctypes.c_int64), ("height", ctypes.c_int32),
                ("width", ctypes.c_int32), ("channels", ctypes.c_int32), ("text_dim", ctypes.c_int32),
                ("has_labels", ctypes.c_int32), ("classes", ctypes.c_int64)]


class LoaderOptionsStruct(ctypes.Structure):
    _fields_ = [("batch_size", ctypes.c_int64), ("image_size", ctypes.c_int32), ("channels", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("shuffle", ctypes.c_int32), ("augment", ctypes.c_int32),
                ("crop_scale_min", ctypes.c_double), ("crop_scale_max", ctypes.c_double), ("flip", ctypes.c_int32),
                ("rank", ctypes.c_int32), ("workers", ctypes.c_int32), ("prefetch", ctypes.c_int32),
                ("start_epoch", ctypes.c_int64), ("start_batch", ctypes.c_int64)]


class BatchStruct(ctypes.Structure):
    _fields_ = [("images", ctypes.POINTER(ctypes.c_uint8)), ("texts", ctypes.POINTER(ctypes.c_float)),
                ("indices", ctypes.POINTER(ctypes.c_int64)), ("caption_rows", ctypes.POINTER(ctypes.c_int64)),
                ("count", ctypes.c_int64), ("global_count", ctypes.c_int64), ("epoch", ctypes.c_int64),
                ("batch", ctypes.c_int64), ("wait_seconds", ctypes.c_double)]


_P = c_void_p
_F = POINTER(c_float)
_I64 = POINTER(c_int64)

# lift_comm: the collectives of a data-parallel step, as C callbacks (0 = success).
ALLGATHER_INT64 = ctypes.CFUNCTYPE(c_int, c_void_p, c_int64, _I64)
ALLGATHERV_FLOAT = ctypes.CFUNCTYPE(c_int, c_void_p, _F, c_int64, _F, _I64)
ALLREDUCE_SUM_FLOAT = ctypes.CFUNCTYPE(c_int, c_void_p, _F, c_int64)


class CommStruct(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("rank", ctypes.c_int32), ("size", ctypes.c_int32),
                ("allgather_int64", ALLGATHER_INT64), ("allgatherv_float", ALLGATHERV_FLOAT),
                ("allreduce_sum_float", ALLREDUCE_SUM_FLOAT)]

_PROTOTYPES = {
    "lift_version": (c_char_p, []),
    "lift_last_error": (c_char_p, []),
    "lift_status_name": (c_char_p, [c_int]),
    "lift_store_open": (c_int, [POINTER(c_char_p), c_size_t, c_char_p, c_uint32, POINTER(_P)]),
    "lift_store_free": (None, [_P]),
    "lift_store_shape": (c_int, [_P, _I64, _I64]),
    "lift_store_shard_count": (c_int, [_P, _I64]),
    "lift_store_shard_dtype": (c_int, [_P, c_int64, POINTER(c_int)]),
    "lift_store_set_buffer_bytes": (c_int, [_P, c_int64]),
    "lift_store_read_range": (c_int, [_P, c_int64, c_int64, _F, c_size_t]),
    "lift_store_read_rows": (c_int, [_P, _I64, c_int64, _F, c_size_t]),
    "lift_store_validate": (c_int, [_P]),
    "lift_store_has_strings": (c_int, [_P, c_char_p, POINTER(c_int)]),
    "lift_store_read_string": (c_int, [_P, c_char_p, c_int64, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_store_search": (c_int, [_P, _F, c_int64, c_int64, c_int64, _I64, _F]),
    "lift_store_writer_create": (c_int, [c_char_p, c_char_p, c_int64, c_int, c_uint32, POINTER(_P)]),
    "lift_store_writer_append": (c_int, [_P, _F, c_int64, POINTER(c_char_p), POINTER(c_char_p)]),
    "lift_store_writer_rows": (c_int, [_P, _I64]),
    "lift_store_writer_finish": (c_int, [_P]),
    "lift_store_writer_free": (None, [_P]),
    "lift_cosine_similarity": (c_int, [_F, c_int64, _F, c_int64, c_int64, _F, c_size_t]),
    "lift_topk": (c_int, [_F, c_int64, c_int64, c_int64, _I64, _F]),
    "lift_model_config_preset": (c_int, [c_char_p, ctypes.c_int32, POINTER(ModelConfigStruct)]),
    "lift_model_create": (c_int, [POINTER(ModelConfigStruct), ctypes.c_uint64, POINTER(_P)]),
    "lift_model_load": (c_int, [c_char_p, POINTER(_P)]),
    "lift_model_save": (c_int, [_P, c_char_p]),
    "lift_model_free": (None, [_P]),
    "lift_model_get_config": (c_int, [_P, POINTER(ModelConfigStruct)]),
    "lift_model_parameters": (c_int, [_P, POINTER(_F), _I64]),
    "lift_model_tensor_count": (c_int, [_P, _I64]),
    "lift_model_tensor_info": (c_int, [_P, c_int64, POINTER(TensorInfoStruct)]),
    "lift_model_find_tensor": (c_int, [_P, c_char_p, _I64]),
    "lift_model_encode": (c_int, [_P, c_void_p, c_int, c_size_t, c_int64, _F, c_size_t]),
    "lift_model_step_flops": (c_int, [_P, c_int64, POINTER(ctypes.c_double)]),
    "lift_train_config_default": (c_int, [POINTER(TrainConfigStruct)]),
    "lift_trainer_create": (c_int, [_P, POINTER(TrainConfigStruct), ctypes.c_uint64, POINTER(_P)]),
    "lift_trainer_load": (c_int, [c_char_p, c_int64, POINTER(_P)]),
    "lift_trainer_save": (c_int, [_P, c_char_p, POINTER(c_char_p), POINTER(c_char_p), c_size_t]),
    "lift_trainer_metadata": (c_int, [_P, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_trainer_free": (None, [_P]),
    "lift_trainer_model": (c_int, [_P, POINTER(_P)]),
    "lift_trainer_get_config": (c_int, [_P, POINTER(TrainConfigStruct)]),
    "lift_trainer_step_count": (c_int, [_P, _I64]),
    "lift_trainer_random": (c_int, [_P, POINTER(ctypes.c_uint64)]),
    "lift_trainer_step": (c_int, [_P, c_void_p, c_int, c_size_t, _F, c_size_t, c_int64, POINTER(StepStatsStruct)]),
    "lift_trainer_step_distributed": (c_int, [_P, c_void_p, c_int, c_size_t, _F, c_size_t, c_int64,
                                              POINTER(CommStruct), POINTER(StepStatsStruct)]),
    "lift_trainer_forward": (c_int, [_P, c_void_p, c_int, c_size_t, c_int64, _F, c_size_t]),
    "lift_trainer_loss": (c_int, [_P, _F, _F, c_int64, c_int64, c_int64, c_int64, _F, c_size_t,
                                  POINTER(ctypes.c_double)]),
    "lift_trainer_backward": (c_int, [_P, _F, c_size_t, c_int64]),
    "lift_trainer_apply": (c_int, [_P, POINTER(StepStatsStruct)]),
    "lift_trainer_zero_grad": (c_int, [_P]),
    "lift_trainer_buffers": (c_int, [_P, POINTER(_F), POINTER(_F), POINTER(_F), _I64]),
    "lift_dataset_open": (c_int, [POINTER(c_char_p), c_size_t, POINTER(_P)]),
    "lift_dataset_free": (None, [_P]),
    "lift_dataset_get_info": (c_int, [_P, POINTER(DatasetInfoStruct)]),
    "lift_dataset_read_pixels": (c_int, [_P, _I64, c_int64, c_void_p, c_size_t]),
    "lift_dataset_read_labels": (c_int, [_P, _I64, c_int64, _I64]),
    "lift_dataset_caption_rows": (c_int, [_P, c_int64, _I64, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_class_name": (c_int, [_P, c_int64, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_class_prompts": (c_int, [_P, c_int64, _I64, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_captions": (c_int, [_P, POINTER(_P)]),
    "lift_loader_options_default": (c_int, [POINTER(LoaderOptionsStruct)]),
    "lift_loader_create": (c_int, [_P, POINTER(LoaderOptionsStruct), POINTER(_P)]),
    "lift_loader_next": (c_int, [_P, POINTER(BatchStruct)]),
    "lift_loader_batches_per_epoch": (c_int, [_P, _I64]),
    "lift_loader_free": (None, [_P]),
    "lift_preprocess_image": (c_int, [c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                      POINTER(ctypes.c_double), ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                      c_void_p, c_size_t]),
    "lift_eval_class_embeddings": (c_int, [_F, c_int64, c_int64, _I64, _I64, c_int64, _F]),
    "lift_eval_zero_shot": (c_int, [_F, c_int64, _F, c_int64, c_int64, _I64, POINTER(ctypes.c_double),
                                    POINTER(ctypes.c_double)]),
    "lift_eval_retrieval": (c_int, [_F, c_int64, _F, c_int64, c_int64, _I64, _I64, POINTER(ctypes.c_double),
                                    POINTER(ctypes.c_double)]),
    "lift_eval_pairwise": (c_int, [_F, _F, _F, c_int64, c_int64, c_void_p]),
}

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes


class Handle:
    """Base of the Python wrappers around liblift handles: owns the handle, frees it once
    (close(), a with-block, or garbage collection) and refuses use after close."""

    _free = None  # name of the lift_*_free function
    _kind = "object"

    def _adopt(self, handle) -> None:
        self._h = handle

    def close(self) -> None:
        if getattr(self, "_h", None):
            getattr(lib, self._free)(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _handle(self):
        if not getattr(self, "_h", None):
            raise ValueError(f"the {self._kind} is closed")
        return self._h
