"""Observed against expected risk of NCD cards, from outcomes that arrive years later.

A programme's registry (or EHR extract) lists incident events: a CVD event, a new
diabetes diagnosis. This joins them to the NCD cards one tenant was shown (the risk and
band each card's stored explanation holds) and reports, per risk band, the mean
predicted risk against the observed risk by the model's horizon: calibration in the
large and observed/expected (O/E) per band.

Follow-up is counted honestly:

- each patient counts once per service, from the first card shown (the index date);
  later cards of the same patient are not counted again;
- an event on or before the index date means the patient already had the outcome:
  excluded ("prior"), neither case nor control;
- follow-up ends at the horizon, at ``followed_until`` (the date up to which the
  outcome file is complete for everyone) or at the patient's own ``censored`` row
  (moved away, died of another cause), whichever comes first;
- a patient followed for less than the horizon without an event is *censored*: never a
  negative. The observed risk is the Kaplan-Meier estimate by the horizon, to which a
  censored patient contributes the time they were seen; when nobody in a band was
  followed to the horizon, its observed risk is not evaluable (None), not 0.

Outcome file: a CSV ``patient_id`` (or ``person_id``), ``date``, ``outcome`` (a code:
ICD-10, SNOMED CT or a word; ``censored`` ends that patient's follow-up), or a FHIR
Bulk export (NDJSON: Condition resources are events by their code, a Patient's
``deceasedDateTime`` ends follow-up). Patient ids are used only to join.

Explanations are purged after ``explanation_retention_days``: a card whose explanation
is gone has no stored risk and is counted as ``expired``, not guessed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, exists, select

from models import intervals
from serving.audit import schema
from serving.audit.engine import READ_ONLY
from serving.monitor.outcomes import OutcomeError, csv_rows, iso_date, read_file

__all__ = [
    "CENSOR_CODES",
    "DEFAULT_CODES",
    "MODEL_HORIZON_YEARS",
    "CardShown",
    "Followed",
    "Record",
    "band_calibration",
    "cards_shown",
    "follow",
    "km_risk",
    "matches",
    "ncd_services",
    "read_records",
]

MODEL_HORIZON_YEARS = 10.0
"""The NCD models and the WHO charts estimate the risk of the event within 10 years."""

DAYS_PER_YEAR = 365.25

DEFAULT_CODES: dict[str, tuple[str, ...]] = {
    # Myocardial infarction and stroke (the WHO charts' outcome), ICD-10 and SNOMED CT.
    "cvd": (
        "cvd",
        "mi",
        "stroke",
        "I21*",
        "I22*",
        "I60*",
        "I61*",
        "I63*",
        "I64*",
        "22298006",
        "230690007",
    ),
    # Type 2 (or unspecified) diabetes.
    "diabetes": ("diabetes", "t2dm", "E11*", "E14*", "44054006"),
}
"""Event codes per model outcome: exact (case and dots ignored), ``*``: a prefix."""

CENSOR_CODES = frozenset({"censored", "lost", "death-other"})
"""Codes that end a patient's follow-up without an event."""

Status = Literal["event", "complete", "censored", "prior"]


@dataclass(frozen=True)
class Record:
    """One row of the outcome file: a code for a patient on a date."""

    patient: str
    when: date
    code: str


@dataclass(frozen=True)
class CardShown:
    """An NCD card as stored: who, when, and the risk and band it showed."""

    patient: str
    shown: datetime
    risk: float
    band: str
    band_index: int
    model: str
    mode: str
    outcome: str = "cvd"


@dataclass(frozen=True)
class Followed:
    """One patient's index card and what became of them by the horizon.

    ``years``: follow-up from the index date to the event, the horizon or censoring;
    ``expected``: the card's risk over the evaluated horizon.
    """

    card: CardShown
    status: Status
    years: float
    expected: float


def _norm(code: str) -> str:
    return code.strip().replace(".", "").upper()


def matches(code: str, wanted: Iterable[str]) -> bool:
    """Whether ``code`` is one of ``wanted`` (a trailing ``*``: any code it starts)."""
    found = _norm(code)
    for w in wanted:
        if w.endswith("*") and found.startswith(_norm(w[:-1])):
            return True
        if found == _norm(w):
            return True
    return False


