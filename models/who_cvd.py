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
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BANDS",
    "HARD_LIMITS",
    "VALID_RANGES",
    "WhoCvdInputError",
    "WhoCvdInputs",
    "WhoCvdResult",
    "band_of_percent",
    "list_countries",
    "list_regions",
    "resolve_recalibration",
    "round_percent",
    "who_cvd_reasons_batch",
    "who_cvd_risk",
    "who_cvd_risk_batch",
]

ModelKind = Literal["lab", "nonlab"]
Sex = Literal["female", "male"]

#: Chart colour bands, lower bound in whole percent, and their labels.
BANDS: tuple[tuple[int, str], ...] = (
    (0, "<5%"),
    (5, "5-<10%"),
    (10, "10-<20%"),
    (20, "20-<30%"),
    (30, ">=30%"),
)

#: The charts' validity ranges ``(low, high, high_inclusive)``: outside them the
#: input is refused unless ``allow_extrapolation=True``.
VALID_RANGES: dict[str, tuple[float, float, bool]] = {
    "age": (40.0, 75.0, False),
    "sbp": (70.0, 270.0, True),
    "total_chol": (1.5, 15.0, True),
    "bmi": (12.0, 70.0, True),
}

#: Physically impossible beyond these (inclusive) limits: always refused.
HARD_LIMITS: dict[str, tuple[float, float]] = {
    "age": (18.0, 110.0),
    "sbp": (40.0, 350.0),
    "total_chol": (0.5, 40.0),
    "bmi": (8.0, 150.0),
}

_UNITS = {"age": "years", "sbp": "mmHg", "total_chol": "mmol/L", "bmi": "kg/m2"}
_CENTRES = {"age": 60.0, "total_chol": 6.0, "sbp": 120.0, "bmi": 25.0}
_TERMS = (
    "age",
    "total_chol",
    "sbp",
    "diabetes",
    "smoking",
    "bmi",
    "age_x_total_chol",
    "age_x_sbp",
    "age_x_diabetes",
    "age_x_smoking",
    "age_x_bmi",
)
_ENDPOINTS = ("chd", "stroke")


class WhoCvdInputError(ValueError):
    """An input the WHO charts cannot take.

    Attributes:
        field: The input's name, e.g. ``"age"``.
        value: The value given (``None`` when missing).
        rule: The rule it broke, in plain words.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


class WhoCvdInputs(BaseModel):
    """One person's inputs, in the units the charts use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sex: Sex
    age: float = Field(description="Age in years (charts: 40-74).")
    smoking: bool = Field(description="Current smoker.")
    sbp: float = Field(description="Systolic blood pressure, mmHg.")
    total_chol: float | None = Field(default=None, description="Total cholesterol, mmol/L (lab).")
    diabetes: bool | None = Field(default=None, description="History of diabetes (lab).")
    bmi: float | None = Field(default=None, description="Body-mass index, kg/m2 (non-lab).")


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


@dataclass(frozen=True)
class _Recalibration:
    region_code: str
    region_name: str
    country_code: str | None
    # (sex, model, endpoint) -> (cons, slope)
    params: dict[tuple[str, str, str], tuple[float, float]]


@dataclass(frozen=True)
class _Tables:
    # (model, endpoint, sex) -> (baseline survival, coefficients in _TERMS order)
    coefficients: dict[tuple[str, str, str], tuple[float, tuple[float, ...]]]
    regions: dict[str, _Recalibration]
    region_by_name: dict[str, str]
    countries: dict[str, tuple[str, str, _Recalibration]]  # code -> name, region code, params


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("models").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _params(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], tuple[float, float]]:
    return {
        (r["sex"], r["model"], r["endpoint"]): (float(r["cons"]), float(r["slope"])) for r in rows
    }


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    coefficients = {
        (r["model"], r["endpoint"], r["sex"]): (
            float(r["baseline_survival_10y"]),
            tuple(float(r[t]) for t in _TERMS),
        )
        for r in _read_csv("who2019_cvd_coefficients.csv")
    }
    rows = _read_csv("who2019_cvd_recalibration_2017.csv")
    by_code: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_code.setdefault(r["code"], []).append(r)
    regions: dict[str, _Recalibration] = {}
    for code, group in by_code.items():
        # Super-region rows (gbd_region "Global") carry no recalibration: not chart regions.
        if group[0]["level"] == "region" and all(r["cons"] for r in group):
            regions[code] = _Recalibration(code, group[0]["name"], None, _params(group))
    region_by_name = {rec.region_name: code for code, rec in regions.items()}
    countries: dict[str, tuple[str, str, _Recalibration]] = {}
    for code, group in by_code.items():
        if group[0]["level"] != "country":
            continue
        region = regions[region_by_name[group[0]["gbd_region"]]]
        if all(r["cons"] for r in group):
            rec = _Recalibration(region.region_code, region.region_name, code, _params(group))
        else:  # no national recalibration published: the region's applies
            rec = region
        countries[code] = (group[0]["name"], region.region_code, rec)
    return _Tables(coefficients, regions, region_by_name, countries)


