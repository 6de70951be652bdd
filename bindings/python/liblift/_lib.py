"""Loading liblift.so and declaring the C prototypes of Include/lift.h."""
from __future__ import annotations

import ctypes
import enum
import errno
import os
from ctypes import POINTER, c_char_p, c_float, c_int, c_int64, c_size_t, c_uint32, c_void_p
from pathlib import Path

__all__ = ["lib", "library_path", "LiftError", "Status", "ERROR_CLASSES", "error_for", "check", "STATUS_NAMES", "OPEN_UNTRUSTED", "ModelConfigStruct", "ImportOptionsStruct",
           "TensorInfoStruct",
           "TrainConfigStruct", "StepStatsStruct", "Handle", "CommStruct", "ALLGATHER_INT64",
           "ALLGATHERV_FLOAT", "ALLREDUCE_SUM_FLOAT",
           "DatasetInfoStruct", "LoaderOptionsStruct", "BatchStruct", "ImageInfoStruct", "PreprocessOptionsStruct",
           "SourceInfoStruct"]

_ENV = "LIBLIFT_PATH"

# LIFT_OPEN_UNTRUSTED of lift.h: read a file in full in a separate process before opening it.
OPEN_UNTRUSTED = 0x100

# The C ABI these declarations follow: liblift.so.<ABI_MAJOR> (LIFT_VERSION_MAJOR of lift.h).
ABI_MAJOR = 0
_SYSTEM_LIBRARY = f"liblift.so.{ABI_MAJOR}"


def _find_library() -> str:
    """Where liblift comes from, in this order: $LIBLIFT_PATH (a file, or a folder holding
    liblift.so), the copy inside this package (wheels carry one), then the system's
    liblift.so.<major> through the dynamic loader's own search (e.g. the Debian package).
    Never the current directory or its parents: a library planted there must not be loaded."""
    env = os.environ.get(_ENV)
    if env:
        path = Path(env)
        if path.is_dir():
            path = path / "liblift.so"
        if not path.is_file():
            raise OSError(f"{_ENV}={env!r} does not name liblift.so")
        return str(path.resolve())
    bundled = Path(__file__).resolve().parent / "liblift.so"
    if bundled.is_file():
        return str(bundled)
    return _SYSTEM_LIBRARY


