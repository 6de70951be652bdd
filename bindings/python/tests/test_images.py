"""Image decoding and preprocessing against Pillow (and torchvision's transforms written with
Pillow): every file here is written by Pillow or pypng, the tools that make such files in the
wild, and liblift must decode it to exactly Pillow's pixels."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import liblift
from liblift import LiftError

png = pytest.importorskip("png")  # pypng: 16-bit colour and interlaced PNGs, which Pillow cannot write


def smooth_image(rng, h, w, channels=3, feature=8, noise=20):
    """A photo-like image: smooth colour fields (about `feature` pixels across) plus noise."""
    small = (rng.random((h // feature + 2, w // feature + 2, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(np.int16)
    noisy = np.clip(base + rng.integers(-noise, noise + 1, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy)
    return image.convert("L") if channels == 1 else image


def encode(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def pypng_bytes(rows, width, height, **options):
    out = io.BytesIO()
    png.Writer(width, height, **options).write(out, rows)
    return out.getvalue()


def corpus(rng):
    """{name: encoded bytes} covering the JPEG, PNG and WebP variants that occur in datasets."""
    rgb = smooth_image(rng, 67, 93)
    alpha = np.asarray(rgb.convert("RGBA")).copy()
    alpha[..., 3] = rng.integers(0, 256, alpha.shape[:2])
    rgba = Image.fromarray(alpha)
    grey16 = np.asarray(rgb.convert("L")).astype(np.uint16) * 3  # values beyond 255: Pillow clips them
    rgb16 = np.asarray(rgb).astype(np.uint16) * 257 + rng.integers(0, 256, (67, 93, 3)).astype(np.uint16)
    files = {
        "jpeg 4:2:0": encode(rgb, "JPEG", quality=85),
        "jpeg 4:2:2": encode(rgb, "JPEG", quality=90, subsampling=1),
        "jpeg 4:4:4": encode(rgb, "JPEG", quality=95, subsampling=0),
        "jpeg progressive": encode(rgb, "JPEG", quality=80, progressive=True),
        "jpeg grey": encode(rgb.convert("L"), "JPEG"),
        "jpeg CMYK": encode(rgb.convert("CMYK"), "JPEG"),
        "png RGB": encode(rgb, "PNG"),
        "png RGBA": encode(rgba, "PNG"),
        "png LA": encode(rgba.convert("LA"), "PNG"),
        "png L": encode(rgb.convert("L"), "PNG"),
        "png 1-bit": encode(rgb.convert("1"), "PNG"),
        "png palette": encode(rgb.convert("P", palette=Image.ADAPTIVE, colors=200), "PNG"),
        "png 4-bit palette + tRNS": encode(rgb.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG", transparency=3, bits=4),
        "png 16-bit grey": encode(Image.fromarray(grey16), "PNG"),
        "png 16-bit RGB": pypng_bytes(rgb16.reshape(67, -1), 93, 67, greyscale=False, bitdepth=16),
        "png 16-bit RGBA": pypng_bytes(np.concatenate([rgb16, rgb16[..., :1]], 2).reshape(67, -1), 93, 67,
                                       greyscale=False, alpha=True, bitdepth=16),
        "png 2-bit grey": pypng_bytes((np.asarray(rgb.convert("L")) >> 6).reshape(67, -1), 93, 67, greyscale=True, bitdepth=2),
        "png interlaced": pypng_bytes(np.asarray(rgb).reshape(67, -1), 93, 67, greyscale=False, interlace=True),
        "webp lossy": encode(rgb, "WEBP", quality=80),
        "webp lossless": encode(rgb, "WEBP", lossless=True),
        "webp alpha": encode(rgba, "WEBP", quality=70),
    }
    return files


@pytest.fixture(scope="module")
def files():
    return corpus(np.random.default_rng(7))


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_decoding_equals_pillow(files, mode, channels):
    for name, data in files.items():
        ref = np.asarray(Image.open(io.BytesIO(data)).convert(mode)).reshape(-1)
        ours = liblift.decode_image(data, channels).reshape(-1)
        assert ours.shape == ref.shape, name
        assert np.array_equal(ours, ref), f"{name}: {int(np.abs(ours.astype(int) - ref).max())} off"


def test_image_info(files):
    assert liblift.image_info(files["jpeg 4:2:0"]) == {"codec": "jpeg", "width": 93, "height": 67, "colour": 3}
    assert liblift.image_info(files["jpeg CMYK"])["colour"] == 4
    assert liblift.image_info(files["png L"]) == {"codec": "png", "width": 93, "height": 67, "colour": 1}
    assert liblift.image_info(files["webp alpha"])["codec"] == "webp"


def torchvision_centre(image, size, resample):
    """torchvision Resize(size) (short side) + CenterCrop(size), on a PIL image, as OpenCLIP evaluates."""
    w, h = image.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    resized = image.resize((nw, nh), resample)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return resized.crop((left, top, left + size, top + size))


@pytest.mark.parametrize("filter_name,resample", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_resampling_equals_pillow(rng, filter_name, resample):
    """Random sizes, crops and boxes: the centre view is torchvision's Resize + CenterCrop, a crop
    is RandomResizedCrop's crop + resize, a box is Pillow's resize(box=); all pixel-exact
    (also where Pillow runs its vertical pass first: tall shrinking images)."""
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(3, 260, 2))
        channels = int(rng.choice([1, 3]))
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        size = int(rng.integers(2, 240))
        ref = np.asarray(torchvision_centre(image, size, resample)).reshape(size, size, channels)
        np.testing.assert_array_equal(liblift.preprocess(pixels, size, filter=filter_name), ref)
        cw, ch = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        ref = np.asarray(image.crop((x, y, x + cw, y + ch)).resize((size, size), resample)).reshape(size, size, channels)
        np.testing.assert_array_equal(liblift.preprocess(pixels, size, crop=(x, y, cw, ch), filter=filter_name), ref)
        np.testing.assert_array_equal(liblift.preprocess(pixels, size, crop=(x, y, cw, ch), filter=filter_name, flip=True),
                                      ref[:, ::-1])
        box = (x + 0.37, y + 0.11, x + cw, y + ch)  # fractional: Pillow takes it as C floats
        ref = np.asarray(image.resize((size, size), resample, box=box)).reshape(size, size, channels)
        np.testing.assert_array_equal(liblift.preprocess(pixels, size, box=box, filter=filter_name), ref)


def test_encoded_preprocessing_equals_pillow_then_torchvision(files):
    """Decode + view straight from the bytes equals Pillow's open/convert followed by the transform."""
    for name, data in files.items():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        ref = np.asarray(torchvision_centre(image, 48, Image.BICUBIC))
        np.testing.assert_array_equal(liblift.preprocess(data, 48, filter="bicubic"), ref, err_msg=name)
        ref = np.asarray(image.crop((5, 3, 85, 60)).resize((32, 32), Image.BICUBIC))
        np.testing.assert_array_equal(liblift.preprocess(data, 32, crop=(5, 3, 80, 57), filter="bicubic"), ref, err_msg=name)


