#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into Fuzz/corpus/<target>/: small valid inputs of every kind
each reader accepts (run once; the files are committed). Needs liblift's Python bindings, h5py,
Pillow and pypng.
    Fuzz/make_corpus.py [TARGET...]     (default: every target; "pretrained" adds foreign-scheme
    encoders to the safetensors corpus)"""
import json
import sys
from pathlib import Path

import h5py
import numpy as np

import liblift

ROOT = Path(__file__).resolve().parent / "corpus"


def command_lines():
    """cli: `lift` argument lists (newline-separated), some with a --config JSON after a 0x01 byte."""
    (ROOT / "cli").mkdir(parents=True, exist_ok=True)
    lines = [
        ["train", "--steps", "20", "--batch-size", "64", "--precision", "bf16", "--out", "runs/x"],
        ["train", "--preset", "ViT-Ti/16", "--image-size", "64", "--patch", "8", "--width", "48", "--depth", "2",
         "--heads", "3", "--mlp-ratio", "2", "--head-layers", "1", "--pool", "tok", "--objective", "sigmoid"],
        ["train", "--epochs", "0.5", "--lr", "3e-4", "--warmup", "7", "--weight-decay", "0.1", "--beta2", "0.95",
         "--clip", "0", "--seed", "3", "--augment", "--crop-scale", "0.3", "--image-mean", "0.5,0.4,0.3",
         "--image-std", "0.2, 0.2, 0.2", "--checkpoint-every", "5", "--eval-every", "10", "--log-every", "1",
         "--time-limit", "60", "--stop-at", "9", "--micro-batch", "16", "--resume", "--quiet"],
        ["train", "--data", "a.h5", "--data", "b.h5", "--eval-data", "c.h5", "--no-augment", "--restart"],
        ["eval", "model.safetensors", "data.h5"],
        ["encode", "--help"],
        ["info", "model.safetensors"],
        ["check", "a.h5", "--timeout", "5"],
        ["--version"],
    ]
    for i, args in enumerate(lines):
        (ROOT / "cli" / f"{i}.txt").write_bytes("\n".join(args).encode())
    config = {"preset": "ViT-XS/7-28", "batch-size": 32, "epochs": 2, "lr": 0.002, "data": ["a.h5"],
              "image-mean": "0.5", "augment": True, "warmup": 3}
    (ROOT / "cli" / "config.txt").write_bytes(b"train\n--steps\n5\x01" + json.dumps(config).encode())
    # Configs written for the old --augment on|off option still hold a string.
    legacy = {"augment": "on"}
    (ROOT / "cli" / "config-legacy.txt").write_bytes(b"train\n--no-augment\x01" + json.dumps(legacy).encode())


def pretrained():
    """safetensors: tiny encoders in the four naming schemes liblift imports (width 8, one block)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python" / "tests"))
    from safetensors.numpy import save_file
    import test_import as schemes

    schemes.W, schemes.HEADS, schemes.DEPTH, schemes.HIDDEN = 8, 1, 1, 16
    rng = np.random.default_rng(0)
    out = ROOT / "safetensors"
    save_file(schemes.timm_weights(rng, 2, True, layer_scale=True, fc_norm=True), str(out / "timm.safetensors"))
    save_file(schemes.openclip_weights(rng, layer_scale=True), str(out / "openclip.safetensors"))
    save_file(schemes.hf_clip_weights(rng), str(out / "hf-clip.safetensors"))
    save_file(schemes.dinov2_weights(rng, 2), str(out / "hf-dinov2.safetensors"))


