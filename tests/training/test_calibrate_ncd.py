"""``tonle calibrate ncd``: calibration by decile and O/E against independent computations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from training.calibrate.ncd import DECILE_COLUMNS, calibrate_ncd

runner = CliRunner()


def test_deciles_without_censoring_are_plain_shares() -> None:
    # 200 patients, complete 10-year follow-up: the observed risk of a decile is simply
    # its share of events, the expected its mean predicted risk.
    rng = np.random.default_rng(4)
    risk = rng.uniform(0.01, 0.5, 200)
    event = rng.uniform(size=200) < risk * 1.5  # the model under-predicts by half
    time = np.where(event, rng.uniform(0.5, 9.5, 200), 12.0)
    result = calibrate_ncd(time, event, risk, bootstrap_reps=0)
    order = np.argsort(risk)
    for d, row in enumerate(result.deciles):
        members = order[d * 20 : (d + 1) * 20]
        assert row["n"] == 20
        assert row["observed"] == pytest.approx(event[members].mean())
        assert row["expected"] == pytest.approx(risk[members].mean())
        assert row["o_e"] == pytest.approx(event[members].mean() / risk[members].mean())
    assert result.overall["o_e"] == pytest.approx(event.mean() / risk.mean())
    assert result.overall["o_e"] > 1.2


def _km_risk(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """1 - Kaplan-Meier survival at ``horizon``, by a loop over event times."""
    survival = 1.0
    for t in sorted(set(time[event & (time <= horizon)])):
        at_risk = (time >= t).sum()
        deaths = (event & (time == t)).sum()
        survival *= 1 - deaths / at_risk
    return 1 - survival


def test_censored_observed_risk_is_the_kaplan_meier_risk() -> None:
    rng = np.random.default_rng(7)
    n = 500
    risk = rng.uniform(0.02, 0.4, n)
    event_time = rng.exponential(10 / np.maximum(risk * 3, 1e-3))
    censor = rng.uniform(3, 20, n)  # light censoring
    time = np.minimum(event_time, censor)
    event = event_time <= censor
    result = calibrate_ncd(time, event, risk, bootstrap_reps=50)
    assert result.overall["observed"] == pytest.approx(_km_risk(time, event, 10.0), rel=1e-9)
    assert result.overall["o_e_ci_low"] < result.overall["o_e"] < result.overall["o_e_ci_high"]


def test_too_few_patients_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 10"):
        calibrate_ncd(np.ones(5), np.zeros(5, bool), np.full(5, 0.1))


def test_model_without_training_config_exits_3(model_store: Path, tmp_path: Path) -> None:
    from tests.ncd_fixtures import make_ncd_artifact

    stored = make_ncd_artifact(tmp_path)
    data = tmp_path / "cohort.csv"
    data.write_text("patient_id\n")
    result = runner.invoke(
        app, ["calibrate", "ncd", stored.metadata.tag, str(data), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 3, result.output
    assert "training config" in result.output


@pytest.mark.slow
def test_calibrate_ncd_end_to_end(model_store: Path, tmp_path: Path) -> None:
    from models.config import load_config
    from tests.training.test_ncd_train import CONFIG, _table
    from training.ncd_config import NcdTrainConfig

    cfg = load_config(CONFIG / "cvd-risk.yaml", NcdTrainConfig)
    cfg = cfg.model_copy(
        update={
            "export": cfg.export.model_copy(update={"parity_min_rows": 3000}),
            "evaluation": cfg.evaluation.model_copy(update={"bootstrap_reps": 10}),
            # A small synthetic cohort: the model only has to exist, not to be good.
            "gates": cfg.gates.model_copy(
                update={
                    "min_events_per_predictor": 0,
                    "min_test_auroc": 0,
                    "auroc_margin": 0.5,
                    "slope_limits": (0, 100),
                    "oe_limits": (0, 100),
                }
            ),
        }
    )
    cfg_path = tmp_path / "cvd.yaml"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    trained = runner.invoke(
        app,
        ["train", "cvd-risk", "--synthetic", "4000", "--config", str(cfg_path),
         "--cards", str(tmp_path / "cards"), "--version", "0.1.0"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    cohort = tmp_path / "cohort.csv"
    _table(3000, seed=11).to_csv(cohort, index=False)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["calibrate", "ncd", "cvd-risk:0.1.0", str(cohort), "-o", str(out),
              "--bootstrap", "50", "--save-recalibrated", "0.1.1",
              "--cards", str(tmp_path / "cards")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "O/E" in result.output
    with (out / "calibration_deciles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(DECILE_COLUMNS)
    assert len(rows) == 10
    assert sum(int(r["n"]) for r in rows) > 2000
    assert (out / "calibration.png").is_file()
    assert "Observed/expected" in (out / "report.html").read_text()
    # The recalibrated version (tonle recalibrate's refit) is calibrated in sample.
    from models import registry

    parent = registry.verify("cvd-risk", "0.1.1").metadata.ncd.parent
    assert parent is not None
    assert parent.tag == "cvd-risk:0.1.0"
    with (out / "recalibrated" / "calibration_deciles.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 10
    assert "saved cvd-risk:0.1.1" in result.output
