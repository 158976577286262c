"""CPU cost of the X-ray reader's display copy per new read, before and after format 3.

Before (stored format 2): the image was decoded a second time with its short side >= 512
and the result encoded as an 8-bit PNG when the read was made. After (format 3): the
decode that feeds the model also block-sums the stored values it already holds into a
uint16 copy (``display_size``), stored as raw bytes; the gzip for the reader and the
8-bit ``image.png`` are made only when someone opens the read ("GET" columns). A JPEG
2000 frame whose reduced level for the model is too small for the reader is decoded once
more at the level the reader needs, before as after.

Reports median thread CPU-ms over ``--repeat`` runs, in one process and one run (compare
the rows with each other, not with another run), and the load average.

Usage:
    .venv/bin/python benchmarks/bench_cxr_display.py
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.cxr_preprocess import decode_dicom, decode_png  # noqa: E402
from models.cxr_preprocess.display import (  # noqa: E402
    block_sum,
    display_factor,
    display_values,
    from_sums,
    window_sample,
)
from serving.imaging.heatmap import HeatmapSource, display_png  # noqa: E402
from tests.serving.imaging.cxr_fixtures import dicom_bytes, radiograph  # noqa: E402
from training.cxr_synthetic_dicom import jpeg2000_lossless  # noqa: E402

MODEL = 224
DISPLAY = 512


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    """Median thread CPU time of ``work``, ms (one warm-up call first)."""
    work()
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        work()
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times)


def _png16(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    cases = [
        ("DICOM 512x512 16-bit", dicom_bytes(radiograph(512, 512)), decode_dicom),
        ("DICOM 3000x2500 16-bit", dicom_bytes(radiograph(3000, 2500)), decode_dicom),
        ("PNG 3000x2500 16-bit", _png16(radiograph(3000, 2500) * 16), decode_png),
        # The model's JPEG 2000 level is too small for the reader: decoded once more.
        (
            "J2K 3000x2500 12-bit",
            jpeg2000_lossless(dicom_bytes(radiograph(3000, 2500))),
            decode_dicom,
        ),
    ]
    print(f"{'image':24} {'model decode':>12} {'before +':>9} {'after +':>8} "
          f"{'stored kB b/a':>14} {'GET gz/png':>11}")  # fmt: skip
    for name, data, decode in cases:

        def model(data: bytes = data, decode: Callable[..., object] = decode) -> object:
            return decode(data, target_size=MODEL)

        model_only = cpu_ms(model, args.repeat)

        def before(data: bytes = data, decode: Callable[..., object] = decode) -> bytes:
            decode(data, target_size=MODEL)
            second = decode(data, target_size=DISPLAY)
            return display_png(np.asarray(second.pixels, dtype=np.float32))  # type: ignore[attr-defined]

        def after(data: bytes = data, decode: Callable[..., object] = decode) -> bytes:
            decoded = decode(data, target_size=MODEL, display_size=DISPLAY)
            source = HeatmapSource.of(
                np.zeros((MODEL, MODEL), np.float32),
                np.ones((7, 7), np.float32),
                pixels=decoded.display,  # type: ignore[attr-defined]
            )
            return source.encode()

        before_ms = cpu_ms(before, args.repeat) - model_only
        after_ms = cpu_ms(after, args.repeat) - model_only
        stored = HeatmapSource.decode(after(), 3)
        get_gz = cpu_ms(stored.pixels_gzip, args.repeat)
        get_png = cpu_ms(stored.display_png, args.repeat)
        assert stored.pixels is not None
        sizes = f"{len(before()) / 1000:.0f}/{(12 + stored.pixels.values.nbytes) / 1000:.0f}"
        print(
            f"{name:24} {model_only:12.1f} {before_ms:9.1f} {after_ms:8.1f} "
            f"{sizes:>14} {get_gz:5.1f}/{get_png:5.1f}"
        )
    # The copy's block sums by stored bits: 12-bit values sum in uint16, 14-bit rows in
    # uint16 and blocks in uint32, 16-bit both in uint32.
    twelve = radiograph(3000, 2500)  # values < 4096
    k = display_factor(*twelve.shape, DISPLAY)
    for bits, values in ((12, twelve), (14, twelve << 2), (16, twelve << 4)):
        ms = cpu_ms(lambda v=values, b=bits: block_sum(v, k, b), args.repeat)
        print(f"block sums {k} x {k} of 3000x2500, {bits} stored bits: {ms:.2f} CPU-ms")
    # The default window's sample: from_sums reads it off the counts per value (timed
    # whole, its min, max and shift included); numpy's default sort of uint16 is fast
    # only with AVX-512, its stable kind is a radix sort.
    sample = window_sample(display_values(twelve << 2, k, bits=14).values)
    ways: dict[str, Callable[[], Any]] = {
        "from_sums (counts per value)": lambda: from_sums(sample, 1),
        "sort, quicksort": lambda: np.sort(sample, axis=None, kind="quicksort"),
        "sort, stable": lambda: np.sort(sample, axis=None, kind="stable"),
    }
    for way, work in ways.items():
        print(f"default window's sample ({sample.size} values), {way}: "
              f"{cpu_ms(work, args.repeat):.2f} CPU-ms")  # fmt: skip
    with open("/proc/loadavg", encoding="ascii") as handle:
        print(f"load average: {handle.read().strip()}")


if __name__ == "__main__":
    main()
