"""Volume, flagged share and clinicians' accept / override rates per subgroup.

Counted from what the audit database already keeps, over the last days: the audit rows
that gave advice (service, calling tenant), each NCD card's stored explanation (the
patient's age and sex as the model used them, and the risk band), each chest X-ray
read (whether any finding was flagged) and the clinicians' feedback on each card (the
last word per card). Chest X-ray reads store neither age nor sex, so their subgroups
are by site only.

"Flagged": a chest X-ray read with at least one finding at or above its threshold; an
NCD card in a WHO band of 20 % or more.

Small cells are suppressed: a subgroup of fewer than :data:`MIN_CELL` answers shows
"<5" and no rates, and when that leaves one such cell in a dimension, the next
smallest is suppressed too, so the hidden count cannot be worked out from the others.
A rate whose denominator (answers, or cards with feedback) is below :data:`MIN_CELL`
is not shown.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_, select

from serving.audit import schema
from serving.audit.engine import READ_ONLY

__all__ = [
    "AGE_BANDS",
    "MAX_ANSWERS",
    "MIN_CELL",
    "Cell",
    "ServiceSubgroups",
    "Shown",
    "age_band",
    "count_subgroups",
    "shown",
]

MIN_CELL = 5
"""Subgroups with fewer answers than this are not shown (re-identification)."""

MAX_ANSWERS = 50_000
"""The most recent answers a page counts (it says so when it stopped there)."""

AGE_BANDS = ((70.0, "70+"), (55.0, "55-69"), (40.0, "40-54"), (0.0, "<40"))
_NCD_FLAGGED_BAND = 3  # WHO bands <5, 5-<10, 10-<20, 20-<30, >=30 %: index 3 is 20 %
NOT_RECORDED = "not-recorded"
DIMENSIONS = ("all", "age", "sex", "site")


@dataclass
class Cell:
    """The counts of one subgroup."""

    answers: int = 0
    flagged: int = 0
    accepted: int = 0
    overridden: int = 0


@dataclass
class ServiceSubgroups:
    """One service's cells: (dimension, value) -> counts; ``kind`` 'ncd' or 'cxr'."""

    service: str
    kind: str
    cells: dict[tuple[str, str], Cell] = field(default_factory=lambda: defaultdict(Cell))

    def dimensions(self, operator: bool) -> list[str]:
        """The dimensions the page shows: age and sex for NCD cards, sites for an
        operator."""
        wanted = ["all"] + (["age", "sex"] if self.kind == "ncd" else [])
        return wanted + (["site"] if operator else [])

    def rows(self, dimension: str) -> list[tuple[str, Cell]]:
        """The cells of one dimension, in display order."""
        found = [(v, c) for (d, v), c in self.cells.items() if d == dimension]
        order = {label: i for i, (_, label) in enumerate(reversed(AGE_BANDS))}
        return sorted(found, key=lambda vc: (vc[0] == NOT_RECORDED, order.get(vc[0], 99), vc[0]))


@dataclass(frozen=True)
class Shown:
    """A cell as the page prints it (None: suppressed or too few to say)."""

    value: str
    answers: int | None
    flagged: float | None
    accepted: float | None
    overridden: float | None


def age_band(age: object) -> str:
    """The age band of a stored age in years (``not-recorded`` when absent)."""
    if not isinstance(age, int | float) or isinstance(age, bool) or not math.isfinite(age):
        return NOT_RECORDED
    return next(label for low, label in AGE_BANDS if age >= low)


def _sex(value: object) -> str:
    text = str(value).strip().lower() if value is not None else ""
    return text if text in ("female", "male", "other") else NOT_RECORDED


def shown(rows: list[tuple[str, Cell]], min_cell: int = MIN_CELL) -> list[Shown]:
    """The cells of one dimension with small cells (and their complement) suppressed."""
    hidden = {v for v, c in rows if 0 < c.answers < min_cell}
    if len(hidden) == 1:
        rest = sorted((c.answers, v) for v, c in rows if v not in hidden and c.answers > 0)
        if rest:
            hidden.add(rest[0][1])
    out = []
    for value, c in rows:
        if value in hidden:
            out.append(Shown(value, None, None, None, None))
            continue
        judged = c.accepted + c.overridden
        out.append(
            Shown(
                value,
                c.answers,
                c.flagged / c.answers if c.answers >= min_cell else None,
                c.accepted / judged if judged >= min_cell else None,
                c.overridden / judged if judged >= min_cell else None,
            )
        )
    return out


