"""One NCD assessment, shared by CDS Hooks and REST: features in, advice or a reason out.

Fail closed: a missing required value, a value older than the configured maximum age,
a value outside the model's validated range, or a model output that is not a finite
probability gives :class:`NoAdvice` with a machine-readable reason, never a default.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from models.metadata import ModelMetadata
from models.ncd_predictor import (
    Contribution,
    NcdInputError,
    NcdPredictor,
    encode_rows,
    encode_value,
    risk_band,
)
from models.ncd_support import Outside
from models.who_chart import ChartCell, patient_cell
from models.who_cvd import WhoCvdInputError, WhoCvdInputs, WhoCvdResult, who_cvd_risk
from models.who_cvd_inputs import VALID_RANGES
from serving.protocol import ActiveProtocol, Facts, Fired

__all__ = [
    "Advice",
    "NoAdvice",
    "Problem",
    "WhoSettings",
    "already_has_outcome",
    "assess",
    "model_shown",
    "model_validated",
    "who_for",
]


@dataclass(frozen=True)
class Problem:
    """One reason an input stops the assessment (no PHI beyond the value and its date).

    Attributes:
        reason: ``unit``, ``future-dated``, ``already-has-outcome``,
            ``insufficient-data``, ``stale-data`` or ``out-of-range`` (as in
            :class:`NoAdvice`).
        field: The feature concerned, e.g. ``"sbp"``.
        detail: The rule broken, in plain (English) words, for logs and tests.
        value: The value given (``out-of-range``).
        measured: When the value was measured (``stale-data``).
    """

    reason: str
    field: str | None
    detail: str = ""
    value: float | str | None = None
    measured: date | None = None


class NoAdvice(Exception):
    """No advice can be given; ``reason`` is a machine-readable code (no PHI).

    ``problems`` lists every input problem found, the one named by ``reason`` and
    ``field`` first (so a card can name them all, not only the first).
    """

    def __init__(
        self,
        reason: str,
        field: str | None = None,
        detail: str = "",
        problems: Sequence[Problem] = (),
    ) -> None:
        super().__init__(f"{reason}{f':{field}' if field else ''} {detail}".strip())
        self.reason = reason
        self.field = field
        self.detail = detail
        self.problems: tuple[Problem, ...] = tuple(problems) or (Problem(reason, field, detail),)

    @property
    def code(self) -> str:
        """``reason`` or ``reason:field``, as stored in the audit row."""
        return f"{self.reason}:{self.field}" if self.field else self.reason

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> NoAdvice:
        """No advice for ``problems`` (at least one); the first gives the reason code."""
        first = problems[0]
        return cls(first.reason, first.field, first.detail, problems)


@dataclass(frozen=True)
class WhoSettings:
    """Which WHO 2019 recalibration the site uses."""

    region: str | None = "A05GBDR_014_SEA"
    country: str | None = "KHM"


@dataclass
class Advice:
    """A risk the service can stand behind, with everything the card and FHIR need."""

    outcome: str
    risk: float
    percent: int
    band_index: int
    band: str
    contributions: list[Contribution]
    metadata: ModelMetadata
    features: dict[str, float | str]
    units: dict[str, str]
    dates: dict[str, date]
    sources: dict[str, str]
    input_sha256: str
    who: WhoCvdResult | None = None
    """The WHO 2019 equation at the patient's exact values."""
    who_cell: ChartCell | None = None
    """The printed WHO chart cell the patient falls in (what "WHO chart" means on cards)."""
    who_note: str | None = None
    """Why the WHO chart was not used, in plain English (logs, REST)."""
    who_reason: str | None = None
    """The same as a code the card translates: ``outside:<field>``, ``missing:<field>``."""
    fired: list[Fired] = field(default_factory=list)
    """The protocol rows that fired for this patient (:mod:`serving.protocol`)."""
    protocol: ActiveProtocol | None = None
    extra: dict[str, str] = field(default_factory=dict)
    missing: dict[str, float | None] = field(default_factory=dict)
    """Optional inputs that were not recorded -> the value the model scored them as
    (``ncd.missing_inputs``, measured at training), None where no single value
    says it. The card and the explanation page list them."""
    outside_support: list[Outside] = field(default_factory=list)
    """Measured values outside the model's training range: its estimate is not shown."""
    support_known: bool = True
    """Whether the artifact records its training range (older artifacts do not)."""


