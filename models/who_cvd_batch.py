"""Vectorised WHO 2019 CVD risk and the reasons a row gets none, for scoring and simulation."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from models.who_cvd_equations import FloatArray, recalibration, risk_arrays
from models.who_cvd_inputs import (
    HARD_LIMITS,
    VALID_RANGES,
    ModelKind,
    WhoCvdInputError,
    check_model,
)

__all__ = ["WhoCvdBatchScore", "who_cvd_reasons_batch", "who_cvd_risk_batch", "who_cvd_score_batch"]


class WhoCvdBatchScore(NamedTuple):
    """Per row: the risk, why there is none, and whether it was extrapolated."""

    risk: FloatArray
    """10-year risk as a fraction; ``nan`` where ``reason`` is set."""
    reason: npt.NDArray[np.object_]
    """``"<field>:<rule>"`` for every row without a risk, ``None`` where scored."""
    extrapolated: npt.NDArray[np.bool_]
    """A risk was given although an input is outside the charts' ranges."""


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


def _reasons(
    sex_ok: npt.NDArray[np.bool_], cols: dict[str, FloatArray], allow_extrapolation: bool
) -> npt.NDArray[np.object_]:
    reasons = np.full(sex_ok.shape[0], None, dtype=object)

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
    _, sex_ok, cols = _batch_columns(model, sex, age, smoking, sbp, total_chol, diabetes, bmi)
    return _reasons(sex_ok, cols, allow_extrapolation)


def who_cvd_score_batch(
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
) -> WhoCvdBatchScore:
    """Risks and, for every row without one, the reason, computed once.

    Use this where the reasons are reported (batch scoring): only it knows the
    ``"risk:saturated"`` rows (see :func:`who_cvd_risk_batch`), which
    :func:`who_cvd_reasons_batch` cannot find without computing risks.

    Args:
        model, sex, age, smoking, sbp, total_chol, diabetes, bmi, region, country,
            allow_extrapolation: As in :func:`who_cvd_risk_batch`.

    Returns:
        Risk (``nan`` where refused), reason (``None`` where scored) and extrapolated.

    Raises:
        WhoCvdInputError: Unknown region/country or a required column missing.
    """
    check_model(model)
    rec = recalibration(region, country)
    male, sex_ok, cols = _batch_columns(model, sex, age, smoking, sbp, total_chol, diabetes, bmi)
    reasons = _reasons(sex_ok, cols, allow_extrapolation)
    bad = reasons != None  # noqa: E711 - elementwise on object array
    # Unusable rows (NaN, inf) and saturated ones warn inside the equation (invalid,
    # overflow, division by zero): each of them is refused below, with its reason.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        risk = risk_arrays(
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
    extrapolated = np.zeros(risk.shape[0], dtype=bool)
    if allow_extrapolation:
        # Far enough outside the charts, the Cox risk 1 - S0 ** exp(lp) rounds to 1 in
        # float64 (log1p(-1) above): a certainty is no risk to report. Inside them it
        # never does (lp is multilinear, so its extremes are at the box's corners).
        extrapolated = ~bad & (_reasons(sex_ok, cols, allow_extrapolation=False) != None)  # noqa: E711
        saturated = extrapolated & ~((risk > 0.0) & (risk < 1.0))
        reasons[saturated] = "risk:saturated"
        bad |= saturated
        extrapolated &= ~saturated
    risk[bad] = np.nan
    return WhoCvdBatchScore(risk, reasons, extrapolated)


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
        allow_extrapolation: As in :func:`who_cvd_risk`; in addition, an extrapolated
            row whose risk the equation saturates to 0 or 1 in float64 is unusable, with
            reason ``"risk:saturated"`` (such extreme values occur only far outside the
            charts; :func:`who_cvd_reasons_batch` does not compute risks and cannot
            report this one: :func:`who_cvd_score_batch` gives risks and all reasons).
        invalid: ``"raise"`` a :class:`WhoCvdInputError` for the first unusable row, or
            return ``nan`` for unusable rows (see :func:`who_cvd_score_batch` for why).

    Returns:
        10-year risks as fractions, float64, one per row.

    Raises:
        WhoCvdInputError: Unknown region/country, a required column missing, or (with
            ``invalid="raise"``) an unusable row.
    """
    risk, reasons, _ = who_cvd_score_batch(
        model, sex, age, smoking, sbp, total_chol, diabetes, bmi,
        region=region, country=country, allow_extrapolation=allow_extrapolation,
    )  # fmt: skip
    if invalid == "raise":
        refused = np.flatnonzero(reasons != None)  # noqa: E711 - elementwise on object array
        if refused.size:
            row = int(refused[0])
            field, _, rule = str(reasons[row]).partition(":")
            raise WhoCvdInputError(field, f"row {row}", rule)
    return risk
