"""Gates for NCD models: pre-flight before fitting, minimum performance, the WHO chart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models import registry
from models.config import load_config
from tests.training.test_ncd_train import _table
from training.ncd_config import NcdTrainConfig
from training.ncd_evaluate import who_risk_for_table
from training.ncd_gates import GateError, compare_with_who
from training.ncd_table import TrainingDataError
from training.ncd_train import train

CONFIG = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def cfg() -> NcdTrainConfig:
    base = load_config(CONFIG / "cvd-risk.yaml", NcdTrainConfig)
    return base.model_copy(
        update={
            "candidates": ["logistic"],
            "evaluation": base.evaluation.model_copy(update={"bootstrap_reps": 40}),
            "export": base.export.model_copy(update={"parity_min_rows": 500}),
        }
    )


def _lines() -> tuple[list[str], object]:
    lines: list[str] = []
    return lines, lines.append


def test_too_few_events_per_input_is_refused_before_fitting(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    lines, log = _lines()
    with pytest.raises(TrainingDataError, match=r"gates\.min_events_per_predictor is 10"):
        train(cfg, _table(600, 1), card_root=tmp_path, progress=log)  # type: ignore[arg-type]
    assert not any("[4/6]" in line for line in lines)  # nothing was fitted
    assert not (tmp_path / cfg.name).exists()


def test_an_input_without_any_value_names_the_feature(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    table = _table(3000, 2)
    table["hdl"] = np.nan
    with pytest.raises(TrainingDataError) as err:
        train(cfg, table, card_root=tmp_path, progress=lambda _: None)
    assert err.value.field == "hdl"
    assert "remove hdl from 'features'" in str(err.value)


def test_parity_floor_and_version_clash_are_checked_before_fitting(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    floor = cfg.model_copy(
        update={"export": cfg.export.model_copy(update={"parity_min_rows": 10_000})}
    )
    with pytest.raises(TrainingDataError, match=r"export.parity_min_rows.*the data has 6000"):
        train(floor, _table(6000, 3), card_root=tmp_path, progress=lambda _: None)
    from tests.ncd_fixtures import make_ncd_artifact

    stored = make_ncd_artifact(tmp_path)
    clash = cfg.model_copy(update={"name": stored.metadata.name})
    lines, log = _lines()
    with pytest.raises(TrainingDataError, match="already in the model store"):
        train(clash, _table(6000, 3), version=stored.metadata.version, card_root=tmp_path,
              progress=log)  # type: ignore[arg-type]  # fmt: skip
    assert not any("[4/6]" in line for line in lines)


def test_who_comparison_rule(cfg: NcdTrainConfig) -> None:
    """The synthetic outcomes come from the WHO SEA lab chart: the chart's own risk is
    at least as good as itself; a constant risk fails discrimination; half the chart's
    risk ranks the same but fails calibration (observed/expected about 2)."""
    table = _table(4000, 4)
    who, _ = who_risk_for_table(table)
    ok = np.isfinite(who)
    table, who = table[ok].reset_index(drop=True), who[ok]
    same = compare_with_who(table, who, cfg)
    assert same is not None
    assert same.at_least_as_good
    assert same.auroc_difference.value == 0.0
    flat = compare_with_who(table, np.full(len(table), 0.1), cfg)
    assert flat is not None
    assert not flat.discrimination_ok
    assert not flat.at_least_as_good
    half = compare_with_who(table, who / 2, cfg)
    assert half is not None
    assert half.discrimination_ok
    assert not half.calibration_ok
    assert half.observed_expected_model.value == pytest.approx(
        2 * same.observed_expected_model.value, rel=0.05
    )


@pytest.mark.slow
def test_a_model_worse_than_the_chart_is_saved_only_with_a_reason(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    from cli import app

    weak = cfg.model_copy(
        update={
            "features": ["sex", "age"],
            "required": ["sex", "age"],
            "gates": cfg.gates.model_copy(update={"min_test_auroc": 0.5}),
        }
    )
    path = tmp_path / "weak.yaml"
    path.write_text(json.dumps(weak.model_dump(mode="json")), encoding="utf-8")
    csv = tmp_path / "cohort.csv"
    _table(5000, 5).to_csv(csv, index=False)
    args = ["train", "cvd-risk", "--data", str(csv), "--config", str(path),
            "--cards", str(tmp_path / "cards")]  # fmt: skip
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1, refused.output
    assert "not at least as good as the WHO 2019 lab chart" in " ".join(refused.output.split())
    assert registry.list_models("cvd-risk") == []
    assert not (tmp_path / "cards").exists()
    reason = "local audit: compare for one quarter"
    saved = runner.invoke(app, [*args, "--accept-worse-than-who", reason])
    assert saved.exit_code == 0, saved.output
    meta = registry.verify("cvd-risk", cfg.version).metadata
    who = meta.ncd.who_comparison
    assert who is not None
    assert who.at_least_as_good is False
    assert who.accepted_reason == reason
    assert who.auroc_model.value is not None
    assert who.auroc_who.value is not None
    assert who.auroc_model.value < who.auroc_who.value
    assert who.auroc_difference.ci_low is not None
    assert who.auroc_difference.ci_low < -cfg.gates.auroc_margin
    card = (registry.verify("cvd-risk", cfg.version).card_dir / "model-card.md").read_text()
    assert "At least as good as the chart: **NO**" in card
    assert reason in card
    assert str(registry.store_home()) in card


@pytest.mark.slow
def test_minimum_test_auroc_refuses_without_override(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    strict = cfg.model_copy(update={"gates": cfg.gates.model_copy(update={"min_test_auroc": 0.95})})
    with pytest.raises(GateError, match=r"below gates.min_test_auroc 0.95"):
        train(strict, _table(6000, 6), card_root=tmp_path, progress=lambda _: None,
              accept_worse_than_who="anything")  # fmt: skip
    assert registry.list_models(cfg.name) == []


@pytest.mark.slow
def test_gradient_boosting_risk_never_falls_with_age_sbp_cholesterol_smoking_diabetes(
    cfg: NcdTrainConfig, model_store: Path, tmp_path: Path
) -> None:
    """The shipped config constrains the clinically known directions, and the exported
    model keeps them: raising one of these inputs never lowers the risk."""
    from models.ncd_predictor import NcdPredictor

    rising = ("age", "sbp", "total_chol", "smoking", "diabetes")
    assert all(cfg.hgb.monotonic[name] == 1 for name in rising)
    hgb = cfg.model_copy(
        update={
            "candidates": ["hgb"],
            "hgb": cfg.hgb.model_copy(update={"max_iter": 60}),
            "gates": cfg.gates.model_copy(update={"min_test_auroc": 0.5}),
        }
    )
    result = train(hgb, _table(6000, 7), card_root=tmp_path, progress=lambda _: None,
                   accept_worse_than_who="monotonicity test")  # fmt: skip
    assert result.chosen == "hgb"
    predictor = NcdPredictor(result.stored)
    names = [f.name for f in result.stored.metadata.features]
    rng = np.random.default_rng(0)
    base = np.column_stack([
        rng.integers(0, 2, 200), rng.uniform(40, 74, 200), rng.integers(0, 2, 200),
        rng.uniform(100, 180, 200), rng.uniform(3, 8, 200), rng.integers(0, 2, 200),
        rng.uniform(18, 35, 200), rng.uniform(0.8, 2, 200), rng.integers(0, 2, 200),
    ]).astype(np.float32)  # fmt: skip
    assert names == list(cfg.features)
    grids = {
        "age": np.linspace(40, 74, 12),
        "sbp": np.linspace(90, 200, 12),
        "total_chol": np.linspace(3, 9, 12),
        "smoking": [0, 1],
        "diabetes": [0, 1],
    }
    for name, grid in grids.items():
        j = names.index(name)
        risks = []
        for value in grid:
            x = base.copy()
            x[:, j] = value
            risks.append(predictor.predict_proba(x))
        steps = np.diff(np.stack(risks), axis=0)
        assert steps.min() >= -1e-6, name  # float32 rounding only
        if name in ("age", "sbp"):
            assert steps.sum() > 0, name  # strong inputs do matter (the test can fail)


def test_code_version_outside_a_git_checkout_names_the_installed_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    from importlib.metadata import version

    from training import ncd_train

    assert len(ncd_train.code_version()) == 40  # this checkout's commit, whatever the cwd
    monkeypatch.chdir(tmp_path)
    assert len(ncd_train.code_version()) == 40

    def no_git(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 128, "", "fatal: not a git repository")

    monkeypatch.setattr(ncd_train.subprocess, "run", no_git)
    assert ncd_train.code_version() == f"tonle {version('tonle')} (installed package)"
