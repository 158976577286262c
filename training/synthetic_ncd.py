"""A seeded, Cambodia-like synthetic NCD cohort written as FHIR Bulk NDJSON.

Adults aged 40-74 at a common index date (2016-01-01) with correlated risk
factors, CVD outcomes drawn from the WHO 2019 Southeast Asia lab model and diabetes
outcomes from the documented hazard below, with censoring. The output is FHIR R4
Bulk NDJSON (``Patient``, ``Observation``, ``Condition``, ``MedicationRequest``) so
that training exercises the same path as a hospital export
(:func:`training.fhir_bulk.build_feature_table`).

Distributions are *approximations* anchored on the Cambodia WHO STEPS survey 2016
(adults 18-69; fact sheet and report, Ministry of Health / WHO) as we recall its
headline figures: current tobacco smoking about a third of men and a few percent of
women; mean SBP in the low 120s mmHg, rising with age; mean BMI about 22 kg/m2; mean
total cholesterol about 4.3 mmol/L; raised fasting glucose or diabetes in roughly 1 in
10 adults over 40. They were not re-checked against the documents offline and the
cohort is for software testing and demonstration, not epidemiology. The data card is
``datasets/synthetic-ncd/README.md``.

Outcome models:

* CVD: ``r`` = WHO 2019 lab-model 10-year risk (Southeast Asia region); time to event
  exponential with constant hazard ``-ln(1 - r) / 10`` per year, so the 10-year
  cumulative incidence equals ``r`` exactly.
* Diabetes (only people without diabetes at baseline): exponential with hazard
  ``0.006 * exp(0.03 (age - 50) + 0.12 (BMI - 22) + 1.2 (HbA1c - 5.4)
  + 0.01 (SBP - 120))`` per year.
* Censoring: administrative end uniform on 4-12 years after the index date
  (staggered enrolment), and loss to follow-up exponential at 3 % per year; the
  earlier applies. Follow-up end is written as a last-contact blood pressure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.who_cvd import who_cvd_risk_batch

__all__ = ["INDEX_DATE", "Cohort", "generate", "simulate"]

INDEX_DATE = date(2016, 1, 1)
_REGION = "A05GBDR_014_SEA"
_SITES = ("site-kampong-cham", "site-siem-reap", "site-phnom-penh", "site-battambang")

FloatArray = npt.NDArray[np.float64]


@dataclass
class Cohort:
    """The simulated people (arrays of length n) and their true outcome risks."""

    male: npt.NDArray[np.bool_]
    age: FloatArray
    smoking: FloatArray
    sbp: FloatArray
    dbp: FloatArray
    bmi: FloatArray
    total_chol: FloatArray
    hdl: FloatArray
    hba1c: FloatArray
    fasting_glucose: FloatArray
    diabetes: FloatArray
    bp_treated: FloatArray
    site: npt.NDArray[np.str_]
    cvd_risk10: FloatArray
    cvd_years: FloatArray
    diabetes_years: FloatArray
    followup_years: FloatArray


def simulate(n: int, seed: int) -> Cohort:
    """Draw the cohort (no I/O). Same ``n`` and ``seed`` give the same cohort."""
    if n < 1:
        raise ValueError(f"n={n}: must be at least 1")
    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.48
    # Younger ages more common, as in the population pyramid; charts' range 40-74.
    age = np.clip(40.0 + 35.0 * rng.beta(1.2, 1.9, n), 40.0, 74.9)
    smoking = (rng.random(n) < np.where(male, 0.33, 0.03)).astype(float)
    bmi = np.clip(np.exp(rng.normal(np.log(22.3), 0.16, n)) + 0.03 * (age - 50), 14.0, 50.0)
    # Shared latent "metabolic" factor correlates BP, cholesterol and glucose.
    metabolic = rng.normal(0.0, 1.0, n)
    sbp = (
        112.0
        + 0.55 * (age - 40.0)
        + 1.1 * (bmi - 22.3)
        + 4.0 * male
        + 5.0 * metabolic
        + rng.normal(0.0, 14.0, n)
    )
    sbp = np.clip(sbp, 85.0, 240.0)
    dbp = np.clip(0.45 * sbp + 18.0 + 0.3 * (bmi - 22.3) + rng.normal(0.0, 7.0, n), 45.0, 140.0)
    total_chol = np.clip(
        4.0
        + 0.012 * (age - 40.0)
        + 0.05 * (bmi - 22.3)
        + 0.25 * metabolic
        + rng.normal(0.0, 0.85, n),
        2.0,
        11.0,
    )
    hdl = np.clip(rng.normal(np.where(male, 1.1, 1.3), 0.28, n) - 0.02 * (bmi - 22.3), 0.4, 3.0)
    logit_dm = -3.4 + 0.045 * (age - 40.0) + 0.12 * (bmi - 22.3) + 0.5 * metabolic
    diabetes = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit_dm))).astype(float)
    hba1c = np.where(
        diabetes == 1.0,
        np.clip(rng.normal(8.0, 1.5, n), 6.5, 14.0),
        np.clip(rng.normal(5.4, 0.35, n) + 0.02 * (bmi - 22.3), 4.2, 6.4),
    )
    fasting_glucose = np.where(
        diabetes == 1.0,
        np.clip(rng.normal(9.0, 2.2, n), 7.0, 22.0),
        np.clip(rng.normal(5.2, 0.5, n), 3.6, 6.9),
    )
    bp_treated = ((sbp >= 140.0) & (rng.random(n) < 0.3)).astype(float)
    site = np.asarray(_SITES)[rng.integers(0, len(_SITES), n)]

    risk = who_cvd_risk_batch(
        "lab", male.astype(float), age, smoking, sbp, total_chol, diabetes, region=_REGION
    )
    cvd_years = rng.exponential(10.0 / -np.log1p(-risk))
    dm_hazard = 0.006 * np.exp(
        0.03 * (age - 50.0) + 0.12 * (bmi - 22.0) + 1.2 * (hba1c - 5.4) + 0.01 * (sbp - 120.0)
    )
    diabetes_years = np.where(diabetes == 1.0, np.inf, rng.exponential(1.0 / dm_hazard))
    followup = np.minimum(rng.uniform(4.0, 12.0, n), rng.exponential(1.0 / 0.03, n))
    followup = np.maximum(followup, 0.05)
    return Cohort(
        male=male,
        age=age,
        smoking=smoking,
        sbp=sbp,
        dbp=dbp,
        bmi=bmi,
        total_chol=total_chol,
        hdl=hdl,
        hba1c=hba1c,
        fasting_glucose=fasting_glucose,
        diabetes=diabetes,
        bp_treated=bp_treated,
        site=site,
        cvd_risk10=risk,
        cvd_years=cvd_years,
        diabetes_years=diabetes_years,
        followup_years=followup,
    )


def _day(offset_days: npt.NDArray[np.int64]) -> list[str]:
    base = np.datetime64(INDEX_DATE.isoformat(), "D")
    return [str(d) for d in base + offset_days.astype("timedelta64[D]")]


_LOINC = "http://loinc.org"


def _quantity(value: float, unit: str) -> str:
    return (
        f'{{"value":{value:.1f},"unit":"{unit}","system":"http://unitsofmeasure.org",'
        f'"code":"{unit}"}}'
    )


def _coding(system: str, code: str, display: str | None = None) -> str:
    shown = "" if display is None else f',"display":"{display}"'
    return f'{{"coding":[{{"system":"{system}","code":"{code}"{shown}}}]}}'


def _subject(pid: str) -> str:
    return f'"subject":{{"reference":"Patient/{pid}"}}'


def _obs(oid: str, pid: str, day: str, loinc: str, value_json: str) -> str:
    return (
        f'{{"resourceType":"Observation","id":"{oid}","status":"final",'
        f'"code":{_coding(_LOINC, loinc)},{_subject(pid)},"effectiveDateTime":"{day}",'
        f"{value_json}}}"
    )


def _bp(oid: str, pid: str, day: str, sbp: float, dbp: float) -> str:
    comps = ",".join(
        f'{{"code":{_coding(_LOINC, code)},"valueQuantity":{_quantity(v, "mm[Hg]")}}}'
        for code, v in (("8480-6", sbp), ("8462-4", dbp))
    )
    return _obs(oid, pid, day, "85354-9", f'"component":[{comps}]')


def _condition(cid: str, pid: str, day: str, snomed: str, display: str) -> str:
    return (
        f'{{"resourceType":"Condition","id":"{cid}",'
        f'"code":{_coding("http://snomed.info/sct", snomed, display)},'
        f'{_subject(pid)},"onsetDateTime":"{day}"}}'
    )


def _medication(mid: str, pid: str, day: str, atc: str, display: str) -> str:
    return (
        f'{{"resourceType":"MedicationRequest","id":"{mid}","status":"active","intent":"order",'
        f'"medicationCodeableConcept":{_coding("http://www.whocc.no/atc", atc, display)},'
        f'{_subject(pid)},"authoredOn":"{day}"}}'
    )


def generate(out_dir: Path | str, n: int, seed: int) -> Path:
    """Simulate ``n`` people and write them as FHIR Bulk NDJSON into ``out_dir``.

    About 30 % of cholesterol results are written in mg/dL and 20 % of HbA1c results
    in mmol/mol, so unit conversion is exercised. Everything is seeded.

    Returns:
        ``out_dir`` (with ``Patient.ndjson``, ``Observation.ndjson``,
        ``Condition.ndjson``, ``MedicationRequest.ndjson`` and ``manifest.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = simulate(n, seed)
    rng = np.random.default_rng([seed, 1])
    days_per_year = 365.25
    birth = _day(-np.round(c.age * days_per_year).astype(np.int64))
    visit = _day(-rng.integers(0, 180, n))  # baseline visit, up to 6 months before index
    lab = _day(-rng.integers(0, 365, n))
    end = _day(np.round(c.followup_years * days_per_year).astype(np.int64))
    # Outcomes are strictly after the index date (day >= 1), as the builder requires.
    cvd_day = _day(
        np.maximum(np.round(np.minimum(c.cvd_years, 99.0) * days_per_year), 1).astype(np.int64)
    )
    dm_day = _day(
        np.maximum(np.round(np.minimum(c.diabetes_years, 99.0) * days_per_year), 1).astype(np.int64)
    )
    dx_day = _day(-rng.integers(200, 3000, n))
    chol_mg = rng.random(n) < 0.3
    a1c_ifcc = rng.random(n) < 0.2
    stroke = rng.random(n) < 0.55  # stroke is the commoner CVD event in the region

    with (
        (out / "Patient.ndjson").open("w", encoding="utf-8") as fp,
        (out / "Observation.ndjson").open("w", encoding="utf-8") as fo,
        (out / "Condition.ndjson").open("w", encoding="utf-8") as fc,
        (out / "MedicationRequest.ndjson").open("w", encoding="utf-8") as fm,
    ):
        for i in range(n):
            pid = f"p{seed}-{i:07d}"
            fp.write(
                f'{{"resourceType":"Patient","id":"{pid}",'
                f'"gender":"{"male" if c.male[i] else "female"}","birthDate":"{birth[i]}",'
                f'"managingOrganization":{{"reference":"Organization/{c.site[i]}"}}}}\n'
            )
            v, d = visit[i], lab[i]
            smoke = "77176002" if c.smoking[i] else "266919005"
            chol = (
                _quantity(c.total_chol[i] * 38.67, "mg/dL")
                if chol_mg[i]
                else (
                    f'{{"value":{c.total_chol[i]:.2f},"unit":"mmol/L",'
                    f'"system":"http://unitsofmeasure.org","code":"mmol/L"}}'
                )
            )
            a1c = (
                _quantity((c.hba1c[i] - 2.15) * 10.929, "mmol/mol")
                if a1c_ifcc[i]
                else _quantity(c.hba1c[i], "%")
            )
            fo.write(
                "\n".join(
                    (
                        _bp(f"{pid}-bp", pid, v, c.sbp[i], c.dbp[i]),
                        _obs(
                            f"{pid}-bmi",
                            pid,
                            v,
                            "39156-5",
                            f'"valueQuantity":{_quantity(c.bmi[i], "kg/m2")}',
                        ),
                        _obs(
                            f"{pid}-smk",
                            pid,
                            v,
                            "72166-2",
                            f'"valueCodeableConcept":{{"coding":[{{'
                            f'"system":"http://snomed.info/sct","code":"{smoke}"}}]}}',
                        ),
                        _obs(f"{pid}-tc", pid, d, "2093-3", f'"valueQuantity":{chol}'),
                        _obs(
                            f"{pid}-hdl",
                            pid,
                            d,
                            "2085-9",
                            f'"valueQuantity":{{"value":{c.hdl[i]:.2f},"unit":"mmol/L",'
                            f'"system":"http://unitsofmeasure.org","code":"mmol/L"}}',
                        ),
                        _obs(f"{pid}-a1c", pid, d, "4548-4", f'"valueQuantity":{a1c}'),
                        _obs(
                            f"{pid}-fpg",
                            pid,
                            d,
                            "1558-6",
                            f'"valueQuantity":{_quantity(c.fasting_glucose[i], "mmol/L")}',
                        ),
                        _bp(f"{pid}-end", pid, end[i], c.sbp[i], c.dbp[i]),
                    )
                )
                + "\n"
            )
            if c.diabetes[i]:
                fc.write(
                    _condition(f"{pid}-dm0", pid, dx_day[i], "44054006", "Diabetes mellitus type 2")
                    + "\n"
                )
                fm.write(_medication(f"{pid}-met", pid, v, "A10BA02", "metformin") + "\n")
            if c.bp_treated[i]:
                fm.write(_medication(f"{pid}-aml", pid, v, "C08CA01", "amlodipine") + "\n")
            if c.cvd_years[i] <= c.followup_years[i]:
                code, name = ("230690007", "Stroke") if stroke[i] else ("22298006", "MI")
                fc.write(_condition(f"{pid}-cvd", pid, cvd_day[i], code, name) + "\n")
            if c.diabetes_years[i] <= c.followup_years[i]:
                fc.write(
                    _condition(f"{pid}-dm1", pid, dm_day[i], "44054006", "Diabetes mellitus type 2")
                    + "\n"
                )
    manifest = {
        "generator": "training.synthetic_ncd",
        "n": n,
        "seed": seed,
        "index_date": INDEX_DATE.isoformat(),
        "region": _REGION,
        "end_date": (INDEX_DATE + timedelta(days=int(12 * days_per_year) + 1)).isoformat(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
