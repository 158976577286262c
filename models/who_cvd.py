"""WHO 2019 cardiovascular disease risk charts, as equations.

The WHO CVD Risk Chart Working Group, *Lancet Glob Health* 2019; 7: e1332-45
(Kaptoge et al.). Two sex-specific Cox models from the Emerging Risk Factors
Collaboration, each for two endpoints (coronary heart disease and stroke):

* ``lab`` (model 1): age, smoking, systolic BP, history of diabetes, total cholesterol.
* ``nonlab`` (model 2): age, smoking, systolic BP, body-mass index.

Each endpoint's uncalibrated 10-year risk ``p = 1 - S0 ** exp(lp)`` (inputs centred at
age 60, cholesterol 6 mmol/L, SBP 120 mmHg, BMI 25 kg/m2; interactions with centred
age) is recalibrated to GBD 2017 incidence for one of 21 GBD regions or one country:
``p_cal = 1 - exp(-exp(cons + slope * ln(-ln(1 - p))))``. The 10-year CVD risk is
``1 - (1 - p_chd) * (1 - p_stroke)``.

Validity (refused with :class:`WhoCvdInputError` unless ``allow_extrapolation``):

==============  ==================  =========================================
input           valid range         why
==============  ==================  =========================================
age             40 <= age < 75      the charts' age bands 40-44 ... 70-74
sbp             70-270 mmHg         physiologically plausible resting SBP
total_chol      1.5-15 mmol/L       plausible serum total cholesterol
bmi             12-70 kg/m2         plausible adult BMI
==============  ==================  =========================================

Values that are not finite, or outside the hard limits in :data:`HARD_LIMITS`
(impossible, not merely unusual), are refused even with ``allow_extrapolation``.
Inputs are never clipped.

The chart's printed number is the risk rounded to a whole percent (half up); the
colour band is taken from that printed number, as on the chart.

This module is the public entry: inputs, ranges and the error are defined in
:mod:`models.who_cvd_inputs`, the tables and the equation in
:mod:`models.who_cvd_equations`, the vectorised versions in :mod:`models.who_cvd_batch`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.who_cvd_batch import (
    WhoCvdBatchScore,
    who_cvd_reasons_batch,
    who_cvd_risk_batch,
    who_cvd_score_batch,
)
from models.who_cvd_equations import (
    FloatArray,
    list_countries,
    list_regions,
    recalibration,
    resolve_recalibration,
    risk_arrays,
)
from models.who_cvd_inputs import (
    HARD_LIMITS,
    VALID_RANGES,
    ModelKind,
    WhoCvdInputError,
    WhoCvdInputs,
    check_model,
    check_range,
)

__all__ = [
    "BANDS",
    "HARD_LIMITS",
    "VALID_RANGES",
    "WhoCvdBatchScore",
    "WhoCvdInputError",
    "WhoCvdInputs",
    "WhoCvdResult",
    "band_of_percent",
    "list_countries",
    "list_regions",
    "percents_and_bands",
    "resolve_recalibration",
    "round_percent",
    "who_cvd_reasons_batch",
    "who_cvd_risk",
    "who_cvd_risk_batch",
    "who_cvd_score_batch",
]

#: Chart colour bands, lower bound in whole percent, and their labels.
BANDS: tuple[tuple[int, str], ...] = (
    (0, "<5%"),
    (5, "5-<10%"),
    (10, "10-<20%"),
    (20, "20-<30%"),
    (30, ">=30%"),
)
_BAND_LOWS = np.array([low for low, _ in BANDS[1:]], dtype=np.float64)


class WhoCvdResult(BaseModel):
    """A 10-year CVD risk with the chart's band and what was used to compute it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    risk: float = Field(description="10-year risk of MI or stroke, fraction 0-1 (unrounded).")
    percent: int = Field(description="Risk in whole percent (half up), as printed on the chart.")
    band: str = Field(description="Chart colour band of `percent`.")
    band_index: int = Field(ge=0, le=4)
    model: ModelKind
    region_code: str
    region_name: str
    country_code: str | None = Field(
        description="Country whose national recalibration was used; None if the region's."
    )
    inputs_used: dict[str, float | bool | str]
    extrapolated: bool = Field(
        description="True only when allow_extrapolation let an out-of-range input through."
    )