def _load(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(name)
    except OSError as error:
        if name != _SYSTEM_LIBRARY:
            raise
        raise OSError(
            f"liblift not found: this package carries no liblift.so and the system has no {_SYSTEM_LIBRARY} "
            f"({error}). Install a liblift wheel or the liblift Debian package, or set {_ENV} to a built "
            "liblift.so (in a checkout: swift build -c release -Xswiftc -static-stdlib, then "
            f"{_ENV}=.build/release/liblift.so)") from None


lib = _load(_find_library())
library_path = _find_library()
if library_path == _SYSTEM_LIBRARY:
    # Report the file the loader chose.
    try:
        with open("/proc/self/maps") as _maps:
            library_path = next((line.split()[-1] for line in _maps if "/liblift.so" in line), library_path)
    except OSError:
        pass

class Status(enum.IntEnum):
    """lift_status of lift.h: what a liblift call returned (0 is success)."""

    OK = 0
    ERR_ARGUMENT = 1
    ERR_IO = 2
    ERR_FORMAT = 3
    ERR_SHAPE = 4
    ERR_VALUE = 5
    ERR_NOT_FOUND = 6
    ERR_MEMORY = 7
    ERR_STATE = 8
    ERR_BUFFER = 9
    ERR_UNSUPPORTED = 10
    ERR_UNSAFE = 11
    ERR_INTERNAL = 99

    @property
    def c_name(self) -> str:
        """The constant's name in lift.h (LIFT_ERR_IO, ...)."""
        return "LIFT_" + self.name


STATUS_NAMES = {s.value: s.c_name for s in Status}


class LiftError(Exception):
    """A liblift call failed. `status` is the lift_status (a Status), `status_name` its constant
    name in lift.h and `message` the library's explanation (naming the file, dataset, shape or
    row). Each status raises a subclass that is also the built-in exception Python code catches
    for that failure (ERROR_CLASSES): ValueError for bad arguments, values, shapes and formats,
    OSError for files (FileNotFoundError for a missing one), KeyError for something not found,
    MemoryError, RuntimeError for a call out of order, NotImplementedError for what this CPU or
    build cannot do."""

    def __init__(self, status: int, message: str):
        try:
            self.status = Status(status)
        except ValueError:
            self.status = status
        self.status_name = STATUS_NAMES.get(status, f"status {status}")
        self.message = message
        super().__init__(f"{message} [{self.status_name}]")

    def __str__(self) -> str:  # as Exception's (KeyError's would quote the text)
        return f"{self.message} [{self.status_name}]"


class LiftArgumentError(LiftError, ValueError):
    """LIFT_ERR_ARGUMENT: an argument out of range, of the wrong kind, or NULL."""


class LiftIOError(LiftError, OSError):
    """LIFT_ERR_IO: a file could not be opened, read or written."""


class LiftFileNotFoundError(LiftIOError, FileNotFoundError):
    """LIFT_ERR_IO for a file that does not exist."""


class LiftFormatError(LiftError, ValueError):
    """LIFT_ERR_FORMAT: a file that is not what liblift expects."""


class LiftShapeError(LiftError, ValueError):
    """LIFT_ERR_SHAPE: sizes or dimensions that do not fit together."""


class LiftValueError(LiftError, ValueError):
    """LIFT_ERR_VALUE: a value that cannot be used (NaN or infinity, a zero row to normalise)."""


class LiftNotFoundError(LiftError, KeyError):
    """LIFT_ERR_NOT_FOUND: no such dataset, tensor or key."""


class LiftMemoryError(LiftError, MemoryError):
    """LIFT_ERR_MEMORY: an allocation refused (above the memory budget, or by the system)."""


class LiftStateError(LiftError, RuntimeError):
    """LIFT_ERR_STATE: a call out of order (a finished writer, a step before a backward)."""


class LiftBufferError(LiftError, ValueError):
    """LIFT_ERR_BUFFER: an output buffer too small."""


class LiftUnsupportedError(LiftError, NotImplementedError):
    """LIFT_ERR_UNSUPPORTED: what this CPU or build cannot do (bf16 without AVX512-BF16)."""


class LiftUnsafeFileError(LiftIOError):
    """LIFT_ERR_UNSAFE: reading the file crashed or hung the checking process; do not open it
    in this process."""


class LiftInternalError(LiftError, RuntimeError):
    """LIFT_ERR_INTERNAL: a bug in liblift."""


ERROR_CLASSES = {
    Status.ERR_ARGUMENT: LiftArgumentError, Status.ERR_IO: LiftIOError, Status.ERR_FORMAT: LiftFormatError,
    Status.ERR_SHAPE: LiftShapeError, Status.ERR_VALUE: LiftValueError, Status.ERR_NOT_FOUND: LiftNotFoundError,
    Status.ERR_MEMORY: LiftMemoryError, Status.ERR_STATE: LiftStateError, Status.ERR_BUFFER: LiftBufferError,
    Status.ERR_UNSUPPORTED: LiftUnsupportedError, Status.ERR_UNSAFE: LiftUnsafeFileError,
    Status.ERR_INTERNAL: LiftInternalError,
}

_MISSING_FILE = os.strerror(errno.ENOENT)


def error_for(status: int, message: str) -> LiftError:
    """The exception of a failed call: the subclass of its status (FileNotFoundError for an
    I/O error on a file that does not exist)."""
    cls = ERROR_CLASSES.get(status, LiftError)
    if cls is LiftIOError and _MISSING_FILE in message:
        cls = LiftFileNotFoundError
    error = cls(status, message)
    if cls is LiftFileNotFoundError:
        error.errno, error.strerror = errno.ENOENT, _MISSING_FILE
    return error


def check(status: int) -> None:
    """Raise the LiftError subclass of `status`, carrying the thread's last error message,
    unless status is LIFT_OK."""
    if status != 0:
        raise error_for(status, lib.lift_last_error().decode("utf-8", "replace"))


class _Sized(ctypes.Structure):
    """A lift.h struct: its first field, struct_size, is set to the struct's size on creation
    (the library refuses structs whose size it does not know). `_c_name` is the C name."""

    _c_name = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.struct_size = ctypes.sizeof(self)


_SIZE = [("struct_size", c_size_t)]


class ModelConfigStruct(_Sized):
    _c_name = "lift_model_config"
    _fields_ = _SIZE + [(name, ctypes.c_int32) for name in (
        "image_size", "channels", "patch", "width", "depth", "heads", "mlp_ratio", "head_layers", "text_dim",
        "pool", "objective")] + [("image_mean", ctypes.c_float * 3), ("image_std", ctypes.c_float * 3),
                                 ("precision", ctypes.c_int32)] + [(name, ctypes.c_int32) for name in (
        "patch_bias", "no_ln_pre", "activation", "layer_scale", "registers", "final_norm")] + [
        ("layer_norm_eps", ctypes.c_float)]


class ImportOptionsStruct(_Sized):
    _c_name = "lift_import_options"
    _fields_ = _SIZE + [(name, ctypes.c_int32) for name in (
        "text_dim", "head_layers", "objective", "precision", "image_size", "heads", "activation", "pool")] + [
        ("config_path", ctypes.c_char_p), ("seed", ctypes.c_uint64)]


class TensorInfoStruct(_Sized):
    _c_name = "lift_tensor_info"
    _fields_ = _SIZE + [("name", ctypes.c_char_p), ("ndim", ctypes.c_int32), ("shape", ctypes.c_int64 * 4),
                ("offset", ctypes.c_int64), ("count", ctypes.c_int64), ("decays", ctypes.c_int32)]


class TrainConfigStruct(_Sized):
    _c_name = "lift_train_config"
    _fields_ = _SIZE + [(name, ctypes.c_double) for name in (
        "learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip")] + [
        ("warmup_steps", ctypes.c_int64), ("total_steps", ctypes.c_int64), ("batch_capacity", ctypes.c_int64),
        ("lock_image", ctypes.c_int32), ("unlocked_groups", ctypes.c_int32), ("layer_decay", ctypes.c_double)]


class StepStatsStruct(_Sized):
    _c_name = "lift_step_stats"
    _fields_ = _SIZE + [(name, ctypes.c_double) for name in (
        "loss", "learning_rate", "logit_scale", "logit_bias", "grad_norm")] + [("step", ctypes.c_int64)]


class DatasetInfoStruct(_Sized):
    _c_name = "lift_dataset_info"
    _fields_ = _SIZE + [("images", ctypes.c_int64), ("captions", ctypes.c_int64), ("height", ctypes.c_int32),
                ("width", ctypes.c_int32), ("channels", ctypes.c_int32), ("text_dim", ctypes.c_int32),
                ("has_labels", ctypes.c_int32), ("classes", ctypes.c_int64)]


class LoaderOptionsStruct(_Sized):
    _c_name = "lift_loader_options"
    _fields_ = _SIZE + [("batch_size", ctypes.c_int64), ("image_size", ctypes.c_int32), ("channels", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("shuffle", ctypes.c_int32), ("augment", ctypes.c_int32),
                ("crop_scale_min", ctypes.c_double), ("crop_scale_max", ctypes.c_double), ("flip", ctypes.c_int32),
                ("rank", ctypes.c_int32), ("workers", ctypes.c_int32), ("prefetch", ctypes.c_int32),
                ("start_epoch", ctypes.c_int64), ("start_batch", ctypes.c_int64), ("filter", ctypes.c_int32),
                ("reduced_decode", ctypes.c_int32), ("max_pixels", ctypes.c_int64), ("decode_threads", ctypes.c_int32),
                ("shuffle_block", ctypes.c_int32), ("max_bad_fraction", ctypes.c_double)]


class BatchStruct(_Sized):
    _c_name = "lift_batch"
    _fields_ = _SIZE + [("images", ctypes.POINTER(ctypes.c_uint8)), ("texts", ctypes.POINTER(ctypes.c_float)),
                ("indices", ctypes.POINTER(ctypes.c_int64)), ("caption_rows", ctypes.POINTER(ctypes.c_int64)),
                ("count", ctypes.c_int64), ("global_count", ctypes.c_int64), ("epoch", ctypes.c_int64),
                ("batch", ctypes.c_int64), ("wait_seconds", ctypes.c_double), ("skipped", ctypes.c_int64),
                ("keys", ctypes.POINTER(ctypes.c_char_p))]


class SourceInfoStruct(_Sized):
    _c_name = "lift_source_info"
    _fields_ = _SIZE + [("kind", ctypes.c_int32), ("text_dim", ctypes.c_int32), ("samples", ctypes.c_int64),
                ("shards", ctypes.c_int64)]


class ImageInfoStruct(_Sized):
    _c_name = "lift_image_info"
    _fields_ = _SIZE + [("codec", ctypes.c_int32), ("width", ctypes.c_int32), ("height", ctypes.c_int32),
                ("colour", ctypes.c_int32)]


class PreprocessOptionsStruct(_Sized):
    _c_name = "lift_preprocess_options"
    _fields_ = _SIZE + [("size", ctypes.c_int32), ("channels", ctypes.c_int32), ("filter", ctypes.c_int32),
                ("view", ctypes.c_int32), ("rect", ctypes.c_double * 4), ("flip", ctypes.c_int32),
                ("reduced_decode", ctypes.c_int32), ("max_pixels", ctypes.c_int64)]


class SuiteOptionsStruct(_Sized):
    _c_name = "lift_suite_options"
    _fields_ = _SIZE + [("name", c_char_p), ("root", c_char_p), ("annotations", c_char_p), ("classes", c_char_p),
                        ("templates", c_char_p), ("captions_per_image", ctypes.c_int64), ("split", c_char_p)]


class SuiteRunOptionsStruct(_Sized):
    _c_name = "lift_suite_run_options"
    _fields_ = _SIZE + [("batch", ctypes.c_int64), ("filter", ctypes.c_int32), ("resize", ctypes.c_int32),
                        ("decode_threads", ctypes.c_int32), ("reduced_decode", ctypes.c_int32),
                        ("image_cache", c_char_p)]


_P = c_void_p
_F = POINTER(c_float)
_I64 = POINTER(c_int64)

# lift_comm: the collectives of a data-parallel step, as C callbacks (0 = success).
ALLGATHER_INT64 = ctypes.CFUNCTYPE(c_int, c_void_p, c_int64, _I64)
ALLGATHERV_FLOAT = ctypes.CFUNCTYPE(c_int, c_void_p, _F, c_int64, _F, _I64)
ALLREDUCE_SUM_FLOAT = ctypes.CFUNCTYPE(c_int, c_void_p, _F, c_int64)


class CommStruct(_Sized):
    _c_name = "lift_comm"
    _fields_ = _SIZE + [("context", c_void_p), ("rank", ctypes.c_int32), ("size", ctypes.c_int32),
                ("allgather_int64", ALLGATHER_INT64), ("allgatherv_float", ALLGATHERV_FLOAT),
                ("allreduce_sum_float", ALLREDUCE_SUM_FLOAT)]

_PROTOTYPES = {
    "lift_version": (c_char_p, []),
    "lift_version_number": (c_uint32, []),
    "lift_struct_size": (c_int, [c_char_p, POINTER(c_size_t)]),
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
    "lift_store_rows_for_key": (c_int, [_P, c_char_p, _I64, c_size_t, POINTER(c_size_t)]),
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
    "lift_model_load": (c_int, [c_char_p, c_uint32, POINTER(_P)]),
    "lift_import_options_default": (c_int, [POINTER(ImportOptionsStruct)]),
    "lift_model_import": (c_int, [c_char_p, POINTER(ImportOptionsStruct), POINTER(_P), POINTER(c_int)]),
    "lift_model_export": (c_int, [_P, c_char_p, c_int]),
    "lift_model_save": (c_int, [_P, c_char_p]),
    "lift_model_free": (None, [_P]),
    "lift_model_get_config": (c_int, [_P, POINTER(ModelConfigStruct)]),
    "lift_model_parameters": (c_int, [_P, POINTER(_F), _I64]),
    "lift_model_tensor_count": (c_int, [_P, _I64]),
    "lift_model_tensor_info": (c_int, [_P, c_int64, POINTER(TensorInfoStruct)]),
    "lift_model_find_tensor": (c_int, [_P, c_char_p, _I64]),
    "lift_model_encode": (c_int, [_P, c_void_p, c_int, c_size_t, c_int64, _F, c_size_t]),
    "lift_model_features": (c_int, [_P, c_void_p, c_int, c_size_t, c_int64, _F, c_size_t]),
    "lift_model_step_flops": (c_int, [_P, c_int64, POINTER(ctypes.c_double)]),
    "lift_train_config_default": (c_int, [POINTER(TrainConfigStruct)]),
    "lift_trainer_create": (c_int, [_P, POINTER(TrainConfigStruct), ctypes.c_uint64, POINTER(_P)]),
    "lift_trainer_load": (c_int, [c_char_p, c_int64, c_uint32, POINTER(_P)]),
    "lift_trainer_save": (c_int, [_P, c_char_p, POINTER(c_char_p), POINTER(c_char_p), c_size_t]),
    "lift_trainer_metadata": (c_int, [_P, c_char_p, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_trainer_free": (None, [_P]),
    "lift_trainer_model": (c_int, [_P, POINTER(_P)]),
    "lift_trainer_get_config": (c_int, [_P, POINTER(TrainConfigStruct)]),
    "lift_trainer_step_count": (c_int, [_P, _I64]),
    "lift_trainer_random": (c_int, [_P, POINTER(ctypes.c_uint64)]),
    "lift_trainer_step": (c_int, [_P, c_void_p, c_int, c_size_t, _F, c_size_t, c_int64, POINTER(StepStatsStruct)]),
    "lift_trainer_step_features": (c_int, [_P, _F, c_size_t, _F, c_size_t, c_int64, POINTER(StepStatsStruct)]),
    "lift_trainer_step_distributed": (c_int, [_P, c_void_p, c_int, c_size_t, _F, c_size_t, c_int64,
                                              POINTER(CommStruct), POINTER(StepStatsStruct)]),
    "lift_trainer_step_features_distributed": (c_int, [_P, _F, c_size_t, _F, c_size_t, c_int64, POINTER(CommStruct),
                                                       POINTER(StepStatsStruct)]),
    "lift_trainer_forward": (c_int, [_P, c_void_p, c_int, c_size_t, c_int64, _F, c_size_t]),
    "lift_trainer_loss": (c_int, [_P, _F, _F, c_int64, c_int64, c_int64, c_int64, _F, c_size_t,
                                  POINTER(ctypes.c_double)]),
    "lift_trainer_backward": (c_int, [_P, _F, c_size_t, c_int64]),
    "lift_trainer_apply": (c_int, [_P, POINTER(StepStatsStruct)]),
    "lift_trainer_zero_grad": (c_int, [_P]),
    "lift_trainer_buffers": (c_int, [_P, POINTER(_F), POINTER(_F), POINTER(_F), _I64]),
    "lift_dataset_open": (c_int, [POINTER(c_char_p), c_size_t, c_uint32, POINTER(_P)]),
    "lift_dataset_free": (None, [_P]),
    "lift_dataset_get_info": (c_int, [_P, POINTER(DatasetInfoStruct)]),
    "lift_dataset_read_pixels": (c_int, [_P, _I64, c_int64, c_void_p, c_size_t]),
    "lift_dataset_read_labels": (c_int, [_P, _I64, c_int64, _I64]),
    "lift_dataset_caption_rows": (c_int, [_P, c_int64, _I64, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_class_name": (c_int, [_P, c_int64, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_class_prompts": (c_int, [_P, c_int64, _I64, c_size_t, POINTER(c_size_t)]),
    "lift_dataset_captions": (c_int, [_P, POINTER(_P)]),
    "lift_dataset_read_image": (c_int, [_P, c_int64, c_void_p, c_size_t, POINTER(c_size_t)]),
    "lift_loader_options_default": (c_int, [POINTER(LoaderOptionsStruct)]),
    "lift_loader_create": (c_int, [_P, POINTER(LoaderOptionsStruct), POINTER(_P)]),
    "lift_loader_next": (c_int, [_P, POINTER(BatchStruct)]),
    "lift_loader_batches_per_epoch": (c_int, [_P, _I64]),
    "lift_loader_free": (None, [_P]),
    "lift_loader_bad_samples": (c_int, [_P, _I64, _I64, c_size_t]),
    "lift_loader_bad_report": (c_int, [_P, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_loader_create_from_source": (c_int, [_P, POINTER(LoaderOptionsStruct), POINTER(_P)]),
    "lift_source_open": (c_int, [POINTER(c_char_p), c_size_t, POINTER(c_char_p), c_size_t, c_char_p, POINTER(_P)]),
    "lift_source_get_info": (c_int, [_P, POINTER(SourceInfoStruct)]),
    "lift_source_summary": (c_int, [_P, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_source_free": (None, [_P]),
    "lift_suite_options_default": (c_int, [POINTER(SuiteOptionsStruct)]),
    "lift_suite_run_options_default": (c_int, [POINTER(SuiteRunOptionsStruct)]),
    "lift_suite_open": (c_int, [POINTER(SuiteOptionsStruct), POINTER(_P)]),
    "lift_suite_free": (None, [_P]),
    "lift_suite_counts": (c_int, [_P, _I64, _I64]),
    "lift_suite_text": (c_int, [_P, c_int64, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_suite_evaluate": (c_int, [_P, _P, _P, POINTER(SuiteRunOptionsStruct)]),
    "lift_suite_result": (c_int, [_P, ctypes.c_int32, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_preprocess_image": (c_int, [c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                      POINTER(ctypes.c_double), ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                      c_void_p, c_size_t]),
    "lift_preprocess_options_default": (c_int, [POINTER(PreprocessOptionsStruct)]),
    "lift_image_probe": (c_int, [c_void_p, c_size_t, POINTER(ImageInfoStruct)]),
    "lift_image_decode": (c_int, [c_void_p, c_size_t, ctypes.c_int32, c_int64, c_void_p, c_size_t]),
    "lift_image_preprocess": (c_int, [c_void_p, c_size_t, POINTER(PreprocessOptionsStruct), c_void_p, c_size_t]),
    "lift_pixels_preprocess": (c_int, [c_void_p, c_size_t, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                       POINTER(PreprocessOptionsStruct), c_void_p, c_size_t]),
    "lift_eval_class_embeddings": (c_int, [_F, c_int64, c_int64, _I64, _I64, c_int64, _F]),
    "lift_eval_zero_shot": (c_int, [_F, c_int64, _F, c_int64, c_int64, _I64, POINTER(ctypes.c_double),
                                    POINTER(ctypes.c_double)]),
    "lift_eval_retrieval": (c_int, [_F, c_int64, _F, c_int64, c_int64, _I64, _I64, POINTER(ctypes.c_double),
                                    POINTER(ctypes.c_double)]),
    "lift_eval_pairwise": (c_int, [_F, _F, _F, c_int64, c_int64, c_void_p]),
    "lift_set_memory_limit": (c_int, [ctypes.c_uint64]),
    "lift_memory_limit": (ctypes.c_uint64, []),
    "lift_file_read_all": (c_int, [c_char_p, c_int, c_char_p, c_size_t, POINTER(c_size_t)]),
    "lift_file_check": (c_int, [c_char_p, c_int, ctypes.c_double, c_char_p, c_size_t, POINTER(c_size_t)]),
}

def _declare() -> None:
    """Declares every prototype, then checks that the library is the ABI these declarations
    describe: its major version, and each struct's size as the library knows it."""
    missing = [name for name in _PROTOTYPES if not hasattr(lib, name)]
    if missing:
        raise ImportError(f"{library_path} lacks {', '.join(missing)}: it is not liblift {ABI_MAJOR}.x "
                          f"(or older than these bindings)")
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    major = lib.lift_version_number() // 10000
    if major != ABI_MAJOR:
        raise ImportError(f"{library_path} is liblift {lib.lift_version().decode()}, but these bindings are for "
                          f"liblift {ABI_MAJOR}.x")
    check_struct_sizes([ModelConfigStruct, TensorInfoStruct, TrainConfigStruct, StepStatsStruct, DatasetInfoStruct,
                        LoaderOptionsStruct, BatchStruct, CommStruct, ImportOptionsStruct, ImageInfoStruct,
                        PreprocessOptionsStruct, SourceInfoStruct])


def check_struct_sizes(structs) -> None:
    """ImportError unless each ctypes struct has the size the library knows for its C struct."""
    for struct in structs:
        size = c_size_t()
        if lib.lift_struct_size(struct._c_name.encode(), ctypes.byref(size)) != 0:
            raise ImportError(f"{library_path}: {lib.lift_last_error().decode()}")
        if size.value != ctypes.sizeof(struct):
            raise ImportError(f"{struct._c_name} is {size.value} bytes in {library_path} but {ctypes.sizeof(struct)} "
                              f"in these bindings: the library and the bindings come from different versions")


_declare()


class Handle:
    """Base of the Python wrappers around liblift handles: owns the handle and frees it once
    (close(), a with-block, or garbage collection); a closed object refuses every call.

    numpy views into the handle's memory (Model.parameters, Trainer.gradients, ...) keep it
    alive: close() while such views exist makes this object unusable at once but frees the C
    object only when the last view is gone, so a view never points into freed memory."""

    _free = None  # name of the lift_*_free function
    _kind = "object"

    def _adopt(self, handle) -> None:
        self._h = handle

    def close(self) -> None:
        """Release the handle (now, or when the last view into its memory is gone)."""
        handle = getattr(self, "_h", None)
        if not handle:
            return
        self._h = None
        if getattr(self, "_live_views", 0) > 0:
            self._deferred = handle
        else:
            getattr(lib, self._free)(handle)

    def _view_created(self) -> None:
        self._live_views = getattr(self, "_live_views", 0) + 1

    def _view_released(self) -> None:
        self._live_views -= 1
        deferred = getattr(self, "_deferred", None)
        if self._live_views == 0 and deferred:
            self._deferred = None
            getattr(lib, self._free)(deferred)

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
