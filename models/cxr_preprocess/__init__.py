"""One chest X-ray preprocessing, used by training and serving alike (contract C7).

``decode_dicom`` / ``decode_png`` turn file bytes into a :class:`DecodedImage`: a
float32 2-D array in [0, 1] where white means dense (MONOCHROME2), plus the header
attributes the quality gate needs. ``to_model_input`` turns that into the network's
``[1, S, S]`` input. The steps, in order:

1. DICOM is parsed with pydicom's strict reading (``reading_validation_mode = RAISE``
   for this call only) and never with ``force=True``. Rows x Columns x frames is
   checked against ``max_pixels`` and against the pixel data's length *before* any
   pixel is decoded, so a huge header on a tiny payload costs nothing. A compressed
   frame must declare that same size in its own headers (JPEG SOF, JPEG-LS SOF55,
   JPEG 2000 SIZ; RLE segments may not expand past it), else it is refused as
   ``size-mismatch`` before a decoder allocates (:mod:`~models.cxr_preprocess.codestream`).
   PNG / JPEG files are checked on the size Pillow reads from IHDR / SOF.
2. When the caller gives ``target_size`` (serving passes the model input size) the
   image is decoded at a reduced resolution: JPEG 2000 at a wavelet resolution level
   (Pillow's ``reduce``: about 20x less work than a full decode), uncompressed pixels
   and PNG / JPEG by an integer block average (PNG / JPEG band by band, never a
   full-size copy in a wider type). The reduced image is never smaller than
   ``target_size`` on its short side.
3. Modality rescale (slope/intercept), then the VOI LUT sequence or the first
   window (DICOM PS3.3 C.11.2.1.2, LINEAR or SIGMOID), else the 0.5-99.5th
   percentiles of the image. MONOCHROME1 is inverted.
4. ``to_model_input``: area downsample straight to ``S x S`` (the aspect ratio is not
   kept; every dataset is handled the same way), values stay in [0, 1].

Steps 3 and 4 work on the reduced image; the averaging commutes with the linear
rescale, and training and serving take the same path, so there is no skew.

Failures raise :class:`ImageError` with a machine-readable ``reason`` (see
:data:`DECODE_REASONS`).

Modules: :mod:`~models.cxr_preprocess.image` (the decoded-image type and errors),
:mod:`~models.cxr_preprocess.dicom` (DICOM header, rescale, window) with
:mod:`~models.cxr_preprocess.dicom_pixels` (locating and reduced decoding of the pixel
data) and :mod:`~models.cxr_preprocess.codestream` (declared sizes of compressed
frames), :mod:`~models.cxr_preprocess.raster` (PNG / JPEG) and
:mod:`~models.cxr_preprocess.transform` (area resize, windows, model input).
"""

from __future__ import annotations

from models.cxr_preprocess.dicom import decode_dicom
from models.cxr_preprocess.image import (
    DECODE_REASONS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageError,
)
from models.cxr_preprocess.raster import decode_png
from models.cxr_preprocess.transform import (
    NORMALISATION,
    area_resize,
    image_spec,
    to_model_input,
)

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
    return decode_png(data, max_pixels=max_pixels, target_size=target_size)
