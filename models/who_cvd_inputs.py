"""What the WHO 2019 CVD charts accept: input types, validity ranges and the refusal error.

See :mod:`models.who_cvd` for the equations and the table of ranges.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.errors import InputError

__all__ = [
    "HARD_LIMITS",
    "VALID_RANGES",
    "ModelKind",
    "Sex",
    "WhoCvdInputError",
    "WhoCvdInputs",
    "check_model",
    "check_range",
]

ModelKind = Literal["lab", "nonlab"]
Sex = Literal["female", "male"]

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


class WhoCvdInputError(InputError):
    """An input the WHO charts cannot take (``field``, ``value`` and the ``rule`` broken)."""


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


def check_model(model: str) -> None:
    """Refuse a model name other than ``"lab"`` or ``"nonlab"``.

    Raises:
        WhoCvdInputError: Any other name.
    """
    if model not in ("lab", "nonlab"):
        raise WhoCvdInputError("model", model, "must be 'lab' or 'nonlab'")


def check_range(field: str, value: float, allow_extrapolation: bool) -> bool:
    """Refuse an impossible value; tell whether it lies outside the charts' validity.

    Args:
        field: A key of :data:`VALID_RANGES`.
        value: The value given, in the field's unit.
        allow_extrapolation: Let a possible value outside the charts' validity through.

    Returns:
        True when the value is outside the charts' validity (and extrapolation allowed).

    Raises:
        WhoCvdInputError: Not finite, outside :data:`HARD_LIMITS`, or outside
            :data:`VALID_RANGES` without ``allow_extrapolation``.
    """
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
