"""Three ``bentoml serve`` replicas behind HAProxy, sharing one PostgreSQL database.

What several replicas must keep true, on 127.0.0.1 only: a replica killed with SIGKILL
under load leaves no acknowledged answer without its audit row and the others carry the
load on; a JWT used on one replica is refused by another (one replay store); explanation
links minted by one replica open on the others (one link key, one database); a chest
X-ray result posted through one replica is read through another, by its tenant only (the
results are in the database); a rolling restart, each replica draining on SIGTERM, fails
no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.audit import AuditStore
from serving.demo_issuer import ensure_demo_issuer, sign_token
from tests.serving.cds_fixtures import build_store, cds_request, model_store_at, write_config
from tests.serving.db_fixtures import postgres_database
from tests.serving.imaging.cxr_fixtures import dicom_bytes, make_cxr_artifact
from tests.serving.service_process import (
    CVD,
    ROOT,
    Call,
    TonleProcess,
    audited,
    closed_loop,
    free_port,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (make system-deps)"),
]

REPLICAS = 3
DRAIN_S = 1.0
# HAProxy: readiness polled every 300 ms, one failure takes a replica out, one success
# puts it back; a request whose connection is refused is sent to another replica.
HAPROXY = """
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-server-close
frontend tonle
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fastinter 300ms downinter 300ms fall 1 rise 1
{servers}
"""


class Replica(TonleProcess):
    """A :class:`TonleProcess` that always comes back on its own port, with the shared
    link key, issuer and public URL (the load balancer's) of the deployment."""

    def __init__(self, tmp: Path, database_url: str, port: int, env: dict[str, str]) -> None:
        super().__init__(tmp, database_url, env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def start(self, ready_timeout_s: float = 120.0) -> float:
        self.launch()
        return self.wait_ready(ready_timeout_s)

    def launch(self) -> None:
        """Start ``bentoml serve`` on this replica's port without waiting."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_serve_command(), "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=self._env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip


def _serve_command() -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:Tonle"]


@dataclass
class Deployment:
    """The load balancer's URL, the replicas behind it and their database."""

    url: str
    replicas: list[Replica]
    database_url: str
    issuer_dir: Path

    def token(self, path: str) -> dict[str, str]:
        """A fresh single-use JWT addressed to the deployment's public URL."""
        return {"Authorization": f"Bearer {sign_token(self.url + path, directory=self.issuer_dir)}"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("replicas")
    lb_port = free_port()
    public = f"http://127.0.0.1:{lb_port}"
    issuers = ensure_demo_issuer(tmp / "issuer", fhir_servers=[])
    home = build_store(tmp / "store")
    with model_store_at(home):
        cxr = make_cxr_artifact(tmp / "store")
    config = write_config(
        tmp,
        models={"cvd-risk": "1.0.0", "diabetes-risk": "1.0.0", "cxr-triage": cxr.metadata.version},
        imaging={"model": "cxr-triage"},
    )
    shared = {
        "BENTOML_HOME": str(home),
        "TONLE_SERVING_CONFIG": str(config),
        "TONLE_PUBLIC_URL": public,
        "TONLE_ALLOWED_ISSUERS": str(issuers),
        "TONLE_LINK_SECRET": secrets.token_hex(32),
        "TONLE_SHUTDOWN_DRAIN_S": str(DRAIN_S),
    }
    with postgres_database("tonle_replicas") as database_url, contextlib.ExitStack() as stack:
        replicas = []
        for n in range(REPLICAS):
            folder = tmp / f"replica-{n}"
            folder.mkdir()
            replica = Replica(folder, database_url, free_port(), shared)
            replica.issuer_dir = tmp / "issuer"
            stack.callback(replica.stop)
            replicas.append(replica)
        # All at once, as a Deployment starts them: migrations take a database lock.
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        servers = "\n".join(
            f"    server r{n} 127.0.0.1:{r.port} check" for n, r in enumerate(replicas)
        )
        config = tmp / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=lb_port, servers=servers))
        log = (tmp / "haproxy.log").open("wb")
        stack.callback(log.close)
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)
        stack.callback(haproxy.wait, 10)
        stack.callback(haproxy.terminate)
        served = Deployment(public, replicas, database_url, tmp / "issuer")
        _wait_balanced(served)
        yield served


