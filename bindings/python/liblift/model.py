"""The image encoder (ViT + LIFT head) and its trainer."""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from ._arrays import as_float_matrix, check_out, cstrings, fptr
from ._lib import (OPEN_UNTRUSTED, Handle, ImportOptionsStruct, LiftError, ModelConfigStruct, StepStatsStruct, TensorInfoStruct,
                   Status, TrainConfigStruct, check, lib)

__all__ = ["ModelConfig", "Model", "TrainConfig", "Trainer", "StepStats", "TensorInfo", "OBJECTIVES", "POOLS",
           "PRECISIONS", "ACTIVATIONS", "FINAL_NORMS", "SCHEMES"]

OBJECTIVES = {"contrastive": 0, "cosine": 1, "sigmoid": 2}
POOLS = {"avg": 0, "tok": 1}
# Arithmetic of the matrix products: float32, or bfloat16 inputs with float32 accumulation.
PRECISIONS = {"fp32": 0, "bf16": 1}
# Options of pretrained families (lift_activation, lift_final_norm) and the import schemes.
ACTIVATIONS = {"gelu": 0, "quick_gelu": 1}
FINAL_NORMS = {"tokens": 0, "pooled": 1}
SCHEMES = {0: "openclip", 1: "timm", 2: "hf-clip", 3: "hf-dinov2"}
_IMAGE_F32_NCHW, _IMAGE_U8_NHWC = 0, 1