def test_reduced_scale_jpeg_decode_is_close_to_the_full_decode(rng):
    """A large JPEG decoded at 1/2 or 1/4 scale in the DCT domain, then resized, stays close to
    Pillow's full decode + resize (docs/formats.md states the measured agreement); without reduced
    decoding the same call is exact."""
    image = smooth_image(rng, 1100, 1500, feature=16, noise=4)
    data = encode(image, "JPEG", quality=90)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    for size, crop in ((224, None), (224, (100, 50, 1000, 950)), (160, (0, 0, 1500, 1100))):
        ref = np.asarray(torchvision_centre(full, size, Image.BICUBIC) if crop is None else
                         full.crop((crop[0], crop[1], crop[0] + crop[2], crop[1] + crop[3])).resize((size, size), Image.BICUBIC))
        exact = liblift.preprocess(data, size, crop=crop, filter="bicubic", reduced_decode=False)
        np.testing.assert_array_equal(exact, ref)
        reduced = liblift.preprocess(data, size, crop=crop, filter="bicubic", reduced_decode=True)
        diff = np.abs(reduced.astype(int) - ref)
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 6, (size, crop, diff.mean(), diff.max())


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def test_bad_images_are_errors_not_crashes(files):
    jpeg, png_data, webp = files["jpeg 4:2:0"], files["png RGB"], files["webp lossy"]
    cases = [
        (b"", "0 bytes", "LIFT_ERR_FORMAT"),
        (b"GIF89a" + bytes(100), "GIF images are not supported", "LIFT_ERR_UNSUPPORTED"),
        (b"hello, not an image at all", "not a JPEG, PNG or WebP", "LIFT_ERR_UNSUPPORTED"),
        (jpeg[: len(jpeg) // 2], "truncated", "LIFT_ERR_FORMAT"),
        (png_data[: len(png_data) // 2], "truncated", "LIFT_ERR_FORMAT"),
        (webp[: len(webp) // 2], "truncated", "LIFT_ERR_FORMAT"),
        (jpeg[:20], "JPEG", "LIFT_ERR_FORMAT"),
        (png_data[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 50, 50, 8, 2, 0, 0, 0)) + png_chunk(b"IDAT", b"garbage")
         + png_chunk(b"IEND", b""), "PNG", "LIFT_ERR_FORMAT"),
    ]
    bad_crc = bytearray(png_data)
    bad_crc[30] ^= 0xFF  # inside IHDR: its CRC no longer matches
    cases.append((bytes(bad_crc), "PNG", "LIFT_ERR_FORMAT"))
    for data, message, status in cases:
        with pytest.raises(LiftError, match=message) as error:
            liblift.decode_image(data)
        assert error.value.status_name == status, (message, error.value)
        with pytest.raises(LiftError):
            liblift.preprocess(data, 16)


def test_decompression_bombs_are_refused_before_decoding(files):
    # A PNG header declaring 100000 x 100000 pixels (with no real data behind it).
    header = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0))
    bomb = header + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b"")
    assert liblift.image_info(bomb)["width"] == 100000
    with pytest.raises(LiftError, match="exceeds the limit of 89478485") as error:
        liblift.decode_image(bomb)
    assert error.value.status_name == "LIFT_ERR_VALUE"
    with pytest.raises(LiftError, match="exceeds the limit of 1000"):
        liblift.preprocess(files["jpeg 4:2:0"], 16, max_pixels=1000)
    assert liblift.preprocess(files["jpeg 4:2:0"], 16, max_pixels=93 * 67).shape == (16, 16, 3)


def test_views_outside_the_image_are_argument_errors(files):
    with pytest.raises(LiftError, match="not inside the 93x67 image"):
        liblift.preprocess(files["png RGB"], 16, crop=(80, 0, 20, 20))
    with pytest.raises(LiftError, match="whole pixels"):
        liblift.preprocess(files["png RGB"], 16, crop=(0.5, 0, 20, 20))
    with pytest.raises(LiftError, match="not inside"):
        liblift.preprocess(np.zeros((10, 10, 3), np.uint8), 4, box=(0, 0, 11, 10))