def _canonical_sha256(tag: str, row: Mapping[str, float | str]) -> str:
    canonical = json.dumps({"model": tag, "input": dict(sorted(row.items()))}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def who_for(
    values: Mapping[str, float | str], settings: WhoSettings
) -> tuple[WhoCvdResult | None, str | None]:
    """The WHO chart risk (lab model when cholesterol and diabetes are known, else non-lab).

    Returns:
        ``(result, None)``, or ``(None, reason)`` when the charts cannot be used, the
        reason a code: ``outside:<field>`` (e.g. age outside 40-74; the charts are
        never extrapolated here) or ``missing:<field>``.
    """
    try:
        sex = values.get("sex")
        chol, diabetes, bmi = values.get("total_chol"), values.get("diabetes"), values.get("bmi")
        model: Literal["lab", "nonlab"] = (
            "lab" if chol is not None and diabetes is not None else "nonlab"
        )
        inputs = WhoCvdInputs.model_validate(
            {
                "sex": sex,
                "age": values.get("age"),
                "smoking": bool(values.get("smoking")) if "smoking" in values else None,
                "sbp": values.get("sbp"),
                "total_chol": chol,
                "diabetes": bool(diabetes) if diabetes is not None else None,
                "bmi": bmi,
            }
        )
        return who_cvd_risk(inputs, model, region=settings.region, country=settings.country), None
    except WhoCvdInputError as exc:  # a value the chart cannot take, or one it needs
        return None, f"{'missing' if exc.value is None else 'outside'}:{exc.field}"
    except ValueError as exc:  # pydantic ValidationError: a chart input is missing
        first = getattr(exc, "errors", lambda: [{"loc": ("input",)}])()[0]
        return None, f"missing:{'.'.join(str(p) for p in first['loc'])}"


def _who_note(code: str) -> str:
    """A WHO reason code in plain English (REST answers and logs)."""
    kind, _, name = code.partition(":")
    if kind == "outside" and name in VALID_RANGES:
        low, high, inclusive = VALID_RANGES[name]
        upper = f"{high:g}" if inclusive else f"under {high:g}"
        return f"{name} is outside the range the WHO chart covers ({low:g} to {upper})"
    if kind == "outside":
        return f"{name} is outside the range the WHO chart covers"
    return f"{name} is not recorded; the WHO chart needs it"


def model_shown(advice: Advice) -> bool:
    """Whether a card shows the model's estimate: not for a patient outside its training
    range; for CVD only when :func:`model_validated` (a diabetes model has no chart)."""
    if advice.outside_support:
        return False
    return advice.outcome != "cvd" or model_validated(advice.metadata)


def model_validated(meta: ModelMetadata) -> bool:
    """Whether the model's recorded validation shows it at least as good as the WHO
    chart on the same patients (``ncd.who_comparison.at_least_as_good``). Only then
    does a card show its estimate beside the chart; absent means no."""
    comparison = meta.ncd.who_comparison
    return comparison is not None and comparison.at_least_as_good


def _scored_as(meta: ModelMetadata, name: str) -> float | None:
    """What the model scores a missing ``name`` as (training.ncd_missing), if one value."""
    info = meta.ncd.missing_inputs.get(name)
    return None if info is None else info.scored_as


def already_has_outcome(
    outcome: object, values: Mapping[str, float | str], prior: Collection[str] = ()
) -> bool:
    """Whether a new-onset risk of ``outcome`` is meaningless for this patient.

    For diabetes, by :mod:`models.diabetes_status` (the rule that also left such
    patients out of the model's training): diabetes now (``values["diabetes"]`` = 1),
    or a diabetes diagnosis on record by today whatever its status (``prior``).

    Args:
        outcome: The model's ``ncd.outcome``.
        values: Feature values (serving: :func:`serving.fhir_in.extract`).
        prior: Outcomes already diagnosed (:attr:`serving.fhir_in.Extracted.prior`).
    """
    if outcome != "diabetes":
        return False
    return values.get("diabetes") == 1.0 or "diabetes" in prior


def _day(problem: str) -> date | None:
    try:
        return date.fromisoformat(problem.partition(":")[2])
    except ValueError:
        return None


def _flag(value: float | str | None) -> bool | None:
    return None if value is None else float(value) >= 0.5


def _num(value: float | str | None) -> float | None:
    return None if value is None or isinstance(value, str) else float(value)


def _facts(
    outcome: str,
    values: Mapping[str, float | str],
    dates: Mapping[str, date],
    history: Mapping[str, bool | None],
    cell: ChartCell | None,
    today: date,
) -> Facts:
    """What the protocol rules read: every value found (not only the model's inputs)."""
    return Facts(
        outcome=outcome,
        band_index=cell.band_index if cell is not None else None,
        today=today,
        age=_num(values.get("age")),
        sbp=_num(values.get("sbp")),
        dbp=_num(values.get("dbp")),
        bp_treated=_flag(values.get("bp_treated")),
        established_cvd=history.get("established_cvd"),
        diabetes=_flag(values.get("diabetes")),
        diabetes_diagnosed=history.get("diabetes_diagnosed"),
        hba1c=_num(values.get("hba1c")),
        fasting_glucose=_num(values.get("fasting_glucose")),
        lab_dates=tuple((lab, dates[lab]) for lab in ("hba1c", "fasting_glucose") if lab in dates),
    )


def _problems(
    meta: ModelMetadata,
    values: Mapping[str, float | str],
    dates: Mapping[str, date],
    unreadable: Mapping[str, str],
    has_outcome: bool,
    oldest: date | None,
    max_age_days: int | None,
) -> list[Problem]:
    """Every input problem, in the order the reason code is chosen: unreadable units,
    the outcome already present, then missing, stale and out-of-range values (each in
    the model's feature order)."""
    found = [
        Problem("future-dated", name, problem, measured=_day(problem))
        if problem.startswith("future-dated:")
        else Problem("unit", name, problem)
        for name, problem in unreadable.items()
    ]
    if has_outcome:
        found.append(
            Problem(
                "already-has-outcome",
                "diabetes",
                "the patient already has diabetes; the model predicts new-onset diabetes",
            )
        )
    found += [
        Problem("insufficient-data", spec.name, f"{spec.description} is required")
        for spec in meta.features
        if spec.required and spec.name not in values and spec.name not in unreadable
    ]
    if oldest is not None:
        for spec in meta.features:
            when = dates.get(spec.name)
            if spec.name in values and when is not None and when < oldest:
                found.append(
                    Problem(
                        "stale-data",
                        spec.name,
                        f"measured {when}, older than {max_age_days} d",
                        measured=when,
                    )
                )
    for spec in meta.features:
        if spec.name not in values:
            continue
        try:
            encode_value(meta, spec, values[spec.name])
        except NcdInputError as exc:
            found.append(Problem("out-of-range", exc.field, exc.rule, value=values[spec.name]))
    return found


def assess(
    predictor: NcdPredictor,
    values: Mapping[str, float | str],
    *,
    units: Mapping[str, str] | None = None,
    dates: Mapping[str, date] | None = None,
    sources: Mapping[str, str] | None = None,
    today: date | None = None,
    max_age_days: int | None = None,
    who: WhoSettings | None = None,
    top: int = 3,
    prior: Collection[str] = (),
    unreadable: Mapping[str, str] | None = None,
    protocol: ActiveProtocol | None = None,
    history: Mapping[str, bool | None] | None = None,
) -> Advice:
    """Score one patient with ``predictor`` (and the WHO chart for CVD).

    Args:
        predictor: The verified NCD model.
        values: Feature values in model units (``sex`` as ``"female"``/``"male"``).
        units: Unit of each value as received (shown in the card's data list).
        dates: Date of each value; with ``today`` and ``max_age_days`` enforces freshness.
        sources: FHIR references of the resources each value came from.
        today: The index date.
        max_age_days: Values older than this give no advice (``stale-data``).
        who: WHO recalibration; ``None`` skips the WHO chart (e.g. diabetes risk).
        top: Number of contributions to explain.
        prior: Outcomes the patient was already diagnosed with (see
            :func:`already_has_outcome`).
        unreadable: Features whose value could not be read -> the problem (e.g.
            ``unit:g/L`` or ``future-dated:2031-01-01``,
            :attr:`serving.fhir_in.Extracted.problems`): no advice (``unit``,
            ``future-dated``), whatever else is wrong.
        protocol: The site's protocol table; the rows that fire are kept in
            :attr:`Advice.fired` (None: no rule is applied).
        history: What the Conditions on record say
            (:attr:`serving.fhir_in.Extracted.history`), read by the protocol rules.

    Raises:
        NoAdvice: ``unit``, ``future-dated``, ``already-has-outcome``,
            ``insufficient-data``, ``stale-data``, ``out-of-range`` or
            ``model-output``; for the input
            problems it lists them all (:attr:`NoAdvice.problems`), the first giving
            the reason code.
    """
    meta = predictor.metadata
    dates = dates or {}
    oldest = (
        today - timedelta(days=max_age_days)
        if today is not None and max_age_days is not None
        else None
    )
    # A new-onset risk is meaningless for someone who already has the outcome.
    has_outcome = already_has_outcome(meta.ncd.outcome, values, prior)
    problems = _problems(meta, values, dates, unreadable or {}, has_outcome, oldest, max_age_days)
    if problems:
        raise NoAdvice.of(problems)
    used: dict[str, float | str] = {}
    missing: dict[str, float | None] = {}
    for spec in meta.features:
        if spec.name in values:
            used[spec.name] = values[spec.name]
        else:
            missing[spec.name] = _scored_as(meta, spec.name)
    try:
        row = encode_rows(meta, [used])
        risk, contributions = predictor.explain(row, top=top)
    except NcdInputError as exc:
        raise NoAdvice("out-of-range", exc.field, exc.rule) from exc
    if not (math.isfinite(risk) and 0.0 <= risk <= 1.0):
        raise NoAdvice("model-output", None, "the model returned no valid probability")
    band_index, band = risk_band(risk)
    outcome = meta.ncd.outcome
    support = meta.ncd.input_support
    encoded = {spec.name: float(row[0, j]) for j, spec in enumerate(meta.features)}
    outside = support.outside(encoded) if support is not None else []
    if outside and who is None:  # no WHO chart to lead: nothing to show
        raise NoAdvice.of(
            [
                Problem(
                    "out-of-range",
                    o.feature,
                    f"{o.side} the model's training range ({o.low:g} to {o.high:g})",
                    o.value,
                )
                for o in outside
            ]
        )
    who_result: WhoCvdResult | None = None
    who_cell: ChartCell | None = None
    who_reason: str | None = None
    if who is not None:
        who_result, who_reason = who_for(values, who)
        if who_result is not None:
            who_cell = patient_cell(who_result, region=who.region, country=who.country)
    facts = _facts(
        outcome, values, dates, history or {}, who_cell, today or datetime.now(UTC).date()
    )
    return Advice(
        outcome=outcome,
        risk=risk,
        percent=math.floor(risk * 100.0 + 0.5),
        band_index=band_index,
        band=band,
        contributions=contributions,
        metadata=meta,
        features=used,
        units={k: v for k, v in (units or {}).items() if k in used},
        dates={k: v for k, v in dates.items() if k in used},
        sources={k: v for k, v in (sources or {}).items() if k in used and v},
        input_sha256=_canonical_sha256(meta.tag, used),
        who=who_result,
        who_cell=who_cell,
        who_note=_who_note(who_reason) if who_reason else None,
        who_reason=who_reason,
        fired=protocol.fire(facts) if protocol is not None else [],
        protocol=protocol,
        missing=missing,
        outside_support=outside,
        support_known=support is not None,
    )
