#!/usr/bin/env python3
"""Train a tiny LIFT image encoder with numpy data: images whose class decides a fixed "caption
embedding". After a few dozen steps the encoder retrieves the right caption for held-out images.

    python3 examples/python/train_tiny.py [OUT_DIR]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

import liblift


def make_images(rng, labels):
    """28x28 grey images: class k is a bright bar at column/row position k, plus noise."""
    images = rng.integers(0, 60, (len(labels), 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        if k < 5:
            images[i, :, 4 + 4 * k: 7 + 4 * k] = 230
        else:
            images[i, 4 + 4 * (k - 5): 7 + 4 * (k - 5), :] = 230
    return images


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="liblift-"))
    rng = np.random.default_rng(0)
    captions = rng.standard_normal((10, 64)).astype(np.float32)  # one fixed embedding per class

    config = liblift.ModelConfig.preset("ViT-XS/7-28", text_dim=64, depth=2)
    model = liblift.Model(config, seed=1)
    trainer = liblift.Trainer(model, batch_capacity=64, warmup_steps=10, total_steps=60, learning_rate=2e-3)
    for step in range(60):
        labels = rng.integers(0, 10, 64)
        stats = trainer.step(make_images(rng, labels), captions[labels])
        if step % 10 == 0 or step == 59:
            print(f"step {stats.step:3d}  loss {stats.loss:.3f}  lr {stats.learning_rate:.2e}  scale {stats.logit_scale:.1f}")

    test_labels = rng.integers(0, 10, 200)
    emb = model.encode(make_images(rng, test_labels))
    best, _ = liblift.topk(liblift.cosine_similarity(emb, captions), 1)
    accuracy = float((best[:, 0] == test_labels).mean())
    print(f"held-out caption retrieval accuracy: {accuracy:.1%}")
    model.save(out / "tiny.safetensors")
    trainer.save(out / "tiny-train.safetensors", metadata={"steps": 60})
    print(f"saved to {out}")
    assert accuracy > 0.9, accuracy


if __name__ == "__main__":
    main()
