"""``tonle imaging``: the Orthanc hook script and error exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_orthanc_lua_is_written_with_the_url(tmp_path: Path) -> None:
    target = tmp_path / "tonle.lua"
    result = runner.invoke(
        app, ["imaging", "orthanc-lua", "https://tonle.example", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    script = target.read_text()
    assert "function OnStableStudy" in script
    assert '"https://tonle.example/v1/imaging/studies/"' in script
    assert "respond-async" in script
    assert 'os.getenv("TONLE_API_KEY")' in script


def test_orthanc_lua_refuses_a_non_http_url() -> None:
    result = runner.invoke(app, ["imaging", "orthanc-lua", "file:///etc/passwd"])
    assert result.exit_code == 4


def test_analyse_reports_an_unreachable_service(tmp_path: Path) -> None:
    image = tmp_path / "x.dcm"
    image.write_bytes(b"\0" * 200)
    result = runner.invoke(app, ["imaging", "analyse", str(image), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1


def test_analyse_refuses_a_url_without_its_scheme(tmp_path: Path) -> None:
    """127.0.0.1:3000 (no http://) is a bad option (exit 4), not an unreachable service."""
    image = tmp_path / "x.dcm"
    image.write_bytes(b"\0" * 200)
    result = runner.invoke(app, ["imaging", "analyse", str(image), "--url", "127.0.0.1:3000"])
    assert result.exit_code == 4
    assert "must start with http:// or https://" in result.output


def _answer(monkeypatch: pytest.MonkeyPatch, response: httpx.Response) -> None:
    def post(*args: Any, **kwargs: Any) -> httpx.Response:
        return response

    monkeypatch.setattr(httpx, "post", post)


def _image(tmp_path: Path) -> str:
    image = tmp_path / "x.dcm"
    image.write_bytes(b"\0" * 200)
    return str(image)


def test_analyse_prints_the_read_unwrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heatmap = (
        "http://127.0.0.1:3000/v1/imaging/results/"
        + "a" * 32
        + "/heatmap.png?exp=1&sig="
        + "b" * 32
    )
    body = {
        "model": {"name": "cxr-triage", "version": "1.0.0"},
        "advisory": (
            "AI generated, unverified: advisory chest X-ray triage to support, "
            "not replace, a clinician's reading."
        ),
        "findings": [
            {
                "label": "tb",
                "probability": 0.9,
                "threshold": 0.5,
                "threshold_source": "model-version",
                "flagged": True,
            }
        ],
        "heatmap_url": heatmap,
    }
    _answer(monkeypatch, httpx.Response(200, json=body))
    result = runner.invoke(app, ["imaging", "analyse", _image(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"heatmap: {heatmap}" in result.output.splitlines()  # one line, copyable
    assert "cxr-triage 1.0.0 - AI generated, unverified" in result.output


def test_analyse_explains_a_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TONLE_API_KEY", raising=False)
    _answer(monkeypatch, httpx.Response(401, json={"error": "unauthorized"}))
    result = runner.invoke(app, ["imaging", "analyse", _image(tmp_path)])
    assert result.exit_code == 1
    assert "no read: unauthorized\n" in result.output  # no empty "()"
    assert "TONLE_API_KEY is not set" in result.output
    assert "tonle apikey create" in result.output


def test_analyse_survives_an_answer_that_is_not_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _answer(monkeypatch, httpx.Response(404, text="Not Found"))
    result = runner.invoke(app, ["imaging", "analyse", _image(tmp_path), "--url", "http://x/ui"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no read: HTTP 404" in result.output
    assert "is --url the service's base URL?" in result.output
