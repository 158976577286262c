"""Heatmap overlays: a class activation map blended over the analysed image, as PNG.

A stored result keeps a :class:`HeatmapSource` (the analysed image as 8-bit grey plus
the shown map scaled to 0-1 as float16, ~50 kB at 224 px, encoded in microseconds) and
the overlay PNG is drawn from it on each GET: encoding it costs ~4-5 ms of CPU (zlib),
the largest stage after decoding, and most results are never opened.

Since stored format 2 it also keeps, for the X-ray reader, every label's map (0-1,
float16 at map resolution) and a display copy of the original. Format 2 kept that copy
as an 8-bit grey PNG encoded when the read was made, so the reader's window/level only
stretched 256 grey levels. Format 3 keeps the original's own values
(:class:`~models.cxr_preprocess.display.DisplayValues`: uint16 block sums and the
default window), copied as they are, with nothing encoded per read: the reader's JS
windows them itself (:meth:`HeatmapSource.pixels_gzip`, compressed when asked for) and
``image.png`` draws them at the default window when it is asked for.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.cxr_preprocess.display import DisplayValues

__all__ = [
    "DISPLAY_MAX",
    "FORMATS",
    "HeatmapSource",
    "display_png",
    "grey_png",
    "overlay_png",
    "pack_pixels",
    "unpack_pixels",
    "upsample_cam",
    "windowed_u8",
]

DISPLAY_MAX = 1024  # long side of the stored display copy, pixels
FORMATS = (1, 2, 3)  # the stored layouts :meth:`HeatmapSource.decode` reads


def _colour_lut() -> np.ndarray:
    """A 256-entry blue -> cyan -> yellow -> red ramp (uint8 RGB)."""
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([red, green, blue], axis=1) * 255).astype(np.uint8)


_LUT = _colour_lut()


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a raw 2-D activation map to ``size`` (height, width), then 0-1.

    Higher stays higher: the map is shifted by its minimum and divided by its range,
    never inverted. A flat map becomes all zeros.
    """
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))
    resized = np.asarray(
        image.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32
    )
    low = float(resized.min())
    span = float(resized.max()) - low
    if span <= 1e-12:
        return np.zeros(size, dtype=np.float32)
    return (resized - low) / span


def overlay_png(image: np.ndarray, cam: np.ndarray, *, floor: float = 0.35) -> bytes:
    """Blend ``cam`` in colour over a grey ``image`` and encode it as PNG.

    Args:
        image: 2-D float array (any range; shown min-max scaled, white = dense).
        cam: 2-D raw activation map of any lower resolution.
        floor: scaled activation below which the image is shown without colour.

    Returns:
        PNG bytes, RGB, the size of ``image``.
    """
    low = float(image.min())
    span = float(image.max()) - low
    grey = (image - low) / span if span > 1e-12 else np.zeros_like(image)
    heat = upsample_cam(cam, (image.shape[0], image.shape[1]))
    colours = _LUT[(heat * 255).astype(np.uint8)].astype(np.float32) / 255.0
    alpha = np.where(heat >= floor, 0.25 + 0.35 * heat, 0.0)[..., None]
    rgb = grey[..., None] * (1.0 - alpha) + colours * alpha
    return _png((rgb * 255).astype(np.uint8))


