"""DICOM pixel data: locate it, view native pixels without a copy, reduced decoding."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.cxr_preprocess.codestream import j2k_codestream
from models.cxr_preprocess.image import Array, ImageError
from models.cxr_preprocess.transform import block_mean

__all__ = [
    "PIXEL_DATA",
    "check_pixels_decodable",
    "decode_j2k_reduced",
    "first_frame",
    "native_pixels",
    "pixel_element",
    "reduce_level",
    "reduce_stored",
]

logger = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, PIXEL_DATA}


def _expected_bytes(rows: int, cols: int, frames: int, samples: int, bits: int) -> int:
    return (rows * cols * frames * samples * bits + 7) // 8


def reduce_level(rows: int, cols: int, target: int | None) -> int:
    """Largest power-of-two reduction keeping the short side >= target (at most 5)."""
    if not target:
        return 0
    level = 0
    while level < 5 and min(rows, cols) >> (level + 1) >= target:
        level += 1
    return level


def first_frame(ds: Any) -> bytes:
    """The first frame of encapsulated pixel data, its fragments joined."""
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))


def decode_j2k_reduced(frame: bytes, level: int) -> NDArray[Any] | None:
    """Decode a single-frame JPEG 2000 codestream at 1/2**level; None if Pillow cannot.

    Call it only after :func:`~models.cxr_preprocess.codestream.check_frame` has
    matched the codestream's size with the header. Pillow's decompression-bomb guard is
    a refusal here, never a reason to fall back to a full decode.

    Raises:
        ImageError: ``too-large`` when Pillow's guard fires.
    """
    from PIL import Image

    frame = j2k_codestream(frame)  # Pillow reads a bare codestream at any level
    # SIZ marker right after SOC: Ssiz of the first component is at byte 42.
    if len(frame) < 43 or frame[:4] != b"\xff\x4f\xff\x51" or frame[42] & 0x80:
        return None  # signed samples: let pydicom decode it fully
    precision = (frame[42] & 0x7F) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(frame), formats=["JPEG2000"]) as im:
                im.reduce = level  # type: ignore[assignment,method-assign]
                im.load()
                arr = np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too-large", "the JPEG 2000 frame is a decompression bomb") from exc
    except Exception:  # the size is checked: a full decode by pydicom is bounded
        logger.debug("reduced JPEG 2000 decode failed; decoding at full size", exc_info=True)
        return None
    if arr.dtype == np.uint16 and 8 < precision < 16:
        arr = arr >> (16 - precision)  # Pillow scales 9-15 bit samples up to 16 bits
    return arr if arr.ndim == 2 else None


def check_pixels_decodable(ds: Any, rows: int, cols: int, frames: int) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16):
        raise ImageError("unsupported-pixels", f"BitsAllocated {bits}; only 8 and 16 are read")
    if syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as exc:
            raise ImageError("no-decoder", f"no decoder for transfer syntax {syntax}") from exc
        if not decoder.is_available:
            raise ImageError("no-decoder", f"no installed plugin decodes {syntax}")
        return
    samples = int(ds.get("SamplesPerPixel") or 1)
    need = _expected_bytes(rows, cols, frames, samples, bits)
    have = len(ds.PixelData)
    # Even-length padding adds one byte at most.
    if have < need or have > need + 1:
        raise ImageError(
            "unreadable", f"pixel data has {have} bytes; Rows x Columns x frames needs {need}"
        )


def pixel_element(data: bytes, pos: int, ds: Any) -> tuple[int, int, int] | None:
    """(tag, value offset, length) of the pixel element that starts at ``pos``, if any."""
    syntax = ds.file_meta.TransferSyntaxUID
    little = syntax.is_little_endian
    order: Literal["little", "big"] = "little" if little else "big"
    if len(data) < pos + 8:
        if len(data) > pos:
            raise ImageError("unreadable", "the file ends inside a data element")
        return None
    group = int.from_bytes(data[pos : pos + 2], order)
    elem = int.from_bytes(data[pos + 2 : pos + 4], order)
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return None
    if syntax.is_implicit_VR:
        return tag, pos + 8, int.from_bytes(data[pos + 4 : pos + 8], order)
    if len(data) < pos + 12:
        raise ImageError("unreadable", "the file ends inside the pixel data header")
    return tag, pos + 12, int.from_bytes(data[pos + 8 : pos + 12], order)


def native_pixels(
    data: bytes, element: tuple[int, int, int], ds: Any, rows: int, cols: int
) -> NDArray[Any] | None:
    """Uncompressed little-endian pixels as a zero-copy view; None for other syntaxes."""
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed or not syntax.is_little_endian:
        return None
    _, offset, length = element
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16):
        raise ImageError("unsupported-pixels", f"BitsAllocated {bits}; only 8 and 16 are read")
    need = rows * cols * bits // 8
    if length == 0xFFFFFFFF:
        raise ImageError("unreadable", "native pixel data with undefined length")
    if length > len(data) - offset:
        raise ImageError("unreadable", f"pixel data claims {length} bytes; the file is shorter")
    if length < need or length > need + 1:  # even-length padding adds one byte at most
        raise ImageError(
            "unreadable", f"pixel data has {length} bytes; Rows x Columns needs {need}"
        )
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols, offset=offset).reshape(rows, cols)
    stored = int(ds.get("BitsStored") or bits)
    if not 1 <= stored <= bits:
        raise ImageError("unsupported-pixels", f"BitsStored {stored} with BitsAllocated {bits}")
    if stored < bits:  # bits above BitsStored may hold overlays: drop them, keep the sign
        shift = bits - stored
        mask = np.array((1 << stored) - 1, dtype=dtype)
        arr = (arr << shift) >> shift if signed else arr & mask
    return arr


def reduce_stored(stored: NDArray[Any], target: int | None) -> Array:
    """Block-average stored values so the short side stays >= target."""
    if not target:
        return np.asarray(stored, dtype=np.float32)
    k = max(1, min(stored.shape) // target)
    return block_mean(stored, k)
