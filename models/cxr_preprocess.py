"""One chest X-ray preprocessing, used by training and serving alike (contract C7).

``decode_dicom`` / ``decode_png`` turn file bytes into a :class:`DecodedImage`: a
float32 2-D array in [0, 1] where white means dense (MONOCHROME2), plus the header
attributes the quality gate needs. ``to_model_input`` turns that into the network's
``[1, S, S]`` input. The steps, in order:

1. DICOM is parsed with pydicom's strict reading (``reading_validation_mode = RAISE``
   for this call only) and never with ``force=True``. Rows x Columns x frames is
   checked against ``max_pixels`` and against the pixel data's length *before* any
   pixel is decoded, so a huge header on a tiny payload costs nothing.
2. When the caller gives ``target_size`` (serving and training both pass the model
   input size) the image is decoded at a reduced resolution: JPEG 2000 at a
   wavelet resolution level (Pillow's ``reduce``: about 20x less work than a full
   decode), uncompressed pixels by an integer block average. The reduced image is
   never smaller than ``target_size`` on its short side.
3. Modality rescale (slope/intercept), then the VOI LUT sequence or the first
   window (DICOM PS3.3 C.11.2.1.2, LINEAR or SIGMOID), else the 0.5-99.5th
   percentiles of the image. MONOCHROME1 is inverted.
4. ``to_model_input``: area downsample straight to ``S x S`` (the aspect ratio is not
   kept; every dataset is handled the same way), values stay in [0, 1].

Steps 3 and 4 work on the reduced image; the averaging commutes with the linear
rescale, and training and serving take the same path, so there is no skew.

Failures raise :class:`ImageError` with a machine-readable ``reason`` (see
:data:`DECODE_REASONS`).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.metadata import ImageSpec

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_MAX_PIXELS",
    "NORMALISATION",
    "DecodedImage",
    "ImageError",
    "area_resize",
    "decode_dicom",
    "decode_image",
    "decode_png",
    "image_spec",
    "to_model_input",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # ~ 6300 x 6300; 80 MB of 16-bit pixels
NORMALISATION = (
    "models.cxr_preprocess: rescale, VOI LUT / first window (else 0.5-99.5th percentile), "
    "MONOCHROME1 inverted; area downsample to SxS (aspect not kept); values in [0, 1], "
    "white = dense"
)
DECODE_REASONS: dict[str, str] = {
    "unreadable": "not a readable DICOM / PNG / JPEG file (truncated, malformed, bad lengths)",
    "no-image": "a DICOM object without image pixel data (e.g. DICOMDIR, structured report)",
    "too-large": "Rows x Columns x frames (or PNG width x height) over the pixel limit",
    "no-decoder": "compressed with a transfer syntax no installed decoder can read",
    "multi-frame": "more than one frame",
    "colour": "colour pixels (RGB, YBR, palette or a colour PNG/JPEG)",
    "unsupported-pixels": "bits allocated other than 8/16, float pixels, or transparency",
}

_CHEST_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2"}
_J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_NOT_IMAGES = {"1.2.840.10008.1.3.10"}  # Media Storage Directory (DICOMDIR)

Array = NDArray[np.float32]


class ImageError(ValueError):
    """An image that cannot be decoded; ``reason`` is a code from :data:`DECODE_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph: MONOCHROME2 float32 pixels in [0, 1] plus header facts.

    ``rows`` / ``columns`` are the stored image's size; ``pixels`` may be smaller when
    it was decoded at a reduced resolution (``reduction`` > 1).
    """

    pixels: Array
    source: str  # "dicom", "png" or "jpeg"
    rows: int
    columns: int
    reduction: float = 1.0
    frames: int = 1
    colour: bool = False
    modality: str | None = None
    view: str | None = None  # ViewPosition, e.g. "PA", "AP", "LL"
    body_part: str | None = None
    descriptions: tuple[str, ...] = ()  # study / series / protocol text, upper case
    sex: str | None = None  # "female", "male", "other"
    age: float | None = None  # years
    pixel_spacing: tuple[float, float] | None = None  # mm (row, column)
    photometric: str | None = None  # as stored
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image_spec(size: int) -> ImageSpec:
    """The :class:`ImageSpec` describing :func:`to_model_input` at ``size``."""
    return ImageSpec(size=size, channels=1, photometric="MONOCHROME2", normalisation=NORMALISATION)


# pydicom's reading validation mode is a process-wide setting: switch it to RAISE
# while at least one decode is running and restore it when the last one ends.
_strict_lock = threading.Lock()
_strict_users = 0
_strict_saved: int | None = None


@contextmanager
def _strict_reading() -> Iterator[None]:
    global _strict_users, _strict_saved
    from pydicom import config

    with _strict_lock:
        if _strict_users == 0:
            _strict_saved = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.RAISE
        _strict_users += 1
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0 and _strict_saved is not None:
                config.settings.reading_validation_mode = _strict_saved


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip().upper() or None


def _number(value: Any) -> float | None:
    try:
        if isinstance(value, list | tuple) or (
            hasattr(value, "__len__") and not isinstance(value, str)
        ):
            value = value[0]
        out = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return out if np.isfinite(out) else None


def _age_years(text: str | None) -> float | None:
    if not text or len(text) != 4 or not text[:3].isdigit():
        return None
    scale = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}.get(text[3])
    return None if scale is None else int(text[:3]) * scale


def _block_mean(a: NDArray[Any], k: int) -> Array:
    """Average ``k x k`` blocks (the edge remainder is dropped)."""
    if k <= 1:
        return np.asarray(a, dtype=np.float32)
    r, c = a.shape[0] // k, a.shape[1] // k
    acc: Any = np.uint64 if a.dtype.itemsize > 2 else np.uint32
    if a.dtype.kind in "fi":  # float32 sums are exact enough for <= 64 x 64 blocks of [0, 1]
        acc = np.float32 if a.dtype.kind == "f" else np.int64
    rows = a[: r * k, : c * k].reshape(r, k, c * k).sum(axis=1, dtype=acc)
    return np.asarray(rows.reshape(r, c, k).sum(axis=2) / float(k * k), dtype=np.float32)


def _area_weights(n_in: int, n_out: int) -> Array:
    """Matrix [n_out, n_in] averaging input cells over each output cell's extent."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return np.asarray(overlap / overlap.sum(axis=1, keepdims=True), dtype=np.float32)


def area_resize(img: NDArray[Any], shape: tuple[int, int]) -> Array:
    """Area-average ``img`` to ``shape`` (any ratio): an integer block mean first, then
    exact area weights, so a 3000 x 2500 image costs about 10 ms."""
    if img.ndim != 2 or min(img.shape) < 1:
        raise ImageError("unreadable", f"expected a 2-D image, got shape {img.shape}")
    k = max(1, min(img.shape[0] // shape[0], img.shape[1] // shape[1]))
    small = _block_mean(img, k)
    if small.shape == shape:
        return small
    return _resize_axis0(_resize_axis0(small, shape[0]).T, shape[1]).T.copy()


def _resize_axis0(img: Array, n_out: int) -> Array:
    """Area-resize along axis 0 with a banded gather (no BLAS: it is tiny work, and
    threaded BLAS on a busy 2-core host cost 100 ms for a 224 x 272 product)."""
    n_in = img.shape[0]
    if n_in == n_out:
        return img
    weights = _area_weights(n_in, n_out)
    nonzero = weights > 0
    first = nonzero.argmax(axis=1)
    width = int((nonzero.sum(axis=1)).max())
    idx = np.minimum(first[:, None] + np.arange(width)[None, :], n_in - 1)
    band = np.take_along_axis(weights, idx, axis=1)
    band[first[:, None] + np.arange(width)[None, :] >= n_in] = 0.0
    out = np.zeros((n_out, *img.shape[1:]), dtype=np.float32)
    for t in range(width):
        out += band[:, t, None] * img[idx[:, t]]
    return out


def _window(values: Array, ds: Any) -> Array:
    """Apply the VOI LUT sequence, else the first window, else a percentile window."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[0]
        desc = [int(v) for v in item.LUTDescriptor]
        entries = desc[0] or 65536
        first, bits = desc[1], desc[2]
        raw = item.get("LUTData")
        if isinstance(raw, bytes):
            raw = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2")
        table = np.asarray(raw if raw is not None else [], dtype=np.float32).ravel()[:entries]
        if table.size < 2:
            raise ImageError("unreadable", "VOI LUT has fewer than 2 entries")
        xs = first + np.arange(table.size, dtype=np.float32)
        mapped = np.interp(values, xs, table) / float((1 << min(bits, 16)) - 1)
        return np.asarray(np.clip(mapped, 0.0, 1.0), dtype=np.float32)
    center, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    function = _text(ds, "VOILUTFunction") or "LINEAR"
    if center is not None and width is not None and width >= 1.0:
        if function == "SIGMOID":
            return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (values - center) / width)), np.float32)
        out: NDArray[Any]
        if function == "LINEAR_EXACT":
            out = (values - center) / width + 0.5
        else:
            out = (values - (center - 0.5)) / (width - 1.0) + 0.5 if width > 1 else values * 0
        return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
    return _percentile_window(values)


def _percentile_window(values: NDArray[Any]) -> Array:
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    return np.asarray(np.clip((values - lo) / (hi - lo), 0.0, 1.0), dtype=np.float32)


def _expected_bytes(rows: int, cols: int, frames: int, samples: int, bits: int) -> int:
    return (rows * cols * frames * samples * bits + 7) // 8


def _reduce_level(rows: int, cols: int, target: int | None) -> int:
    """Largest power-of-two reduction keeping the short side >= target (at most 5)."""
    if not target:
        return 0
    level = 0
    while level < 5 and min(rows, cols) >> (level + 1) >= target:
        level += 1
    return level


def _decode_j2k_reduced(ds: Any, level: int) -> NDArray[Any] | None:
    """Decode a single-frame JPEG 2000 codestream at 1/2**level; None if Pillow cannot."""
    from PIL import Image
    from pydicom.encaps import generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    # SIZ marker right after SOC: Ssiz of the first component is at byte 42.
    if len(frame) < 43 or frame[:4] != b"\xff\x4f\xff\x51" or frame[42] & 0x80:
        return None  # a JP2 wrapper or signed samples: let pydicom decode it fully
    precision = (frame[42] & 0x7F) + 1
    try:
        with Image.open(io.BytesIO(frame), formats=["JPEG2000"]) as im:
            im.reduce = level  # type: ignore[assignment,method-assign]
            im.load()
            arr = np.asarray(im)
    except Exception:  # fall back to pydicom's full decode
        logger.debug("reduced JPEG 2000 decode failed; decoding at full size", exc_info=True)
        return None
    if arr.dtype == np.uint16 and 8 < precision < 16:
        arr = arr >> (16 - precision)  # Pillow scales 9-15 bit samples up to 16 bits
    return arr if arr.ndim == 2 else None


def _check_pixels_decodable(ds: Any, rows: int, cols: int, frames: int) -> None:
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


_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, _PIXEL_DATA}


def _pixel_element(data: bytes, pos: int, ds: Any) -> tuple[int, int, int] | None:
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


def _native_pixels(
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


def decode_dicom(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target_size: int | None = None
) -> DecodedImage:
    """Decode a single-frame greyscale DICOM radiograph.

    Args:
        data: the DICOM Part 10 file bytes (with preamble).
        max_pixels: refuse Rows x Columns x frames above this, before decoding.
        target_size: the model input size; when given the image may be decoded at a
            reduced resolution whose short side is still >= ``target_size``.

    Returns:
        The decoded image and header attributes.

    Raises:
        ImageError: reason ``unreadable``, ``no-image``, ``too-large``, ``no-decoder``,
            ``multi-frame``, ``colour`` or ``unsupported-pixels``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with _strict_reading():
        try:
            fp = io.BytesIO(data)
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            element = _pixel_element(data, fp.tell(), ds)
            sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID"))
            if element is None and b"\xe0\x7f" in data[-12:]:
                # pydicom stops quietly at a truncated element header at the end.
                raise ImageError("unreadable", "the file ends inside the pixel data header")
            if sop_class in _NOT_IMAGES or element is None:
                raise ImageError("no-image", "the DICOM object has no pixel data")
            if element[0] != _PIXEL_DATA:
                raise ImageError("unsupported-pixels", "float pixel data is not read")
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(_number(ds.get("NumberOfFrames")) or 1)
            photometric = _text(ds, "PhotometricInterpretation") or ""
            samples = int(ds.get("SamplesPerPixel") or 1)
            if rows < 1 or cols < 1 or frames < 1:
                raise ImageError("unreadable", f"Rows {rows}, Columns {cols}, frames {frames}")
            if rows * cols * frames * samples > max_pixels:
                raise ImageError(
                    "too-large",
                    f"{rows} x {cols} x {frames} frames x {samples} samples is over "
                    f"{max_pixels} pixels",
                )
            if frames > 1:
                raise ImageError("multi-frame", f"{frames} frames; one radiograph is expected")
            if samples != 1 or photometric not in _CHEST_PHOTOMETRIC:
                raise ImageError("colour", f"{photometric or 'unknown'} with {samples} samples")
            syntax = str(ds.file_meta.TransferSyntaxUID)
            level = _reduce_level(rows, cols, target_size)
            stored = _native_pixels(data, element, ds, rows, cols)
            if stored is None:  # compressed or big endian: let pydicom read the pixel data
                full = pydicom.dcmread(io.BytesIO(data))
                _check_pixels_decodable(full, rows, cols, frames)
                if level and syntax in _J2K_SYNTAXES:
                    stored = _decode_j2k_reduced(full, level)
                if stored is None:
                    level = 0
                    stored = full.pixel_array
            if stored.ndim != 2 or stored.shape[0] < 1:
                raise ImageError("unreadable", f"decoded pixels have shape {stored.shape}")
            values = _reduce_stored(stored, target_size)
            reduction = rows / values.shape[0]
            slope = _number(ds.get("RescaleSlope"))
            intercept = _number(ds.get("RescaleIntercept"))
            if slope is not None and intercept is not None and (slope, intercept) != (1.0, 0.0):
                values = values * np.float32(slope) + np.float32(intercept)
            pixels = _window(values, ds)
            if photometric == "MONOCHROME1":
                pixels = 1.0 - pixels
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            descriptions = tuple(
                t
                for t in (
                    _text(ds, k) for k in ("StudyDescription", "SeriesDescription", "ProtocolName")
                )
                if t
            )
            sex = {"F": "female", "M": "male", "O": "other"}.get(_text(ds, "PatientSex") or "")
            return DecodedImage(
                pixels=np.ascontiguousarray(pixels, dtype=np.float32),
                source="dicom",
                rows=rows,
                columns=cols,
                reduction=float(reduction),
                frames=frames,
                colour=False,
                modality=_text(ds, "Modality"),
                view=_text(ds, "ViewPosition"),
                body_part=_text(ds, "BodyPartExamined"),
                descriptions=descriptions,
                sex=sex,
                age=_age_years(_text(ds, "PatientAge")),
                pixel_spacing=(
                    (float(spacing[0]), float(spacing[1]))
                    if spacing is not None and len(spacing) == 2
                    else None
                ),
                photometric=photometric,
                bits_stored=int(ds.get("BitsStored") or 0) or None,
                transfer_syntax=syntax,
                study_uid=_text(ds, "StudyInstanceUID"),
                series_uid=_text(ds, "SeriesInstanceUID"),
                sop_instance_uid=_text(ds, "SOPInstanceUID"),
            )
        except ImageError:
            raise
        except (InvalidDicomError, EOFError) as exc:
            raise ImageError(
                "unreadable", f"not a readable DICOM file ({type(exc).__name__})"
            ) from exc
        except MemoryError as exc:
            raise ImageError("too-large", "not enough memory to decode the image") from exc
        except Exception as exc:
            raise ImageError(
                "unreadable", f"DICOM could not be decoded ({type(exc).__name__})"
            ) from exc


def _reduce_stored(stored: NDArray[Any], target: int | None) -> Array:
    """Block-average stored values so the short side stays >= target."""
    if not target:
        return np.asarray(stored, dtype=np.float32)
    k = max(1, min(stored.shape) // target)
    return _block_mean(stored, k)


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
                    arr = _percentile_window(np.asarray(im, dtype=np.float32))
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


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target_size: int | None = None
) -> DecodedImage:
    """Decode DICOM (``DICM`` at offset 128) or else PNG/JPEG bytes."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return decode_dicom(data, max_pixels=max_pixels, target_size=target_size)
    if data[:2] in (b"\x02\x00", b"\x08\x00") and data[2:4] < b"\x20\x00":
        # Looks like a bare DICOM data set (group 0002 or 0008 first): not read without
        # the Part 10 preamble, as pydicom is never asked to force-read a file.
        raise ImageError("unreadable", "DICOM without the 128-byte preamble and 'DICM'")
    return decode_png(data, max_pixels=max_pixels)


def to_model_input(img: DecodedImage, size: int = 224) -> Array:
    """The network input: float32 ``[1, size, size]`` in [0, 1], white = dense.

    Raises:
        ImageError: ``unreadable`` if the pixels are not a finite 2-D image.
    """
    pixels = img.pixels
    if pixels.ndim != 2 or not np.isfinite(pixels).all():
        raise ImageError("unreadable", "pixels are not a finite 2-D image")
    out = area_resize(pixels, (size, size))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)[None]
