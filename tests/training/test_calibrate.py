"""``tonle calibrate cxr``: tables checked against hand-worked and independent counts."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from training.calibrate.cxr import (
    calibrate,
    default_thresholds,
    parse_sampling_fractions,
    parse_thresholds,
)
from training.calibrate.study import StudyError, read_study
from training.calibrate.table import COLUMNS, INTERFACE_COLUMNS, threshold_table, wilson

HEADER = "person_id,score,reference,age,sex,hiv,symptoms"
# Twelve people. Hand-worked at threshold 0.5 (positive = score >= 0.5; p03 sits on it):
# with a reference: cases p01 p02 p03 p05 -> tp 3 (p01 p02 p03), fn 1 (p05);
# non-cases p04 p06 p07 p08 p09 p10 -> fp 1 (p04), tn 5. p11, p12: no reference.
# Referred: p01 p02 p03 p04 p11 = 5 of 12 screened.
ROWS = """\
p01,0.95,1,60,F,1,1
p02,0.80,1,45,M,0,1
p03,0.50,1,30,M,,0
p04,0.70,0,58,F,0,0
p05,0.20,1,70,M,1,1
p06,0.40,0,25,F,0,0
p07,0.10,0,33,M,0,0
p08,0.05,0,61,F,,0
p09,0.30,0,40,M,0,1
p10,0.49,0,52,F,0,0
p11,0.60,,35,M,0,1
p12,0.15,,66,F,1,0
"""


def write(tmp_path: Path, rows: str = ROWS, header: str = HEADER) -> Path:
    path = tmp_path / "study.csv"
    path.write_text(f"{header}\n{rows}", encoding="utf-8")
    return path


def test_hand_worked_row_at_half(tmp_path: Path) -> None:
    study = read_study(write(tmp_path))
    row = calibrate(study, np.array([0.5]), cost_per_test=20.0).overall.row(0)
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (3, 1, 5, 1)
    assert row["sensitivity"] == pytest.approx(3 / 4)
    assert row["specificity"] == pytest.approx(5 / 6)
    assert row["ppv"] == pytest.approx(3 / 4)
    assert row["npv"] == pytest.approx(5 / 6)
    assert row["referred_fraction"] == pytest.approx(5 / 12)
    # 5 referred x PPV 3/4 = 3.75 cases found; 4/3 tests per case; 3.75 per 12 screened.
    assert row["nnt"] == pytest.approx(5 / 3.75)
    assert row["yield_per_1000"] == pytest.approx(1000 * 3.75 / 12)
    assert row["cost_per_case"] == pytest.approx(5 * 20 / 3.75)
    low, high = wilson(np.array(0.75), np.array(4.0))
    assert (row["sensitivity_ci_low"], row["sensitivity_ci_high"]) == (low, high)


def test_wilson_matches_published_interval() -> None:
    # 8 of 10: Wilson 95 % interval 0.490 to 0.943 (Newcombe 1998, Table I).
    low, high = wilson(np.array(0.8), np.array(10.0))
    assert (round(float(low), 3), round(float(high), 3)) == (0.490, 0.943)
    low0, high0 = wilson(np.array(0.0), np.array(0.0))
    assert math.isnan(low0)
    assert math.isnan(high0)


def _independent(
    scores: list[float], refs: list[float | None], t: float, costs: list[float] | None
) -> dict[str, float]:
    """Counts and rates by plain loops, as a person would do them."""
    tp = sum(1 for s, r in zip(scores, refs, strict=True) if r == 1 and s >= t)
    fn = sum(1 for s, r in zip(scores, refs, strict=True) if r == 1 and s < t)
    fp = sum(1 for s, r in zip(scores, refs, strict=True) if r == 0 and s >= t)
    tn = sum(1 for s, r in zip(scores, refs, strict=True) if r == 0 and s < t)
    referred = sum(1 for s in scores if s >= t)
    nan = float("nan")
    ppv = tp / (tp + fp) if tp + fp else nan
    found = referred * ppv if tp + fp else 0.0
    out = {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
        "ppv": ppv,
        "npv": tn / (tn + fn) if tn + fn else nan,
        "referred_fraction": referred / len(scores),
        "nnt": referred / found if found else nan,
        "yield_per_1000": 1000 * found / len(scores),
    }  # fmt: skip
    if costs is not None:
        spent = sum(c for s, c in zip(scores, costs, strict=True) if s >= t)
        out["cost_per_case"] = spent / found if found else nan
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_threshold_equals_an_independent_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    scores = np.round(rng.uniform(0, 1, n), 2)  # ties with the grid on purpose
    refs_arr = np.where(rng.uniform(size=n) < 0.7, (rng.uniform(size=n) < scores), np.nan)
    costs = rng.uniform(5, 30, n)
    table = threshold_table(scores, refs_arr.astype(float), default_thresholds(), costs=costs)
    refs = [None if math.isnan(r) else float(r) for r in refs_arr]
    for i, t in enumerate(default_thresholds()):
        want = _independent(list(scores), refs, float(t), list(costs))
        got = table.row(i)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, nan_ok=True), (t, name)


def test_strata_are_the_table_of_their_members(tmp_path: Path) -> None:
    study = read_study(write(tmp_path))
    calib = calibrate(study, np.array([0.5]))
    groups = {(s.stratum, s.group): s.table.row(0) for s in calib.strata}
    # age >= 55: p01 p04 p05 p08 p12 -> tp p01, fp p04, fn p05, tn p08; p12 unverified.
    old = groups[("age", ">=55")]
    assert (old["tp"], old["fp"], old["tn"], old["fn"], old["screened"]) == (1, 1, 1, 1, 5)
    # HIV unknown: p03 p08 -> tp p03, tn p08.
    unknown = groups[("hiv", "unknown")]
    assert (unknown["tp"], unknown["fp"], unknown["tn"], unknown["fn"]) == (1, 0, 1, 0)
    assert set(groups) >= {("sex", "female"), ("sex", "male"), ("symptoms", "present")}
    assert sum(groups[("sex", g)]["screened"] for g in ("female", "male")) == 12


def _population() -> tuple[np.ndarray, np.ndarray]:
    """1,000 people: 100 scores >= 0.4 (60 cases), 900 below (30 cases)."""
    high = np.linspace(0.4, 1.0, 100)
    low = np.linspace(0.0, 0.39, 900)
    ref_high = np.zeros(100)
    ref_high[::5] = 0  # keeps the shape explicit
    ref_high[:60] = 1
    ref_low = np.zeros(900)
    ref_low[::30] = 1  # 30 cases spread over the low band
    return np.concatenate([high, low]), np.concatenate([ref_high, ref_low])


def test_inverse_probability_weights_remove_verification_bias(tmp_path: Path) -> None:
    scores, truth = _population()
    # Everyone >= 0.4 tested; below 0.4 exactly one in ten of the cases and of the others.
    reference = truth.copy()
    low = np.flatnonzero(scores < 0.4)
    low_cases, low_controls = low[truth[low] == 1], low[truth[low] == 0]
    keep = set(low_cases[::10]) | set(low_controls[::10])
    for i in low:
        if i not in keep:
            reference[i] = np.nan
    path = tmp_path / "study.csv"
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["person_id", "score", "reference", "age", "sex"])
        for i, (s, r) in enumerate(zip(scores, reference, strict=True)):
            w.writerow([f"p{i}", repr(float(s)), "" if math.isnan(r) else int(r), 40, "F"])
    study = read_study(path)
    # IPW is exact here at thresholds that do not cut into the sampled band (within it
    # the deterministic one-in-ten sample is only proportional on average).
    grid = np.array([0.0, 0.4, 0.7])
    full = threshold_table(scores, truth, grid)
    corrected = calibrate(study, grid, bands=parse_sampling_fractions("0:0.1,0.4:1"))
    naive = calibrate(study, grid)
    assert corrected.estimator == "ipw-fractions"
    assert corrected.bias is None
    assert naive.estimator == "verified-only"
    assert "BIASED" in (naive.bias or "")
    for name in ("sensitivity", "specificity", "ppv", "npv", "yield_per_1000"):
        np.testing.assert_allclose(corrected.overall.columns[name], full.columns[name])
    # Verified-only sensitivity at 0.4 is 60/63, the truth 60/90.
    assert naive.overall.row(1)["sensitivity"] == pytest.approx(60 / 63)
    assert full.row(1)["sensitivity"] == pytest.approx(60 / 90)
    # The raw counts stay counts of people with a reference result.
    assert corrected.overall.row(1)["fn"] == 3
    # The same design given as a per-person sampling_weight column.
    rows = path.read_text().splitlines()
    weighted = tmp_path / "weighted.csv"
    lines = [rows[0] + ",sampling_weight"]
    for line, s, r in zip(rows[1:], scores, reference, strict=True):
        weight = "" if math.isnan(r) else ("1" if s >= 0.4 else "10")
        lines.append(f"{line},{weight}")
    weighted.write_text("\n".join(lines) + "\n")
    by_column = calibrate(read_study(weighted), grid)
    assert by_column.estimator == "ipw-weights"
    np.testing.assert_allclose(
        by_column.overall.columns["sensitivity"], full.columns["sensitivity"]
    )


def test_a_design_not_followed_is_called_biased(tmp_path: Path) -> None:
    # Everyone >= 0.4 should have been tested (fraction 1), but only 2 of 4 were.
    rows = "a,0.9,1,40,F\nb,0.8,,40,M\nc,0.5,0,40,M\nd,0.45,,40,F\ne,0.1,0,40,F\n"
    study = read_study(write(tmp_path, rows, "person_id,score,reference,age,sex"))
    calib = calibrate(study, np.array([0.5]), bands=parse_sampling_fractions("0:1,0.4:1"))
    assert calib.estimator == "ipw-fractions"
    assert "scores from 0.4: 1 given, 0.500 tested" in (calib.bias or "")
    followed = calibrate(study, np.array([0.5]), bands=parse_sampling_fractions("0:1,0.4:0.5"))
    assert followed.bias is None


def test_band_without_any_reference_is_refused(tmp_path: Path) -> None:
    rows = "a,0.9,1,40,F\nb,0.1,,40,M\nc,0.2,,40,M\n"
    study = read_study(write(tmp_path, rows, "person_id,score,reference,age,sex"))
    with pytest.raises(StudyError, match="none with a reference"):
        calibrate(study, np.array([0.5]), bands=parse_sampling_fractions("0:0.1,0.4:1"))


@pytest.mark.parametrize(
    ("header", "rows", "where", "message"),
    [
        (HEADER, "p1,0.5,1,40,F,1,1\np1,0.4,0,40,F,1,1\n", "row 3, field 'person_id'", "row 2"),
        (HEADER, "p1,1.5,1,40,F,1,1\n", "row 2, field 'score'", "out of range"),
        (HEADER, "p1,nan,1,40,F,1,1\n", "row 2, field 'score'", "out of range"),
        (HEADER, "p1,0.5,yes,40,F,1,1\n", "row 2, field 'reference'", "1, 0 or empty"),
        (HEADER, "p1,0.5,1,abc,F,1,1\n", "row 2, field 'age'", "not a number"),
        (HEADER, "p1,0.5,1,40,X,1,1\n", "row 2, field 'sex'", "female"),
        (HEADER, "p1,0.5,1,40,F,2,1\n", "row 2, field 'hiv'", "1, 0 or empty"),
        (HEADER, "p1,0.5,1,40,F,1\n", "row 2", "6 fields"),
        (HEADER, ",0.5,1,40,F,1,1\n", "row 2, field 'person_id'", "printable"),
        (HEADER + ",colour", "p1,0.5,1,40,F,1,1,red\n", "row 1, field 'colour'", "unknown"),
        ("person_id,reference,age,sex", "p1,1,40,F\n", "row 1", "exactly one of"),
        ("person_id,score,age,sex", "p1,0.5,40,F\n", "row 1", "reference"),
        (HEADER, "p1,0.5,,40,F,1,1\n", "", "no person has a reference"),
        ("person_id,score,reference,age,sex,sampling_weight", "p1,0.5,1,40,F,0.5\n",
         "row 2, field 'sampling_weight'", "out of range"),
        ("person_id,score,reference,age,sex,sampling_weight", "p1,0.5,,40,F,2\n",
         "row 2, field 'sampling_weight'", "leave it empty"),
    ],
)  # fmt: skip
def test_bad_input_names_line_and_field(
    tmp_path: Path, header: str, rows: str, where: str, message: str
) -> None:
    with pytest.raises(StudyError) as caught:
        read_study(write(tmp_path, rows, header))
    assert str(caught.value).startswith(where)
    assert message in str(caught.value)


def test_hostile_files(tmp_path: Path) -> None:
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StudyError, match="not UTF-8"):
        read_study(binary)
    quoted = write(tmp_path, 'p1,"0.5,1,40,F,1,1\n')
    with pytest.raises(StudyError):
        read_study(quoted)
    with pytest.raises(StudyError, match="empty"):
        read_study(write(tmp_path, "", ""))
    with pytest.raises(StudyError, match="cannot read"):
        read_study(tmp_path / "missing.csv")


def test_threshold_and_band_options() -> None:
    assert list(parse_thresholds("0.3,0.1")) == [0.1, 0.3]
    assert len(default_thresholds()) == 101
    assert default_thresholds()[7] == 0.07
    for bad in ("0.1,abc", "1.2", "0.1,0.1"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    for bad in ("0.1:0.5", "0:0", "0:0.5,0:1", "0-0.5", "0:1.5"):
        with pytest.raises(ValueError):
            parse_sampling_fractions(bad)


def test_columns_are_the_interface() -> None:
    assert INTERFACE_COLUMNS == (
        "threshold", "tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv",
        "referred_fraction", "nnt", "yield_per_1000", "cost_per_case",
    )  # fmt: skip
    assert COLUMNS[: len(INTERFACE_COLUMNS)] == INTERFACE_COLUMNS
    assert COLUMNS[13:15] == ("sensitivity_ci_low", "sensitivity_ci_high")
