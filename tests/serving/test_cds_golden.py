"""Whole NCD CDS Hooks answers against recorded ones: every card, body and audit row.

Speed-ups of the card, explanation and response code must not change a character of
what is answered. Each case goes through the ASGI app (dev mode) on a frozen clock; the
response body and the audit row handed to the store (with its explanation record) are
compared with ``golden/cds_answers.json``, recorded from the code before such changes.

Only what differs by design between two identical calls is normalised: uuids (numbered
in order of appearance, so a card's uuid must still match its links and its audit row),
the request id, the latency, the signature and expiry of the explanation-page link, and
the fixture models' sha256 (their files differ from one build to the next).
Numbers outside text are compared to 1e-9 relative (the models' last bits may differ
between CPUs); the digits inside card text are compared exactly.

To record the file anew (only when an answer is meant to change):
``TONLE_WRITE_GOLDEN=1 pytest tests/serving/test_cds_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from serving.audit.records import AuditRecord
from serving.config import ProtocolConfig
from serving.protocol import Approval
from serving.runtime import Runtime
from tests.ncd_fixtures import who_comparison, with_details
from tests.serving.cds_fixtures import app_for, cds_request, prefetch, runtime_for, shared_store
from tests.serving.test_cds_hooks import call

GOLDEN = Path(__file__).parent / "golden" / "cds_answers.json"
NOW = datetime(2026, 11, 20, 8, 15, 30, tzinfo=UTC)
CVD = "/cds-services/ncd-cvd-risk"
DIABETES = "/cds-services/ncd-diabetes-risk"
TABLE = Path("configs/protocol.yaml")
_NO_SBP = {"resourceType": "Bundle", "type": "searchset", "entry": []}
# Modules that read the clock while a call is answered (and the fixture's prefetch).
_CLOCKS = (
    "serving.cds_hooks",
    "serving.fhir_in",
    "serving.fhir_out",
    "serving.ui.explanations",
    "serving.audit.records",
    "tests.serving.cds_fixtures",
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SIGNED = re.compile(r"\?exp=\d+&sig=[0-9a-f]+")


class _Frozen(datetime):
    """``datetime`` whose ``now`` is :data:`NOW` (in the zone asked for)."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return NOW.astimezone(tz) if tz is not None else NOW.replace(tzinfo=None)


def _cases() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, path, request body, options) of every answer compared; built on the frozen
    clock. Options: ``validated`` (the model records a comparison with the chart, so its
    estimate is on the card), ``approved`` (the protocol table is approved: drugs are
    proposed), ``no_advice_card`` (the site option), ``encounter``."""
    no_birth = {**prefetch()["patient"]}
    del no_birth["birthDate"]
    base: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("cvd-default", CVD, prefetch(), {}),
        ("cvd-validated", CVD, prefetch(), {"validated": True}),
        ("cvd-approved", CVD, prefetch(sbp=178), {"approved": True, "validated": True}),
        ("cvd-low", CVD, prefetch(age=45, sbp=110, smoker=False, chol=160), {}),
        ("cvd-high", CVD, prefetch(age=72, sbp=130, chol=320), {"validated": True}),
        ("cvd-nonlab", CVD, prefetch(chol=None, bmi=31.0), {"validated": True}),
        ("cvd-panel-encounter", CVD, prefetch(sbp=150, sbp_as_panel=True), {"encounter": True}),
        ("cvd-diabetic", CVD, prefetch(diabetic=True, on_metformin=True), {"approved": True}),
        ("cvd-outside", CVD, prefetch(sbp=255), {"validated": True}),
        ("dm-default", DIABETES, prefetch(), {}),
        ("dm-validated", DIABETES, prefetch(bmi=36.0, age=66), {"validated": True}),
        ("dm-no-hba1c", DIABETES, prefetch(hba1c=None), {"validated": True}),
        ("cvd-no-sbp", CVD, {**prefetch(), "sbp": _NO_SBP}, {}),
        ("cvd-no-sbp-card", CVD, {**prefetch(), "sbp": _NO_SBP}, {"no_advice_card": True}),
        ("cvd-stale-card", CVD, prefetch(days_ago=500), {"no_advice_card": True}),
        ("cvd-young-card", CVD, prefetch(age=30), {"no_advice_card": True}),
        ("dm-no-age-card", DIABETES, {**prefetch(), "patient": no_birth}, {"no_advice_card": True}),
        ("dm-has-diabetes", DIABETES, prefetch(diabetic=True), {"no_advice_card": True}),
    ]
    return [
        (f"{name}-{lang}", path, cds_request(pf), {**options, "lang": lang})
        for name, path, pf, options in base
        for lang in ("en", "km")
    ]


@pytest.fixture(scope="module")
def frozen() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for module in _CLOCKS:
            patch.setattr(f"{module}.datetime", _Frozen)
        yield


@pytest.fixture(scope="module")
def runtime(frozen: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("golden")) as rt:
        yield rt


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> Starlette:
    return app_for(runtime)


def _answer(
    app: Starlette, runtime: Runtime, path: str, body: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """One call's status, body and audit row (with its explanation), normalised."""
    patch = pytest.MonkeyPatch()
    rows: list[AuditRecord] = []
    record = runtime.audit.record_async  # type: ignore[union-attr]

    async def keep(row: AuditRecord) -> None:
        rows.append(row)
        await record(row)

    patch.setattr(runtime.audit, "record_async", keep)
    patch.setattr(runtime.config, "no_advice_card", bool(options.get("no_advice_card")))
    if options.get("approved"):
        sha = hashlib.sha256(TABLE.read_bytes()).hexdigest()
        approval = Approval(by="Dr Test, clinical lead", on=NOW.date(), sha256=sha)
        patch.setattr(runtime.config, "protocol", ProtocolConfig(table=TABLE, approval=approval))
    if options.get("validated"):
        for predictor in runtime.ncd.values():
            validated = with_details(predictor.metadata, who_comparison=who_comparison())
            patch.setattr(predictor, "metadata", validated)
    if options.get("encounter"):
        body = {**body, "context": {**body["context"], "encounterId": "enc-7"}}
    try:
        response = call(app, "POST", path, body, headers={"accept-language": options["lang"]})
    finally:
        patch.undo()
    assert len(rows) == 1
    row = rows[0]
    explanation = row.explanation
    if explanation is not None:  # monitoring counts the band it carries beside the content
        assert explanation.band == json.loads(explanation.content)["band"]
    recorded = {
        "status": response.status_code,
        "body": response.json(),
        "row": row.model_dump(mode="json", exclude={"request_id", "latency_ms"}),
        "explanation": None
        if explanation is None
        else {
            **explanation.model_dump(mode="json", exclude={"content"}),
            "content": json.loads(explanation.content),
        },
    }
    return _normalised(recorded, runtime)