@dataclass
class ModelConfig:
    """Architecture (see lift_model_config in lift.h). Start from `ModelConfig.preset(...)`."""
    image_size: int
    channels: int
    patch: int
    width: int
    depth: int
    heads: int
    text_dim: int
    mlp_ratio: int = 4
    head_layers: int = 2
    pool: str = "avg"
    objective: str = "contrastive"
    image_mean: tuple = ()
    image_std: tuple = ()
    precision: str = "fp32"
    # Pretrained families (the defaults are LIFT's own model): patch-embedding bias, ln_pre,
    # MLP activation, LayerScale, register tokens, where ln_post applies, LayerNorm eps.
    patch_bias: bool = False
    ln_pre: bool = True
    activation: str = "gelu"
    layer_scale: bool = False
    registers: int = 0
    final_norm: str = "tokens"
    layer_norm_eps: float = 1e-5

    @classmethod
    def preset(cls, name: str, text_dim: int, **changes) -> "ModelConfig":
        c = ModelConfigStruct()
        check(lib.lift_model_config_preset(name.encode(), int(text_dim), ctypes.byref(c)))
        config = cls._from_struct(c)
        for k, v in changes.items():
            if not hasattr(config, k):
                raise TypeError(f"unknown model config field {k!r}")
            setattr(config, k, v)
        if "channels" in changes and "image_mean" not in changes:
            config.image_mean, config.image_std = (), ()
        return config

    @classmethod
    def _from_struct(cls, c: ModelConfigStruct) -> "ModelConfig":
        pool = {v: k for k, v in POOLS.items()}[c.pool]
        objective = {v: k for k, v in OBJECTIVES.items()}[c.objective]
        return cls(image_size=c.image_size, channels=c.channels, patch=c.patch, width=c.width, depth=c.depth,
                   heads=c.heads, text_dim=c.text_dim, mlp_ratio=c.mlp_ratio, head_layers=c.head_layers,
                   pool=pool, objective=objective, image_mean=tuple(c.image_mean[: c.channels]),
                   image_std=tuple(c.image_std[: c.channels]),
                   precision={v: k for k, v in PRECISIONS.items()}[c.precision], patch_bias=bool(c.patch_bias),
                   ln_pre=not c.no_ln_pre, activation={v: k for k, v in ACTIVATIONS.items()}[c.activation],
                   layer_scale=bool(c.layer_scale), registers=c.registers,
                   final_norm={v: k for k, v in FINAL_NORMS.items()}[c.final_norm], layer_norm_eps=c.layer_norm_eps)

    def _struct(self) -> ModelConfigStruct:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {list(POOLS)}, got {self.pool!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {list(FINAL_NORMS)}, got {self.final_norm!r}")
        c = ModelConfigStruct(precision=PRECISIONS[self.precision], image_size=self.image_size, channels=self.channels,
                              patch=self.patch, width=self.width, depth=self.depth, heads=self.heads,
                              mlp_ratio=self.mlp_ratio, head_layers=self.head_layers, text_dim=self.text_dim,
                              pool=POOLS[self.pool], objective=OBJECTIVES[self.objective],
                              patch_bias=int(self.patch_bias), no_ln_pre=int(not self.ln_pre),
                              activation=ACTIVATIONS[self.activation], layer_scale=int(self.layer_scale),
                              registers=self.registers, final_norm=FINAL_NORMS[self.final_norm],
                              layer_norm_eps=self.layer_norm_eps)
        rgb = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        mean = self.image_mean or (rgb[0] if self.channels == 3 else (0.5,) * self.channels)
        std = self.image_std or (rgb[1] if self.channels == 3 else (0.5,) * self.channels)
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(f"image_mean and image_std need {self.channels} values each")
        for i in range(self.channels):
            c.image_mean[i] = mean[i]
            c.image_std[i] = std[i]
        return c


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple
    offset: int
    count: int
    decays: bool


def _images(images, config: ModelConfig):
    """(pointer, format, element count, image count) for a float32 NCHW or uint8 NHWC array."""
    a = np.asarray(images)
    s, c = config.image_size, config.channels
    if a.dtype == np.uint8:
        if a.ndim == 3 and c == 1:
            a = a[..., None]
        expected = (s, s, c)
        fmt = _IMAGE_U8_NHWC
    else:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim == 3 and c == 1:
            a = a[:, None]
        expected = (c, s, s)
        fmt = _IMAGE_F32_NCHW
    if a.ndim != 4 or a.shape[1:] != expected:
        layout = "uint8 (B, S, S, C)" if fmt == _IMAGE_U8_NHWC else "float32 (B, C, S, S)"
        raise ValueError(f"images must be {layout} with S={s}, C={c}; got shape {a.shape}")
    a = np.ascontiguousarray(a)
    return a, fmt


class Model(Handle):
    """ViT image encoder + LIFT head. Weights are one float32 buffer; `parameters` and `tensor()`
    are numpy views of it (no copies)."""

    _free = "lift_model_free"
    _kind = "model"

    def __init__(self, config: ModelConfig, seed: int = 0):
        h = ctypes.c_void_p()
        check(lib.lift_model_create(ctypes.byref(config._struct()), int(seed), ctypes.byref(h)))
        self._h = h

    @classmethod
    def _wrap(cls, handle) -> "Model":
        m = cls.__new__(cls)
        m._h = handle
        return m

    @classmethod
    def load(cls, path, *, untrusted: bool = False) -> "Model":
        """A model (or a checkpoint's model) from a file; `untrusted=True` reads the file in full
        in a separate process first (check_file), once per process per version of the file."""
        h = ctypes.c_void_p()
        check(lib.lift_model_load(os.fsencode(path), OPEN_UNTRUSTED if untrusted else 0, ctypes.byref(h)))
        return cls._wrap(h)

    @classmethod
    def import_pretrained(cls, path, text_dim: int, *, head_layers: int = 2, objective: str = "contrastive",
                          precision: str = "fp32", image_size: int | None = None, heads: int | None = None,
                          activation: str | None = None, pool: str | None = None, config_path=None,
                          seed: int = 0) -> tuple["Model", str]:
        """A model whose image tower is the pretrained encoder in `path` (OpenCLIP, timm, Hugging
        Face CLIP or DINOv2 safetensors; detected from the names) and whose LIFT head is new.
        Heads, activation and pooling come from the config file beside the weights unless given.
        Returns (model, scheme name)."""
        o = ImportOptionsStruct()
        check(lib.lift_import_options_default(ctypes.byref(o)))
        o.text_dim, o.head_layers, o.seed = int(text_dim), int(head_layers), int(seed)
        o.objective, o.precision = OBJECTIVES[objective], PRECISIONS[precision]
        o.image_size, o.heads = int(image_size or 0), int(heads or 0)
        o.activation = -1 if activation is None else ACTIVATIONS[activation]
        o.pool = -1 if pool is None else POOLS[pool]
        o.config_path = None if config_path is None else os.fsencode(config_path)
        h, scheme = ctypes.c_void_p(), ctypes.c_int()
        check(lib.lift_model_import(os.fsencode(path), ctypes.byref(o), ctypes.byref(h), ctypes.byref(scheme)))
        return cls._wrap(h), SCHEMES[scheme.value]

    def save(self, path) -> None:
        """Write the model (weights and config) to a safetensors file, atomically."""
        check(lib.lift_model_save(self._handle(), os.fsencode(path)))

    def export(self, path, scheme: str) -> None:
        """Writes the image tower in `scheme`'s names ("openclip", "timm", "hf-clip",
        "hf-dinov2") with the scheme's config file beside it (no LIFT head)."""
        codes = {v: k for k, v in SCHEMES.items()}
        if scheme not in codes:
            raise ValueError(f"scheme must be one of {list(codes)}, got {scheme!r}")
        check(lib.lift_model_export(self._handle(), os.fsencode(path), codes[scheme]))

    @property
    def config(self) -> ModelConfig:
        c = ModelConfigStruct()
        check(lib.lift_model_get_config(self._handle(), ctypes.byref(c)))
        return ModelConfig._from_struct(c)

    @property
    def parameters(self) -> np.ndarray:
        """The flat parameter buffer as a writable float32 view (padding included)."""
        ptr, n = ctypes.POINTER(ctypes.c_float)(), ctypes.c_int64()
        check(lib.lift_model_parameters(self._handle(), ctypes.byref(ptr), ctypes.byref(n)))
        return _view(ptr, n.value, self)

    def tensors(self) -> list:
        """Every tensor of the parameter layout, as TensorInfo (PyTorch names and shapes)."""
        n = ctypes.c_int64()
        check(lib.lift_model_tensor_count(self._handle(), ctypes.byref(n)))
        out = []
        for i in range(n.value):
            info = TensorInfoStruct()
            check(lib.lift_model_tensor_info(self._handle(), i, ctypes.byref(info)))
            out.append(TensorInfo(info.name.decode(), tuple(info.shape[: info.ndim]), info.offset, info.count,
                                  bool(info.decays)))
        return out

    def tensor(self, name: str, buffer: np.ndarray | None = None) -> np.ndarray:
        """The named tensor (PyTorch name and shape) as a view into the parameters, or into
        `buffer` (a gradient or moment buffer laid out the same way)."""
        index = ctypes.c_int64()
        check(lib.lift_model_find_tensor(self._handle(), name.encode(), ctypes.byref(index)))
        info = TensorInfoStruct()
        check(lib.lift_model_tensor_info(self._handle(), index.value, ctypes.byref(info)))
        base = self.parameters if buffer is None else buffer
        return base[info.offset: info.offset + info.count].reshape(tuple(info.shape[: info.ndim]))

    def state_dict(self) -> dict:
        """Copies of every tensor by PyTorch name."""
        params = self.parameters
        return {t.name: params[t.offset: t.offset + t.count].reshape(t.shape).copy() for t in self.tensors()}

    def encode(self, images, out: np.ndarray | None = None) -> np.ndarray:
        """Unit-norm image embeddings (B, text_dim) of float32 (B, C, S, S) or uint8 (B, S, S, C) images."""
        return self._per_image_rows(lib.lift_model_encode, images, self.config.text_dim, out)

    def features(self, images, out: np.ndarray | None = None) -> np.ndarray:
        """Pooled features (B, width) of images: the tower's output, the head's input. With the
        tower locked, compute them once and train with Trainer.step_features."""
        return self._per_image_rows(lib.lift_model_features, images, self.config.width, out)

    def _per_image_rows(self, function, images, cols: int, out: np.ndarray | None) -> np.ndarray:
        """(B, cols) float32 rows of images by `function` (lift_model_encode's signature)."""
        a, fmt = _images(images, self.config)
        shape = (a.shape[0], cols)
        out = np.empty(shape, np.float32) if out is None else check_out(out, shape, np.float32)
        check(function(self._handle(), a.ctypes.data, fmt, a.size, a.shape[0], fptr(out), out.size))
        return out

    def step_flops(self, batch: int) -> float:
        """Floating-point operations of one training step (forward and backward) on `batch` images."""
        f = ctypes.c_double()
        check(lib.lift_model_step_flops(self._handle(), int(batch), ctypes.byref(f)))
        return f.value


def _view(ptr, count: int, owner: Handle) -> np.ndarray:
    """A writable float32 numpy view of `count` floats at ptr; the view keeps `owner` (the
    Python object holding the liblift handle) alive, and the handle's memory is not freed while
    the view exists, even after owner.close() (see Handle)."""
    address = ctypes.cast(ptr, ctypes.c_void_p).value
    return np.asarray(_ForeignBuffer(address, count, owner))


class _ForeignBuffer:
    """Exposes liblift-owned memory through the numpy array interface; counted as a live view
    of its owner until it is collected (every array viewing it holds it as `base`)."""

    def __init__(self, address: int, count: int, owner: Handle):
        self.__array_interface__ = {"shape": (count,), "typestr": "<f4", "data": (address, False), "version": 3}
        self._owner = owner
        owner._view_created()

    def __del__(self):
        self._owner._view_released()


def _train_config_default() -> TrainConfigStruct:
    c = TrainConfigStruct()
    check(lib.lift_train_config_default(ctypes.byref(c)))
    return c


_TRAIN_DEFAULT = _train_config_default()


@dataclass
class TrainConfig:
    """Optimisation settings; the defaults are the library's (lift_train_config_default)."""
    learning_rate: float = _TRAIN_DEFAULT.learning_rate
    beta1: float = _TRAIN_DEFAULT.beta1
    beta2: float = _TRAIN_DEFAULT.beta2
    eps: float = _TRAIN_DEFAULT.eps
    weight_decay: float = _TRAIN_DEFAULT.weight_decay
    grad_clip: float = _TRAIN_DEFAULT.grad_clip
    warmup_steps: int = _TRAIN_DEFAULT.warmup_steps
    total_steps: int = _TRAIN_DEFAULT.total_steps
    batch_capacity: int = _TRAIN_DEFAULT.batch_capacity
    # Locking (LiT / OpenCLIP --lock-image): None trains everything; k freezes the image tower
    # except its last k layer groups (0 = only the LIFT head trains).
    unlocked_groups: int | None = None
    # Layer-wise learning-rate decay (MAE's rule); 1 = off.
    layer_decay: float = _TRAIN_DEFAULT.layer_decay

    _PLAIN = ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip", "warmup_steps", "total_steps",
              "batch_capacity", "layer_decay")

    def _struct(self) -> TrainConfigStruct:
        locked = self.unlocked_groups is not None
        return TrainConfigStruct(**{k: getattr(self, k) for k in self._PLAIN}, lock_image=int(locked),
                                 unlocked_groups=int(self.unlocked_groups or 0))

    @classmethod
    def _from_struct(cls, c: TrainConfigStruct) -> "TrainConfig":
        return cls(**{k: getattr(c, k) for k in cls._PLAIN},
                   unlocked_groups=c.unlocked_groups if c.lock_image else None)


