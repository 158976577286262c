"""PNG / JPEG radiograph decoding (as the public data sets ship them)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.image import DEFAULT_MAX_PIXELS, DecodedImage, ImageError
from models.cxr_preprocess.transform import percentile_window

__all__ = ["decode_png"]


def decode_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a PNG or JPEG radiograph (as the public data sets ship them).

    8-bit images are taken as displayed (``value / 255``); 16-bit ones get the
    0.5-99.5th percentile window. Grey images stored as RGB (identical channels) are
    accepted; real colour is refused.

    Raises:
        ImageError: reason ``unreadable``, ``too-large``, ``colour`` or
            ``unsupported-pixels``.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as opened:
                im: Image.Image = opened
                width, height = im.size
                if width * height > max_pixels or width < 1 or height < 1:
                    raise ImageError("too-large", f"{width} x {height} is over {max_pixels} pixels")
                fmt = (im.format or "").lower()
                im.load()
                mode = im.mode
                colour = False
                if mode in {"P", "PA"}:
                    im = im.convert("RGBA")
                    mode = "RGBA"
                if mode in {"LA", "RGBA", "La", "RGBa"}:
                    alpha = np.asarray(im.getchannel("A"))
                    if alpha.min() < 255:
                        raise ImageError("unsupported-pixels", "the image has transparent pixels")
                    im = im.convert("L" if mode.startswith("L") else "RGB")
                    mode = im.mode
                if mode == "CMYK":
                    raise ImageError("colour", "CMYK images are not radiographs")
                if mode in {"RGB", "YCbCr", "LAB", "HSV"}:
                    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
                    spread = np.abs(rgb - rgb[..., :1]).max(axis=2)
                    colour = bool((spread > 8).mean() > 0.01)
                    if colour:
                        raise ImageError("colour", "the image has colour pixels")
                    arr: NDArray[Any] = rgb.mean(axis=2) / 255.0
                elif mode == "L":
                    arr = np.asarray(im, dtype=np.float32) / 255.0
                elif mode in {"I;16", "I;16B", "I;16L", "I"}:
                    arr = percentile_window(np.asarray(im, dtype=np.float32))
                elif mode == "1":
                    raise ImageError("unsupported-pixels", "1-bit images are not radiographs")
                else:
                    raise ImageError("unsupported-pixels", f"image mode {mode!r} is not read")
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
        pixels=np.ascontiguousarray(arr, dtype=np.float32),
        source="jpeg" if fmt == "jpeg" else "png",
        rows=height,
        columns=width,
    )
