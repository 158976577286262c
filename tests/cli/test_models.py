"""tonle models show / verify: the artifact a tag names, and exit 3 when it is bad."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app
from cli.console import EXIT_BAD_ARTIFACT
from tests.ncd_fixtures import make_ncd_artifact


def _text(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at the terminal width


def test_show_and_verify_name_the_artifact_and_refuse_a_tampered_one(
    model_store: Path, tmp_path: Path
) -> None:
    stored = make_ncd_artifact(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["models", "show", "cvd-risk"])  # no version: the latest
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["sha256"] == stored.metadata.sha256
    verified = runner.invoke(app, ["models", "verify", "cvd-risk:1.0.0"])
    assert verified.exit_code == 0, verified.output
    assert f"OK cvd-risk:1.0.0 sha256={stored.metadata.sha256}" in _text(verified.output)

    with stored.onnx_path.open("ab") as fh:
        fh.write(b"\0")
    assert runner.invoke(app, ["models", "show", "cvd-risk:1.0.0"]).exit_code == 0  # no hashing
    tampered = runner.invoke(app, ["models", "verify", "cvd-risk:1.0.0"])
    assert tampered.exit_code == EXIT_BAD_ARTIFACT
    assert "modified or corrupted" in _text(tampered.output)
    unknown = runner.invoke(app, ["models", "show", "cvd-risk:9.9.9"])
    assert unknown.exit_code == EXIT_BAD_ARTIFACT
    assert "available: cvd-risk:1.0.0" in _text(unknown.output)