def read_records(path: Path) -> list[Record]:
    """The rows of a CSV or FHIR Bulk NDJSON (``.ndjson``) outcome file.

    Raises:
        OutcomeError: a missing column, a row without a patient, code or ISO date.
    """
    return read_file(path, _csv, _from_fhir)


def _csv(path: Path) -> Iterator[Record]:
    for where, patient, row in csv_rows(path, "outcome"):
        code = (row["outcome"] or "").strip()
        if not code:
            raise OutcomeError(f"{where}: no outcome")
        yield Record(patient, iso_date(row["date"] or "", where), code[:64])


def _from_fhir(resource: dict[str, object], where: str) -> Iterator[Record]:
    kind = resource.get("resourceType")
    if kind == "Patient" and isinstance(resource.get("id"), str):
        died = resource.get("deceasedDateTime")
        if isinstance(died, str):
            yield Record(str(resource["id"]), iso_date(died, where), "death-other")
        return
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if kind != "Condition" or not isinstance(reference, str):
        return
    when = resource.get("onsetDateTime") or resource.get("recordedDate")
    concept = resource.get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            yield Record(reference.removeprefix("Patient/"), iso_date(str(when or ""), where),
                         str(coding["code"])[:64])  # fmt: skip


def ncd_services(engine: Engine, *, tenant: str) -> list[str]:
    """The services that gave ``tenant``'s patients advice cards without a chest X-ray
    read: those whose cards carry an NCD risk (stored or since purged)."""
    events, cards, reads = schema.audit_events, schema.audit_cards, schema.imaging_results
    query = (
        select(events.c.service_id)
        .distinct()
        .select_from(cards.join(events, cards.c.request_id == events.c.request_id))
        .where(events.c.caller_tenant == tenant, events.c.outcome == "advice")
        .where(events.c.patient_ref.is_not(None))
        .where(~exists().where(reads.c.request_id == events.c.request_id))
        .order_by(events.c.service_id)
    )
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            return [str(service) for service in connection.execute(query).scalars()]


def cards_shown(
    engine: Engine, *, tenant: str, service: str, since: datetime | None = None
) -> tuple[list[CardShown], int]:
    """The advice cards ``service`` gave ``tenant``'s patients (live and silent), with
    the risk their explanation stored; also how many had their explanation purged."""
    events, cards, explained = schema.audit_events, schema.audit_cards, schema.explanations
    query = (
        select(
            events.c.patient_ref,
            events.c.created,
            events.c.mode,
            events.c.model_version,
            explained.c.content,
        )
        .select_from(
            cards.join(events, cards.c.request_id == events.c.request_id).outerjoin(
                explained, explained.c.card_uuid == cards.c.card_uuid
            )
        )
        .where(events.c.service_id == service, events.c.caller_tenant == tenant)
        .where(events.c.outcome == "advice", events.c.patient_ref.is_not(None))
        .order_by(events.c.created, events.c.id)
    )
    if since is not None:
        query = query.where(events.c.created >= since.astimezone(UTC))
    found: list[CardShown] = []
    expired = 0
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            for row in connection.execution_options(yield_per=1000).execute(query):
                if row.content is None:
                    expired += 1
                    continue
                content = json.loads(row.content)
                created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
                found.append(
                    CardShown(
                        patient=str(row.patient_ref).removeprefix("Patient/"),
                        shown=created,
                        risk=float(content["risk"]),
                        band=str(content["band"]),
                        band_index=int(content["band_index"]),
                        model=str(row.model_version or content.get("model", {}).get("version")),
                        mode=str(row.mode),
                        outcome=str(content.get("outcome", "cvd")),
                    )
                )
    return found, expired