def _normalised(answer: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """``answer`` with its uuids numbered in order of first appearance, the link's
    signature and expiry blanked (both differ between two identical calls) and each
    model's sha256 (whole or its first 12 digits) replaced by the model's name."""
    text = json.dumps(answer, ensure_ascii=False)
    for predictor in runtime.ncd.values():
        meta = predictor.metadata
        text = text.replace(meta.sha256, f"sha256-of-{meta.name}")
        text = text.replace(meta.sha256[:12], f"sha256-12-of-{meta.name}")
    numbers: dict[str, str] = {}
    text = _UUID.sub(lambda m: numbers.setdefault(m[0], f"uuid-{len(numbers)}"), text)
    normalised: dict[str, Any] = json.loads(_SIGNED.sub("?exp=EXP&sig=SIG", text))
    return normalised


def _differences(expected: Any, got: Any, where: str = "") -> list[str]:
    """Where ``got`` differs from ``expected``; floats within 1e-9 relative agree."""
    if isinstance(expected, float) or isinstance(got, float):
        same = (
            isinstance(expected, int | float)
            and isinstance(got, int | float)
            and math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-12)
        )
        return [] if same else [f"{where}: {expected!r} != {got!r}"]
    if isinstance(expected, dict) and isinstance(got, dict):
        if list(expected) != list(got):
            return [f"{where}: keys {list(expected)} != {list(got)}"]
        return [
            d for key in expected for d in _differences(expected[key], got[key], f"{where}.{key}")
        ]
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{where}: {len(expected)} items != {len(got)}"]
        return [
            d
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            for d in _differences(e, g, f"{where}[{i}]")
        ]
    return [] if expected == got else [f"{where}: {expected!r} != {got!r}"]


def test_answers_are_as_recorded(app: Starlette, runtime: Runtime) -> None:
    """Every case answers exactly as recorded: body, audit row and explanation."""
    answers = {
        name: _answer(app, runtime, path, body, options) for name, path, body, options in _cases()
    }
    outcomes = {answer["row"]["outcome"] for answer in answers.values()}
    assert outcomes == {"advice", "no-advice"}
    if os.environ.get("TONLE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        text = json.dumps(answers, ensure_ascii=False, indent=1, sort_keys=False)
        GOLDEN.write_text(text + "\n", encoding="utf-8")
        pytest.skip(f"recorded {len(answers)} answers in {GOLDEN}")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert list(answers) == list(expected)
    for name in expected:
        differences = _differences(expected[name], answers[name], name)
        assert not differences, "\n".join(differences[:20])
