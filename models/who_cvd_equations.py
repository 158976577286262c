"""The WHO 2019 CVD equations and their published tables.

Sex- and endpoint-specific Cox coefficients (``models/data/who2019_cvd_coefficients.csv``)
and the GBD 2017 recalibration of each region and country
(``models/data/who2019_cvd_recalibration_2017.csv``); the formulas are in
:mod:`models.who_cvd`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import numpy.typing as npt

from models.who_cvd_inputs import WhoCvdInputError

__all__ = [
    "FloatArray",
    "Recalibration",
    "list_countries",
    "list_regions",
    "recalibration",
    "resolve_recalibration",
    "risk_arrays",
]

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


@dataclass(frozen=True)
class Recalibration:
    """The GBD 2017 recalibration of one region, or of one country within it."""

    region_code: str
    region_name: str
    country_code: str | None
    # (sex, model, endpoint) -> (cons, slope)
    params: dict[tuple[str, str, str], tuple[float, float]]


@dataclass(frozen=True)
class _Tables:
    # (model, endpoint, sex) -> (baseline survival, coefficients in _TERMS order)
    coefficients: dict[tuple[str, str, str], tuple[float, tuple[float, ...]]]
    regions: dict[str, Recalibration]
    region_by_name: dict[str, str]
    countries: dict[str, tuple[str, str, Recalibration]]  # code -> name, region code, params


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
    regions: dict[str, Recalibration] = {}
    for code, group in by_code.items():
        # Super-region rows (gbd_region "Global") carry no recalibration: not chart regions.
        if group[0]["level"] == "region" and all(r["cons"] for r in group):
            regions[code] = Recalibration(code, group[0]["name"], None, _params(group))
    region_by_name = {rec.region_name: code for code, rec in regions.items()}
    countries: dict[str, tuple[str, str, Recalibration]] = {}
    for code, group in by_code.items():
        if group[0]["level"] != "country":
            continue
        region = regions[region_by_name[group[0]["gbd_region"]]]
        if all(r["cons"] for r in group):
            rec = Recalibration(region.region_code, region.region_name, code, _params(group))
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
    rec = recalibration(region, country)
    return rec.region_code, rec.region_name, rec.country_code


def recalibration(region: str | None, country: str | None) -> Recalibration:
    """The recalibration a region / country choice resolves to (as :func:`resolve_recalibration`).

    Raises:
        WhoCvdInputError: As :func:`resolve_recalibration`.
    """
    tables = _tables()
    region_code: str | None = None
    if region is not None:
        region_code = region if region in tables.regions else tables.region_by_name.get(region)
        if region_code is None:
            raise WhoCvdInputError(
                "region", region, "not a GBD region code or name (tonle who regions lists them)"
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


FloatArray = npt.NDArray[np.float64]


def risk_arrays(
    model: str,
    male: npt.NDArray[np.bool_],
    rec: Recalibration,
    *,
    age: FloatArray,
    smoking: FloatArray,
    sbp: FloatArray,
    total_chol: FloatArray | None,
    diabetes: FloatArray | None,
    bmi: FloatArray | None,
) -> FloatArray:
    """Recalibrated 10-year CVD risk per row; inputs are not checked.

    Args:
        model: ``"lab"`` or ``"nonlab"``.
        male: True for men, False for women.
        rec: The recalibration to apply.
        age: Years. smoking: 0/1. sbp: mmHg.
        total_chol: mmol/L, diabetes: 0/1 (lab; ``None`` for non-lab).
        bmi: kg/m2 (non-lab; ``None`` for lab).

    Returns:
        Risks as fractions, float64, one per row.
    """
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
