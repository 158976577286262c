"""Input drift (PSI against the training distribution) and alert rules at scrape time."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from serving.app import create_app
from serving.monitor.alerts import AlertRule, Monitor, MonitorConfig
from serving.monitor.drift import FeatureBins, Window, bin_of, psi
from serving.runtime import Runtime
from tests.ncd_fixtures import with_details
from tests.serving.cds_fixtures import cds_request, prefetch, runtime_for, shared_store
from training.ncd_export import training_distribution

CVD = "/cds-services/ncd-cvd-risk"


def test_psi_matches_a_hand_worked_example() -> None:
    # (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)
    expected = 0.3 * math.log(1.6) + 0.3 * math.log(2.5)
    assert psi([0.5, 0.5], [80, 20]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [50, 50]) == 0.0
    assert psi([0.5, 0.5], [0, 0]) is None
    assert math.isfinite(psi([0.5, 0.5], [100, 0]) or math.inf)  # empty bin: floored


def test_training_distribution_has_deciles_and_serving_bins_agree() -> None:
    rng = np.random.default_rng(1)
    age = rng.uniform(40, 80, 5000)
    sex = rng.integers(0, 2, 5000).astype(float)
    sbp = rng.normal(130, 15, 5000)
    sbp[:500] = np.nan  # missing values are left out
    recorded = training_distribution(np.column_stack([age, sex, sbp]), ["age", "sex", "sbp"])
    bins = recorded
    assert len(bins["age"].proportions) == 10
    assert bins["age"].proportions == pytest.approx([0.1] * 10, abs=0.002)
    assert len(bins["sex"].proportions) == 2  # two values: two bins, not ten
    assert bins["sbp"].n == 4500
    # Serving's bin rule reproduces the training shares.
    counts = np.bincount([bin_of(v, bins["age"]) for v in age], minlength=10)
    assert counts / len(age) == pytest.approx(bins["age"].proportions)
    assert psi(bins["age"].proportions, list(counts)) == pytest.approx(0.0, abs=1e-9)
    older = np.bincount([bin_of(v, bins["age"]) for v in age + 10], minlength=10)
    assert (psi(bins["age"].proportions, list(older)) or 0) > 0.25  # a major shift


@pytest.mark.parametrize(
    "bad",
    [
        {"edges": [2.0, 1.0], "proportions": [0.3, 0.3, 0.4], "n": 10},
        {"edges": [1.0], "proportions": [0.5, 0.5, 0.0], "n": 10},
        {"edges": [float("nan")], "proportions": [0.5, 0.5], "n": 10},
        {"edges": [1.0], "proportions": [0.9, 0.9], "n": 10},
        {"edges": [1.0], "proportions": [0.5, 0.5], "n": 10, "x": 1},
    ],
)
def test_a_malformed_training_distribution_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FeatureBins.model_validate(bad)


def test_window_counts_the_last_period_and_survives_a_restart() -> None:
    window = Window(10.0)
    assert window.delta(0.0, {("a",): 5.0}) == {("a",): 5.0}  # since start
    assert window.delta(5.0, {("a",): 8.0}) == {("a",): 8.0}
    assert window.delta(11.0, {("a",): 12.0}) == {("a",): 7.0}  # since t=0
    assert window.delta(16.0, {("a",): 20.0}) == {("a",): 12.0}  # since t=5
    assert window.delta(17.0, {("a",): 1.0}) == {("a",): 1.0}  # counters reset


def samples(flagged: int, clear: int, refused: int, advice: int) -> dict[str, Any]:
    site = {"service": "imaging-cxr", "site": "s1"}
    return {
        "tonle_cxr_findings_total": [
            ({**site, "finding": "tb", "flagged": "true"}, float(flagged)),
            ({**site, "finding": "tb", "flagged": "false"}, float(clear)),
        ],
        "tonle_answers_total": [
            (
                {**site, "mode": "live", "outcome": "no-advice", "category": "quality-gate"},
                float(refused),
            ),
            ({**site, "mode": "live", "outcome": "advice", "category": "none"}, float(advice)),
        ],
    }


def test_alert_rules_fire_outside_their_band_from_min_count_on() -> None:
    rules = [
        AlertRule(name="tb-flagged", metric="flagged-fraction", service="imaging-cxr",
                  finding="tb", low=0.05, high=0.30, min_count=50),
        AlertRule(name="refusals", metric="refusal-rate", service="imaging-cxr", high=0.2,
                  min_count=50),
        AlertRule(name="other-site", metric="refusal-rate", service="imaging-cxr",
                  site="s2", high=0.2, min_count=1),
    ]  # fmt: skip
    monitor = Monitor(MonitorConfig(window_s=3600, alerts=rules))
    _, few = monitor.evaluate(samples(flagged=20, clear=10, refused=0, advice=30), {}, now=0)
    assert [s.active for s in few] == [False, False, False]  # 30 reads < min_count
    _, states = monitor.evaluate(samples(60, 40, 40, 60), {}, now=1)
    tb, refusals, other = states
    assert (tb.value, tb.count, tb.active) == (0.6, 100.0, True)
    assert (refusals.value, refusals.active) == (0.4, True)
    assert (other.value, other.active) == (None, False)  # nothing from site s2


def test_alert_rules_are_checked_when_configured() -> None:
    with pytest.raises(ValidationError):
        AlertRule(name="x", metric="flagged-fraction", service="imaging-cxr", high=0.3)
    with pytest.raises(ValidationError):
        AlertRule(name="no-band", metric="psi", service="ncd-cvd-risk")
    with pytest.raises(ValidationError):
        AlertRule(name='bad"name', metric="psi", service="ncd-cvd-risk", high=0.2)
    rule = AlertRule(name="dup", metric="psi", service="s", high=0.2)
    with pytest.raises(ValidationError):
        MonitorConfig(alerts=[rule, rule])


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("drift")) as rt:
        predictor = rt.ncd["ncd-cvd-risk"]
        # The training population: ages 40-60 (bins [40, 50), [50, 60), [60, ...)).
        distribution = {"age": {"edges": [50.0, 60.0], "proportions": [0.5, 0.5, 0.0], "n": 1000}}
        predictor.metadata = with_details(predictor.metadata, training_distribution=distribution)
        rule = AlertRule(name="cvd-age-drift", metric="psi", service="ncd-cvd-risk",
                         feature="age", high=0.25, min_count=3)  # fmt: skip
        rt.config = rt.config.model_copy(update={"monitoring": MonitorConfig(alerts=[rule])})
        yield rt


def get(runtime: Runtime, method: str, url: str, body: Any = None) -> httpx.Response:
    app = create_app(runtime.settings)
    app.state.runtime = runtime

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, url, json=body)

    return asyncio.run(go())


def gauge(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def test_older_patients_than_in_training_raise_the_drift_alert(runtime: Runtime) -> None:
    for _ in range(3):  # every patient aged 62: all in the bin training had 0 % in
        response = get(runtime, "POST", CVD, cds_request(prefetch(age=62)))
        assert response.status_code == 200, response.text
        assert response.json()["cards"]
    text = get(runtime, "GET", "/metrics").text
    assert 'tonle_ncd_feature_bins_total{bin="2",feature="age",service="ncd-cvd-risk"}' in text
    psi_age = gauge(text, 'tonle_ncd_feature_psi{service="ncd-cvd-risk",feature="age"}')
    assert psi_age == pytest.approx(psi([0.5, 0.5, 0.0], [0, 0, 3]))
    assert gauge(text, 'tonle_alert_active{rule="cvd-age-drift"}') == 1.0
    assert gauge(text, 'tonle_alert_count{rule="cvd-age-drift"}') >= 3.0


def test_monitor_page_shows_sites_flagged_drift_and_alerts(runtime: Runtime) -> None:
    for _ in range(3):  # the rule's min_count: fires whatever ran before
        assert get(runtime, "POST", CVD, cds_request(prefetch(age=62))).status_code == 200
    page = get(runtime, "GET", "/ui/monitor")  # dev mode: the operator's view
    assert page.status_code == 200, page.text
    html = page.text
    assert "Monitoring" in html
    assert "ncd-cvd-risk" in html
    assert "<svg" in html
    assert "<script" not in html
    assert "cvd-age-drift" in html
    assert "Firing" in html
    assert "Input drift" in html
    assert ">age<" in html
    alerts = html[html.index("Alert rules") : html.index("Mean latency")]
    assert "Since (UTC)" in alerts  # when the rule last changed state, as /readyz/detail
    assert re.search(r"<td>\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d</td>", alerts)
    km = get(runtime, "GET", "/ui/monitor?lang=km").text
    assert "ការតាមដាន" in km
    assert "ចាប់តាំងពី (UTC)" in km


def test_monitor_page_needs_the_metrics_token_outside_dev_mode(runtime: Runtime) -> None:
    from pydantic import SecretStr

    dev = runtime.settings
    runtime.settings = dev.model_copy(update={"dev": False, "metrics_token": SecretStr("m" * 40)})
    try:
        assert get(runtime, "GET", "/ui/monitor").status_code == 401
        app = create_app(dev)
        app.state.runtime = runtime

        async def go(token: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.get("/ui/monitor", headers={"Authorization": f"Bearer {token}"})

        assert asyncio.run(go("x" * 40)).status_code == 401
        assert asyncio.run(go("m" * 40)).status_code == 200
    finally:
        runtime.settings = dev


def test_a_tenant_sees_only_its_own_site() -> None:
    from serving.monitor.page import build_view

    rows = samples(flagged=3, clear=7, refused=1, advice=9)
    other = {"service": "imaging-cxr", "site": "s2", "mode": "live", "outcome": "advice",
             "category": "none"}  # fmt: skip
    rows["tonle_answers_total"].append((other, 5.0))
    monitor = Monitor(MonitorConfig())
    mine = build_view(rows, monitor=monitor, expected={}, site="s1")
    assert [(v.site, v.calls) for v in mine.sites] == [("s1", 10.0)]
    assert mine.sites[0].flagged_percent() == [("tb", 30.0)]
    assert not mine.operator
    assert mine.alerts == []
    assert mine.latency == []
    everyone = build_view(rows, monitor=monitor, expected={}, site=None)
    assert [v.site for v in everyone.sites] == ["s1", "s2"]


def test_readiness_detail_lists_checks_and_alerts_without_gating_on_them(
    runtime: Runtime,
) -> None:
    for _ in range(3):  # the age-drift rule fires (see above)
        assert get(runtime, "POST", CVD, cds_request(prefetch(age=62))).status_code == 200
    detail = get(runtime, "GET", "/readyz/detail")  # dev mode: the operator
    assert detail.status_code == 200, detail.text
    body = detail.json()
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == ["models", "database", "draining", "link-key"]
    assert checks["models"]["ok"]
    assert checks["models"]["gates_readiness"]
    assert not checks["link-key"]["gates_readiness"]
    (alert,) = body["alerts"]
    assert alert["rule"] == "cvd-age-drift"
    assert alert["state"] == "firing"
    assert alert["high"] == 0.25
    assert alert["low"] is None
    assert alert["value"] > 0.25
    assert alert["since"] is not None
    # A firing alert leaves the service ready: alerts are not readiness conditions.
    assert body["ready"] is True
    assert body["alerts_gate_readiness"] is False
    assert body["scope"]["worker_pid"] > 0
    assert "Patient" not in detail.text


def test_readiness_detail_needs_the_metrics_token_outside_dev_mode(runtime: Runtime) -> None:
    from pydantic import SecretStr

    dev = runtime.settings
    runtime.settings = dev.model_copy(update={"dev": False, "metrics_token": SecretStr("m" * 40)})
    try:
        assert get(runtime, "GET", "/readyz/detail").status_code == 401
    finally:
        runtime.settings = dev


def test_an_alert_keeps_its_since_until_its_state_changes() -> None:
    rule = AlertRule(name="refusals", metric="refusal-rate", service="s", high=0.5, min_count=1)
    monitor = Monitor(MonitorConfig(alerts=[rule]))

    def answers(refused: float, advice: float) -> dict[str, list[tuple[dict[str, str], float]]]:
        labels = {"service": "s", "site": "-"}
        return {"tonle_answers_total": [({**labels, "outcome": "refused"}, refused),
                                        ({**labels, "outcome": "advice"}, advice)]}  # fmt: skip

    (ok,) = monitor.evaluate(answers(1, 9), {}, now=0.0)[1]
    (ok_again,) = monitor.evaluate(answers(1, 10), {}, now=1.0)[1]
    (firing,) = monitor.evaluate(answers(20, 10), {}, now=2.0)[1]
    (still,) = monitor.evaluate(answers(30, 10), {}, now=3.0)[1]
    assert not ok.active
    assert ok_again.since == ok.since
    assert firing.active
    assert firing.since is not None
    assert ok.since is not None
    assert firing.since >= ok.since
    assert still.since == firing.since


def test_monitor_page_shows_subgroups_of_the_last_days(runtime: Runtime) -> None:
    assert get(runtime, "POST", CVD, cds_request(prefetch(age=62))).status_code == 200
    html = get(runtime, "GET", "/ui/monitor?days=7").text
    assert "Subgroups, last 7 days" in html
    assert "fewer than 5 answers" in html
    assert "Age: 55-69" in html
    assert "<script" not in html
    km = get(runtime, "GET", "/ui/monitor?days=7&lang=km").text
    assert "ក្រុមរង" in km
    for bad in ("0", "366", "x", "-1", "7.5"):
        assert get(runtime, "GET", f"/ui/monitor?days={bad}").status_code == 400


def test_monitor_page_without_the_database_still_shows_the_counters(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import serving.monitor.page

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("database is down"))

    monkeypatch.setattr(serving.monitor.page, "count_subgroups", down)
    page = get(runtime, "GET", "/ui/monitor")
    assert page.status_code == 200
    assert "The audit database did not answer" in page.text
    assert "ncd-cvd-risk" in page.text  # the counters' rows
