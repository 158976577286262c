"""Training commands let idle OpenMP threads sleep unless the user chose a policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from training.openmp import prefer_passive_openmp


def test_passive_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prefer_passive_openmp() is True
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert prefer_passive_openmp() is False
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_train_cxr_sets_it_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {labels_csv: x.csv}\nmodel: {arch: vgg}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "cxr", "--config", str(bad)])
    assert result.exit_code == 4  # it ran before the config was even read
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
