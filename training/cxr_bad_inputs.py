"""Malformed and out-of-scope chest X-ray inputs, built in memory, with expected reasons.

Used by the decoder and quality-gate tests and by ``benchmarks/bench_cxr_quality.py``
(docs/reliability.md, "Bad input": every listed malformed DICOM or image must give a
reason code quickly). Each case is a :class:`BadInput`: a name, the bytes, and the
set of reason codes that are acceptable answers (``None`` in the set means the input
is valid and must be accepted).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "BadInput",
    "bad_dicom_cases",
    "bad_image_cases",
    "bomb_cases",
    "dicom_bytes",
    "mutated_corpus",
    "out_of_scope_pixel_cases",
    "png_bytes",
]

_CR = "1.2.840.10008.5.1.4.1.1.1"


@dataclass(frozen=True)
class BadInput:
    """One input and the reason codes it may be answered with."""

    name: str
    data: bytes
    expected: frozenset[str | None]
    media: str = "dicom"  # "dicom" or "image"


def dicom_bytes(
    pixels: NDArray[Any] | None,
    *,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    extra: Callable[[Any], None] | None = None,
    preamble: bool = True,
) -> bytes:
    """A DICOM file around ``pixels`` (uint8/uint16 2-D, or None for no pixel data).

    Args:
        pixels: the stored values; ``None`` writes no Pixel Data element.
        transfer_syntax: written as is (the pixel bytes are *not* compressed).
        modality: Modality.
        photometric: PhotometricInterpretation.
        bits_stored: BitsStored (default: the dtype's bits).
        extra: called with the dataset to add or change attributes before writing.
        preamble: False writes the dataset without the 128-byte preamble and ``DICM``.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CR)
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bad-input"])
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["bad-input-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bad-input-series"])
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientID = "BAD-1"
    ds.PatientSex = "F"
    ds.PatientAge = "040Y"
    if pixels is not None:
        bits = pixels.dtype.itemsize * 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.BitsAllocated = bits
        ds.BitsStored = bits_stored or bits
        ds.HighBit = (bits_stored or bits) - 1
        ds.PixelRepresentation = 0
        ds.PixelSpacing = ["0.2", "0.2"]
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    if extra is not None:
        extra(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[132:]


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode a Pillow image."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _chest(size: tuple[int, int] = (256, 256), seed: int = 0) -> NDArray[np.float32]:
    from training.cxr_synthetic import render_case

    return render_case(seed, 0, size, findings=[]).image


def _u16(img: NDArray[np.float32]) -> NDArray[np.uint16]:
    return np.asarray(np.rint(img * 4095), dtype=np.uint16)


def _set(**attrs: Any) -> Callable[[Any], None]:
    def apply(ds: Any) -> None:
        for key, value in attrs.items():
            setattr(ds, key, value)

    return apply


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width x height`` with a tiny (truncated) IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100_000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_dicom_cases() -> list[BadInput]:
    """Every malformed DICOM listed in docs/reliability.md, plus header-level refusals."""
    chest = _u16(_chest())
    good = dicom_bytes(chest)
    pixel_at = good.find(b"\xe0\x7f\x10\x00")
    cases: list[BadInput] = [BadInput("valid CR", good, frozenset({None}))]

    def add(name: str, data: bytes, *reasons: str | None) -> None:
        cases.append(BadInput(name, data, frozenset(reasons)))

    for cut in (10, 131, 200, pixel_at + 6, pixel_at + 1000, len(good) - 1):
        add(f"truncated at {cut}", good[:cut], "unreadable")
    add("no preamble", dicom_bytes(chest, preamble=False), "unreadable")
    add("empty", b"", "unreadable")
    add("pixel data missing", dicom_bytes(None), "no-image")
    add(
        "pixel data short",
        dicom_bytes(chest, extra=_set(PixelData=chest.tobytes()[:-200])),
        "unreadable",
    )
    add(
        "pixel data long",
        dicom_bytes(chest, extra=_set(PixelData=chest.tobytes() + b"\0" * 512)),
        "unreadable",
    )
    add(
        "rows x columns huge, tiny payload",
        dicom_bytes(chest, extra=_set(Rows=65535, Columns=65535)),
        "too-large",
    )
    add(
        "rows x columns larger than payload",
        dicom_bytes(chest, extra=_set(Rows=4000, Columns=4000)),
        "unreadable",
    )
    add("many frames", dicom_bytes(chest, extra=_set(NumberOfFrames=5000)), "too-large")
    frames = np.concatenate([chest[:64, :64]] * 3).astype(np.uint16)
    add(
        "three frames",
        dicom_bytes(frames[:64], extra=lambda ds: _frames(ds, frames)),
        "multi-frame",
    )
    for bits in (1, 32, 64):
        attrs = _set(BitsAllocated=bits, BitsStored=min(bits, 16), HighBit=min(bits, 16) - 1)
        add(
            f"{bits} bits allocated",
            dicom_bytes(chest, extra=attrs),
            "unsupported-pixels",
            "unreadable",
        )
    rgb = np.stack([chest] * 3, axis=-1).astype(np.uint8)
    add("colour RGB", dicom_bytes(chest, extra=lambda ds: _rgb(ds, rgb)), "colour")
    add("float pixels", dicom_bytes(None, extra=_float_pixels), "unsupported-pixels")
    for uid, label in (
        ("1.2.840.10008.1.2.4.102", "H.264"),
        ("1.2.840.10008.1.2.4.100", "MPEG2"),
    ):
        add(f"compressed without a decoder ({label})", _encapsulated(chest, uid), "no-decoder")
    add("wrong modality CT", dicom_bytes(chest, modality="CT"), "not-cr-dx")
    add("wrong body part", dicom_bytes(chest, extra=_set(BodyPartExamined="HAND")), "not-chest")
    add("lateral view", dicom_bytes(chest, extra=_set(ViewPosition="LL")), "lateral-view")
    add("DICOMDIR", _dicomdir(), "no-image", "unreadable")
    add("deep sequences (50)", _deep_sequences(good, 50), None, "unreadable")
    add("deep sequences (5000)", _deep_sequences(good, 5000), None, "unreadable")
    add("100 MB private tag", dicom_bytes(chest, extra=_big_private), None)
    add("tiny image", dicom_bytes(chest[::16, ::16].copy()), "too-small")
    add(
        "inverted polarity label",
        dicom_bytes(chest, photometric="MONOCHROME1"),
        "out-of-distribution",
    )
    return cases


def _frames(ds: Any, frames: NDArray[np.uint16]) -> None:
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()


def _rgb(ds: Any, rgb: NDArray[np.uint8]) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()


def _float_pixels(ds: Any) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros((32, 32), dtype="<f4").tobytes()


def _encapsulated(pixels: NDArray[np.uint16], syntax: str) -> bytes:
    from pydicom.encaps import encapsulate

    def apply(ds: Any) -> None:
        ds.PixelData = encapsulate([b"\xff\x0a" + b"\0" * 64])
        ds["PixelData"].VR = "OB"

    return dicom_bytes(pixels, transfer_syntax=syntax, extra=apply)


def _dicomdir() -> bytes:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["dicomdir"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "TONLE"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence([])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _deep_sequences(good: bytes, depth: int) -> bytes:
    """Splice ``depth`` nested undefined-length sequences in before the pixel data."""
    seq = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"  # (0040,A730) ContentSequence
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    seq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    nested = (seq + item) * depth + (item_end + seq_end) * depth
    at = good.find(b"\xe0\x7f\x10\x00")
    return good[:at] + nested + good[at:]


def _big_private(ds: Any) -> None:
    block = ds.private_block(0x0011, "TONLE TEST", create=True)
    block.add_new(0x01, "OB", b"\0" * 100_000_000)


def bad_image_cases() -> list[BadInput]:
    """Malformed or unsuitable PNG/JPEG inputs (docs/reliability.md image list)."""
    chest = (_chest() * 255).astype(np.uint8)
    grey = Image.fromarray(chest, "L")
    good = png_bytes(grey)
    cases: list[BadInput] = []

    def add(name: str, data: bytes, *reasons: str | None) -> None:
        cases.append(BadInput(name, data, frozenset(reasons), media="image"))

    add("valid 8-bit PNG", good, None)
    add("valid JPEG", png_bytes(grey, "JPEG"), None)
    add("valid 16-bit PNG", png_bytes(Image.fromarray(chest.astype(np.uint16) * 257)), None)
    add("grey stored as RGB", png_bytes(grey.convert("RGB")), None)
    add("grey palette", png_bytes(grey.convert("P")), None)
    add("opaque alpha", png_bytes(grey.convert("LA")), None)
    add("decompression bomb", _bomb_png(100_000, 100_000), "too-large")
    for cut in (20, 60, len(good) // 2):
        add(f"truncated PNG at {cut}", good[:cut], "unreadable")
    add("non-image text", b"this is not an image\n" * 20, "unreadable")
    add("PDF", b"%PDF-1.4\n" + b"0" * 500, "unreadable")
    add("GIF", png_bytes(grey, "GIF"), "unreadable")
    cmyk = Image.merge("CMYK", [grey] * 4)
    add("CMYK JPEG", png_bytes(cmyk, "JPEG"), "colour")
    rgb = np.stack([chest, chest // 2, 255 - chest], axis=-1)
    add("colour photo-like", png_bytes(Image.fromarray(rgb, "RGB")), "colour")
    add("colour palette", png_bytes(Image.fromarray(rgb, "RGB").convert("P")), "colour")
    alpha = grey.convert("LA")
    alpha.putalpha(Image.fromarray((np.arange(256)[None, :] * np.ones((256, 1))).astype(np.uint8)))
    add("transparent alpha", png_bytes(alpha), "unsupported-pixels")
    add("1-bit", png_bytes(grey.convert("1")), "unsupported-pixels", "out-of-distribution")
    add("tiny image", png_bytes(grey.resize((16, 16))), "too-small")
    return cases


def bomb_cases() -> list[BadInput]:
    """Small files whose codestream declares far more pixels than the DICOM header.

    Rows x Columns say 512 x 512 (well under any pixel limit), but the JPEG 2000 SIZ
    marker declares 20000 x 20000 and the JPEG SOF marker 30000 x 30000: a decoder that
    trusts the codestream allocates gigabytes. The RGB PNG is valid and just under the
    default pixel limit (6300 x 6300 grey stored as RGB, about 130 KB), so decoding it
    must not make full-size copies in wide types.
    """
    chest = _chest((512, 512))
    j2k = _patch_j2k_size(_j2k_dicom(_u16(chest)), 20_000, 20_000)
    jpeg = _patch_jpeg_size(_jpeg_dicom((chest * 255).astype(np.uint8)), 30_000, 30_000)
    big = Image.fromarray(np.full((6300, 6300), 90, dtype=np.uint8), "L").convert("RGB")
    return [
        BadInput("JPEG 2000 declaring 20000 x 20000", j2k, frozenset({"size-mismatch"})),
        BadInput("JPEG baseline declaring 30000 x 30000", jpeg, frozenset({"size-mismatch"})),
        BadInput(
            "6300 x 6300 grey PNG stored as RGB",
            png_bytes(big),
            frozenset({"out-of-distribution"}),
            media="image",
        ),
    ]


def _j2k_dicom(pixels: NDArray[np.uint16]) -> bytes:
    from training.cxr_synthetic_dicom import jpeg2000_lossless

    return jpeg2000_lossless(dicom_bytes(pixels, bits_stored=12))


def _jpeg_dicom(pixels: NDArray[np.uint8]) -> bytes:
    """A baseline JPEG (Pillow) encapsulated as transfer syntax 1.2.840.10008.1.2.4.50."""
    from pydicom.encaps import encapsulate

    frame = png_bytes(Image.fromarray(pixels, "L"), "JPEG")

    def apply(ds: Any) -> None:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"

    return dicom_bytes(pixels, transfer_syntax="1.2.840.10008.1.2.4.50", extra=apply)


def _patch_j2k_size(data: bytes, rows: int, cols: int) -> bytes:
    """Rewrite Xsiz / Ysiz (and the one tile's size) in the SIZ marker after SOC."""
    at = data.index(b"\xff\x4f\xff\x51")
    siz = struct.pack(">II", cols, rows)
    tile = struct.pack(">II", cols, rows)
    return data[: at + 8] + siz + data[at + 16 : at + 24] + tile + data[at + 32 :]


def _patch_jpeg_size(data: bytes, rows: int, cols: int) -> bytes:
    """Rewrite Y / X in the baseline SOF0 marker."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", rows, cols) + data[at + 9 :]


# pydicom's bundled test files used as fuzzing seeds (shipped in the wheel: no download).
PYDICOM_SEEDS = (
    "JPEG2000.dcm",  # JPEG 2000, 1024 x 256, 16-bit
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG-lossy.dcm",  # JPEG extended 12-bit
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
    "MR_small_RLE.dcm",  # RLE lossless
    "CT_small.dcm",  # native little endian
)


def fuzz_seeds() -> dict[str, tuple[bytes, str]]:
    """Valid files of every container and codec we read: name -> (bytes, media)."""
    from pydicom.data import get_testdata_file

    chest = _chest((256, 256))
    grey = Image.fromarray((chest * 255).astype(np.uint8), "L")
    seeds = {
        "native DICOM": (dicom_bytes(_u16(chest), bits_stored=12), "dicom"),
        "JPEG 2000 DICOM": (_j2k_dicom(_u16(chest)), "dicom"),
        "JPEG DICOM": (_jpeg_dicom((chest * 255).astype(np.uint8)), "dicom"),
        "PNG": (png_bytes(grey), "image"),
        "16-bit PNG": (png_bytes(Image.fromarray(_u16(chest) * 16)), "image"),
        "JPEG": (png_bytes(grey, "JPEG"), "image"),
    }
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name)
        if path is None:
            raise FileNotFoundError(f"pydicom test file {name} is not installed")
        with open(path, "rb") as handle:
            seeds[f"pydicom {name}"] = (handle.read(), "dicom")
    return seeds


def mutated_corpus(seed: int = 0, per_seed: int = 24) -> list[BadInput]:
    """Mutants of :func:`fuzz_seeds`: declared sizes, truncation, bit flips, splices.

    Deterministic for a given ``seed``; ``per_seed`` mutants of each seed file. The
    expected reasons are left empty: any 2xx or 4xx answer is acceptable, a 5xx or a
    large memory peak is not.
    """
    rng = np.random.default_rng(seed)
    corpus: list[BadInput] = []
    for name, (data, media) in fuzz_seeds().items():
        for i in range(per_seed):
            kind = _MUTATIONS[i % len(_MUTATIONS)]
            mutant = kind(bytearray(data), rng)
            corpus.append(BadInput(f"{name} / {kind.__name__[1:]} {i}", mutant, frozenset(), media))
    return corpus


def _size(rng: np.random.Generator) -> int:
    return int(rng.choice([0, 1, 7, 255, 4096, 20_000, 65_535, 1 << 20, (1 << 31) - 1]))


def _declared_size(data: bytearray, rng: np.random.Generator) -> bytes:
    """Rewrite the first declared size found: PNG IHDR, J2K SIZ, JPEG SOF, DICOM Rows."""
    rows, cols = _size(rng), _size(rng)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        data[16:24] = struct.pack(">II", cols, rows)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
        return bytes(data)
    at = data.find(b"\xff\x4f\xff\x51")
    if at >= 0:
        data[at + 8 : at + 16] = struct.pack(">II", cols, rows)
        return bytes(data)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", rows & 0xFFFF, cols & 0xFFFF)
            return bytes(data)
    return _dicom_rows(data, rng)


def _dicom_rows(data: bytearray, rng: np.random.Generator) -> bytes:
    tag = b"\x28\x00\x10\x00" if rng.random() < 0.5 else b"\x28\x00\x11\x00"
    at = data.find(tag)
    if at >= 0:
        value = at + 8  # after tag, VR and length (explicit) or tag and length (implicit)
        data[value : value + 2] = struct.pack("<H", _size(rng) & 0xFFFF)
    return bytes(data)


def _truncated(data: bytearray, rng: np.random.Generator) -> bytes:
    return bytes(data[: int(rng.integers(0, len(data)))])


def _bit_flips(data: bytearray, rng: np.random.Generator) -> bytes:
    for at in rng.integers(0, len(data), size=int(rng.integers(1, 16))):
        data[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


def _header_bytes(data: bytearray, rng: np.random.Generator) -> bytes:
    """Random bytes over part of the first 1 KB, where every header lives."""
    at = int(rng.integers(0, min(len(data), 1024)))
    size = int(rng.integers(1, 16))
    data[at : at + size] = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
    return bytes(data)


def _spliced(data: bytearray, rng: np.random.Generator) -> bytes:
    """Cut out or repeat a slice (lengths and offsets then point elsewhere)."""
    at = int(rng.integers(0, len(data)))
    size = int(rng.integers(1, 4096))
    if rng.random() < 0.5:
        del data[at : at + size]
    else:
        data[at:at] = data[at : at + size] * int(rng.integers(1, 8))
    return bytes(data)


_MUTATIONS: tuple[Callable[[bytearray, np.random.Generator], bytes], ...] = (
    _declared_size,
    _truncated,
    _bit_flips,
    _header_bytes,
    _spliced,
    _dicom_rows,
)


def out_of_scope_pixel_cases(seed: int = 0, size: int = 256) -> list[BadInput]:
    """Greyscale PNGs that decode fine but are not frontal chest radiographs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chest = _chest((size, size), seed)
    images: dict[str, NDArray[Any]] = {
        "flat grey": np.full((size, size), 0.5),
        "black": np.zeros((size, size)),
        "white": np.ones((size, size)),
        "uniform noise": rng.random((size, size)),
        "horizontal gradient": xx,
        "vertical gradient": yy,
        "checkerboard": ((xx * 8).astype(int) + (yy * 8).astype(int)) % 2 * 0.8 + 0.1,
        "inverted chest": 1.0 - chest,
        "chest rotated 90 degrees": np.rot90(chest),
        "document": _document(rng, size),
        "skull-like disc": _disc(xx, yy),
        "hand-like": _hand(xx, yy),
        "abdomen-like": _abdomen(rng, xx, yy),
        "smooth blobs": _blobs(rng, size),
    }
    return [
        BadInput(
            name,
            png_bytes(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "L")),
            frozenset({"out-of-distribution"}),
            media="image",
        )
        for name, img in images.items()
    ]


def _document(rng: np.random.Generator, size: int) -> NDArray[Any]:
    page = np.full((size, size), 0.95)
    for row in range(20, size - 20, 12):
        cols = rng.integers(20, size - 40)
        page[row : row + 5, 20:cols] = 0.1
    return page


def _disc(xx: NDArray[Any], yy: NDArray[Any]) -> NDArray[Any]:
    r = np.hypot(xx - 0.5, yy - 0.5)
    return np.asarray(np.where(r < 0.4, 0.3, 0.0) + np.where(np.abs(r - 0.4) < 0.03, 0.6, 0.0))


def _hand(xx: NDArray[Any], yy: NDArray[Any]) -> NDArray[Any]:
    """A hand-like silhouette: palm low and right of centre, five splayed fingers."""
    palm = ((xx - 0.62) / 0.2) ** 2 + ((yy - 0.72) / 0.18) ** 2 < 1
    fingers = np.zeros(xx.shape, dtype=bool)
    for angle in (-0.9, -0.35, -0.1, 0.15, 0.4):
        dx, dy = np.sin(angle), -np.cos(angle)
        t = (xx - 0.62) * dx + (yy - 0.62) * dy
        perp = np.abs((xx - 0.62) * dy - (yy - 0.62) * dx)
        fingers |= (t > 0) & (t < 0.42) & (perp < 0.035)
    bones = (fingers | palm) * (0.55 + 0.25 * (np.sin(yy * 60) > 0.8))
    return np.asarray(0.05 + bones)


def _abdomen(rng: np.random.Generator, xx: NDArray[Any], yy: NDArray[Any]) -> NDArray[Any]:
    body = np.abs(xx - 0.5) < 0.42
    gas = (np.sin(xx * 30 + rng.uniform(0, 6)) * np.sin(yy * 25) > 0.6) & (xx > 0.55)
    return np.asarray(0.05 + body * (0.6 - 0.35 * gas))


def _blobs(rng: np.random.Generator, size: int) -> NDArray[Any]:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random((size, size)), size / 12)
    return np.asarray((noise - noise.min()) / (np.ptp(noise) + 1e-9))