def images():
    """image: small JPEG (baseline, progressive, grey, CMYK), PNG (RGB, palette, 16-bit grey,
    interlaced) and WebP (lossy, lossless) files written by Pillow and pypng."""
    import io

    import png
    from PIL import Image

    out = ROOT / "image"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8))

    def save(name, image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        (out / name).write_bytes(buffer.getvalue())

    save("baseline.jpg", rgb, "JPEG", quality=80)
    save("progressive.jpg", rgb, "JPEG", progressive=True, subsampling=0)
    save("grey.jpg", rgb.convert("L"), "JPEG")
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    save("rgb.png", rgb, "PNG")
    save("palette.png", rgb.convert("P", palette=Image.ADAPTIVE, colors=8), "PNG", transparency=2)
    save("grey16.png", Image.fromarray(rng.integers(0, 1000, (9, 7)).astype(np.uint16)), "PNG")
    buffer = io.BytesIO()
    png.Writer(17, 12, greyscale=False, interlace=True).write(buffer, np.asarray(rgb).reshape(12, -1))
    (out / "interlaced.png").write_bytes(buffer.getvalue())
    save("lossy.webp", rgb, "WEBP", quality=50)
    save("lossless.webp", rgb.convert("RGBA"), "WEBP", lossless=True)


def tars():
    """tar: webdataset shards written by Python's tarfile (ustar, GNU and pax headers), samples
    with an image and an .npy or .emb embedding, one long key, one truncated member."""
    import io
    import tarfile

    from PIL import Image

    out = ROOT / "tar"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(png, format="PNG")

    def member(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    for fmt, name in ((tarfile.USTAR_FORMAT, "ustar"), (tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
            for i, key in enumerate(["a", "b", "dir/" + "long" * (10 if fmt != tarfile.USTAR_FORMAT else 1)]):
                member(tar, f"{key}.png", png.getvalue())
                member(tar, f"{key}.txt", b"caption")
                vec = rng.standard_normal(4).astype(np.float32)
                if i % 2:
                    npy = io.BytesIO()
                    np.save(npy, vec)
                    member(tar, f"{key}.npy", npy.getvalue())
                else:
                    member(tar, f"{key}.emb", vec.tobytes())
        (out / f"{name}.tar").write_bytes(buffer.getvalue())
    (out / "truncated.tar").write_bytes((out / "pax.tar").read_bytes()[:1500])


def main(targets):
    if "cli" in targets:
        command_lines()
    if "image" in targets:
        images()
    if "tar" in targets:
        tars()
    if "pretrained" in targets:
        pretrained()
    if not {"safetensors", "json", "store", "dataset"} & set(targets):
        return
    rng = np.random.default_rng(0)
    for name in ("safetensors", "json", "store", "dataset"):
        (ROOT / name).mkdir(parents=True, exist_ok=True)
    # safetensors: a model file and a training checkpoint of a tiny model, both objectives' layouts.
    for objective in ("contrastive", "sigmoid"):
        config = liblift.ModelConfig.preset("ViT-XS/4-32", 4, image_size=4, patch=2, width=8, depth=1, heads=1,
                                            head_layers=1, objective=objective)
        model = liblift.Model(config, seed=1)
        model.save(ROOT / "safetensors" / f"model-{objective}.safetensors")
        trainer = liblift.Trainer(model, batch_capacity=2)
        trainer.step(rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8), rng.standard_normal((2, 4)).astype(np.float32))
        trainer.save(ROOT / "safetensors" / f"checkpoint-{objective}.safetensors", metadata={"epoch": "1"})
    # json: configs and assorted values.
    model_config = {"image_size": 8, "channels": 3, "patch": 4, "width": 16, "depth": 1, "heads": 1, "mlp_ratio": 4,
                    "head_layers": 2, "text_dim": 8, "pool": "avg", "objective": "contrastive",
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "precision": "fp32"}
    train_config = {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.2,
                    "warmup_steps": 5, "total_steps": 10, "grad_clip": 1.0, "batch_capacity": 4}
    for i, value in enumerate([model_config, train_config, [1, -2.5e-3, True, None, "\u00e9\\n"], {"a": {"b": [[]]}}]):
        (ROOT / "json" / f"{i}.json").write_text(json.dumps(value))
    # store: written by liblift (chunked, float16 and float32, strings) and by h5py (contiguous).
    for dtype in ("float16", "float32"):
        with liblift.StoreWriter(ROOT / "store" / f"liblift-{dtype}.h5", dim=4, dtype=dtype, keys=True, captions=True) as w:
            w.append(rng.standard_normal((3, 4)).astype(np.float32), keys=["a", "b", "c"], captions=["x", "yy", "zzz"])
    # A store with a key index (keys with and without image extensions, one repeated).
    with liblift.StoreWriter(ROOT / "store" / "keyed.h5", dim=4, dtype="float16", keys=True) as w:
        w.append(rng.standard_normal((5, 4)).astype(np.float32), keys=["a.jpg", "b", "c.png", "a", "e"])
    with h5py.File(ROOT / "store" / "h5py-contiguous.h5", "w") as f:
        f["embeddings"] = rng.standard_normal((3, 4)).astype(np.float32)
        f.create_dataset("keys", data=["k0", "k1", "k2"], dtype=h5py.string_dtype())
    # A feature cache as the store target reads it (8 x 4, fingerprint "fuzz").
    with h5py.File(ROOT / "store" / "feature-cache.h5", "w") as f:
        f["features"] = rng.standard_normal((8, 4)).astype(np.float32)
        f.attrs["lift.kind"] = "feature_cache"
        f.attrs["lift.fingerprint"] = "fuzz"
    # dataset: 4 grey 4x4 images, 2 classes, compositional pairs.
    path = ROOT / "dataset" / "tiny.h5"
    emb = rng.standard_normal((4, 4)).astype(np.float32)
    liblift.write_dataset(path, rng.integers(0, 256, (4, 4, 4, 1), dtype=np.uint8), emb, [[0], [1, 2], [3], [0]],
                          labels=np.array([0, 1, 0, 1]), class_names=["a", "b"], class_prompts=[[0, 1], [2, 3]])
    with h5py.File(path, "a") as f:
        f["compositional/image"] = np.array([0, 1])
        f["compositional/positive"] = emb[:2]
        f["compositional/negative"] = emb[2:]
        f.create_dataset("compositional/type", data=["swap", "add"], dtype=h5py.string_dtype())


if __name__ == "__main__":
    main(sys.argv[1:] or ["cli", "pretrained", "image", "tar", "safetensors", "json", "store", "dataset"])
