"""What a compressed pixel stream declares about itself, read before any decoder runs.

A decoder allocates for the size its codestream declares, not for the DICOM header's
Rows x Columns: a 12 KB JPEG 2000 frame declaring 20000 x 20000 costs gigabytes. The
functions here read only marker headers (no entropy decoding, no allocation beyond the
input) so :func:`check_frame` can refuse such a frame first:

* JPEG (ISO 10918-1, baseline to lossless, hierarchical) and JPEG-LS (ISO 14495-1):
  every SOFn / SOF55 / DHP marker segment, walking the markers and skipping
  entropy-coded data.
* JPEG 2000 and HTJ2K (ISO 15444-1/-15): the SIZ marker segment right after SOC, in a
  bare codestream or inside a JP2 file's ``jp2c`` box.
* RLE Lossless (DICOM PS3.5 Annex G): the decoded length of every segment, counted
  without decoding.

:func:`file_meta_syntax` reads the transfer syntax without pydicom, which inflates a
deflated data set (whole-data-set zlib, a zip bomb in waiting) in one call while it
reads the header.
"""

from __future__ import annotations

import itertools
import struct

from models.cxr_preprocess.image import ImageError

__all__ = [
    "DEFLATED_SYNTAX",
    "JPEG_2000_SYNTAXES",
    "JPEG_SYNTAXES",
    "RLE_SYNTAX",
    "check_frame",
    "file_meta_syntax",
    "j2k_codestream",
    "j2k_size",
    "jpeg_size",
    "rle_segment_lengths",
]

JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # baseline
        "1.2.840.10008.1.2.4.51",  # extended (12-bit)
        "1.2.840.10008.1.2.4.57",  # lossless
        "1.2.840.10008.1.2.4.70",  # lossless, first-order prediction
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    }
)
JPEG_2000_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
RLE_SYNTAX = "1.2.840.10008.1.2.5"
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"

