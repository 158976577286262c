"""Realised accuracy of chest X-ray reads, from outcomes that arrive later.

A programme gets bacteriology results (Xpert, culture) weeks after the X-ray. This
joins each result to the read of the same patient, by the same tenant (site), made in
the ``window_days`` before the test, and counts per period (month) and per subgroup:
true/false positives and negatives of one finding at the threshold each read applied
(sensitivity and specificity with Wilson 95 % intervals) and the calibration of its
probability (mean predicted against observed, by probability decile).

Outcomes come from a CSV (``patient_id,date,result`` and optional subgroup columns
such as ``sex``, ``age``, ``hiv``) or a FHIR Bulk export (NDJSON of Observation and
Condition resources). Patient ids are used only to join; nothing written names them.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from models.intervals import wilson
from serving.imaging.results import CxrResult

__all__ = [
    "Joined",
    "Outcome",
    "OutcomeError",
    "Performance",
    "calibration",
    "csv_rows",
    "iso_date",
    "join",
    "performance",
    "read_file",
    "read_outcomes",
]

_POSITIVE = {"1", "positive", "pos", "detected", "true", "yes", "10828004", "POS"}
_NEGATIVE = {"0", "negative", "neg", "not detected", "false", "no", "260385009", "NEG"}
_SUBGROUPS = ("sex", "age_group", "hiv", "symptoms")
MAX_ROWS = 5_000_000
T = TypeVar("T")


class OutcomeError(ValueError):
    """The outcome file is malformed (message names the line and the problem)."""


@dataclass(frozen=True)
class Outcome:
    """One later result for a patient: ``positive`` (True/False) on ``tested``."""

    patient: str
    tested: date
    positive: bool
    groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Joined:
    """An outcome and the read it confirms or refutes."""

    outcome: Outcome
    result: CxrResult
    probability: float
    flagged: bool


def _patient(value: str) -> str:
    return value.strip().removeprefix("Patient/")


def _result(value: str, where: str) -> bool:
    text = value.strip()
    if text in _POSITIVE or text.lower() in _POSITIVE:
        return True
    if text in _NEGATIVE or text.lower() in _NEGATIVE:
        return False
    raise OutcomeError(f"{where}: result {text[:40]!r} is neither positive nor negative")


def iso_date(value: str, where: str) -> date:
    """The ISO date ``value`` starts with.

    Raises:
        OutcomeError: naming ``where`` (the line) when it is not one.
    """
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise OutcomeError(f"{where}: date {value[:40]!r} is not an ISO date") from None


def _age_group(value: str) -> str:
    try:
        age = float(value)
    except ValueError:
        return "unknown"
    return "unknown" if not math.isfinite(age) else ("55+" if age >= 55 else "<55")


def read_file(
    path: Path,
    from_csv: Callable[[Path], Iterable[T]],
    from_fhir: Callable[[dict[str, object], str], Iterable[T]],
) -> list[T]:
    """The rows of a CSV, or of a FHIR Bulk NDJSON file (``.ndjson``), as ``from_csv``
    and ``from_fhir`` (given each resource and its line) read them.

    Raises:
        OutcomeError: a line that is not a JSON object; more than :data:`MAX_ROWS` rows;
            what the readers raise.
    """
    found = _ndjson(path, from_fhir) if path.suffix == ".ndjson" else from_csv(path)
    rows: list[T] = []
    for row in found:
        if len(rows) == MAX_ROWS:
            raise OutcomeError(f"more than {MAX_ROWS} outcomes")
        rows.append(row)
    return rows


def _ndjson(path: Path, from_fhir: Callable[[dict[str, object], str], Iterable[T]]) -> Iterator[T]:
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"line {line}"
            try:
                resource = json.loads(text)
            except json.JSONDecodeError:
                raise OutcomeError(f"{where}: not JSON") from None
            if not isinstance(resource, dict):
                raise OutcomeError(f"{where}: not a FHIR resource")
            yield from from_fhir(resource, where)


def csv_rows(path: Path, column: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``(line, patient, row)`` for each row of a CSV with a ``patient_id`` (or
    ``person_id``), ``date`` and ``column`` column.

    Raises:
        OutcomeError: a missing column or a row without a patient.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        id_column = "patient_id" if "patient_id" in columns else "person_id"
        missing = {id_column, "date", column} - columns
        if missing:
            raise OutcomeError(f"missing column(s): {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            where = f"line {line}"
            patient = _patient(row[id_column] or "")
            if not patient:
                raise OutcomeError(f"{where}: no {id_column}")
            yield where, patient, row


def read_outcomes(path: Path) -> list[Outcome]:
    """Outcomes from a CSV or a FHIR Bulk NDJSON file (``.ndjson``).

    Raises:
        OutcomeError: a row without a patient, an unreadable date or result.
    """
    return read_file(path, _csv, _from_fhir)


def _csv(path: Path) -> Iterator[Outcome]:
    for where, patient, row in csv_rows(path, "result"):
        groups = {k: (row.get(k) or "").strip()[:32] or "unknown" for k in _SUBGROUPS
                  if k in row and k != "age_group"}  # fmt: skip
        if "age" in row:
            groups["age_group"] = _age_group(row["age"] or "")
        yield Outcome(patient, iso_date(row["date"] or "", where),
                      _result(row["result"] or "", where), groups)  # fmt: skip


def _from_fhir(resource: dict[str, object], where: str) -> Iterator[Outcome]:
    kind = resource.get("resourceType")
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if kind not in ("Observation", "Condition") or not isinstance(reference, str):
        return
    patient = _patient(reference)
    if kind == "Condition":  # a diagnosis: a positive outcome
        when = resource.get("onsetDateTime") or resource.get("recordedDate")
        yield Outcome(patient, iso_date(str(when or ""), where), True)
        return
    if resource.get("status") not in ("final", "amended", "corrected"):
        return
    codes: list[str] = []
    for key in ("valueCodeableConcept", "interpretation"):
        concepts = resource.get(key)
        for concept in concepts if isinstance(concepts, list) else [concepts]:
            if isinstance(concept, dict):
                codes += [
                    str(c.get("code")) for c in concept.get("coding", []) if isinstance(c, dict)
                ]
    if isinstance(resource.get("valueString"), str):
        codes.append(str(resource["valueString"]))
    for code in codes:
        if code in _POSITIVE or code in _NEGATIVE or code.lower() in _POSITIVE | _NEGATIVE:
            when = resource.get("effectiveDateTime") or resource.get("issued")
            yield Outcome(patient, iso_date(str(when or ""), where), _result(code, where))
            return


def join(
    outcomes: Iterable[Outcome],
    reads_of: dict[str, list[CxrResult]],
    *,
    finding: str,
    window_days: int,
) -> tuple[list[Joined], int]:
    """Each outcome with its patient's latest read in the ``window_days`` before (or on)
    the test date; also how many outcomes had no such read."""
    joined, unmatched = [], 0
    for outcome in outcomes:
        start = datetime.combine(
            outcome.tested - timedelta(days=window_days), datetime.min.time(), UTC
        )
        end = datetime.combine(outcome.tested + timedelta(days=1), datetime.min.time(), UTC)
        reads = [r for r in reads_of.get(outcome.patient, ()) if start <= r.created < end]
        read = max(reads, key=lambda r: r.created, default=None)
        hit = None if read is None else next((f for f in read.findings if f.label == finding), None)
        if read is None or hit is None:
            unmatched += 1
            continue
        joined.append(Joined(outcome, read, hit.probability, hit.flagged))
    return joined, unmatched


@dataclass
class Performance:
    """Confusion counts of one group and period."""

    group: str
    period: str
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, flagged: bool, positive: bool) -> None:
        """Count one joined read."""
        if positive:
            self.tp += flagged
            self.fn += not flagged
        else:
            self.fp += flagged
            self.tn += not flagged

    def row(self) -> dict[str, object]:
        """The CSV row: counts, sensitivity and specificity with Wilson 95 % CIs."""
        sens, sens_lo, sens_hi = _wilson(self.tp, self.tp + self.fn)
        spec, spec_lo, spec_hi = _wilson(self.tn, self.tn + self.fp)
        n = self.tp + self.fp + self.tn + self.fn
        return {
            "group": self.group, "period": self.period, "n": n,
            "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
            "sensitivity": sens, "sensitivity_low": sens_lo, "sensitivity_high": sens_hi,
            "specificity": spec, "specificity_low": spec_lo, "specificity_high": spec_hi,
        }  # fmt: skip


def _wilson(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    low, high = wilson(k / n, n)
    return k / n, float(low), float(high)


def performance(joined: Iterable[Joined]) -> list[Performance]:
    """Per (group, month) and per group over all time ("all"); group "all" too."""
    table: dict[tuple[str, str], Performance] = {}
    for j in joined:
        month = j.outcome.tested.strftime("%Y-%m")
        groups = ["all"] + [f"{k}={v}" for k, v in sorted(j.outcome.groups.items())]
        groups.append(f"model={j.result.model.version}")
        for group in groups:
            for period in ("all", month):
                table.setdefault((group, period), Performance(group, period)).add(
                    j.flagged, j.outcome.positive
                )
    return [table[k] for k in sorted(table)]


def calibration(joined: Iterable[Joined], bins: int = 10) -> list[dict[str, object]]:
    """Mean predicted probability against the observed positive share, per decile
    of probability (equal-width bins on 0-1)."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for j in joined:
        b = min(int(j.probability * bins), bins - 1)
        sums[b][0] += 1
        sums[b][1] += j.probability
        sums[b][2] += j.outcome.positive
    return [{"bin_low": b / bins, "bin_high": (b + 1) / bins, "n": int(n),
             "mean_predicted": p / n, "observed": o / n}
            for b, (n, p, o) in sorted(sums.items())]  # fmt: skip
