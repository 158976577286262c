"""Monitoring metrics: flagged findings, risk bands, reason categories and feedback,
counted per service and site with bounded labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from serving.audit.records import (
    AuditRecord,
    ExplanationRecord,
    FeedbackRecord,
    OverrideReason,
)
from serving.cards import OVERRIDE_SYSTEM
from serving.imaging.results import Analysed, ResultStore
from serving.metrics import CATEGORIES, category, count_feedback, observe_answer
from tests.serving.imaging.results_fixtures import heatmap_source, make_result


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0


def test_reason_codes_fall_into_a_closed_set_of_categories() -> None:
    assert category(None) == "none"
    assert category("out-of-distribution") == "out-of-distribution"
    assert category("insufficient-data:sbp") == "insufficient-data"
    assert category("stale-data:sbp") == "stale-data"
    assert category("too-dark") in ("quality-gate", "other")
    assert category("model-error") == "unavailable"
    assert category("invalid-request") == "invalid-request"
    # Anything a caller could vary maps into the closed set.
    for hostile in ("x" * 500, "Patient/123", "<script>", "risk:9"):
        assert category(hostile) in CATEGORIES


def test_quality_gate_reasons_are_one_category() -> None:
    from models.cxr_quality import QUALITY_REASONS

    gate = set(QUALITY_REASONS) - {"out-of-distribution"}
    assert gate
    assert {category(reason) for reason in gate} == {"quality-gate"}


def test_a_read_counts_its_findings_by_site() -> None:
    result = make_result(probs=(0.92, 0.81, 0.10, 0.05, 0.30), threshold=0.5)
    row = AuditRecord(
        request_id="r1",
        service_id="imaging-cxr",
        caller_tenant="site-m1",
        outcome="advice",
        latency_ms=1.0,
        imaging_result=ResultStore.record(Analysed(result, heatmap_source()), "site-m1"),
    )
    labels = {"service": "imaging-cxr", "site": "site-m1"}
    before = {
        (f, flag): value("tonle_cxr_findings", **labels, finding=f, flagged=flag)
        for f in ("tb", "nodule")
        for flag in ("true", "false")
    }
    answers = value("tonle_answers", **labels, mode="live", outcome="advice", category="none")
    score = {"service": "imaging-cxr", "finding": "tb"}
    below = REGISTRY.get_sample_value("tonle_cxr_score_bucket", {**score, "le": "0.8"}) or 0.0
    at_most = REGISTRY.get_sample_value("tonle_cxr_score_bucket", {**score, "le": "0.9"}) or 0.0
    observe_answer(row)
    # tb scored 0.81: above the 0.8 bucket, inside the 0.9 one.
    assert REGISTRY.get_sample_value("tonle_cxr_score_bucket", {**score, "le": "0.8"}) == below
    assert (
        REGISTRY.get_sample_value("tonle_cxr_score_bucket", {**score, "le": "0.9"}) == at_most + 1
    )
    after = {key: value("tonle_cxr_findings", **labels, finding=key[0], flagged=key[1])
             for key in before}  # fmt: skip
    assert {k: after[k] - before[k] for k in before} == {
        ("tb", "true"): 1.0,
        ("tb", "false"): 0.0,
        ("nodule", "true"): 0.0,
        ("nodule", "false"): 1.0,
    }
    assert value("tonle_answers", **labels, mode="live", outcome="advice",
                 category="none") == answers + 1  # fmt: skip


def test_an_ncd_card_counts_its_band_and_refusals_their_category() -> None:
    explanation = ExplanationRecord(
        card_uuid="c1",
        service_id="ncd-cvd-risk",
        expires=datetime.now(UTC) + timedelta(days=1),
        content=json.dumps({"band": "10-<20%"}),
        band="10-<20%",
    )
    labels = {"service": "ncd-cvd-risk", "site": "site-m2"}
    band = value("tonle_ncd_bands", **labels, band="10-<20%")
    refused = value("tonle_answers", **labels, mode="silent", outcome="no-advice",
                    category="insufficient-data")  # fmt: skip
    common = {"service_id": "ncd-cvd-risk", "caller_tenant": "site-m2", "latency_ms": 1.0}
    observe_answer(AuditRecord(request_id="a", outcome="advice", explanation=explanation, **common))
    observe_answer(AuditRecord(request_id="b", outcome="no-advice", mode="silent",
                               reason="insufficient-data:sbp", **common))  # fmt: skip
    assert value("tonle_ncd_bands", **labels, band="10-<20%") == band + 1
    assert value("tonle_answers", **labels, mode="silent", outcome="no-advice",
                 category="insufficient-data") == refused + 1  # fmt: skip


def test_feedback_reasons_are_tonle_codes_or_other() -> None:
    labels = {"service": "ncd-cvd-risk", "site": "site-m3"}

    def fb(outcome: str, reason: OverrideReason | None = None) -> FeedbackRecord:
        return FeedbackRecord(card_uuid="c", service_id="ncd-cvd-risk", outcome=outcome,  # type: ignore[arg-type]
                              override_reason=reason, caller_tenant="site-m3")  # fmt: skip

    keys = [("accepted", "none"), ("overridden", "disagree"), ("overridden", "other"),
            ("overridden", "none")]  # fmt: skip
    before = [value("tonle_feedback", **labels, outcome=o, reason=r) for o, r in keys]
    count_feedback(fb("accepted"))
    count_feedback(fb("overridden", OverrideReason(system=OVERRIDE_SYSTEM, code="disagree")))
    count_feedback(fb("overridden", OverrideReason(system="urn:x", code="Patient/123 free text")))
    count_feedback(fb("overridden"))
    after = [value("tonle_feedback", **labels, outcome=o, reason=r) for o, r in keys]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1.0, 1.0, 1.0, 1.0]
