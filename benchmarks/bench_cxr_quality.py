"""Quality-gate refusal rates and decode timings for chest X-ray inputs.

Prints, for one run:

* the refusal rate on in-scope synthetic radiographs (target ~0 %), by reason, and
  the range of each out-of-distribution statistic over them;
* the refusal rate on out-of-scope and malformed inputs (target ~100 %), by case;
* decode + preprocessing time for a 2500 x 3000 16-bit radiograph, uncompressed and
  JPEG 2000 (reduced-resolution decode), and the agreement of the two model inputs.

Usage: .venv/bin/python benchmarks/bench_cxr_quality.py [--n 300] [--size 512] [--seed 5]
Optionally --folder DIR runs the gate over your own in-scope images (DICOM/PNG/JPEG).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from models.cxr_preprocess import ImageError, decode_dicom, decode_image, to_model_input
from models.cxr_quality import assess, pixel_statistics
from training.cxr_bad_inputs import bad_dicom_cases, bad_image_cases, out_of_scope_pixel_cases
from training.cxr_synthetic import generate, render_case, write_dicom
from training.cxr_synthetic_dicom import jpeg2000_lossless


def screen(data: bytes) -> tuple[str | None, dict[str, float] | None]:
    try:
        decoded = decode_image(data, target_size=224)
    except ImageError as exc:
        return exc.reason, None
    result = assess(decoded)
    return (None if result.ok else result.reason), pixel_statistics(decoded.pixels)


def in_scope(files: list[Path]) -> None:
    reasons: Counter[str] = Counter()
    stats: list[dict[str, float]] = []
    for path in files:
        reason, st = screen(path.read_bytes())
        reasons[reason or "accepted"] += 1
        if st:
            stats.append(st)
    refused = sum(v for k, v in reasons.items() if k != "accepted")
    print(f"in-scope images: {len(files)}; refused {refused} ({refused / len(files):.1%})")
    for reason, count in sorted(reasons.items()):
        print(f"  {reason:<22} {count}")
    print("  OOD statistics over them (min / median / max):")
    for key in stats[0] if stats else []:
        values = [s[key] for s in stats]
        print(
            f"    {key:<12} {min(values):7.3f} {statistics.median(values):7.3f} {max(values):7.3f}"
        )


def out_of_scope() -> None:
    cases = [c for c in bad_dicom_cases() + bad_image_cases() + out_of_scope_pixel_cases()]
    should_refuse = [c for c in cases if None not in c.expected]
    should_accept = [c for c in cases if None in c.expected]
    refused, matched, slowest = 0, 0, 0.0
    print(f"\nout-of-scope / malformed inputs: {len(should_refuse)}")
    for case in should_refuse:
        start = time.perf_counter()
        reason, _ = screen(case.data)
        slowest = max(slowest, time.perf_counter() - start)
        refused += reason is not None
        matched += reason in case.expected
        print(f"  {case.name:<40} -> {reason}")
    print(
        f"refused {refused}/{len(should_refuse)} ({refused / len(should_refuse):.1%}); "
        f"with the expected reason {matched}/{len(should_refuse)}; slowest {slowest * 1000:.0f} ms"
    )
    answers = [(c, screen(c.data)[0]) for c in should_accept]
    accepted = sum(reason is None for _, reason in answers)
    print(f"valid-but-unusual inputs accepted: {accepted}/{len(should_accept)}")
    for case, reason in answers:
        if reason is not None:
            allowed = "allowed" if reason in case.expected else "NOT allowed"
            print(f"  {case.name} -> {reason} ({allowed})")


def timings(tmp: Path) -> None:
    case = render_case(0, 0, (3000, 2500))
    path = tmp / "big.dcm"
    write_dicom(case, path, seed=0, index=0, patient_id="P", site="s", bits_stored=16)
    plain = path.read_bytes()
    j2k = jpeg2000_lossless(plain)
    print("\n2500 x 3000 16-bit radiograph -> [1, 224, 224] (median of 7, ms):")
    inputs = {}
    for label, data, target in (
        ("uncompressed, full decode", plain, None),
        ("uncompressed, target_size=224", plain, 224),
        ("JPEG 2000, target_size=224 (reduced)", j2k, 224),
        ("JPEG 2000, full decode", j2k, None),
    ):
        dec, pre = [], []
        repeats = 2 if (data is j2k and target is None) else 7
        for _ in range(repeats):
            t0 = time.perf_counter()
            decoded = decode_dicom(data, target_size=target)
            t1 = time.perf_counter()
            inputs[label] = to_model_input(decoded, 224)
            pre.append((time.perf_counter() - t1) * 1000)
            dec.append((t1 - t0) * 1000)
        print(
            f"  {label:<38} decode {statistics.median(dec):7.1f}  "
            f"to_model_input {statistics.median(pre):5.1f}  ({len(data) / 1e6:.1f} MB)"
        )
    ref = inputs["uncompressed, full decode"]
    for label, arr in inputs.items():
        diff = np.abs(arr - ref)
        print(f"  |{label}| vs full uncompressed: mean {diff.mean():.4f} max {diff.max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder is not None:
            suffixes = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ""}
            files = sorted(
                p for p in args.folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
            )
        else:
            generate(Path(tmp) / "syn", args.n, args.seed, args.size)
            files = sorted((Path(tmp) / "syn" / "images").glob("*.dcm"))
        in_scope(files)
        out_of_scope()
        timings(Path(tmp))


if __name__ == "__main__":
    main()
