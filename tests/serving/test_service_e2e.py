"""One real ``bentoml serve`` process per database (SQLite, PostgreSQL), driven over HTTP
with JWTs signed by the demo EHR issuer and with an API key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.audit import AuditStore
from serving.demo_issuer import sign_token
from tests.serving.cds_fixtures import cds_request
from tests.serving.db_fixtures import postgres_database
from tests.serving.service_process import TonleProcess

pytestmark = pytest.mark.slow
CVD = "/cds-services/ncd-cvd-risk"
METRICS_TOKEN = "e2e-metrics-scraper-token".ljust(40, "m")


@dataclass
class Served:
    url: str
    issuer_dir: Path
    store: AuditStore

    def token(self, path: str, **kwargs: object) -> dict[str, str]:
        jwt = sign_token(self.url + path, directory=self.issuer_dir, **kwargs)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {jwt}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    with (
        postgres_database("tonle_e2e")
        if request.param == "postgresql"
        else _sqlite(tmp) as database_url,
        TonleProcess(tmp, database_url, {"TONLE_METRICS_TOKEN": METRICS_TOKEN}) as service,
    ):
        store = AuditStore.open(database_url)
        try:
            yield Served(url=service.url, issuer_dir=service.issuer_dir, store=store)
        finally:
            store.close()


class _sqlite:
    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp / 'audit.db'}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


def test_health_and_metrics(served: Served) -> None:
    for path in ("/livez", "/readyz"):
        assert httpx.get(served.url + path).status_code == 200
    assert httpx.get(served.url + "/metrics").status_code == 401
    httpx.post(served.url + CVD, json=cds_request(), headers=served.token(CVD))
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    scrape = httpx.get(served.url + "/metrics", headers=scraper)
    assert 'tonle_outcomes_total{outcome="advice",reason="",service="ncd-cvd-risk"}' in scrape.text
    # The readiness detail is Tonle's route under BentoML's /readyz, for the scraper only.
    assert httpx.get(served.url + "/readyz/detail").status_code == 401
    answered = httpx.get(served.url + "/readyz/detail", headers=scraper)
    # Both answers are audited, as the operator's reads.
    for response, service in ((scrape, "metrics"), (answered, "readiness-detail")):
        (row,) = served.store.rows(request_id=response.headers["x-request-id"])
        assert (row.service_id, row.outcome, row.caller_iss) == (
            service,
            "read",
            "tonle-metrics-token",
        )
    detail = answered.json()
    assert detail["ready"] is True
    assert {c["name"]: c["ok"] for c in detail["checks"]} == {
        "models": True, "database": True, "draining": True, "link-key": True}  # fmt: skip
    assert detail["alerts_gate_readiness"] is False


def test_signed_cds_call_gives_card_and_audit_row(served: Served) -> None:
    discovery = httpx.get(served.url + "/cds-services", headers=served.token("/cds-services"))
    assert discovery.status_code == 200
    assert "ncd-cvd-risk" in {s["id"] for s in discovery.json()["services"]}
    for alg in ("ES384", "RS384"):
        response = httpx.post(
            served.url + CVD, json=cds_request(), headers=served.token(CVD, alg=alg)
        )
        assert response.status_code == 200, response.text
        card = response.json()["cards"][0]
        rows = served.store.rows(request_id=response.headers["x-request-id"])
        assert len(rows) == 1
        assert rows[0].outcome == "advice"
        assert rows[0].card_ids == [card["uuid"]]
        assert rows[0].caller_iss == "https://demo-ehr.tonle.example"
        # Its explanation link, signed with the configured TONLE_LINK_SECRET, opens.
        assert httpx.get(card["links"][0]["url"]).status_code == 200
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                              "outcomeTimestamp": "2026-11-25T10:00:00Z"}]}  # fmt: skip
    stored = httpx.post(
        served.url + f"{CVD}/feedback", json=feedback, headers=served.token(f"{CVD}/feedback")
    )
    assert stored.status_code == 200
    assert served.store.feedback(card_uuid=card["uuid"])[0].outcome == "accepted"


def test_refused_tokens_get_one_identical_401(served: Served) -> None:
    headers = served.token(CVD)
    first = httpx.post(served.url + CVD, json=cds_request(), headers=headers)
    assert first.status_code == 200
    rows = served.store.count()
    bodies = set()
    for bad in (
        headers,  # replay
        {},
        {"Authorization": "Bearer not-a-jwt"},
        served.token("/cds-services/ncd-diabetes-risk"),  # aud for another service
        served.token(CVD, issuer="https://demo-ehr.tonle.example.evil"),
    ):
        response = httpx.post(served.url + CVD, json=cds_request(), headers=bad)
        assert response.status_code == 401
        bodies.add(response.content)
    assert len(bodies) == 1
    # Counted in /metrics, not committed: anyone can send refused calls.
    assert served.store.count() == rows


def test_rest_needs_api_key(served: Served) -> None:
    body = {"sex": "female", "age": 55, "smoking": False, "sbp": 140, "total_chol": 5.0,
            "diabetes": False, "bmi": 24.0}  # fmt: skip
    assert httpx.post(served.url + "/v1/risk/cvd", json=body).status_code == 401
    _, secret = served.store.create_api_key("hospital-a", "e2e")
    response = httpx.post(served.url + "/v1/risk/cvd", json=body, headers={"X-API-Key": secret})
    assert response.status_code == 200, response.text
    assert response.json()["advice"] is True
    row = served.store.rows(request_id=response.headers["x-request-id"])[0]
    assert row.caller_tenant == "hospital-a"


def test_burst_gets_200_or_429_and_every_200_is_audited(served: Served) -> None:
    import asyncio

    headers = [served.token(CVD) for _ in range(150)]
    body = cds_request()

    async def burst() -> tuple[list[httpx.Response], int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            calls = [client.post(served.url + CVD, json=body, headers=h) for h in headers]
            ready = client.get(served.url + "/readyz")
            *answers, health = await asyncio.gather(*calls, ready)
            return answers, health.status_code

    answers, health = asyncio.run(burst())
    assert health == 200
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 429}
    ok = [r for r in answers if r.status_code == 200]
    assert ok
    for response in ok:
        assert len(served.store.rows(request_id=response.headers["x-request-id"])) == 1
