"""The WHO 2019 charts as printed: every cell, lab and non-lab, reproduced.

An independent check of the equations and coefficient files: the expected numbers come
from a public transcription of the printed charts (see the data file's header), not from
the coefficient tables the code reads. All 44,100 printed cells are checked: 21 regions,
women and men, smokers and non-smokers, with and without diabetes, every cholesterol and
BMI band and every age band, both through the chart page a clinician sees
(:func:`models.who_chart.grid`) and through the per-patient equation
(:func:`models.who_cvd.who_cvd_risk`) at the printed bands' representative values.

Five of the transcription's cells disagree with the equation, and each is a transcription
slip, shown below to be inconsistent with its own neighbours in the printed chart;
every other cell matches exactly.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.who_chart import AGE_BANDS, BMI_CATEGORIES, CHOL_CATEGORIES, SBP_CATEGORIES, grid
from models.who_cvd import WhoCvdInputs, list_regions, who_cvd_risk

DATA = Path(__file__).parent / "data" / "who2019_printed_charts.csv.gz"
# The data file's SBP columns, highest first as printed, with the chart's SBP labels.
SBP_COLUMNS = {"sbp_ge180": "≥180", "sbp_160_179": "160-179", "sbp_140_159": "140-159",
               "sbp_120_139": "120-139", "sbp_lt120": "<120"}  # fmt: skip
REGION_CODES = {name: code for code, name in list_regions()}
_WHO_SPELLING = {name.lower(): name for name in REGION_CODES}

# (chart, region, sex, smoker, diabetes, band, age, SBP label)
CellKey = tuple[str, str, str, str, str, str, str, str]

# Cells where the transcription disagrees with the equation: printed value -> equation.
TRANSCRIPTION_SLIPS: dict[CellKey, tuple[int, int]] = {
    # Row 37, 26, 21, 21, 18: the 31 is missing and the next two values moved left.
    ("lab", "North Africa and Middle East", "male", "no", "no", "<4", "70-74", "160-179"): (26, 31),
    ("lab", "North Africa and Middle East", "male", "no", "no", "<4", "70-74", "140-159"): (21, 26),
    # 18 is the value of the cell above (55-59); 50-54 rises 11 -> 18 -> 18 with age.
    ("lab", "North Africa and Middle East", "male", "no", "no", "<4", "50-54", "≥180"): (18, 14),
    # Risk cannot rise as SBP falls: 6, 5, 3, 2, 4.
    ("lab", "Eastern Sub-Saharan Africa", "male", "no", "no", "<4", "45-49", "<120"): (4, 2),
    # Risk cannot fall as SBP rises: 11, 14, 11, 9, 7.
    ("nonlab", "Caribbean", "male", "no", "", "<20", "65-69", "≥180"): (11, 18),
}  # fmt: skip


def _printed() -> dict[CellKey, int]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    cells: dict[CellKey, int] = {}
    for row in csv.DictReader(lines):
        region = _WHO_SPELLING[row["region"].lower()]
        page = (row["chart"], region, row["sex"], row["smoker"], row["diabetes"])
        for column, sbp in SBP_COLUMNS.items():
            cells[(*page, row["band"].replace(">=", "≥"), row["age"], sbp)] = int(row[column])
    return cells


PRINTED = _printed()
PAGES = sorted({key[:5] for key in PRINTED})


def _value(categories: tuple[Any, ...], label: str) -> float:
    """The representative value the chart computes a category's cells at."""
    return float(next(c.value for c in categories if c.label == label))


def test_transcription_covers_every_printed_cell() -> None:
    assert len(PRINTED) == 44_100
    assert {key[1] for key in PRINTED} == set(REGION_CODES)
    lab = [key for key in PRINTED if key[0] == "lab"]
    # 21 regions x 2 sexes x 2 smoking x 2 diabetes x 5 cholesterol x 7 ages x 5 SBP.
    assert len(lab) == 21 * 2 * 2 * 2 * 5 * 7 * 5
    assert {key[5] for key in lab} == {c.label for c in CHOL_CATEGORIES}
    assert {key[5] for key in PRINTED if key[0] == "nonlab"} == {c.label for c in BMI_CATEGORIES}
    assert {key[6] for key in PRINTED} == {c.label for c in AGE_BANDS}


