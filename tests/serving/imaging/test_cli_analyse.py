"""``tonle imaging analyse`` against the imaging routes on a real HTTP server."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from typer.testing import CliRunner

from cli import app as cli
from serving.imaging.routes import routes
from tests.serving.imaging.conftest import AppFactory, fake_runtime
from tests.serving.imaging.cxr_fixtures import dicom_bytes
from tests.serving.imaging.test_on_arrival import _Served


def test_analyse_prints_the_read_and_exits_4_when_not_assessable(
    make_app: AppFactory, tmp_path: Path
) -> None:
    _, state = make_app()
    app = Starlette(routes=routes())
    app.state.runtime = fake_runtime(state)
    good = tmp_path / "good.dcm"
    good.write_bytes(dicom_bytes())
    lateral = tmp_path / "lateral.dcm"
    lateral.write_bytes(dicom_bytes(view="LL"))
    runner = CliRunner()
    with _Served(app) as url:
        ok = runner.invoke(cli, ["imaging", "analyse", str(good), "--url", url])
        refused = runner.invoke(cli, ["imaging", "analyse", str(lateral), "--url", url])
    assert ok.exit_code == 0, ok.output
    assert "cxr-triage 0.1.0" in ok.output
    assert "abnormal" in ok.output
    assert "model-version" in ok.output
    assert refused.exit_code == 4
    assert "lateral-view" in refused.output


def test_analyse_logs_http_requests_only_with_verbose(make_app: AppFactory, tmp_path: Path) -> None:
    """httpx's INFO line ("HTTP Request: POST ...") was printed among the read."""
    _, state = make_app()
    app = Starlette(routes=routes())
    app.state.runtime = fake_runtime(state)
    good = tmp_path / "good.dcm"
    good.write_bytes(dicom_bytes())
    runner = CliRunner()
    level = logging.getLogger("httpx").level
    with _Served(app) as url:
        quiet = runner.invoke(cli, ["imaging", "analyse", str(good), "--url", url])
        verbose = runner.invoke(cli, ["-v", "imaging", "analyse", str(good), "--url", url])
    assert quiet.exit_code == 0, quiet.output
    assert "cxr-triage 0.1.0" in quiet.output
    assert "HTTP Request" not in quiet.output
    assert verbose.exit_code == 0, verbose.output
    assert "HTTP Request: POST" in verbose.output
    assert logging.getLogger("httpx").level == level  # restored after the command