def round_percent(risk: float) -> int:
    """Round a risk fraction to a whole percent, half up, as the charts print it."""
    return math.floor(risk * 100.0 + 0.5)


def band_of_percent(percent: int) -> tuple[int, str]:
    """The chart colour band of a printed whole percent.

    Returns:
        ``(band_index, label)``, e.g. ``(1, "5-<10%")`` for 7.
    """
    index = sum(1 for low, _ in BANDS[1:] if percent >= low)
    return index, BANDS[index][1]


def percents_and_bands(risk: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Vectorised :func:`round_percent` and :func:`band_of_percent` for risk fractions.

    Returns:
        The printed whole percents (float64; NaN where the risk is NaN) and the band
        indices 0-4 (0 where the risk is NaN: mask those).
    """
    percent = np.floor(np.asarray(risk, dtype=np.float64) * 100.0 + 0.5)
    return percent, np.searchsorted(_BAND_LOWS, np.nan_to_num(percent), side="right")


def who_cvd_risk(
    inputs: WhoCvdInputs,
    model: ModelKind,
    *,
    region: str | None = None,
    country: str | None = None,
    allow_extrapolation: bool = False,
) -> WhoCvdResult:
    """10-year risk of fatal or non-fatal MI or stroke from the WHO 2019 charts.

    Args:
        inputs: The person's values (lab model: ``total_chol`` and ``diabetes``
            required; non-lab model: ``bmi`` required).
        model: ``"lab"`` or ``"nonlab"``.
        region: GBD region code or name (e.g. ``"A05GBDR_014_SEA"``).
        country: ISO alpha-3 code (e.g. ``"KHM"``): the national recalibration,
            or the region's where none was published.
        allow_extrapolation: Let inputs outside the charts' validity through and mark
            the result ``extrapolated``. Impossible values are refused regardless.

    Returns:
        The risk, the printed percent, the band and what was used.

    Raises:
        WhoCvdInputError: A missing, impossible or (without extrapolation) out-of-range
            input, or an unknown region/country.
    """
    check_model(model)
    rec = recalibration(region, country)
    used: dict[str, float | bool | str] = {
        "sex": inputs.sex,
        "age": inputs.age,
        "smoking": inputs.smoking,
        "sbp": inputs.sbp,
    }
    lab = model == "lab"
    if lab:
        if inputs.total_chol is None:
            raise WhoCvdInputError("total_chol", None, "required by the lab model")
        if inputs.diabetes is None:
            raise WhoCvdInputError("diabetes", None, "required by the lab model")
        used["total_chol"] = inputs.total_chol
        used["diabetes"] = inputs.diabetes
    else:
        if inputs.bmi is None:
            raise WhoCvdInputError("bmi", None, "required by the non-lab model")
        used["bmi"] = inputs.bmi
    extrapolated = False
    for field in ("age", "sbp", "total_chol", "bmi"):
        if field in used:
            value = used[field]
            assert isinstance(value, float)
            extrapolated |= check_range(field, value, allow_extrapolation)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        one = risk_arrays(
            model,
            np.array([inputs.sex == "male"]),
            rec,
            age=np.array([inputs.age]),
            smoking=np.array([float(inputs.smoking)]),
            sbp=np.array([inputs.sbp]),
            total_chol=np.array([inputs.total_chol]) if lab else None,
            diabetes=np.array([float(bool(inputs.diabetes))]) if lab else None,
            bmi=None if lab else np.array([inputs.bmi]),
        )
    risk = float(one[0])
    if extrapolated and not 0.0 < risk < 1.0:
        # Far outside the charts the equation saturates: no number to give. Inside them
        # it can reach 1.0 in float at the extreme corner (male, 75, smoker, diabetic,
        # SBP 270, cholesterol 15, Central Asia): a valid ">=30%" risk, kept as in
        # who_cvd_risk_batch.
        raise WhoCvdInputError("risk", risk, "saturated")
    percent = round_percent(risk)
    band_index, band = band_of_percent(percent)
    return WhoCvdResult(
        risk=risk,
        percent=percent,
        band=band,
        band_index=band_index,
        model=model,
        region_code=rec.region_code,
        region_name=rec.region_name,
        country_code=rec.country_code,
        inputs_used=used,
        extrapolated=extrapolated,
    )
