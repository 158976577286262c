"""Subgroups on the monitoring page: volume, flagged share and accept / override rates
by age band, sex and site, from the audit database, small cells suppressed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.audit import AuditRecord, AuditStore
from serving.audit.records import ExplanationRecord, FeedbackRecord
from serving.imaging.results import Analysed, ResultStore
from serving.monitor.subgroups import Cell, age_band, count_subgroups, shown
from tests.serving.feedback_fixtures import store_feedback
from tests.serving.imaging.results_fixtures import heatmap_source, make_result

NCD = "ncd-cvd-risk"
# tenant, age, sex, WHO band index, how many cards, feedback on them (in order)
CARDS = [
    ("site-a", 45, "female", 3, 6, ["accepted"] * 5 + ["overridden"]),
    ("site-a", 72, "male", 1, 3, ["overridden", "overridden"]),
    ("site-a", 60, "male", 0, 7, []),
    ("site-b", 50, "female", 4, 2, []),
]


def test_age_bands() -> None:
    assert [age_band(a) for a in (18, 39.9, 40, 54, 55, 69.5, 70, 101)] == [
        "<40", "<40", "40-54", "40-54", "55-69", "55-69", "70+", "70+"]  # fmt: skip
    assert age_band(None) == age_band("62") == age_band(float("nan")) == "not-recorded"


def test_one_small_cell_hides_the_next_smallest_too() -> None:
    rows = [("a", Cell(answers=3)), ("b", Cell(answers=6)), ("c", Cell(answers=7))]
    assert [s.answers for s in shown(rows)] == [None, None, 7]
    # Two small cells already hide each other; an empty cell reveals nobody.
    rows = [("a", Cell(answers=3)), ("b", Cell(answers=1)), ("c", Cell(answers=0)),
            ("d", Cell(answers=9, flagged=3, accepted=4, overridden=1))]  # fmt: skip
    out = shown(rows)
    assert [s.answers for s in out] == [None, None, 0, 9]
    assert out[3].flagged == pytest.approx(3 / 9)
    assert out[3].accepted == pytest.approx(4 / 5)
    assert out[2].flagged is None  # no rate over 0 answers
    # A rate over fewer than five feedback entries is not shown.
    (few,) = shown([("x", Cell(answers=20, accepted=3, overridden=1))])
    assert few.accepted is None


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    now = datetime.now(UTC)
    n = 0
    for tenant, age, sex, band, count, feedback in CARDS:
        for i in range(count):
            n += 1
            content = {"features": {"age": age, "sex": sex}, "band_index": band, "risk": 0.1}
            store.record(
                AuditRecord(
                    request_id=f"r{n}", service_id=NCD, card_ids=[f"c{n}"],
                    caller_tenant=tenant, outcome="advice", latency_ms=1.0,
                    patient_ref=f"Patient/{n}",
                    explanation=ExplanationRecord(card_uuid=f"c{n}", service_id=NCD,
                                                  expires=now + timedelta(days=9),
                                                  content=json.dumps(content)),
                )
            )  # fmt: skip
            if i < len(feedback):
                store_feedback(store, FeedbackRecord(card_uuid=f"c{n}", service_id=NCD,
                                                     outcome=feedback[i],  # type: ignore[arg-type]
                                                     caller_tenant=tenant))  # fmt: skip
    # An answer older than the window, and a no-advice answer: not counted.
    store.record(AuditRecord(request_id="old", service_id=NCD, caller_tenant="site-a",
                             outcome="advice", latency_ms=1.0,
                             created=now - timedelta(days=40)))  # fmt: skip
    store.record(AuditRecord(request_id="none", service_id=NCD, caller_tenant="site-a",
                             outcome="no-advice", latency_ms=1.0))  # fmt: skip
    for i, tb in enumerate((0.9, 0.8, 0.1, 0.2, 0.3, 0.95)):  # 3 of 6 reads flagged (tb)
        result = make_result(probs=(0.1, tb, 0.1, 0.1, 0.1), patient=f"X{i}")
        store.record(
            AuditRecord(request_id=f"x{i}", service_id="imaging-cxr", caller_tenant="site-a",
                        outcome="advice", latency_ms=1.0,
                        imaging_result=ResultStore.record(Analysed(result, heatmap_source()),
                                                          "site-a"))
        )  # fmt: skip
    yield store
    store.close()


def test_a_tenant_counts_its_own_answers_by_age_and_sex(engine: AuditStore) -> None:
    since = datetime.now(UTC) - timedelta(days=30)
    services, capped = count_subgroups(engine.engine, since=since, tenant="site-a")
    assert not capped
    cxr, ncd = services
    assert (ncd.service, ncd.kind, cxr.kind) == (NCD, "ncd", "cxr")
    assert ncd.dimensions(operator=False) == ["all", "age", "sex"]
    assert cxr.dimensions(operator=False) == ["all"]
    (everyone,) = shown(ncd.rows("all"))
    assert everyone.answers == 16  # site-b's two cards are not site-a's
    assert everyone.flagged == pytest.approx(6 / 16)  # the six at 20 % or more
    ages = {s.value: s.answers for s in shown(ncd.rows("age"))}
    # 70+ has 3 (suppressed), so the next smallest (40-54, 6) is hidden with it.
    assert ages == {"40-54": None, "55-69": 7, "70+": None}
    sexes = {s.value: s for s in shown(ncd.rows("sex"))}
    assert sexes["female"].answers == 6
    assert sexes["female"].accepted == pytest.approx(5 / 6)
    assert sexes["female"].overridden == pytest.approx(1 / 6)
    assert sexes["male"].answers == 10
    assert sexes["male"].overridden is None  # 2 feedback entries: too few to say
    assert sexes["male"].flagged == 0.0
    (reads,) = shown(cxr.rows("all"))
    assert reads.answers == 6
    assert reads.flagged == pytest.approx(0.5)
    assert count_subgroups(engine.engine, since=since, tenant="site-z")[0] == []


def test_the_operator_sees_every_site(engine: AuditStore) -> None:
    since = datetime.now(UTC) - timedelta(days=30)
    services, _ = count_subgroups(engine.engine, since=since, tenant=None)
    ncd = next(s for s in services if s.kind == "ncd")
    assert "site" in ncd.dimensions(operator=True)
    sites = {s.value: s.answers for s in shown(ncd.rows("site"))}
    # site-b (2) is suppressed, and with it site-a: 18 - 16 would give site-b away.
    assert sites == {"site-a": None, "site-b": None}
    assert shown(ncd.rows("all"))[0].answers == 18
