"""``tonle bento build`` refuses, before building, a config it cannot pack."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli import app
from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _build(config: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["bento", "build", "--config", str(config), "--project", str(ROOT)])
    return result.exit_code, result.output


def test_a_config_that_pins_nothing_is_refused(model_store: Path) -> None:
    code, output = _build(ROOT / "configs" / "serving.yaml")  # the shipped one: models: {}

    assert code == EXIT_BAD_INPUT
    assert "pins no models" in output


def test_a_pinned_model_missing_from_the_store_is_refused(
    model_store: Path, tmp_path: Path
) -> None:
    config = tmp_path / "serving.yaml"
    config.write_text("models: {cvd-risk: 9.9.9}\n")

    code, output = _build(config)

    assert code == EXIT_BAD_ARTIFACT
    assert "cvd-risk" in output


def test_an_invalid_config_is_refused(model_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "serving.yaml"
    config.write_text("models: {cvd-risk: latest}\nunknown_key: 1\n")

    code, _ = _build(config)

    assert code == EXIT_BAD_INPUT
