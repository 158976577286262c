from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from cli import app
from serving.config import ServingConfig
from serving.demo_issuer import ensure_demo_issuer
from serving.prefetch import TEMPLATES
from training.demo import _serving_config, write_demo_request


def test_demo_request_has_full_prefetch(tmp_path: Path) -> None:
    body = json.loads(write_demo_request(tmp_path / "r.json").read_text())
    assert body["hook"] == "patient-view"
    assert set(body["prefetch"]) == set(TEMPLATES)
    assert body["prefetch"]["patient"]["id"] == body["context"]["patientId"]


def test_demo_serving_config_says_why_there_is_no_estimate() -> None:
    pinned = {"cvd-risk": "1.0.0", "diabetes-risk": "1.0.0"}
    config = ServingConfig.model_validate(_serving_config(pinned))
    assert config.no_advice_card is True  # off by default; the demo EHR shows the card
    assert set(config.ncd_services) == {"ncd-cvd-risk", "ncd-diabetes-risk"}


def test_demo_token_needs_the_demo_issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["demo-token", "/cds-services"])
    assert result.exit_code == 3
    assert "run `tonle demo`" in result.output


def test_demo_token_is_signed_for_the_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ensure_demo_issuer(Path(".tonle/demo-issuer"))
    result = CliRunner().invoke(app, ["demo-token", "/cds-services/ncd-cvd-risk", "--port", "3123"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
    assert claims["aud"] == "http://127.0.0.1:3123/cds-services/ncd-cvd-risk"
    assert jwt.get_unverified_header(result.output.strip())["alg"] == "ES384"


def test_demo_prints_commands_that_work_as_pasted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a terminal rich wraps at 80 columns; a curl command broken over two
    # lines runs without its --data when pasted.
    import training.demo

    monkeypatch.chdir(tmp_path)
    # `tonle demo` sets these with setdefault: set them here so they are undone after.
    monkeypatch.setenv("TONLE_ALLOWED_ISSUERS", str(tmp_path / "issuers.yaml"))
    monkeypatch.setenv("TONLE_DEMO_ISSUER_DIR", str(tmp_path))
    monkeypatch.setattr(training.demo, "build_demo", lambda console: tmp_path / "serving.yaml")
    result = CliRunner().invoke(app, ["demo", "--build-only", "--port", "3123"])
    assert result.exit_code == 0, result.output
    curl = [line for line in result.output.splitlines() if "Authorization: Bearer" in line]
    assert len(curl) == 1
    assert "--data @" in curl[0]
    assert curl[0].rstrip().endswith("| python3 -m json.tool")
    assert "Khmer: http://127.0.0.1:3123/ui/ehr?lang=km)" in result.output
