"""``tonle serve`` refuses at once what every BentoML worker would refuse at start: no
link key outside ``--dev`` and the demo, or a bad one (exit 2); a serving config that is
missing or invalid (exit 4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import training.demo
from cli import app

_KEY = "serve-cli-link-key-".ljust(40, "k")
_VARIABLES = (
    "TONLE_DEV",
    "TONLE_DEMO_ISSUER_DIR",
    "TONLE_ALLOWED_ISSUERS",
    "TONLE_LINK_SECRET",
    "TONLE_LINK_SECRET_FILE",
    "TONLE_LINK_SECRET_PREVIOUS",
    "TONLE_LINK_SECRET_PREVIOUS_FILE",
)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environments ``bentoml serve`` would have been started with (not started)."""
    for name in _VARIABLES:
        monkeypatch.setenv(name, "")  # so that what the CLI sets is undone afterwards
        monkeypatch.delenv(name)
    calls: list[dict[str, str]] = []

    def execvpe(_file: str, _args: list[str], env: dict[str, str]) -> Any:
        calls.append(env)

    monkeypatch.setattr(os, "execvpe", execvpe)
    return calls


def test_no_link_key_is_refused_before_bentoml_starts(started: list[dict[str, str]]) -> None:
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "TONLE_LINK_SECRET_FILE" in " ".join(result.output.split())
    assert started == []


def test_a_short_key_is_refused_without_showing_it(
    started: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TONLE_LINK_SECRET", "short-secret-value")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "has 18 characters" in result.output
    assert "short-secret-value" not in result.output
    assert started == []


def test_with_a_key_or_in_dev_mode_bentoml_starts(
    started: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CliRunner().invoke(app, ["serve", "--dev"]).exit_code == 0
    monkeypatch.setenv("TONLE_LINK_SECRET", _KEY)
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert [env.get("TONLE_DEV") for env in started] == ["1", None]
    assert started[1]["TONLE_LINK_SECRET"] == _KEY


def test_the_demo_needs_no_key(
    started: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text("models: {}\n", encoding="utf-8")
    issuers = tmp_path / "demo-issuer" / "allowed-issuers.yaml"  # what build_demo writes
    issuers.parent.mkdir()
    issuers.write_text("issuers: {}\n", encoding="utf-8")
    monkeypatch.setattr(training.demo, "build_demo", lambda _console: config)
    monkeypatch.setattr(training.demo, "DEMO_ISSUERS_FILE", issuers)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    (env,) = started
    assert "TONLE_LINK_SECRET" not in env
    assert env["TONLE_DEMO_ISSUER_DIR"]  # the demo: its generated key stays in the database


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "does not exist"),
        ("models: [cvd-risk\n", "is not valid YAML"),
        ("models: {cvd-risk: 1.0.0}\nmodles: {}\n", "modles"),
    ],
)
def test_a_bad_serving_config_is_refused_before_bentoml_starts(
    started: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    text: str | None,
    said: str,
) -> None:
    """BentoML would restart its worker on it in a loop, logging tracebacks."""
    monkeypatch.setenv("TONLE_LINK_SECRET", _KEY)
    config = tmp_path / "serving.yaml"
    if text is not None:
        config.write_text(text, encoding="utf-8")
    for args in (["serve", "--config", str(config)], ["serve", "--dev", "--config", str(config)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 4, result.output
        assert said in result.output
        assert "Traceback" not in result.output
    monkeypatch.setenv("TONLE_SERVING_CONFIG", str(config))
    assert CliRunner().invoke(app, ["serve"]).exit_code == 4
    assert started == []


def test_an_unknown_log_level_is_refused_before_bentoml_starts(
    started: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker would fail configuring logging with it, and be restarted, in a loop."""
    monkeypatch.setenv("TONLE_LINK_SECRET", _KEY)
    monkeypatch.setenv("TONLE_LOG_LEVEL", "verbose")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert "TONLE_LOG_LEVEL must be one of DEBUG, INFO" in result.output
    monkeypatch.setenv("TONLE_LOG_LEVEL", "warning")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert started[-1]["TONLE_LOG_LEVEL"] == "warning"


def test_a_missing_issuers_file_is_refused_before_bentoml_starts(
    started: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TONLE_LINK_SECRET", _KEY)
    monkeypatch.setenv("TONLE_ALLOWED_ISSUERS", str(tmp_path / "issuers.yaml"))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 4, result.output
    assert "issuers.yaml does not exist" in result.output
    (tmp_path / "issuers.yaml").write_text("issuers: {}\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert len(started) == 1