def count_subgroups(
    engine: Engine, *, since: datetime, tenant: str | None
) -> tuple[list[ServiceSubgroups], bool]:
    """Every service's subgroup cells since ``since``; ``tenant`` limits them to one
    caller's tenant ("" for callers without one; None: every tenant, the operator).

    Returns the services and whether :data:`MAX_ANSWERS` cut the count short.
    """
    events, cards, explained = schema.audit_events, schema.audit_cards, schema.explanations
    rows_query = (
        select(
            events.c.request_id,
            events.c.service_id,
            events.c.caller_tenant,
            cards.c.card_uuid,
            explained.c.content,
        )
        .select_from(
            events.outerjoin(cards, cards.c.request_id == events.c.request_id).outerjoin(
                explained, explained.c.card_uuid == cards.c.card_uuid
            )
        )
        .where(events.c.created >= since.astimezone(UTC), events.c.outcome == "advice")
        .order_by(events.c.id.desc())
        .limit(MAX_ANSWERS + 1)
    )
    reads = schema.imaging_results
    reads_query = select(reads.c.request_id, reads.c.result).where(
        reads.c.created >= since.astimezone(UTC)
    )
    feedback = schema.feedback
    feedback_query = (
        select(feedback.c.card_uuid, feedback.c.outcome)
        .where(feedback.c.created >= since.astimezone(UTC))
        .order_by(feedback.c.id)
    )
    if tenant is not None:
        rows_query = rows_query.where(_tenant_is(events.c.caller_tenant, tenant))
        reads_query = reads_query.where(_tenant_is(reads.c.tenant, tenant))
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            rows = list(connection.execute(rows_query))
            flagged = {r.request_id: bool(json.loads(r.result).get("flagged"))
                       for r in connection.execute(reads_query)}  # fmt: skip
            decided = {r.card_uuid: r.outcome for r in connection.execute(feedback_query)}
    capped = len(rows) > MAX_ANSWERS
    by_request: dict[str, list[Any]] = defaultdict(list)
    for row in rows[:MAX_ANSWERS]:
        by_request[row.request_id].append(row)
    services: dict[str, ServiceSubgroups] = {}
    for request_id, found in by_request.items():
        first = found[0]
        site = ("site", first.caller_tenant or "-")
        answers: list[tuple[list[tuple[str, str]], bool, str | None]] = []
        for row in found:
            if row.content is None:
                continue
            content: dict[str, Any] = json.loads(row.content)
            features = content.get("features") or {}
            groups = [("age", age_band(features.get("age"))), ("sex", _sex(features.get("sex")))]
            high = int(content.get("band_index", 0)) >= _NCD_FLAGGED_BAND
            answers.append((groups, high, decided.get(row.card_uuid)))
        kind = "ncd"
        if not answers and request_id in flagged:  # one read, whatever its cards
            kind = "cxr"
            said = [decided[r.card_uuid] for r in found if r.card_uuid in decided]
            answers.append(([], flagged[request_id], said[-1] if said else None))
        if not answers:
            continue  # neither an NCD card with its explanation nor a stored read
        service = services.setdefault(first.service_id, ServiceSubgroups(first.service_id, kind))
        for groups, is_flagged, decision in answers:
            for key in [("all", "all"), site, *groups]:
                cell = service.cells[key]
                cell.answers += 1
                cell.flagged += is_flagged
                cell.accepted += decision == "accepted"
                cell.overridden += decision == "overridden"
    return sorted(services.values(), key=lambda s: s.service), capped


def _tenant_is(column: Any, tenant: str) -> Any:
    return or_(column.is_(None), column == "") if tenant == "" else column == tenant