# SOF0-3, 5-7, 9-11, 13-15, SOF55 (JPEG-LS) and DHP (hierarchical image size).
_FRAME_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)})
_FRAME_MARKERS |= frozenset({*range(0xCD, 0xD0), 0xF7, 0xDE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI
_SOS, _EOI = 0xDA, 0xD9
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= frozenset({b"UR", b"UT", b"UV"})


def _unreadable(detail: str) -> ImageError:
    return ImageError("unreadable", detail)


def jpeg_size(frame: bytes) -> list[tuple[int, int, int]]:
    """(rows, columns, components) of every frame header in a JPEG / JPEG-LS stream.

    Raises:
        ImageError: ``unreadable`` when the stream does not start with SOI, a marker
            segment is cut short, or no frame header comes before the first scan.
    """
    if frame[:2] != b"\xff\xd8":
        raise _unreadable("the JPEG frame does not start with an SOI marker")
    sizes: list[tuple[int, int, int]] = []
    pos, end = 2, len(frame)
    while pos < end:
        if frame[pos] != 0xFF:
            raise _unreadable(f"no JPEG marker at byte {pos} of the frame")
        while pos < end and frame[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = frame[pos]
        pos += 1
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        if pos + 2 > end:
            raise _unreadable("the JPEG frame ends inside a marker segment")
        (length,) = struct.unpack_from(">H", frame, pos)
        if length < 2 or pos + length > end:
            raise _unreadable(f"JPEG marker 0xFF{marker:02X} has length {length}")
        if marker in _FRAME_MARKERS:
            if length < 8:
                raise _unreadable(f"JPEG frame header of {length} bytes")
            rows, cols, components = struct.unpack_from(">HHB", frame, pos + 3)
            sizes.append((rows, cols, components))
        pos += length
        if marker == _SOS:
            if not sizes:
                raise _unreadable("a JPEG scan comes before any frame header")
            pos = _skip_entropy_data(frame, pos)
    if not sizes:
        raise _unreadable("the JPEG frame has no frame header (SOF)")
    return sizes


def _skip_entropy_data(frame: bytes, pos: int) -> int:
    """The offset of the next marker after entropy-coded data starting at ``pos``.

    In entropy-coded data 0xFF is followed by a stuffed 0x00 or a restart marker; in
    JPEG-LS by a byte with its high bit clear. Anything else is the next marker.
    """
    while True:
        pos = frame.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(frame):
            return len(frame)
        following = frame[pos + 1]
        if following < 0x80 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1
            continue
        return pos


def j2k_size(frame: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from the SIZ marker of a JPEG 2000 frame.

    Accepts a bare codestream (SOC first) or a JP2 file (the codestream in its
    ``jp2c`` box). Component subsampling (XRsiz / YRsiz other than 1) is refused.

    Raises:
        ImageError: ``unreadable`` for a missing or malformed SIZ marker.
    """
    codestream = j2k_codestream(frame)
    if len(codestream) < 40 or codestream[:4] != b"\xff\x4f\xff\x51":
        raise _unreadable("the JPEG 2000 frame does not start with SOC and SIZ markers")
    (length,) = struct.unpack_from(">H", codestream, 4)
    xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz = struct.unpack_from(">6I", codestream, 8)
    (components,) = struct.unpack_from(">H", codestream, 40)
    if length != 38 + 3 * components or len(codestream) < 4 + length or components < 1:
        raise _unreadable(f"JPEG 2000 SIZ marker of {length} bytes for {components} components")
    if xosiz >= xsiz or yosiz >= ysiz or xtsiz < 1 or ytsiz < 1:
        raise _unreadable("JPEG 2000 SIZ marker with an empty image or tile")
    for c in range(components):
        dx, dy = codestream[43 + 3 * c], codestream[44 + 3 * c]
        if (dx, dy) != (1, 1):
            raise _unreadable(f"JPEG 2000 component {c} is subsampled ({dx} x {dy})")
    return ysiz - yosiz, xsiz - xosiz, components


def j2k_codestream(data: bytes) -> bytes:
    """The JPEG 2000 codestream: ``data`` itself, or its ``jp2c`` box for a JP2 file.

    Raises:
        ImageError: ``unreadable`` for a JP2 file without a codestream box.
    """
    if data[4:8] != b"jP  ":
        return data
    pos = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > len(data):
                break
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:
            length = len(data) - pos
        if length < header:
            break
        if kind == b"jp2c":
            return data[pos + header : pos + length]
        pos += length
    raise _unreadable("the JP2 file has no contiguous codestream box")


def rle_segment_lengths(frame: bytes, limit: int) -> list[int]:
    """Decoded length of each segment of a DICOM RLE frame, counting up to ``limit``.

    A PackBits run of two bytes expands to 128, so a small frame can decode to far
    more than Rows x Columns; counting first keeps the decoder from building it.

    Raises:
        ImageError: ``unreadable`` for a malformed header, ``size-mismatch`` when a
            segment decodes to more than ``limit`` bytes.
    """
    if len(frame) < 64:
        raise _unreadable("the RLE frame is shorter than its 64-byte header")
    header = struct.unpack_from("<16I", frame, 0)
    count = header[0]
    if not 1 <= count <= 15:
        raise _unreadable(f"RLE header lists {count} segments")
    offsets = [*header[1 : count + 1], len(frame)]
    lengths = []
    for start, stop in itertools.pairwise(offsets):
        if not 64 <= start <= stop <= len(frame):
            raise _unreadable(f"RLE segment offsets {start}..{stop} are out of order")
        lengths.append(_packbits_length(frame, start, stop, limit))
    return lengths


def _packbits_length(data: bytes, pos: int, stop: int, limit: int) -> int:
    total = 0
    while pos < stop:
        n = data[pos]
        if n < 128:  # copy the next n + 1 bytes literally
            total += n + 1
            pos += n + 2
        elif n > 128:  # repeat the next byte 257 - n times
            total += 257 - n
            pos += 2
        else:
            pos += 1
        if total > limit:
            raise ImageError(
                "size-mismatch", f"an RLE segment decodes to more than the {limit} bytes expected"
            )
    return total


def check_frame(syntax: str, frame: bytes, rows: int, cols: int, bytes_per_sample: int) -> None:
    """Refuse a compressed frame whose declared size is not the header's Rows x Columns.

    Args:
        syntax: the transfer syntax UID.
        frame: the first frame's bytes (all its fragments joined).
        rows: the data set's Rows.
        cols: the data set's Columns.
        bytes_per_sample: BitsAllocated / 8 (RLE segments hold one byte plane each).

    Raises:
        ImageError: ``size-mismatch`` when the codestream declares another size or more
            than one component; ``unreadable`` when its headers cannot be read.
    """
    if syntax in JPEG_SYNTAXES:
        # Hierarchical JPEG: DHP gives the image size, later frames may be smaller.
        sizes = jpeg_size(frame)
        first = sizes[0]
        if first != (rows, cols, 1) or any(r > rows or c > cols for r, c, _ in sizes):
            _mismatch("JPEG", first, rows, cols)
    elif syntax in JPEG_2000_SYNTAXES:
        size = j2k_size(frame)
        if size != (rows, cols, 1):
            _mismatch("JPEG 2000", size, rows, cols)
    elif syntax == RLE_SYNTAX:
        lengths = rle_segment_lengths(frame, rows * cols + 1)
        if len(lengths) != bytes_per_sample:
            raise ImageError(
                "size-mismatch",
                f"{len(lengths)} RLE segments for {bytes_per_sample}-byte samples",
            )


def _mismatch(kind: str, size: tuple[int, int, int], rows: int, cols: int) -> None:
    raise ImageError(
        "size-mismatch",
        f"the {kind} codestream declares {size[0]} x {size[1]} with {size[2]} components; "
        f"the DICOM header says {rows} x {cols} with 1",
    )


def file_meta_syntax(data: bytes) -> tuple[str, int]:
    """(transfer syntax UID, offset where the data set starts) of a DICOM Part 10 file.

    Reads the group 0002 elements (always explicit VR little endian) after ``DICM``
    without pydicom, which would inflate a deflated data set while reading them.
    """
    pos, syntax = 132, ""
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        element = int.from_bytes(data[pos + 2 : pos + 4], "little")
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            length = int.from_bytes(data[pos + 8 : pos + 12], "little")
            value = pos + 12
        else:
            length = int.from_bytes(data[pos + 6 : pos + 8], "little")
            value = pos + 8
        if element == 0x0010:
            syntax = data[value : value + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = value + length
    return syntax, pos
