"""The NCD input contract: features with units, LOINC codes and valid ranges.

One place for what an NCD feature *is* (contract C2), used by training (FHIR Bulk
and CSV adapters, synthetic data) and by serving (FHIR Observations in CDS Hooks
prefetch), so both convert units the same way. Codes and conversions follow
docs/standards.md (LOINC for quantities, UCUM units, SNOMED CT for smoking status).

Valid ranges are *plausibility* limits for a measured value: outside them a value is
an error (wrong unit, typo), reported and never used. They are wider than any
model's validity range (e.g. the WHO charts' age 40-74).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from models.metadata import FeatureSpec

__all__ = [
    "ATC_SYSTEM",
    "BP_LOWERING_ATC",
    "BP_PANEL_LOINC",
    "CANONICAL_UNITS",
    "CVD_CONDITION_CODES",
    "DIABETES_CONDITION_CODES",
    "FEATURES",
    "FEATURE_BY_NAME",
    "GLUCOSE_LOWERING_ATC",
    "LOINC_TO_FEATURE",
    "MEASURED_FEATURES",
    "OUTCOME_COLUMNS",
    "SMOKING_CURRENT_SNOMED",
    "SMOKING_LOINC",
    "SMOKING_NOT_CURRENT_SNOMED",
    "UnitError",
    "allowed_units",
    "convert",
    "convert_array",
    "feature_columns",
    "icd10_is_cvd",
    "icd10_is_diabetes",
]


class UnitError(ValueError):
    """A unit the project does not know how to convert.

    Attributes:
        quantity: The feature, e.g. ``"total_chol"``.
        unit: The unit given.
        allowed: The units accepted for this quantity.
    """

    def __init__(self, quantity: str, unit: str, allowed: list[str]) -> None:
        self.quantity = quantity
        self.unit = unit
        self.allowed = allowed
        super().__init__(
            f"{quantity}: unit {unit!r} is not accepted; use one of {', '.join(allowed)}"
        )


FEATURES: Final[list[FeatureSpec]] = [
    FeatureSpec(name="age", description="age at the index date", unit="a",
                minimum=18.0, maximum=110.0),
    FeatureSpec(name="sex", description="administrative sex, 1 = male, 0 = female", unit="1",
                minimum=0.0, maximum=1.0),
    FeatureSpec(name="smoking", description="current tobacco smoker (0/1)", unit="1",
                minimum=0.0, maximum=1.0, loinc="72166-2"),
    FeatureSpec(name="sbp", description="systolic blood pressure", unit="mm[Hg]",
                minimum=60.0, maximum=280.0, loinc="8480-6"),
    FeatureSpec(name="dbp", description="diastolic blood pressure", unit="mm[Hg]",
                minimum=30.0, maximum=180.0, loinc="8462-4", required=False),
    FeatureSpec(name="bmi", description="body-mass index", unit="kg/m2",
                minimum=10.0, maximum=80.0, loinc="39156-5"),
    FeatureSpec(name="total_chol", description="total cholesterol", unit="mmol/L",
                minimum=1.0, maximum=20.0, loinc="2093-3"),
    FeatureSpec(name="hdl", description="HDL cholesterol", unit="mmol/L",
                minimum=0.1, maximum=5.0, loinc="2085-9", required=False),
    FeatureSpec(name="hba1c", description="haemoglobin A1c (NGSP)", unit="%",
                minimum=3.0, maximum=20.0, loinc="4548-4", required=False),
    FeatureSpec(name="fasting_glucose", description="fasting plasma glucose", unit="mmol/L",
                minimum=1.0, maximum=40.0, loinc="1558-6", required=False),
    FeatureSpec(name="diabetes", description="diabetes at the index date (0/1)", unit="1",
                minimum=0.0, maximum=1.0),
    FeatureSpec(name="bp_treated", description="on blood-pressure-lowering drugs (0/1)",
                unit="1", minimum=0.0, maximum=1.0, required=False),
]  # fmt: skip

FEATURE_BY_NAME: Final[dict[str, FeatureSpec]] = {f.name: f for f in FEATURES}

#: Features measured by an Observation; each has a ``<name>_date`` column.
MEASURED_FEATURES: Final[tuple[str, ...]] = (
    "smoking", "sbp", "dbp", "bmi", "total_chol", "hdl", "hba1c", "fasting_glucose",
)  # fmt: skip

OUTCOME_COLUMNS: Final[tuple[str, ...]] = (
    "cvd_event", "cvd_time", "diabetes_event", "diabetes_time",
)  # fmt: skip

SMOKING_LOINC: Final = "72166-2"
BP_PANEL_LOINC: Final = "85354-9"

LOINC_TO_FEATURE: Final[dict[str, str]] = {
    f.loinc: f.name for f in FEATURES if f.loinc is not None and f.name != "smoking"
}

#: SNOMED CT smoking-status answers (LOINC 72166-2) meaning a current smoker.
SMOKING_CURRENT_SNOMED: Final[frozenset[str]] = frozenset({
    "77176002",  # Smoker
    "449868002",  # Smokes tobacco daily
    "428041000124106",  # Occasional tobacco smoker
    "428061000124105",  # Light tobacco smoker
    "428071000124103",  # Heavy tobacco smoker
    "65568007",  # Cigarette smoker
})  # fmt: skip
#: Answers meaning not a current smoker. Anything else (e.g. 266927001 "unknown") = missing.
SMOKING_NOT_CURRENT_SNOMED: Final[frozenset[str]] = frozenset({
    "266919005",  # Never smoked tobacco
    "8517006",  # Ex-smoker
    "8392000",  # Non-smoker
})  # fmt: skip

#: SNOMED CT concepts (and common descendants) for the CVD outcome: MI or stroke.
CVD_CONDITION_CODES: Final[frozenset[str]] = frozenset({
    "22298006",  # Myocardial infarction
    "57054005",  # Acute myocardial infarction
    "401303003",  # Acute ST segment elevation myocardial infarction
    "401314000",  # Acute non-ST segment elevation myocardial infarction
    "230690007",  # Cerebrovascular accident (stroke)
    "422504002",  # Ischemic stroke
    "274100004",  # Cerebral hemorrhage
})  # fmt: skip
#: WHO ATC system and the classes of blood-pressure-lowering drugs (``bp_treated``):
#: C02 antihypertensives, C03 diuretics, C07 beta blockers, C08 calcium channel
#: blockers, C09 agents acting on the renin-angiotensin system.
ATC_SYSTEM: Final = "http://www.whocc.no/atc"
BP_LOWERING_ATC: Final[tuple[str, ...]] = ("C02", "C03", "C07", "C08", "C09")
#: ATC class A10, drugs used in diabetes (insulins and glucose-lowering drugs): taking
#: one is evidence of diabetes (``diabetes``, :mod:`models.diabetes_status`).
GLUCOSE_LOWERING_ATC: Final[tuple[str, ...]] = ("A10",)
#: SNOMED CT concepts for diabetes mellitus.
DIABETES_CONDITION_CODES: Final[frozenset[str]] = frozenset({
    "73211009",  # Diabetes mellitus
    "44054006",  # Diabetes mellitus type 2
    "46635009",  # Diabetes mellitus type 1
})  # fmt: skip


def icd10_is_cvd(code: str) -> bool:
    """ICD-10 myocardial infarction (I21-I22) or stroke (I60-I64)."""
    c = code.upper().replace(".", "")
    return c[:3] in {"I21", "I22", "I60", "I61", "I62", "I63", "I64"}


def icd10_is_diabetes(code: str) -> bool:
    """ICD-10 diabetes mellitus (E10-E14)."""
    c = code.upper().replace(".", "")
    return c[:3] in {"E10", "E11", "E12", "E13", "E14"}


CANONICAL_UNITS: Final[dict[str, str]] = {
    f.name: f.unit for f in FEATURES if f.name in MEASURED_FEATURES and f.name != "smoking"
}

# quantity -> UCUM unit -> (scale, offset): canonical = value * scale + offset.
_MG_DL_CHOL = 1.0 / 38.67
_MG_DL_GLUCOSE = 1.0 / 18.016
_CONVERSIONS: Final[dict[str, dict[str, tuple[float, float]]]] = {
    "sbp": {"mm[Hg]": (1.0, 0.0), "mmHg": (1.0, 0.0)},
    "dbp": {"mm[Hg]": (1.0, 0.0), "mmHg": (1.0, 0.0)},
    "bmi": {"kg/m2": (1.0, 0.0), "kg/m^2": (1.0, 0.0)},
    "total_chol": {"mmol/L": (1.0, 0.0), "mg/dL": (_MG_DL_CHOL, 0.0)},
    "hdl": {"mmol/L": (1.0, 0.0), "mg/dL": (_MG_DL_CHOL, 0.0)},
    "fasting_glucose": {"mmol/L": (1.0, 0.0), "mg/dL": (_MG_DL_GLUCOSE, 0.0)},
    # IFCC mmol/mol -> NGSP %: % = mmol/mol / 10.929 + 2.15
    "hba1c": {"%": (1.0, 0.0), "mmol/mol": (1.0 / 10.929, 2.15)},
}


def allowed_units(quantity: str) -> list[str]:
    """UCUM units accepted for a measured quantity (first = canonical)."""
    if quantity not in _CONVERSIONS:
        raise KeyError(f"{quantity!r} is not a measured quantity; use one of {list(_CONVERSIONS)}")
    return list(_CONVERSIONS[quantity])


def _factor(quantity: str, unit: str) -> tuple[float, float]:
    units = _CONVERSIONS.get(quantity)
    if units is None:
        raise KeyError(f"{quantity!r} is not a measured quantity; use one of {list(_CONVERSIONS)}")
    factor = units.get(unit.strip())
    if factor is None:
        raise UnitError(quantity, unit, list(units))
    return factor


def convert(quantity: str, value: float, unit: str) -> float:
    """Convert one value to the feature's canonical unit.

    Args:
        quantity: Feature name, e.g. ``"total_chol"``.
        value: The number as recorded.
        unit: Its UCUM unit, e.g. ``"mg/dL"``.

    Returns:
        The value in :data:`CANONICAL_UNITS` ``[quantity]`` (e.g. mmol/L).

    Raises:
        UnitError: The unit is not one this quantity accepts.
    """
    scale, offset = _factor(quantity, unit)
    return value * scale + offset


def convert_array(quantity: str, values: npt.ArrayLike, unit: str) -> npt.NDArray[np.float64]:
    """Vectorised :func:`convert` for one unit."""
    scale, offset = _factor(quantity, unit)
    return np.asarray(values, dtype=np.float64) * scale + offset


def feature_columns() -> list[str]:
    """All columns of the C2 feature table, in order."""
    cols = ["patient_id", "index_date", "site", *(f.name for f in FEATURES)]
    cols += [f"{name}_date" for name in MEASURED_FEATURES]
    return cols + list(OUTCOME_COLUMNS)
