"""The site's care protocol as data: which rule fires for a patient, and what it proposes.

A protocol table (``configs/protocol.yaml``, versioned) lists rows. Each row says when
it applies (:class:`When`: the WHO chart band and the rules that apply whatever the
chart says, such as a blood pressure or laboratory cut-off), what the card proposes
(:class:`Proposal`: a drug, a test or referral, a follow-up interval) and the source
document and section it comes from. Rows are read in order; within one ``topic`` only
the first row whose conditions all hold fires, so a table can go from the most to
the least urgent blood pressure rule.

Fail closed: a condition on a fact that is not known (e.g. whether the patient takes
a blood-pressure drug, when the medication list was not read in full) does not hold.

Site approval. Some rows (the WHO HEARTS actions per chart band) must be confirmed
by the site's clinical lead against the national protocol (``site_must_confirm``).
Until a named person approves the table (:class:`Approval`: who, when and the
sha256 of the exact table file), those rows do not fire and no row proposes a drug:
cards show the chart band and the verified non-drug rules only. An approval whose
sha256 is not the table's refuses to load (the table changed after approval).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.config import ConfigError

__all__ = [
    "ActiveProtocol",
    "Approval",
    "Facts",
    "Fired",
    "Proposal",
    "ProtocolRow",
    "ProtocolTable",
    "When",
    "load_protocol",
]

Indicator = Literal["info", "warning", "critical"]
INDICATOR_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    """Clinician-facing text in each language the site uses (English required)."""

    en: str = Field(min_length=1, max_length=200)
    km: str | None = Field(default=None, max_length=200)

    def get(self, lang: str) -> str:
        """The text in ``lang``, English where that language has none."""
        value = getattr(self, lang, None) if lang in type(self).model_fields else None
        return value if isinstance(value, str) and value else self.en


class Cut(_Strict):
    """Either value at or above its cut (``sbp >= 140 or dbp >= 90``)."""

    sbp: float | None = None
    dbp: float | None = None


class Glycaemia(_Strict):
    """Either laboratory result at or above its cut (HbA1c %, fasting glucose mmol/L)."""

    hba1c: float | None = None
    fasting_glucose: float | None = None


class When(_Strict):
    """Conditions that must all hold (an unset condition is not checked)."""

    outcome: Literal["cvd", "diabetes"] | None = Field(
        default=None, description="The service's outcome: which cards the row is for."
    )
    band_min: int | None = Field(default=None, ge=0, le=4, description="Chart band index.")
    band_max: int | None = Field(default=None, ge=0, le=4)
    age_min: float | None = Field(default=None, ge=0)
    bp_at_least: Cut | None = Field(default=None, description="SBP or DBP at or above.")
    bp_below: Cut | None = Field(default=None, description="SBP and DBP below (at target).")
    sbp_min: float | None = None
    sbp_max_below: float | None = Field(default=None, description="SBP strictly below.")
    bp_treated: bool | None = None
    established_cvd: bool | None = None
    diabetes: bool | None = None
    diabetes_diagnosed: bool | None = Field(
        default=None, description="A diabetes diagnosis is on record (a Condition)."
    )
    glycaemia_at_least: Glycaemia | None = None
    no_recent: list[Literal["hba1c", "fasting_glucose"]] = Field(
        default_factory=list,
        description="None of these has a result within the table's test_window_days.",
    )


class Proposal(_Strict):
    """One thing a card proposes, sent as a CDS Hooks action (a FHIR draft resource)."""

    kind: Literal["medication", "service"] = Field(
        description="medication: a MedicationRequest proposal; service: a ServiceRequest."
    )
    system: str | None = Field(default=None, description="Code system, e.g. ATC or LOINC.")
    code: str | None = None
    text: Text


class Source(_Strict):
    """Where a row comes from: the document and its section."""

    document: str = Field(min_length=1)
    section: str = Field(min_length=1)


class ProtocolRow(_Strict):
    """One rule of the protocol."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    topic: str = Field(min_length=1, max_length=40, description="First match per topic fires.")
    when: When
    text: Text = Field(description="What the card says when the row fires.")
    indicator: Indicator | None = Field(
        default=None, description="Raises the card's indicator to at least this."
    )
    follow_up_months: int | None = Field(default=None, ge=1, le=24)
    propose: list[Proposal] = Field(default_factory=list)
    source: Source
    site_must_confirm: bool = Field(
        default=False, description="Fires only once the table is approved (HEARTS rows)."
    )


class ProtocolTable(_Strict):
    """A versioned protocol table (``configs/protocol.yaml``)."""

    version: str = Field(min_length=1, max_length=40)
    title: str
    test_window_days: int = Field(
        gt=0, le=3650, description="A test result newer than this counts as recent (days)."
    )
    rows: list[ProtocolRow]

    @model_validator(mode="after")
    def _unique_ids(self) -> ProtocolTable:
        ids = [row.id for row in self.rows]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"protocol row ids must be unique; repeated: {duplicated}")
        return self