def _wait_balanced(deployment: Deployment, timeout_s: float = 30.0) -> None:
    """Until the load balancer answers ``/readyz`` (some replica is in)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(deployment.url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("the load balancer never answered /readyz")


def _cds(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url + CVD, json=cds_request(), headers=headers, timeout=30)


def _every_2xx_audited_once(deployment: Deployment, calls: list[Call]) -> int:
    ok = [c.request_id for c in calls if c.ok]
    assert None not in ok, "a 2xx without X-Request-Id"
    rows = audited(deployment.database_url, ok)
    missing = [rid for rid in ok if rows.get(rid) != 1]  # type: ignore[arg-type]
    assert not missing, f"{len(missing)} of {len(ok)} acknowledged calls without one audit row"
    return len(ok)


def test_a_token_used_on_one_replica_is_refused_by_another(deployment: Deployment) -> None:
    first, second, third = deployment.replicas
    headers = deployment.token(CVD)

    used = _cds(first.url, headers)
    replayed = [_cds(r.url, headers) for r in (second, third)]

    assert used.status_code == 200, used.text
    assert [r.status_code for r in replayed] == [401, 401]


def test_links_minted_by_one_replica_open_on_the_others(deployment: Deployment) -> None:
    first = deployment.replicas[0]
    card = _cds(first.url, deployment.token(CVD)).json()["cards"][0]
    link = card["links"][0]["url"]
    assert link.startswith(deployment.url)  # minted for the public URL

    opened = [
        httpx.get(link.replace(deployment.url, r.url), timeout=30).status_code
        for r in deployment.replicas[1:]
    ]

    assert opened == [200, 200]


def test_an_imaging_result_posted_through_one_replica_is_read_through_another(
    deployment: Deployment,
) -> None:
    first, second, third = deployment.replicas
    audit = AuditStore.open(deployment.database_url)
    try:
        keys = {t: {"X-API-Key": audit.create_api_key(t, "pacs")[1]} for t in ("site-a", "site-b")}
    finally:
        audit.close()
    posted = httpx.post(
        first.url + "/v1/imaging/cxr",
        content=dicom_bytes(patient_id="REPLICA-1"),
        headers={**keys["site-a"], "Content-Type": "application/dicom"},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    result_id = posted.json()["id"]
    url = f"{second.url}/v1/imaging/results/{result_id}"

    read = httpx.get(url, headers=keys["site-a"], timeout=30)
    fhir = httpx.get(url + "/fhir", headers=keys["site-a"], timeout=30)
    theirs = [httpx.get(u, headers=keys["site-b"], timeout=30) for u in (url, url + "/fhir")]
    heatmap = httpx.get(read.json()["heatmap_url"].replace(deployment.url, third.url), timeout=30)

    assert read.status_code == 200, read.text
    assert read.json()["id"] == result_id
    assert read.json()["findings"] == posted.json()["findings"]
    assert fhir.status_code == 200, fhir.text
    assert result_id in fhir.text
    assert [r.status_code for r in theirs] == [404, 404]
    assert heatmap.status_code == 200, heatmap.text
    assert heatmap.content.startswith(b"\x89PNG")


def test_sigkill_of_one_replica_under_load(deployment: Deployment) -> None:
    """No acknowledged answer without its audit row; after the load balancer noticed
    (2 s), no call fails and the two others answer."""
    victim = deployment.replicas[-1]

    async def load_and_kill() -> tuple[list[Call], float]:
        load = asyncio.create_task(
            closed_loop(deployment, clients=6, duration_s=10, max_calls=3000)  # type: ignore[arg-type]
        )
        await asyncio.sleep(3)
        victim.kill()
        killed = time.monotonic()
        return await load, killed

    calls, killed = asyncio.run(load_and_kill())

    after = [c for c in calls if c.sent > killed + 2.0]
    failed_after = [c for c in after if not c.ok]
    assert not failed_after, f"{len(failed_after)} failed after the kill, first {failed_after[0]}"
    assert len(after) >= 20, "the two remaining replicas barely answered"
    assert _every_2xx_audited_once(deployment, calls) > len(after)
    victim.start()
    time.sleep(1.0)  # one health check puts it back


def test_rolling_restart_with_drain_fails_no_call(deployment: Deployment) -> None:
    async def roll() -> list[Call]:
        stop = asyncio.Event()
        load = asyncio.create_task(
            closed_loop(deployment, clients=6, duration_s=120, max_calls=20000, stop=stop)  # type: ignore[arg-type]
        )
        for replica in deployment.replicas:
            await asyncio.sleep(1.0)
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(replica.proc.wait, 30)
            assert replica.proc.returncode == 0, replica.log_tail()
            await asyncio.to_thread(replica.start)
        await asyncio.sleep(1.0)
        stop.set()
        return await load

    calls = asyncio.run(roll())

    failed = [c for c in calls if not c.ok]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed, first {failed[0]}"
    assert _every_2xx_audited_once(deployment, calls) == len(calls) > 100
