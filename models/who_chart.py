"""The WHO 2019 risk chart as a grid, and the printed cell a patient falls in.

The printed WHO charts show, for one sex, smoking status and (lab chart) diabetes
status, one block per 5-year age band: rows are systolic blood pressure categories,
columns total cholesterol (lab chart) or BMI (non-lab chart) categories. Each cell
is the risk at a representative value of its categories (the age band's midpoint,
the middle of the blood pressure and cholesterol/BMI ranges). The grid is computed
here with :func:`models.who_cvd.who_cvd_risk_batch`, so it is the same equation
the patient's own risk comes from; the patient's exact risk can differ from their
cell's by a band edge, as on paper.

:func:`patient_cell` is the one cell of that grid a patient falls in: what a
clinician reads off the printed chart, and what cards call "WHO chart" (the
equation at the patient's exact values is shown beside it, named as such). The
explanation page (:mod:`serving.ui.pages`) renders a :class:`ChartGrid`.
"""

from __future__ import annotations

import bisect
import functools
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.who_cvd import BANDS, WhoCvdResult, percents_and_bands, who_cvd_risk_batch

__all__ = [
    "AGE_BANDS",
    "BMI_CATEGORIES",
    "CHOL_CATEGORIES",
    "SBP_CATEGORIES",
    "ChartCell",
    "ChartGrid",
    "grid",
    "patient_cell",
]


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
        ("<20", None, 17.5),
        ("20-24", 20.0, 22.5),
        ("25-29", 25.0, 27.5),
        ("30-35", 30.0, 32.5),
        ("≥35", 35.0, 37.5),
    ]
)


def _index(categories: tuple[_Category, ...], value: float) -> int:
    bounds = [c.low for c in categories[1:] if c.low is not None]
    return bisect.bisect_right(bounds, value)


class ChartCell(BaseModel):
    """The printed chart cell a patient falls in: its number, colour band and categories."""

    model_config = ConfigDict(frozen=True)

    percent: int = Field(description="The number printed in the cell (whole percent).")
    band: str = Field(description="The cell's colour band (risk category), e.g. '20-<30%'.")
    band_index: int = Field(ge=0, le=4)
    age: str = Field(description="Age band, e.g. '60-64'.")
    sbp: str = Field(description="Systolic BP category, mmHg, e.g. '160-179'.")
    col: str = Field(description="Total cholesterol (mmol/L, lab) or BMI (kg/m2) category.")


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

    def patient(self) -> ChartCell | None:
        """The patient's (outlined) cell, or None when the patient is not on this page."""
        if self.cell is None:
            return None
        a, s, c = self.cell
        index = self.band_index[a][s][c]
        return ChartCell(
            percent=self.percent[a][s][c],
            band=BANDS[index][1],
            band_index=index,
            age=self.age_labels[a],
            sbp=self.sbp_labels[s],
            col=self.col_labels[c],
        )


def _chart_risks(
    model: Literal["lab", "nonlab"],
    mesh: np.ndarray,
    *,
    sex: Literal["female", "male"],
    smoking: bool,
    diabetes: bool | None,
    region: str | None,
    country: str | None,
) -> np.ndarray:
    """The equation at representative values ``mesh[:, (age, sbp, chol or BMI)]``."""
    n = len(mesh)
    lab = model == "lab"
    return who_cvd_risk_batch(
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
    lab = model == "lab"
    risks = _chart_risks(
        model, mesh, sex=sex, smoking=smoking, diabetes=diabetes, region=region, country=country
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


@functools.lru_cache(maxsize=4096)
def _cell_risk(
    model: Literal["lab", "nonlab"],
    values: tuple[float, float, float],
    sex: Literal["female", "male"],
    smoking: bool,
    diabetes: bool | None,
    region: str | None,
    country: str | None,
) -> float:
    """One printed cell's risk. Cells are few (bands x sex x smoking x diabetes per
    region), and every NCD CDS call asks for one: cached, it costs microseconds instead
    of ~0.1 ms of the equation on the hot path."""
    risks = _chart_risks(
        model,
        np.array([values]),
        sex=sex,
        smoking=smoking,
        diabetes=diabetes,
        region=region,
        country=country,
    )
    return float(risks[0])


def patient_cell(who: WhoCvdResult, *, region: str | None, country: str | None) -> ChartCell | None:
    """The printed chart cell of the patient a WHO result was computed for.

    The same categories and representative values as :func:`grid` (one cell of it),
    so a card's "WHO chart" number is the number outlined on the explanation page.

    Args:
        who: The WHO 2019 result at the patient's exact values (its ``inputs_used``
            locate the cell; its ``model`` picks the lab or non-lab chart).
        region: GBD region code the result used. country: ISO alpha-3 code.

    Returns:
        The cell, or None when the values are outside the chart (age not 40-74) or
        the sex is not one the charts print.

    Raises:
        models.who_cvd.WhoCvdInputError: unknown region or country.
    """
    used = who.inputs_used
    sex, age, sbp = used.get("sex"), used.get("age"), used.get("sbp")
    col = used.get("total_chol") if who.model == "lab" else used.get("bmi")
    if sex not in ("female", "male") or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (age, sbp, col)
    ):
        return None
    age_f, sbp_f, col_f = float(age), float(sbp), float(col)  # type: ignore[arg-type]
    if not 40 <= age_f < 75:
        return None
    cols = CHOL_CATEGORIES if who.model == "lab" else BMI_CATEGORIES
    a = AGE_BANDS[_index(AGE_BANDS, age_f)]
    s = SBP_CATEGORIES[_index(SBP_CATEGORIES, sbp_f)]
    c = cols[_index(cols, col_f)]
    risk = _cell_risk(
        who.model,
        (a.value, s.value, c.value),
        "male" if sex == "male" else "female",
        bool(used.get("smoking")),
        bool(used.get("diabetes")) if who.model == "lab" else None,
        region,
        country,
    )
    percent, bands = percents_and_bands(np.array([risk]))
    index = int(bands[0])
    return ChartCell(
        percent=int(percent[0]),
        band=BANDS[index][1],
        band_index=index,
        age=a.label,
        sbp=s.label,
        col=c.label,
    )
