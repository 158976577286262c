"""The WHO 2019 risk chart as a grid, with the patient's cell, for the explanation page.

The printed WHO charts show, for one sex, smoking status and (lab chart) diabetes
status, one block per 5-year age band: rows are systolic blood pressure categories,
columns total cholesterol (lab chart) or BMI (non-lab chart) categories. Each cell
is the risk at a representative value of its categories (the age band's midpoint,
the middle of the blood pressure and cholesterol/BMI ranges). The grid is computed
here with :func:`models.who_cvd.who_cvd_risk_batch`, so it is the same equation
the patient's own risk comes from; the patient's exact risk can differ from their
cell's by a band edge, as on paper.
"""

from __future__ import annotations

import bisect
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.who_cvd import percents_and_bands, who_cvd_risk_batch

__all__ = ["AGE_BANDS", "BMI_CATEGORIES", "CHOL_CATEGORIES", "SBP_CATEGORIES", "ChartGrid", "grid"]


class _Category(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    low: float | None = Field(description="Inclusive lower bound; None = open.")
    value: float = Field(description="Representative value the cell's risk is computed at.")


def _cats(rows: list[tuple[str, float | None, float]]) -> tuple[_Category, ...]:
    return tuple(_Category(label=label, low=low, value=value) for label, low, value in rows)


AGE_BANDS = _cats([(f"{a}-{a + 4}", float(a), a + 2.5) for a in range(40, 75, 5)])
# Ascending; the page shows SBP with the highest category on top, as the charts do.
SBP_CATEGORIES = _cats(
    [
        ("<120", None, 110.0),
        ("120-139", 120.0, 130.0),
        ("140-159", 140.0, 150.0),
        ("160-179", 160.0, 170.0),
        ("≥180", 180.0, 190.0),
    ]
)
CHOL_CATEGORIES = _cats(
    [
        ("<4", None, 3.5),
        ("4-4.9", 4.0, 4.5),
        ("5-5.9", 5.0, 5.5),
        ("6-6.9", 6.0, 6.5),
        ("≥7", 7.0, 7.5),
    ]
)
BMI_CATEGORIES = _cats(
    [
        ("<20", None, 18.0),
        ("20-24", 20.0, 22.5),
        ("25-29", 25.0, 27.5),
        ("30-35", 30.0, 32.5),
        ("≥35", 35.0, 37.5),
    ]
)


def _index(categories: tuple[_Category, ...], value: float) -> int:
    bounds = [c.low for c in categories[1:] if c.low is not None]
    return bisect.bisect_right(bounds, value)


class ChartGrid(BaseModel):
    """One chart page: ``percent[age][sbp][col]`` with colour bands, and the patient's cell."""

    model_config = ConfigDict(frozen=True)

    model: Literal["lab", "nonlab"]
    sex: Literal["female", "male"]
    smoking: bool
    diabetes: bool | None
    age_labels: list[str]
    sbp_labels: list[str] = Field(description="Ascending; render reversed (highest on top).")
    col_labels: list[str]
    percent: list[list[list[int]]]
    band_index: list[list[list[int]]]
    cell: tuple[int, int, int] | None = Field(description="(age, sbp, col) of the patient.")


def grid(
    model: Literal["lab", "nonlab"],
    *,
    sex: Literal["female", "male"],
    smoking: bool,
    diabetes: bool | None,
    region: str | None,
    country: str | None,
    age: float | None = None,
    sbp: float | None = None,
    col_value: float | None = None,
) -> ChartGrid:
    """Compute the chart page for one sex / smoking / diabetes status.

    Args:
        model: ``"lab"`` (columns = total cholesterol) or ``"nonlab"`` (columns = BMI).
        sex: As in the charts.
        smoking: Current smoker.
        diabetes: History of diabetes (lab chart only).
        region: GBD region code. country: ISO alpha-3 code (national recalibration).
        age: The patient's age, to locate their cell (with ``sbp`` and ``col_value``).
        sbp: The patient's systolic BP, mmHg.
        col_value: The patient's total cholesterol (mmol/L) or BMI (kg/m2).

    Raises:
        models.who_cvd.WhoCvdInputError: unknown region or country.
    """
    cols = CHOL_CATEGORIES if model == "lab" else BMI_CATEGORIES
    mesh = np.array(
        [(a.value, s.value, c.value) for a in AGE_BANDS for s in SBP_CATEGORIES for c in cols]
    )
    n = len(mesh)
    lab = model == "lab"
    risks = who_cvd_risk_batch(
        model,
        [sex] * n,
        mesh[:, 0],
        np.full(n, int(smoking)),
        mesh[:, 1],
        total_chol=mesh[:, 2] if lab else None,
        diabetes=np.full(n, int(bool(diabetes))) if lab else None,
        bmi=None if lab else mesh[:, 2],
        region=region,
        country=country,
    )
    shape = (len(AGE_BANDS), len(SBP_CATEGORIES), len(cols))
    percent, bands = percents_and_bands(risks.reshape(shape))
    cell: tuple[int, int, int] | None = None
    if age is not None and sbp is not None and col_value is not None and 40 <= age < 75:
        cell = (_index(AGE_BANDS, age), _index(SBP_CATEGORIES, sbp), _index(cols, col_value))
    return ChartGrid(
        model=model,
        sex=sex,
        smoking=smoking,
        diabetes=diabetes if lab else None,
        age_labels=[a.label for a in AGE_BANDS],
        sbp_labels=[s.label for s in SBP_CATEGORIES],
        col_labels=[c.label for c in cols],
        percent=percent.astype(int).tolist(),
        band_index=bands.tolist(),
        cell=cell,
    )