def _grey_u8(image: np.ndarray) -> np.ndarray:
    low = float(image.min())
    span = float(image.max()) - low
    grey = (image - low) / span if span > 1e-12 else np.zeros_like(image)
    return (grey * 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def grey_png(image: np.ndarray) -> bytes:
    """The analysed image alone (min-max scaled, white = dense) as an 8-bit PNG."""
    return _png(_grey_u8(image))


def display_png(pixels: np.ndarray, longest: int = DISPLAY_MAX) -> bytes:
    """The display copy of a decoded radiograph: 8-bit grey PNG, long side <= ``longest``.

    Args:
        pixels: 2-D float array in [0, 1], white = dense (a decoder's output).
        longest: the largest side kept; larger images are area-averaged down.
    """
    grey = Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    scale = longest / max(grey.size)
    if scale < 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def windowed_u8(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """``values`` through a linear window (centre, width) to 8-bit grey."""
    low = center - width / 2
    out = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255 / width)
    grey: np.ndarray = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return grey


def _scaled(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float32)
    low = float(cam.min())
    span = float(cam.max()) - low
    scaled = (cam - low) / span if span > 1e-12 else np.zeros_like(cam)
    return np.ascontiguousarray(scaled, dtype=np.float32)


_HEADER = struct.Struct("<HHHH")  # image rows, columns; map rows, columns


_HEADER_2 = struct.Struct("<HI")  # label count, display PNG bytes (after the format-1 part)
_PIXELS = struct.Struct("<HHff")  # format 3's display copy: rows, columns, centre, width


@dataclass(frozen=True)
class HeatmapSource:
    """What the overlay, the plain image and the X-ray reader are drawn from.

    Attributes:
        image: the analysed image, 2-D uint8 (min-max scaled, white = dense).
        cam: the activation map shown, 2-D float32 at the model's map size, scaled to
            0-1 (the overlay min-max scales it again after the bilinear resize, which
            commutes with that scaling, so the drawing is unchanged).
        labels: the model's labels, in the order of ``cams`` (empty for format 1).
        cams: one map per label, ``[L, h, w]`` float32, each scaled to 0-1 (None for
            format 1, which kept only the shown map).
        display: format 2's display copy of the original (:func:`display_png`), b"".
        pixels: format 3's display copy: the original's own values, None if none.
    """

    image: np.ndarray
    cam: np.ndarray
    labels: tuple[str, ...] = ()
    cams: np.ndarray | None = None
    display: bytes = b""
    pixels: DisplayValues | None = None

    @classmethod
    def of(
        cls,
        image: np.ndarray,
        cam: np.ndarray,
        *,
        labels: tuple[str, ...] = (),
        cams: np.ndarray | None = None,
        display: bytes = b"",
        pixels: DisplayValues | None = None,
    ) -> HeatmapSource:
        """From the model input ``[S, S]`` (any range) and one raw map ``[h, w]``.

        Args:
            image: the model input.
            cam: the raw map shown on the overlay.
            labels: the model's labels, when ``cams`` is given.
            cams: every label's raw map ``[L, h, w]`` (maps of ``cam``'s size).
            display: a format-2 display copy (:func:`display_png`; tests of old rows).
            pixels: the original's values for the reader (stored format 3).

        Raises:
            ValueError: ``cams`` does not match ``labels`` or ``cam``'s size.
        """
        scaled = _scaled(cam)
        maps = None
        if cams is not None:
            raw = np.asarray(cams, dtype=np.float32)
            if raw.ndim != 3 or raw.shape[0] != len(labels) or raw.shape[1:] != scaled.shape:
                raise ValueError(f"maps of shape {raw.shape} for {len(labels)} labels")
            maps = np.stack([_scaled(m) for m in raw]) if len(raw) else None
        names = tuple(labels) if maps is not None else ()
        return cls(_grey_u8(image), scaled, names, maps, display, pixels)

    @property
    def stored_format(self) -> int:
        """The format :meth:`encode` writes: 3, or 2 for a source holding a format-2 PNG."""
        return 2 if self.display and self.pixels is None else 3

    def encode(self) -> bytes:
        """Stored format 3 (or 2, see :attr:`stored_format`): the format-1 bytes, then
        the labels, maps and display copy.

        Format 1 is four little-endian uint16 sizes, the image, the shown map as float16.
        Format 2 appends a uint16 label count and a uint32 display length, the labels
        as newline-joined UTF-8 (uint16 length first), every map as float16, then the
        display PNG. Format 3 is the same with the display copy as uint16 rows and
        columns, float32 window centre and width, then the values as uint16, row by row
        (all little-endian); a read without one has a display length of 0.
        """
        rows, columns = self.image.shape
        map_rows, map_columns = self.cam.shape
        header = _HEADER.pack(rows, columns, map_rows, map_columns)
        image = np.ascontiguousarray(self.image, dtype=np.uint8)
        names = "\n".join(self.labels).encode("utf-8")
        maps = b"" if self.cams is None else self.cams.astype("<f2").tobytes()
        display = self.display if self.stored_format == 2 else pack_pixels(self.pixels)
        second = _HEADER_2.pack(len(self.labels), len(display))
        return b"".join(
            [header, image.data, self.cam.astype("<f2").tobytes(), second,
             struct.pack("<H", len(names)), names, maps, display]
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes, stored_format: int = 3) -> HeatmapSource:
        """The inverse of :meth:`encode`, for stored format 1, 2 or 3.

        Raises:
            ValueError: the bytes are not an encoded source of that format.
        """
        if stored_format not in FORMATS:
            raise ValueError(f"no heatmap source format {stored_format}")
        if len(data) < _HEADER.size:
            raise ValueError(f"a heatmap source needs {_HEADER.size}+ bytes, got {len(data)}")
        rows, columns, map_rows, map_columns = _HEADER.unpack_from(data)
        pixels = rows * columns
        cells = map_rows * map_columns
        first = _HEADER.size + pixels + 2 * cells
        fits = len(data) == first if stored_format == 1 else len(data) >= first
        if not fits or not pixels or not cells:
            raise ValueError(
                f"heatmap source of {len(data)} bytes; its header ({rows}x{columns} image, "
                f"{map_rows}x{map_columns} map) needs {first}"
            )
        image = np.frombuffer(data, np.uint8, pixels, _HEADER.size).reshape(rows, columns)
        cam = np.frombuffer(data, "<f2", cells, _HEADER.size + pixels)
        cam = cam.reshape(map_rows, map_columns).astype(np.float32)
        if stored_format == 1:
            return cls(image, cam)
        labels, cams, display = _decode_extension(data, first, (map_rows, map_columns))
        if stored_format == 2:
            return cls(image, cam, labels, cams, display)
        return cls(image, cam, labels, cams, pixels=unpack_pixels(display))

    def overlay_png(self) -> bytes:
        """The overlay PNG (see :func:`overlay_png`)."""
        return overlay_png(self.image, self.cam)

    def image_png(self) -> bytes:
        """The plain analysed image as an 8-bit PNG."""
        return _png(self.image)

    def display_png(self) -> bytes:
        """The display copy of the original as an 8-bit PNG (format 3: drawn now at its
        default window), or the analysed image where none was kept."""
        if self.pixels is not None:
            shown = self.pixels
            return _png(windowed_u8(shown.values, shown.center, shown.width))
        return self.display or self.image_png()

    def pixels_gzip(self) -> bytes | None:
        """Format 3's display values as gzip of little-endian uint16 rows (None: none).

        Compressed here, when a reader asks for them, not when the read is made."""
        if self.pixels is None:
            return None
        raw = np.ascontiguousarray(self.pixels.values, dtype="<u2").tobytes()
        return gzip.compress(raw, compresslevel=1, mtime=0)

    def maps(self) -> dict[str, list[float]]:
        """Every kept label's map, 0-1 rounded to 3 places, rows joined (empty if none)."""
        if self.cams is None:
            return {}
        return {
            label: [round(float(v), 3) for v in cam.ravel()]
            for label, cam in zip(self.labels, self.cams, strict=True)
        }


def pack_pixels(pixels: DisplayValues | None) -> bytes:
    """A display copy as stored: rows, columns, window, then the uint16 values (b"":
    none, or too large for its header)."""
    if pixels is None or max(pixels.values.shape) > 0xFFFF:  # none, or no header fits it
        return b""
    rows, columns = pixels.values.shape
    header = _PIXELS.pack(rows, columns, pixels.center, pixels.width)
    # One join copies the values (0.5-1 MB) once, straight from the array.
    return b"".join([header, np.ascontiguousarray(pixels.values, dtype="<u2").data])


def unpack_pixels(data: bytes) -> DisplayValues | None:
    """A display copy from :func:`pack_pixels` (b"": none).

    Raises:
        ValueError: the sizes do not match the bytes, or the window is not finite.
    """
    if not data:
        return None
    if len(data) < _PIXELS.size:
        raise ValueError("heatmap source format 3 has a torn display header")
    rows, columns, center, width = _PIXELS.unpack_from(data)
    if len(data) != _PIXELS.size + 2 * rows * columns or not rows or not columns:
        raise ValueError(f"display copy of {len(data)} bytes for {rows} x {columns} values")
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError("display copy with an invalid window")
    values = np.frombuffer(data, "<u2", rows * columns, _PIXELS.size).reshape(rows, columns)
    return DisplayValues(values.astype(np.uint16), float(center), float(width))


def _decode_extension(
    data: bytes, offset: int, shape: tuple[int, int]
) -> tuple[tuple[str, ...], np.ndarray | None, bytes]:
    """The format-2 part after ``offset``: labels, maps and display copy."""
    cells = shape[0] * shape[1]
    fixed = _HEADER_2.size + 2
    if len(data) < offset + fixed:
        raise ValueError("heatmap source format 2 is missing its label and display sizes")
    count, display_len = _HEADER_2.unpack_from(data, offset)
    (names_len,) = struct.unpack_from("<H", data, offset + _HEADER_2.size)
    at = offset + fixed
    expected = at + names_len + 2 * count * cells + display_len
    if len(data) != expected:
        raise ValueError(f"heatmap source of {len(data)} bytes; format 2 needs {expected}")
    names = data[at : at + names_len].decode("utf-8")
    labels = tuple(names.split("\n")) if count else ()
    if len(labels) != count:
        raise ValueError(f"{len(labels)} label names for {count} maps")
    at += names_len
    cams = None
    if count:
        raw = np.frombuffer(data, "<f2", count * cells, at).astype(np.float32)
        cams = raw.reshape(count, *shape)
    at += 2 * count * cells
    return labels, cams, data[at:]
