"""PNG / JPEG radiograph decoding (as the public data sets ship them).

Pillow reads the declared size (PNG IHDR, JPEG SOF) when it opens a file, so the pixel
limit is checked before anything is decoded. After Pillow's one decoded copy, pixels
are converted in bands of rows (mode conversion, alpha and colour checks, block
averaging), so no full-size copy in a wider type is ever made: a 6300 x 6300 RGB PNG
costs Pillow's 160 MB and a few MB more.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.display import (
    DisplayValues,
    block_sum,
    display_factor,
    from_sums,
)
from models.cxr_preprocess.image import DEFAULT_MAX_PIXELS, Array, DecodedImage, ImageError
from models.cxr_preprocess.transform import block_mean, percentile_window

__all__ = ["decode_png"]

_BAND_ROWS = 256  # rows converted at a time
_COLOUR_MODES = {"RGB", "YCbCr", "LAB", "HSV"}
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "P", "PA"}
_WIDE_GREY = {"I;16", "I;16B", "I;16L", "I"}


def decode_png(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
    display_size: int = 0,
) -> DecodedImage:
    """Decode a PNG or JPEG radiograph (as the public data sets ship them).

    8-bit images are taken as displayed (``value / 255``); 16-bit ones get the
    0.5-99.5th percentile window. Grey images stored as RGB (identical channels) are
    accepted; real colour is refused.

    Args:
        data: the file bytes.
        max_pixels: refuse width x height above this, before decoding.
        target_size: the model input size; when given the pixels are block-averaged
            so that the short side stays >= ``target_size`` (as for DICOM).
        display_size: when > 0, also keep the reader's copy of the grey values
            (:mod:`~models.cxr_preprocess.display`) from the image Pillow decoded.

    Raises:
        ImageError: reason ``unreadable``, ``too-large``, ``colour`` or
            ``unsupported-pixels``.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as im:
                width, height = im.size
                if width * height > max_pixels or width < 1 or height < 1:
                    raise ImageError("too-large", f"{width} x {height} is over {max_pixels} pixels")
                fmt = (im.format or "").lower()
                mode = im.mode
                if mode == "CMYK":
                    raise ImageError("colour", "CMYK images are not radiographs")
                if mode == "1":
                    raise ImageError("unsupported-pixels", "1-bit images are not radiographs")
                if mode not in _COLOUR_MODES | _ALPHA_MODES | _WIDE_GREY | {"L"}:
                    raise ImageError("unsupported-pixels", f"image mode {mode!r} is not read")
                im.load()
                k = max(1, min(width, height) // target_size) if target_size else 1
                pixels = _Bands(k).convert(im)
                display = _display(im, display_size) if display_size > 0 else None
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too-large", "the image is a decompression bomb") from exc
    except MemoryError as exc:
        raise ImageError("too-large", "not enough memory to decode the image") from exc
    except Exception as exc:
        raise ImageError(
            "unreadable", f"not a readable PNG or JPEG ({type(exc).__name__})"
        ) from exc
    return DecodedImage(
        pixels=pixels,
        source="jpeg" if fmt == "jpeg" else "png",
        rows=height,
        columns=width,
        reduction=height / pixels.shape[0],
        display=display,
    )


def _display(im: Any, size: int) -> DisplayValues:
    """The reader's copy of a loaded, checked image, band by band (no full-size copy):
    8-bit grey keeps its own 0-255 window; wide grey gets the percentile window."""
    width, height = im.size
    k = display_factor(height, width, size)
    used = height // k * k
    step = max(1, _BAND_ROWS // k) * k
    sums: NDArray[Any] | None = None
    eight_bit = im.mode not in _WIDE_GREY
    bits = 8 if eight_bit else 16
    for top in range(0, used, step):
        band = im.crop((0, top, width, min(top + step, used)))
        if band.mode not in _WIDE_GREY | {"L"}:
            band = band.convert("L")  # checked grey already: channels agree
        part = block_sum(np.asarray(band), k, None if band.mode == "I" else bits)
        if sums is None:
            sums = np.empty((used // k, part.shape[1]), dtype=part.dtype)
        sums[top // k : top // k + part.shape[0]] = part
    if sums is None:
        raise ImageError("unreadable", "no rows to display")
    # 8-bit grey is taken as displayed (value / 255, as the decoder does).
    return from_sums(sums, k * k, window=(127.5, 256.0) if eight_bit else None)


class _Bands:
    """Grey float32 pixels of a loaded Pillow image, converted band by band."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.colourful = 0  # pixels whose channels differ by more than 8 levels

    def convert(self, im: Any) -> Array:
        width, height = im.size
        k = self.k
        used = height // k * k  # block_mean drops the remainder rows; so do the bands
        step = max(1, _BAND_ROWS // k) * k
        out = np.empty((used // k, width // k), dtype=np.float32)
        for top in range(0, used, step):
            band = self._band(im.crop((0, top, width, min(top + step, used))))
            out[top // k : top // k + band.shape[0]] = band
        if self.colourful > 0.01 * width * used:
            raise ImageError("colour", "the image has colour pixels")
        return percentile_window(out) if im.mode in _WIDE_GREY else out

    def _band(self, band: Any) -> Array:
        mode = band.mode
        if mode in {"P", "PA"}:
            band = band.convert("RGBA")
            mode = "RGBA"
        if mode in {"LA", "La", "RGBA", "RGBa"}:
            if np.asarray(band.getchannel("A")).min() < 255:
                raise ImageError("unsupported-pixels", "the image has transparent pixels")
            band = band.convert("L" if mode.startswith("L") else "RGB")
            mode = band.mode
        if mode in _COLOUR_MODES:
            rgb = np.asarray(band if mode == "RGB" else band.convert("RGB"))
            # Channel by channel: reductions over a last axis of 3 are ~10x slower.
            r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
            spread = np.maximum(np.abs(g - r), np.abs(b - r))
            self.colourful += int(np.count_nonzero(spread > 8))
            grey: NDArray[Any] = (r + g + b).astype(np.uint16)
            return block_mean(grey, self.k) / np.float32(3 * 255)
        if mode == "L":
            return block_mean(np.asarray(band), self.k) / np.float32(255)
        return block_mean(np.asarray(band), self.k)  # 16/32-bit grey: windowed later