def list_regions() -> list[tuple[str, str]]:
    """The 21 GBD regions the charts are recalibrated to.

    Returns:
        ``(code, name)`` pairs sorted by code, e.g. ``("A05GBDR_014_SEA", "Southeast Asia")``.
    """
    return sorted((code, rec.region_name) for code, rec in _tables().regions.items())


def list_countries() -> list[tuple[str, str, str]]:
    """Countries with a row in the recalibration table.

    Returns:
        ``(iso3, name, region_code)`` sorted by ISO code, e.g.
        ``("KHM", "Cambodia", "A05GBDR_014_SEA")``.
    """
    return sorted((code, name, region) for code, (name, region, _) in _tables().countries.items())


def resolve_recalibration(region: str | None, country: str | None) -> tuple[str, str, str | None]:
    """Which recalibration a region / country choice resolves to.

    Args:
        region: GBD region code (e.g. ``A05GBDR_014_SEA``) or its exact name.
        country: ISO 3166-1 alpha-3 code (e.g. ``KHM``); takes precedence over ``region``.

    Returns:
        ``(region_code, region_name, country_code)``; ``country_code`` is ``None`` when the
        region's recalibration applies (no country given, or none published for it).

    Raises:
        WhoCvdInputError: Unknown region or country, a country outside the region given,
            or neither given.
    """
    rec = _recalibration(region, country)
    return rec.region_code, rec.region_name, rec.country_code


def _recalibration(region: str | None, country: str | None) -> _Recalibration:
    tables = _tables()
    region_code: str | None = None
    if region is not None:
        region_code = region if region in tables.regions else tables.region_by_name.get(region)
        if region_code is None:
            raise WhoCvdInputError(
                "region", region, "not a GBD region code or name (see list_regions())"
            )
    if country is not None:
        entry = tables.countries.get(country.upper())
        if entry is None:
            raise WhoCvdInputError(
                "country", country, "not an ISO 3166-1 alpha-3 code in the WHO 2019 tables"
            )
        if region_code is not None and entry[1] != region_code:
            raise WhoCvdInputError(
                "country", country, f"belongs to region {entry[1]}, not {region_code}"
            )
        return entry[2]
    if region_code is None:
        raise WhoCvdInputError(
            "region", None, "give a GBD region or a country: the charts are region-specific"
        )
    return tables.regions[region_code]


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


def _check_range(field: str, value: float, allow_extrapolation: bool) -> bool:
    """Refuse an impossible value; return True if it lies outside the charts' validity."""
    if not math.isfinite(value):
        raise WhoCvdInputError(field, value, "must be a finite number")
    hard_low, hard_high = HARD_LIMITS[field]
    unit = _UNITS[field]
    if not hard_low <= value <= hard_high:
        raise WhoCvdInputError(
            field, value, f"impossible value: must be {hard_low:g}-{hard_high:g} {unit}"
        )
    low, high, high_inclusive = VALID_RANGES[field]
    inside = low <= value and (value <= high if high_inclusive else value < high)
    if inside:
        return False
    if not allow_extrapolation:
        upper = f"<= {high:g}" if high_inclusive else f"< {high:g}"
        raise WhoCvdInputError(
            field,
            value,
            f"outside the WHO charts' validity (>= {low:g} and {upper} {unit}); "
            "pass allow_extrapolation=True to extrapolate knowingly",
        )
    return True


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
    if model not in ("lab", "nonlab"):
        raise WhoCvdInputError("model", model, "must be 'lab' or 'nonlab'")
    rec = _recalibration(region, country)
    used: dict[str, float | bool | str] = {
        "sex": inputs.sex,
        "age": inputs.age,
        "smoking": inputs.smoking,
        "sbp": inputs.sbp,
    }
    if model == "lab":
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
            extrapolated |= _check_range(field, value, allow_extrapolation)
    risk = _risk(
        model,
        inputs.sex,
        rec,
        age=inputs.age,
        smoking=float(inputs.smoking),
        sbp=inputs.sbp,
        total_chol=inputs.total_chol if model == "lab" else None,
        diabetes=float(bool(inputs.diabetes)) if model == "lab" else None,
        bmi=inputs.bmi if model == "nonlab" else None,
    )
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


