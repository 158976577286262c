"""The serving Bento: built by ``tonle bento build`` with its models inside, shipped as
a file, served from another BentoML store outside the repository, and as a container
would unpack it; both answer the demo CDS request.

Also reviews the Dockerfile BentoML generates from it (no container daemon here).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.audit import AuditStore
from serving.demo_issuer import ensure_demo_issuer, sign_token
from tests.deploy.compile_script import compile_module
from tests.serving.cds_fixtures import build_store, write_config
from tests.serving.service_process import CVD, free_port
from training.demo import write_demo_request

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a host that has BentoML but not this repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TONLE_", "BENTOML_", "PYTHONPATH"))
    }
    return {**env, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A Bento exported to a file (the fixture CVD and diabetes models pinned)."""
    tmp = tmp_path_factory.mktemp("bento")
    store = build_store(tmp)
    config = write_config(tmp)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "bento", "build", "--config", str(config),
         "--version", "test1"],
        cwd=ROOT, env={**_env(store), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip()
    archive = tmp / "tonle.bento"
    subprocess.run(
        [sys.executable, "-m", "bentoml", "export", tag, str(archive)],
        cwd=tmp, env=_env(store), capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return archive, tag


@contextlib.contextmanager
def _serving(target: str, cwd: Path, home: Path, tmp: Path) -> Iterator[str]:
    """``bentoml serve TARGET`` (a tag or a Bento folder) on 127.0.0.1; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(
        home,
        TONLE_DATABASE_URL=f"sqlite:///{tmp / 'audit.db'}",
        TONLE_ALLOWED_ISSUERS=str(ensure_demo_issuer(tmp / "issuer", fhir_servers=[])),
        TONLE_LINK_SECRET=secrets.token_hex(32),
        TONLE_PUBLIC_URL=url,
        TONLE_SHUTDOWN_DRAIN_S="0",
    )
    log = tmp / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=cwd, env=env, stdout=sink, stderr=sink, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def _files(folder: Path) -> set[Path]:
    """Every file under ``folder`` but bytecode caches (which Python skips when it may not
    write them)."""
    return {p for p in folder.rglob("*") if "__pycache__" not in p.parts}


def _demo_call(url: str, tmp: Path) -> None:
    """POST the demo patient's request: advice, its audit row, its explanation page."""
    request = write_demo_request(tmp / "demo-request.json")
    token = sign_token(url + CVD, directory=tmp / "issuer")
    response = httpx.post(
        url + CVD,
        content=request.read_bytes(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    card = response.json()["cards"][0]
    store = AuditStore.open(f"sqlite:///{tmp / 'audit.db'}")
    try:
        rows = store.rows(request_id=response.headers["x-request-id"])
    finally:
        store.close()
    assert [(r.outcome, r.model_name, r.card_ids) for r in rows] == [
        ("advice", "cvd-risk", [card["uuid"]])
    ]
    assert httpx.get(card["links"][0]["url"], timeout=30).status_code == 200


def test_the_bento_from_another_store_answers_the_demo_request(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    archive, tag = built
    home = tmp_path / "ops-bentoml"  # a fresh store on the "server": no models of ours
    subprocess.run(
        [sys.executable, "-m", "bentoml", "import", str(archive)],
        cwd=tmp_path, env=_env(home), capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    with _serving(tag, elsewhere, home, tmp_path) as url:
        _demo_call(url, tmp_path)

    assert not (elsewhere / ".tonle").exists()  # nothing read from or written to the cwd


def test_the_unpacked_bento_serves_its_own_models_as_in_the_image(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    """The image's layout: the Bento folder with models/ inside, an empty BentoML home."""
    archive, _ = built
    bento = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(bento, filter="data")
    assert sorted(p.name for p in (bento / "models").iterdir()) == ["cvd-risk", "diabetes-risk"]
    assert not (bento / "src" / "training").exists()
    empty_home = tmp_path / "home"
    before = _files(bento)

    with _serving(str(bento), tmp_path, empty_home, tmp_path) as url:
        _demo_call(url, tmp_path)

    # A read-only root file system is possible: nothing written into the Bento, and in
    # BentoML's home only what the image mounts a volume for.
    assert _files(bento) == before
    written = {p.relative_to(empty_home) for p in empty_home.rglob("*") if p.is_file()}
    assert {p.parts[0] for p in written} == {"prometheus_multiproc_dir"}
    created = {p.name for p in empty_home.iterdir()}
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert f"mkdir -p {' '.join(sorted(created - {'prometheus_multiproc_dir'}))} prometheus" in (
        dockerfile
    ), created
    assert not (empty_home / "models").exists() or not any((empty_home / "models").iterdir())


def test_the_operations_cli_runs_from_the_unpacked_bento(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    archive, _ = built
    bento = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(bento, filter="data")
    env = _env(tmp_path / "home", PYTHONPATH=str(bento / "src"))

    upgraded = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade", "--database-url",
         f"sqlite:///{tmp_path / 'a.db'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "models", "list", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert upgraded.returncode == 0, upgraded.stderr
    assert listed.returncode == 0, listed.stderr
    assert sorted(m["name"] for m in json.loads(listed.stdout)) == ["cvd-risk", "diabetes-risk"]


def test_the_generated_dockerfile(built: tuple[Path, str], tmp_path: Path) -> None:
    archive, _ = built
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    dockerfile = (tmp_path / "env" / "docker" / "Dockerfile").read_text()
    requirements = (tmp_path / "env" / "python" / "requirements.txt").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]

    assert "build-essential" not in dockerfile
    assert "apt-get" not in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "/livez" in dockerfile
    assert [x for x in lines if x.startswith("USER ")][-1] == "USER bentoml"
    assert lines[-1].startswith("ENTRYPOINT")
    assert "pip uninstall -y uv" in dockerfile
    assert "chown -R root:root" in dockerfile  # code not writable by the service user
    assert "torch" not in requirements
    assert "pandas" not in requirements
    # The lock with its hashes, and BentoML's own unhashed `bentoml==X` appended: pip
    # merges it with the hashed pin (--require-hashes passes), uv checks the hashes given.
    lock = compile_module().read_lock(ROOT / "requirements" / "serving.txt")
    shipped, appended = requirements.rstrip("\n").rsplit("\n", 1)
    assert appended == f"bentoml=={lock['bentoml'][0]}"
    (tmp_path / "shipped.txt").write_text(shipped + "\n")
    assert compile_module().read_lock(tmp_path / "shipped.txt") == lock