def _page_mismatches(page: tuple[str, ...]) -> Iterator[tuple[CellKey, int, int]]:
    chart, region, sex, smoker, diabetes = page
    computed = grid(
        "lab" if chart == "lab" else "nonlab",
        sex="male" if sex == "male" else "female",
        smoking=smoker == "yes",
        diabetes=(diabetes == "yes") if chart == "lab" else None,
        region=REGION_CODES[region],
        country=None,
    )
    for a, age in enumerate(computed.age_labels):
        for s, sbp in enumerate(computed.sbp_labels):
            for c, band in enumerate(computed.col_labels):
                key: CellKey = (*page, band, age, sbp)  # type: ignore[assignment]
                if computed.percent[a][s][c] != PRINTED[key]:
                    yield key, PRINTED[key], computed.percent[a][s][c]


def test_chart_pages_reproduce_every_printed_cell() -> None:
    mismatches = {
        key: (printed, ours) for page in PAGES for key, printed, ours in _page_mismatches(page)
    }
    assert mismatches == TRANSCRIPTION_SLIPS


def test_equation_reproduces_every_printed_cell() -> None:
    mismatches: dict[CellKey, tuple[int, int]] = {}
    for key, printed in PRINTED.items():
        chart, region, sex, smoker, diabetes, band, age, sbp = key
        lab = chart == "lab"
        cols = CHOL_CATEGORIES if lab else BMI_CATEGORIES
        inputs = WhoCvdInputs(
            sex="male" if sex == "male" else "female",
            age=_value(AGE_BANDS, age),
            smoking=smoker == "yes",
            sbp=_value(SBP_CATEGORIES, sbp),
            total_chol=_value(cols, band) if lab else None,
            diabetes=(diabetes == "yes") if lab else None,
            bmi=None if lab else _value(cols, band),
        )
        ours = who_cvd_risk(inputs, "lab" if lab else "nonlab", region=REGION_CODES[region])
        if ours.percent != printed:
            mismatches[key] = (printed, ours.percent)
    assert mismatches == TRANSCRIPTION_SLIPS


@pytest.mark.parametrize("key", list(TRANSCRIPTION_SLIPS), ids=lambda k: "-".join(k[1:]))
def test_each_slip_is_inconsistent_with_its_printed_row(key: CellKey) -> None:
    """Within a printed row risk never falls as SBP rises; with the slip the row either
    breaks that, or reads as the equation's row with one value dropped."""
    row = [PRINTED[(*key[:7], sbp)] for sbp in SBP_COLUMNS.values()]  # highest SBP first
    fixed = [TRANSCRIPTION_SLIPS.get((*key[:7], sbp), (v, v))[1]
             for sbp, v in zip(SBP_COLUMNS.values(), row, strict=True)]  # fmt: skip
    assert fixed == sorted(fixed, reverse=True)
    non_monotone = row != sorted(row, reverse=True)
    repeated = len(set(row)) < len(row) and len(set(fixed)) == len(fixed)
    printed_here = PRINTED[key]
    same_as_cell_above = PRINTED[(*key[:6], _age_above(key[6]), key[7])] == printed_here
    assert non_monotone or repeated or same_as_cell_above


def _age_above(age: str) -> str:
    labels = [c.label for c in AGE_BANDS]
    return labels[min(labels.index(age) + 1, len(labels) - 1)]


def test_bmi_below_20_is_drawn_at_17_5() -> None:
    """The non-lab charts' "<20" column is computed at BMI 17.5: at 18.0, 232 printed
    cells are off by one (the first draft of the chart page did that)."""
    assert _value(BMI_CATEGORIES, "<20") == 17.5


def test_age_midpoint_matters() -> None:
    """At whole-year ages (42, 47, ...) the printed cells are NOT reproduced: the tests
    above would catch a chart computed at the wrong ages."""
    page = ("lab", "Southeast Asia", "male", "no", "no")
    region = REGION_CODES["Southeast Asia"]
    mismatches = 0
    for key, printed in PRINTED.items():
        if key[:5] != page:
            continue
        inputs = WhoCvdInputs(
            sex="male",
            age=_value(AGE_BANDS, key[6]) - 0.5,
            smoking=False,
            sbp=_value(SBP_CATEGORIES, key[7]),
            total_chol=_value(CHOL_CATEGORIES, key[5]),
            diabetes=False,
        )
        mismatches += who_cvd_risk(inputs, "lab", region=region).percent != printed
    assert mismatches > 20
