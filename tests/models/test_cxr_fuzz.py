"""Property-based fuzzing of the chest X-ray decoders: mutated DICOM (native, JPEG,
JPEG 2000, RLE), PNG and JPEG bytes either decode or raise ImageError with a known
reason; nothing else."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models.cxr_preprocess import DECODE_REASONS, ImageError, decode_image, to_model_input
from models.cxr_quality import QUALITY_REASONS, assess
from training.cxr_bad_inputs import dicom_bytes, fuzz_seeds, png_bytes

_RNG = np.random.default_rng(0)
_PIXELS = (_RNG.random((48, 40)) * 4095).astype(np.uint16)
SEEDS = {
    "dicom": dicom_bytes(_PIXELS, bits_stored=12),
    "png": png_bytes(Image.fromarray((_PIXELS >> 4).astype(np.uint8))),
    # JPEG 2000, JPEG and RLE DICOM, JPEG and 16-bit PNG, and pydicom's own test files.
    **{name: data for name, (data, _) in fuzz_seeds().items()},
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutated())
def test_mutated_inputs_decode_or_give_a_reason(data: bytes) -> None:
    decoded, reason = None, None
    try:
        decoded = decode_image(data, max_pixels=4_000_000, target_size=32)
    except ImageError as exc:
        reason = exc.reason
    if decoded is None:
        assert reason in DECODE_REASONS
    else:
        result = assess(decoded, min_side=16)
        assert result.ok or result.reason in QUALITY_REASONS
        model_input = to_model_input(decoded, 32)
        assert model_input.shape == (1, 32, 32)
        assert np.isfinite(model_input).all()
