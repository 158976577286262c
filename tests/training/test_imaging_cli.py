"""``tonle imaging``: the Orthanc hook script and error exits."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from training.cli import app

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