def _risk(
    model: str,
    sex: str,
    rec: _Recalibration,
    *,
    age: float,
    smoking: float,
    sbp: float,
    total_chol: float | None,
    diabetes: float | None,
    bmi: float | None,
) -> float:
    out = _risk_arrays(
        model,
        np.array([sex == "male"]),
        rec,
        age=np.array([age]),
        smoking=np.array([smoking]),
        sbp=np.array([sbp]),
        total_chol=None if total_chol is None else np.array([total_chol]),
        diabetes=None if diabetes is None else np.array([diabetes]),
        bmi=None if bmi is None else np.array([bmi]),
    )
    return float(out[0])


FloatArray = npt.NDArray[np.float64]


def _risk_arrays(
    model: str,
    male: npt.NDArray[np.bool_],
    rec: _Recalibration,
    *,
    age: FloatArray,
    smoking: FloatArray,
    sbp: FloatArray,
    total_chol: FloatArray | None,
    diabetes: FloatArray | None,
    bmi: FloatArray | None,
) -> FloatArray:
    zeros = np.zeros_like(age)
    a = age - _CENTRES["age"]
    c = zeros if total_chol is None else total_chol - _CENTRES["total_chol"]
    s = sbp - _CENTRES["sbp"]
    d = zeros if diabetes is None else diabetes
    b = zeros if bmi is None else bmi - _CENTRES["bmi"]
    # Columns in _TERMS order: main effects, then products with centred age.
    design = np.stack([a, c, s, d, smoking, b, a * c, a * s, a * d, a * smoking, a * b], axis=1)
    survival = np.ones_like(age)
    for endpoint in _ENDPOINTS:
        p_cal = np.empty_like(age)
        for sex, mask in (("male", male), ("female", ~male)):
            if not mask.any():
                continue
            s0, beta = _tables().coefficients[(model, endpoint, sex)]
            lp = design[mask] @ np.asarray(beta)
            p = 1.0 - np.power(s0, np.exp(lp))
            cons, slope = rec.params[(sex, model, endpoint)]
            p_cal[mask] = 1.0 - np.exp(-np.exp(cons + slope * np.log(-np.log1p(-p))))
        survival *= 1.0 - p_cal
    result: FloatArray = 1.0 - survival
    return result


def _as_float(name: str, values: npt.ArrayLike | None, n: int) -> FloatArray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise WhoCvdInputError(name, f"shape {arr.shape}", f"must be a 1-D array of length {n}")
    return arr


def _batch_columns(
    model: ModelKind,
    sex: npt.ArrayLike,
    age: npt.ArrayLike,
    smoking: npt.ArrayLike,
    sbp: npt.ArrayLike,
    total_chol: npt.ArrayLike | None,
    diabetes: npt.ArrayLike | None,
    bmi: npt.ArrayLike | None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], dict[str, FloatArray]]:
    sex_arr = np.asarray(sex)
    n = sex_arr.shape[0]
    if sex_arr.dtype.kind in "USO":
        male = sex_arr == "male"
        sex_ok = male | (sex_arr == "female")
    else:  # numeric: 1 = male, 0 = female
        sex_f = sex_arr.astype(np.float64)
        male = sex_f == 1.0
        sex_ok = male | (sex_f == 0.0)
    required = ["age", "smoking", "sbp"] + (
        ["total_chol", "diabetes"] if model == "lab" else ["bmi"]
    )
    given = {
        "age": age,
        "smoking": smoking,
        "sbp": sbp,
        "total_chol": total_chol,
        "diabetes": diabetes,
        "bmi": bmi,
    }
    cols: dict[str, FloatArray] = {}
    for name in required:
        arr = _as_float(name, given[name], n)
        if arr is None:
            raise WhoCvdInputError(name, None, f"required by the {model} model")
        cols[name] = arr
    return male, sex_ok, cols