def follow(
    cards: Iterable[CardShown],
    records: Iterable[Record],
    *,
    codes: Iterable[str],
    followed_until: date,
    horizon_years: float = MODEL_HORIZON_YEARS,
) -> tuple[list[Followed], dict[str, int]]:
    """Each patient's index card with its follow-up status (see the module).

    Returns the followed cards and counts: ``repeat`` (later cards of a patient, not
    counted again), ``other_codes`` (rows neither an event nor censoring: ignored).
    """
    wanted = tuple(codes)
    events: dict[str, list[date]] = defaultdict(list)
    ends: dict[str, list[date]] = defaultdict(list)
    other = 0
    for r in records:
        if r.code.strip().lower() in CENSOR_CODES:
            ends[r.patient].append(r.when)
        elif matches(r.code, wanted):
            events[r.patient].append(r.when)
        else:
            other += 1
    first: dict[str, CardShown] = {}
    repeat = 0
    for card in sorted(cards, key=lambda c: c.shown):
        if card.patient in first:
            repeat += 1
        else:
            first[card.patient] = card
    horizon = horizon_years * DAYS_PER_YEAR
    out = []
    for patient, card in first.items():
        start = card.shown.date()
        expected = _over(card.risk, horizon_years)
        if any(d <= start for d in events.get(patient, ())):
            out.append(Followed(card, "prior", 0.0, expected))
            continue
        end = min([followed_until] + [d for d in ends.get(patient, ()) if d >= start])
        seen = max((end - start).days, 0)
        event = min(events.get(patient, ()), default=None)
        if event is not None and (event - start).days <= min(seen, horizon):
            out.append(Followed(card, "event", (event - start).days / DAYS_PER_YEAR, expected))
        elif seen >= horizon:
            out.append(Followed(card, "complete", horizon_years, expected))
        else:
            out.append(Followed(card, "censored", seen / DAYS_PER_YEAR, expected))
    return out, {"repeat": repeat, "other_codes": other}


def _over(risk: float, horizon_years: float) -> float:
    """The 10-year ``risk`` over ``horizon_years``, assuming a constant hazard."""
    if horizon_years == MODEL_HORIZON_YEARS:
        return risk
    return 1.0 - math.pow(1.0 - risk, horizon_years / MODEL_HORIZON_YEARS)


def km_risk(
    times: Iterable[tuple[float, bool]], horizon: float
) -> tuple[float | None, float | None, float | None]:
    """Kaplan-Meier risk by ``horizon`` from ``(years, event)`` pairs, with a Greenwood
    95 % interval on the log(-log) scale; (None, None, None) when nobody was followed
    to the horizon (and the curve did not reach 0): the risk is then unknown."""
    rows = list(times)
    if not rows:
        return None, None, None
    years = [t for t, _ in rows]
    risk, low, high = intervals.km_risk(years, [e for _, e in rows], horizon)
    if risk < 1.0 and max(years) < horizon:
        return None, None, None
    return risk, None if math.isnan(low) else low, None if math.isnan(high) else high


def band_calibration(
    followed: Iterable[Followed], horizon_years: float = MODEL_HORIZON_YEARS
) -> list[dict[str, object]]:
    """Per group (all, model=, mode=) and risk band (and band "all"): counts, mean
    predicted risk, Kaplan-Meier observed risk with its 95 % interval, and O/E."""
    groups: dict[tuple[str, int, str], list[Followed]] = defaultdict(list)
    for f in followed:
        for group in ("all", f"model={f.card.model}", f"mode={f.card.mode}"):
            groups[(group, f.card.band_index, f.card.band)].append(f)
            groups[(group, 10_000, "all")].append(f)
    return [_row(group, band, members, horizon_years)
            for (group, _, band), members in sorted(groups.items())]  # fmt: skip


def _row(group: str, band: str, members: list[Followed], horizon: float) -> dict[str, object]:
    counts: Mapping[str, int] = {s: sum(f.status == s for f in members)
                                 for s in ("event", "complete", "censored", "prior")}  # fmt: skip
    evaluated = [f for f in members if f.status != "prior"]
    observed, low, high = km_risk(((f.years, f.status == "event") for f in evaluated), horizon)
    expected = sum(f.expected for f in evaluated)
    mean = expected / len(evaluated) if evaluated else None
    return {
        "group": group, "band": band, "patients": len(evaluated),
        "events": counts["event"], "complete": counts["complete"],
        "censored": counts["censored"], "prior": counts["prior"],
        "mean_predicted": mean, "expected_events": expected,
        "observed": observed, "observed_low": low, "observed_high": high,
        "o_e": observed / mean if observed is not None and mean else None,
    }  # fmt: skip
