"""Chest X-ray model: localisation, calibration and operating points on FRESH data.

Scores a stored ``cxr-triage`` artifact (ONNX, through the serving predictor) on a
synthetic set generated with a seed training never used, and prints:

1. AUROC for "abnormal" with its bootstrap 95 % CI (target >= 0.95);
2. localisation: for the ``abnormal`` map on every positive case (union mask), for
   each finding's own map on every case with that finding (that finding's own mask,
   which the synthetic set has), and pooled over every positive (image, finding) pair,
   the rate at which the upsampled map's peak falls inside the mask (target >= 0.80
   for ``abnormal``) and the mean IoU of the map thresholded at half its range, next
   to two trivial baselines (a map peaking at the image centre; one fixed map of where
   these cases' masks are most often, fitted on the same cases). The definition is
   ``training.cxr_evaluate.PEAK_IN_MASK_DEFINITION``, printed with the table;
3. calibration: ECE of sigmoid(logit) and of the artifact's calibrated probabilities;
4. each label's operating point (chosen on validation data at training time) and the
   sensitivity / specificity it gives here, with an exact 95 % CI for sensitivity
   (target for "abnormal": >= 0.90).

Usage:
    .venv/bin/python benchmarks/bench_cxr_localisation.py --model cxr-triage:0.4.0-demo
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

from models import registry
from training.cxr_data import load_cxr_data
from training.cxr_evaluate import PEAK_IN_MASK_DEFINITION, CxrReport, evaluate_stored
from training.cxr_synthetic import generate


def _f(value: float | None) -> str:
    return "    -" if value is None or value != value else f"{value:.3f}"


def print_report(report: CxrReport) -> None:
    """The localisation, calibration and operating-point tables of ``report``."""
    abnormal = report.label("abnormal").auroc
    print(
        f"AUROC abnormal {_f(abnormal.value)} (95% CI {_f(abnormal.ci_low)}-"
        f"{_f(abnormal.ci_high)}), {abnormal.n_positive} positives of {abnormal.n}; "
        "target >= 0.95"
    )
    print("\nlocalisation: peak in mask / mean IoU (target: abnormal peak in mask >= 0.80)")
    print(f"  {'map':14s} {'cases':>5s}  {'model':>13s}  {'centre':>6s}  {'fixed prior':>13s}")
    for row in report.localisation:
        m, c, p = row.model, row.centre, row.prior
        print(
            f"  {row.finding:14s} {m.n:5d}  {_f(m.peak_in_mask)} / {_f(m.mean_iou)}  "
            f"{_f(c.peak_in_mask):>6s}  {_f(p.peak_in_mask)} / {_f(p.mean_iou)}  {row.cases}"
        )
    print(textwrap.fill(PEAK_IN_MASK_DEFINITION, 88, initial_indent="  ", subsequent_indent="  "))
    print("\ncalibration and operating points (thresholds chosen on validation data)")
    print(
        f"  {'label':14s} {'ECE raw':>7s} {'ECE cal':>7s} {'threshold':>9s} "
        f"{'sensitivity (95% CI)':>22s} {'specificity':>11s} {'AUROC':>6s}"
    )
    for r in report.labels:
        low, high = r.sensitivity_ci or (None, None)
        threshold = "none" if r.threshold is None else f"{r.threshold:.3f}"
        print(
            f"  {r.label:14s} {_f(r.ece_uncalibrated):>7s} {_f(r.ece):>7s} "
            f"{threshold:>9s} {_f(r.sensitivity)} ({_f(low)}-{_f(high)})".ljust(60)
            + f" {_f(r.specificity):>11s} {_f(r.auroc.value):>6s}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cxr-triage:0.4.0-demo", help="NAME:VERSION")
    parser.add_argument("--n", type=int, default=300, help="fresh images")
    parser.add_argument("--seed", type=int, default=20261125, help="fresh set seed")
    parser.add_argument("--data-size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--reps", type=int, default=500, help="AUROC bootstrap replicates")
    args = parser.parse_args()

    name, _, version = args.model.partition(":")
    stored = registry.verify(name, version or "latest")
    if stored.metadata.image is None:
        raise SystemExit(f"{stored.metadata.tag} has no image contract")
    with tempfile.TemporaryDirectory() as tmp:
        labels = generate(Path(tmp) / "fresh", args.n, args.seed, size=args.data_size)
        data = load_cxr_data(labels, stored.metadata.image.size)
        report = evaluate_stored(stored, data, reps=args.reps)
    calibration = stored.metadata.cxr.calibration.method
    print(
        f"model {stored.metadata.tag} ({stored.metadata.cxr.arch or '?'}, calibration "
        f"{calibration}) on {args.n} fresh synthetic images (seed {args.seed}, "
        f"{args.data_size} px)"
    )
    print_report(report)


if __name__ == "__main__":
    main()