@dataclass(frozen=True)
class StepStats:
    loss: float
    learning_rate: float
    logit_scale: float
    logit_bias: float
    grad_norm: float
    step: int

    @classmethod
    def _from_struct(cls, s: StepStatsStruct) -> "StepStats":
        return cls(s.loss, s.learning_rate, s.logit_scale, s.logit_bias, s.grad_norm, s.step)


class Trainer(Handle):
    """Trains a Model against fixed text embeddings (see the Trainer section of lift.h)."""

    _free = "lift_trainer_free"
    _kind = "trainer"

    def __init__(self, model: Model, config: TrainConfig | None = None, seed: int = 0, **changes):
        config = config or TrainConfig()
        for k, v in changes.items():
            if not hasattr(config, k):
                raise TypeError(f"unknown train config field {k!r}")
            setattr(config, k, v)
        h = ctypes.c_void_p()
        check(lib.lift_trainer_create(model._handle(), ctypes.byref(config._struct()), int(seed), ctypes.byref(h)))
        self._h = h
        self.model = model

    @classmethod
    def load(cls, path, batch_capacity: int = 0, *, untrusted: bool = False) -> "Trainer":
        """Resumes from a checkpoint (batch_capacity 0 keeps the saved one); `untrusted=True` as
        Model.load."""
        h = ctypes.c_void_p()
        check(lib.lift_trainer_load(os.fsencode(path), int(batch_capacity), OPEN_UNTRUSTED if untrusted else 0,
                                    ctypes.byref(h)))
        t = cls.__new__(cls)
        t._h = h
        m = ctypes.c_void_p()
        check(lib.lift_trainer_model(h, ctypes.byref(m)))
        t.model = Model._wrap(m)
        return t

    def save(self, path, metadata: Mapping[str, str] | None = None) -> None:
        """Write a training checkpoint (model, optimiser state, schedule and `metadata`) atomically."""
        metadata = dict(metadata or {})
        keys = cstrings(list(metadata.keys()), "metadata keys")
        values = cstrings([str(v) for v in metadata.values()], "metadata values")
        check(lib.lift_trainer_save(self._handle(), os.fsencode(path), keys, values, len(metadata)))

    def metadata(self, key: str) -> str | None:
        """User metadata of the checkpoint this trainer was loaded from (None if absent)."""
        n = ctypes.c_size_t()
        status = lib.lift_trainer_metadata(self._handle(), key.encode(), None, 0, ctypes.byref(n))
        if status == Status.ERR_NOT_FOUND:
            return None
        if status != Status.ERR_BUFFER:
            check(status)
        buf = ctypes.create_string_buffer(n.value + 1)
        check(lib.lift_trainer_metadata(self._handle(), key.encode(), buf, n.value + 1, ctypes.byref(n)))
        return buf.raw[: n.value].decode()

    @property
    def config(self) -> TrainConfig:
        c = TrainConfigStruct()
        check(lib.lift_trainer_get_config(self._handle(), ctypes.byref(c)))
        return TrainConfig._from_struct(c)

    @property
    def step_count(self) -> int:
        n = ctypes.c_int64()
        check(lib.lift_trainer_step_count(self._handle(), ctypes.byref(n)))
        return n.value

    def random(self) -> int:
        """The next value of the trainer's own random stream (checkpointed with it)."""
        v = ctypes.c_uint64()
        check(lib.lift_trainer_random(self._handle(), ctypes.byref(v)))
        return v.value

    def _texts(self, texts, rows: int) -> np.ndarray:
        d = self.model.config.text_dim
        t = as_float_matrix(texts, "texts", cols=d)
        if t.shape[0] != rows:
            raise ValueError(f"{t.shape[0]} text embeddings for {rows} images")
        return t

    def step(self, images, texts) -> StepStats:
        """One optimiser step on images (float32 NCHW or uint8 NHWC) and their text embeddings."""
        a, fmt = _images(images, self.model.config)
        t = self._texts(texts, a.shape[0])
        s = StepStatsStruct()
        check(lib.lift_trainer_step(self._handle(), a.ctypes.data, fmt, a.size, fptr(t), t.size, a.shape[0],
                                    ctypes.byref(s)))
        return StepStats._from_struct(s)

    def step_features(self, features, texts) -> StepStats:
        """The step of `step` on the images' pooled features (B, width) from Model.features: the
        head-only step of a trainer whose whole tower is locked (unlocked_groups=0)."""
        f = as_float_matrix(features, "features", cols=self.model.config.width)
        t = self._texts(texts, f.shape[0])
        s = StepStatsStruct()
        check(lib.lift_trainer_step_features(self._handle(), fptr(f), f.size, fptr(t), t.size, f.shape[0],
                                             ctypes.byref(s)))
        return StepStats._from_struct(s)

    def step_distributed(self, images, texts, communicator) -> StepStats:
        """One optimiser step of the global batch made of every rank's images and texts (this
        rank's part given here), through `communicator` (liblift.distributed.Communicator, e.g.
        MPICommunicator). Equals one process stepping on the whole global batch; every rank
        gets the same stats and parameters. See lift_trainer_step_distributed."""
        a, fmt = _images(images, self.model.config)
        t = self._texts(texts, a.shape[0])
        return self._collective_step(communicator, lambda comm, s: lib.lift_trainer_step_distributed(
            self._handle(), a.ctypes.data, fmt, a.size, fptr(t), t.size, a.shape[0], comm, s))

    def step_features_distributed(self, features, texts, communicator) -> StepStats:
        """`step_distributed` on this rank's pooled features (B, width), as `step_features`: the
        head-only step of a trainer whose whole tower is locked."""
        f = as_float_matrix(features, "features", cols=self.model.config.width)
        t = self._texts(texts, f.shape[0])
        return self._collective_step(communicator, lambda comm, s: lib.lift_trainer_step_features_distributed(
            self._handle(), fptr(f), f.size, fptr(t), t.size, f.shape[0], comm, s))

    @staticmethod
    def _collective_step(communicator, call) -> StepStats:
        """Runs call(comm struct, stats struct); an exception raised inside one of the
        communicator's callbacks is re-raised before the status is checked."""
        s = StepStatsStruct()
        status = call(ctypes.byref(communicator.struct), ctypes.byref(s))
        communicator.raise_pending()
        check(status)
        return StepStats._from_struct(s)

    def forward(self, images) -> np.ndarray:
        """The manual step's first half: embeddings (B, text_dim) of `images`, kept for backward()."""
        a, fmt = _images(images, self.model.config)
        out = np.empty((a.shape[0], self.model.config.text_dim), np.float32)
        check(lib.lift_trainer_forward(self._handle(), a.ctypes.data, fmt, a.size, a.shape[0], fptr(out), out.size))
        return out

    def loss(self, features, texts, local_start: int = 0, local_count: int | None = None, world_size: int = 1):
        """(loss, dLoss/dfeatures for the local rows) of a global batch; see lift_trainer_loss."""
        d = self.model.config.text_dim
        f = as_float_matrix(features, "features", cols=d)
        t = self._texts(texts, f.shape[0])
        if local_count is None:
            local_count = f.shape[0] - local_start
        grad = np.empty((max(local_count, 0), d), np.float32)
        value = ctypes.c_double()
        check(lib.lift_trainer_loss(self._handle(), fptr(f), fptr(t), f.shape[0], int(local_start), int(local_count),
                                    int(world_size), fptr(grad), grad.size, ctypes.byref(value)))
        return value.value, grad

    def backward(self, grad) -> None:
        """Accumulate gradients from `grad`, the loss gradient with respect to forward()'s embeddings."""
        g = as_float_matrix(grad, "grad", cols=self.model.config.text_dim)
        check(lib.lift_trainer_backward(self._handle(), fptr(g), g.size, g.shape[0]))

    def apply(self) -> StepStats:
        """One AdamW update from the accumulated gradients; the gradients are zeroed."""
        s = StepStatsStruct()
        check(lib.lift_trainer_apply(self._handle(), ctypes.byref(s)))
        return StepStats._from_struct(s)

    def zero_grad(self) -> None:
        """Zero the accumulated gradients."""
        check(lib.lift_trainer_zero_grad(self._handle()))

    def _buffer(self, which: int) -> np.ndarray:
        ptrs = [ctypes.POINTER(ctypes.c_float)() for _ in range(3)]
        n = ctypes.c_int64()
        check(lib.lift_trainer_buffers(self._handle(), *(ctypes.byref(p) for p in ptrs), ctypes.byref(n)))
        return _view(ptrs[which], n.value, self)

    @property
    def gradients(self) -> np.ndarray:
        """The flat gradient buffer (writable view; all-reduce it in place between backward and apply)."""
        return self._buffer(0)

    @property
    def exp_avg(self) -> np.ndarray:
        return self._buffer(1)

    @property
    def exp_avg_sq(self) -> np.ndarray:
        return self._buffer(2)
