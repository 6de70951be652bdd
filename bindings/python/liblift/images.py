"""Image decoding (JPEG, PNG, WebP) and preprocessing exactly as liblift's data loader does it.

Decoding follows Pillow's ``Image.open(f).convert("RGB")`` (or ``"L"`` for one channel);
resampling is Pillow's bilinear or bicubic. Views (which part of the image becomes the square
output):

- ``"centre"``: torchvision ``Resize(size)`` of the short side, then ``CenterCrop(size)``
  (evaluation; OpenCLIP's preprocessing);
- ``crop=(x, y, width, height)``: crop then resize (torchvision ``RandomResizedCrop``'s
  crop + resize);
- ``box=(x0, y0, x1, y1)``: Pillow's ``resize((size, size), box=...)`` over the whole image.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ._lib import ImageInfoStruct, PreprocessOptionsStruct, check, lib

__all__ = ["image_info", "decode_image", "preprocess", "FILTERS", "CODECS"]

FILTERS = {"bilinear": 0, "bicubic": 1}
CODECS = {1: "jpeg", 2: "png", 3: "webp"}
_VIEW_CENTRE, _VIEW_CROP, _VIEW_BOX = 0, 1, 2


def _bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"encoded image data must be bytes, got {type(data).__name__}")


def image_info(data) -> dict:
    """{"codec": "jpeg"|"png"|"webp", "width", "height", "colour": 1 grey / 3 colour / 4 CMYK}
    from an encoded image's header."""
    b = _bytes(data)
    info = ImageInfoStruct()
    check(lib.lift_image_probe(b, len(b), ctypes.byref(info)))
    return {"codec": CODECS[info.codec], "width": info.width, "height": info.height, "colour": info.colour}


def decode_image(data, channels: int = 3, max_pixels: int = 0) -> np.ndarray:
    """The whole image as (height, width, channels) uint8; channels 1 or 3. Images above
    max_pixels (0: Pillow's limit, 89,478,485) are refused."""
    b = _bytes(data)
    info = image_info(b)
    # A call without a buffer checks the header and the pixel limit before anything is allocated.
    status = lib.lift_image_decode(b, len(b), int(channels), int(max_pixels), None, 0)
    if status != 9:  # LIFT_ERR_BUFFER: the image is acceptable
        check(status)
    out = np.empty((info["height"], info["width"], int(channels)), np.uint8)
    check(lib.lift_image_decode(b, len(b), int(channels), int(max_pixels), out.ctypes.data, out.size))
    return out


def _options(size, channels, filter, crop, box, flip, reduced_decode, max_pixels):
    o = PreprocessOptionsStruct()
    check(lib.lift_preprocess_options_default(ctypes.byref(o)))
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)} (got {filter!r})")
    if crop is not None and box is not None:
        raise ValueError("give crop or box, not both")
    o.size, o.channels, o.filter = int(size), int(channels), FILTERS[filter]
    o.view = _VIEW_CROP if crop is not None else _VIEW_BOX if box is not None else _VIEW_CENTRE
    rect = crop if crop is not None else box if box is not None else (0, 0, 0, 0)
    if len(rect) != 4:
        raise ValueError("crop is (x, y, width, height) and box is (x0, y0, x1, y1)")
    o.rect = (ctypes.c_double * 4)(*[float(v) for v in rect])
    o.flip, o.reduced_decode = int(flip), int(reduced_decode)
    if max_pixels:
        o.max_pixels = int(max_pixels)
    return o


def preprocess(image, size: int, channels: int | None = None, box=None, flip: bool = False, *, crop=None,
               filter: str = "bilinear", reduced_decode: bool = False, max_pixels: int = 0) -> np.ndarray:
    """Render an image at (size, size, channels) uint8. `image` is an (H, W, C) or (H, W) uint8
    array, or the bytes of a JPEG/PNG/WebP file (decoded as the loader does; with
    reduced_decode a large JPEG is decoded at 1/2, 1/4 or 1/8 scale first). The view is the centre
    (default), `crop` or `box` (see the module's documentation); `flip` mirrors horizontally."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        b = _bytes(image)
        o = _options(size, channels or 3, filter, crop, box, flip, reduced_decode, max_pixels)
        out = np.empty((o.size, o.size, o.channels), np.uint8)
        check(lib.lift_image_preprocess(b, len(b), ctypes.byref(o), out.ctypes.data, out.size))
        return out
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
    a = np.ascontiguousarray(a)
    h, w, c = a.shape
    o = _options(size, channels or c, filter, crop, box, flip, False, max_pixels)
    out = np.empty((o.size, o.size, o.channels), np.uint8)
    check(lib.lift_pixels_preprocess(a.ctypes.data, a.size, h, w, c, ctypes.byref(o), out.ctypes.data, out.size))
    return out