def who_cvd_reasons_batch(
    model: ModelKind,
    sex: npt.ArrayLike,
    age: npt.ArrayLike,
    smoking: npt.ArrayLike,
    sbp: npt.ArrayLike,
    total_chol: npt.ArrayLike | None = None,
    diabetes: npt.ArrayLike | None = None,
    bmi: npt.ArrayLike | None = None,
    *,
    allow_extrapolation: bool = False,
) -> npt.NDArray[np.object_]:
    """Per row, why no WHO risk can be given (``None`` where the row is usable).

    Reasons are short machine-readable strings ``"<field>:<rule>"`` with rules
    ``missing``, ``not-finite``, ``impossible``, ``out-of-range`` (the charts'
    validity; not reported when ``allow_extrapolation``) and ``not-0-1``; the first
    problem found in column order is reported.
    """
    male, sex_ok, cols = _batch_columns(model, sex, age, smoking, sbp, total_chol, diabetes, bmi)
    n = male.shape[0]
    reasons = np.full(n, None, dtype=object)

    def mark(bad: npt.NDArray[np.bool_], reason: str) -> None:
        reasons[bad & (reasons == None)] = reason  # noqa: E711 - elementwise on object array

    mark(~sex_ok, "sex:missing-or-unknown")
    for name, arr in cols.items():
        mark(np.isnan(arr), f"{name}:missing")
        mark(np.isinf(arr), f"{name}:not-finite")
        if name in ("smoking", "diabetes"):
            mark(~np.isnan(arr) & (arr != 0.0) & (arr != 1.0), f"{name}:not-0-1")
            continue
        hard_low, hard_high = HARD_LIMITS[name]
        finite = np.isfinite(arr)
        mark(finite & ((arr < hard_low) | (arr > hard_high)), f"{name}:impossible")
        if not allow_extrapolation:
            low, high, inclusive = VALID_RANGES[name]
            above = arr > high if inclusive else arr >= high
            mark(finite & ((arr < low) | above), f"{name}:out-of-range")
    return reasons


def who_cvd_risk_batch(
    model: ModelKind,
    sex: npt.ArrayLike,
    age: npt.ArrayLike,
    smoking: npt.ArrayLike,
    sbp: npt.ArrayLike,
    total_chol: npt.ArrayLike | None = None,
    diabetes: npt.ArrayLike | None = None,
    bmi: npt.ArrayLike | None = None,
    *,
    region: str | None = None,
    country: str | None = None,
    allow_extrapolation: bool = False,
    invalid: Literal["raise", "nan"] = "raise",
) -> FloatArray:
    """Vectorised :func:`who_cvd_risk` for scoring and simulation.

    Args:
        model: ``"lab"`` or ``"nonlab"``.
        sex: ``"female"``/``"male"`` strings, or numbers with 1 = male, 0 = female.
        age: Years. smoking: 0/1. sbp: mmHg.
        total_chol: mmol/L (lab). diabetes: 0/1 (lab). bmi: kg/m2 (non-lab).
        region: GBD region code or name. country: ISO alpha-3 code.
        allow_extrapolation: As in :func:`who_cvd_risk`.
        invalid: ``"raise"`` a :class:`WhoCvdInputError` for the first unusable row, or
            return ``nan`` for unusable rows (see :func:`who_cvd_reasons_batch` for why).

    Returns:
        10-year risks as fractions, float64, one per row.

    Raises:
        WhoCvdInputError: Unknown region/country, a required column missing, or (with
            ``invalid="raise"``) an unusable row.
    """
    if model not in ("lab", "nonlab"):
        raise WhoCvdInputError("model", model, "must be 'lab' or 'nonlab'")
    rec = _recalibration(region, country)
    reasons = who_cvd_reasons_batch(
        model,
        sex,
        age,
        smoking,
        sbp,
        total_chol,
        diabetes,
        bmi,
        allow_extrapolation=allow_extrapolation,
    )
    bad = reasons != None  # noqa: E711 - elementwise on object array
    if invalid == "raise" and bad.any():
        row = int(np.flatnonzero(bad)[0])
        field, _, rule = str(reasons[row]).partition(":")
        raise WhoCvdInputError(field, f"row {row}", rule)
    male, _, cols = _batch_columns(model, sex, age, smoking, sbp, total_chol, diabetes, bmi)
    with np.errstate(invalid="ignore", over="ignore"):
        risk = _risk_arrays(
            model,
            male,
            rec,
            age=cols["age"],
            smoking=cols["smoking"],
            sbp=cols["sbp"],
            total_chol=cols.get("total_chol"),
            diabetes=cols.get("diabetes"),
            bmi=cols.get("bmi"),
        )
    risk[bad] = np.nan
    return risk
