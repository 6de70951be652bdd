"""liblift: a LIFT trainer (image encoder aligned to fixed, precomputed text embeddings).

Thin ctypes bindings over liblift.so. The library is loaded from $LIBLIFT_PATH if set, else the
copy inside this package (wheels carry one), else the system's liblift.so.<major> (the Debian
package); never from the current directory or its parents.
"""
from ._lib import (LiftArgumentError, LiftBufferError, LiftError, LiftFileNotFoundError, LiftFormatError, LiftInternalError,
                   LiftIOError, LiftMemoryError, LiftNotFoundError, LiftShapeError, LiftStateError, LiftUnsafeFileError,
                   LiftUnsupportedError, LiftValueError, Status, library_path, lib)
from .files import FILE_KINDS, check_file, memory_limit, read_file, set_memory_limit
from .data import (Batch, Dataset, Loader, Source, class_embeddings, pairwise, preprocess, retrieval, write_dataset,
                   zero_shot)
from .images import decode_image, image_info
from .model import Model, ModelConfig, StepStats, TensorInfo, TrainConfig, Trainer
from .similarity import cosine_similarity, topk
from .store import DEFAULT_DATASET, Store, StoreWriter
from .suites import SUITES, Suite

__all__ = ["LiftError", "Status", "LiftArgumentError", "LiftBufferError", "LiftFileNotFoundError", "LiftFormatError",
           "LiftInternalError", "LiftIOError", "LiftMemoryError", "LiftNotFoundError", "LiftShapeError", "LiftStateError",
           "LiftUnsafeFileError", "LiftUnsupportedError", "LiftValueError", "Store", "StoreWriter", "DEFAULT_DATASET", "cosine_similarity", "topk",
           "Model", "ModelConfig", "TrainConfig", "Trainer", "StepStats", "TensorInfo", "Dataset", "Source", "Loader", "Batch",
           "Suite", "SUITES", "preprocess", "decode_image", "image_info", "write_dataset", "class_embeddings", "zero_shot", "retrieval", "pairwise", "version",
           "library_path", "__version__", "check_file", "read_file", "FILE_KINDS", "memory_limit",
           "set_memory_limit"]


def version() -> str:
    """The loaded liblift.so's version string."""
    return lib.lift_version().decode()


__version__ = version()
