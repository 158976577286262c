"""The WHO 2019 equations reproduce printed chart cells exactly.

The printed charts are computed at the midpoints of their bands: age 42.5 for 40-44
(the middle of [40, 45)), SBP 110 / 130 / 150 / 170 / 190 mmHg and cholesterol 3.5 /
4.5 / 5.5 / 6.5 / 7.5 mmol/L, rounded to whole percent. The cells come from a public
transcription of the printed lab charts (see the data file's header); all 305 cells
of six regions match.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from models.who_cvd import WhoCvdInputs, list_regions, who_cvd_risk

DATA = Path(__file__).parent / "data" / "who2019_printed_chart_cells.csv"
SBP_MIDPOINTS = {"sbp_ge180": 190, "sbp_160_179": 170, "sbp_140_159": 150,
                 "sbp_120_139": 130, "sbp_lt120": 110}  # fmt: skip
REGION_CODES = {name.lower(): code for code, name in list_regions()}


def _rows() -> list[dict[str, str]]:
    lines = [line for line in DATA.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


ROWS = _rows()


def test_transcription_covers_at_least_three_full_regions() -> None:
    full = {r["region"] for r in ROWS}
    assert len(full) >= 3
    assert sum(len(SBP_MIDPOINTS) for _ in ROWS) >= 300


@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r['region']}-{r['diabetes']}-{r['age']}" for r in ROWS]
)
def test_printed_cells_reproduced_exactly(row: dict[str, str]) -> None:
    low_age = int(row["age"].split("-")[0])
    region = REGION_CODES[row["region"].lower()]
    for column, sbp in SBP_MIDPOINTS.items():
        result = who_cvd_risk(
            WhoCvdInputs(
                sex="male",
                age=low_age + 2.5,
                smoking=False,
                sbp=sbp,
                total_chol=3.5,
                diabetes=row["diabetes"] == "yes",
            ),
            "lab",
            region=region,
        )
        assert result.percent == int(row[column]), (column, result.risk)


def test_age_midpoint_matters() -> None:
    """At the whole-year midpoint (42, 47, ...) printed cells are NOT reproduced: the test
    above would catch a chart computed at the wrong ages."""
    mismatches = 0
    for row in ROWS:
        low_age = int(row["age"].split("-")[0])
        region = REGION_CODES[row["region"].lower()]
        for column, sbp in SBP_MIDPOINTS.items():
            inputs = WhoCvdInputs(sex="male", age=low_age + 2, smoking=False, sbp=sbp,
                                  total_chol=3.5, diabetes=row["diabetes"] == "yes")  # fmt: skip
            mismatches += who_cvd_risk(inputs, "lab", region=region).percent != int(row[column])
    assert mismatches > 20