class Approval(_Strict):
    """The site's clinical lead confirmed this exact table against the national protocol."""

    by: str = Field(min_length=3, max_length=200, description="Name and role.")
    on: date
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the table file.")


@dataclass(frozen=True)
class Facts:
    """What the rules read about one patient (None: not known)."""

    outcome: str
    band_index: int | None
    today: date
    age: float | None = None
    sbp: float | None = None
    dbp: float | None = None
    bp_treated: bool | None = None
    established_cvd: bool | None = None
    diabetes: bool | None = None
    diabetes_diagnosed: bool | None = None
    hba1c: float | None = None
    fasting_glucose: float | None = None
    lab_dates: tuple[tuple[str, date], ...] = ()


@dataclass(frozen=True)
class Fired:
    """A row that fired, with the proposals the card may show."""

    row: ProtocolRow
    proposals: tuple[Proposal, ...]


def _cut_met(cut: Cut, facts: Facts) -> bool:
    return (cut.sbp is not None and facts.sbp is not None and facts.sbp >= cut.sbp) or (
        cut.dbp is not None and facts.dbp is not None and facts.dbp >= cut.dbp
    )


def _below(cut: Cut, facts: Facts) -> bool:
    pairs = [(cut.sbp, facts.sbp), (cut.dbp, facts.dbp)]
    return all(value is not None and value < limit for limit, value in pairs if limit is not None)


def _glycaemia(cut: Glycaemia, facts: Facts) -> bool:
    pairs = [(cut.hba1c, facts.hba1c), (cut.fasting_glucose, facts.fasting_glucose)]
    return any(limit is not None and value is not None and value >= limit for limit, value in pairs)


def _flag(wanted: bool | None, known: bool | None) -> bool:
    return wanted is None or (known is not None and known == wanted)


def holds(when: When, facts: Facts, window_days: int) -> bool:
    """Whether every condition of ``when`` holds for ``facts`` (unknown facts fail)."""
    band = facts.band_index
    recent = {
        name for name, day in facts.lab_dates if day >= facts.today - timedelta(days=window_days)
    }
    checks = (
        when.outcome is None or when.outcome == facts.outcome,
        when.band_min is None or (band is not None and band >= when.band_min),
        when.band_max is None or (band is not None and band <= when.band_max),
        when.age_min is None or (facts.age is not None and facts.age >= when.age_min),
        when.bp_at_least is None or _cut_met(when.bp_at_least, facts),
        when.bp_below is None or _below(when.bp_below, facts),
        when.sbp_min is None or (facts.sbp is not None and facts.sbp >= when.sbp_min),
        when.sbp_max_below is None or (facts.sbp is not None and facts.sbp < when.sbp_max_below),
        _flag(when.bp_treated, facts.bp_treated),
        _flag(when.established_cvd, facts.established_cvd),
        _flag(when.diabetes, facts.diabetes),
        _flag(when.diabetes_diagnosed, facts.diabetes_diagnosed),
        when.glycaemia_at_least is None or _glycaemia(when.glycaemia_at_least, facts),
        not (set(when.no_recent) & recent),
    )
    return all(checks)


@dataclass(frozen=True)
class ActiveProtocol:
    """A loaded table, its sha256 and the site's approval (if any)."""

    table: ProtocolTable
    sha256: str
    path: str
    approval: Approval | None = None

    @property
    def approved(self) -> bool:
        """A named person approved exactly this table."""
        return self.approval is not None and self.approval.sha256 == self.sha256

    def fire(self, facts: Facts) -> list[Fired]:
        """The rows that fire for ``facts``: the first matching row of each topic.

        Before approval, rows the site must confirm are skipped and no drug is proposed.
        """
        fired: list[Fired] = []
        topics: set[str] = set()
        for row in self.table.rows:
            if row.topic in topics or (row.site_must_confirm and not self.approved):
                continue
            if not holds(row.when, facts, self.table.test_window_days):
                continue
            topics.add(row.topic)
            proposals = tuple(p for p in row.propose if self.approved or p.kind != "medication")
            fired.append(Fired(row=row, proposals=proposals))
        return fired


@cache
def load_protocol(path: Path, approval: Approval | None = None) -> ActiveProtocol:
    """Read and check a protocol table (YAML, data only) and its approval.

    Args:
        path: The table file.
        approval: The site's approval, or None (not approved).

    Raises:
        ConfigError: the file is missing or invalid, or the approval's sha256 is not
            the file's (the table changed since it was approved).
    """
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"protocol table {path} cannot be read: {exc.strerror}") from exc
    sha256 = hashlib.sha256(raw_bytes).hexdigest()
    try:
        raw = yaml.safe_load(raw_bytes.decode("utf-8"))
        table = ProtocolTable.model_validate(raw)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"protocol table {path} is not valid: {exc}") from exc
    if approval is not None and approval.sha256 != sha256:
        raise ConfigError(
            f"protocol table {path} has sha256 {sha256}, but the approval by "
            f"{approval.by!r} is for {approval.sha256}: the table changed after approval; "
            "have it approved again"
        )
    return ActiveProtocol(table=table, sha256=sha256, path=str(path), approval=approval)
