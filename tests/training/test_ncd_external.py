"""``tonle evaluate`` as an external-validation tool, and ``tonle who regions``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from models.who_cvd import WhoCvdInputError, list_regions, resolve_recalibration
from tests.training.test_ncd_train import _table
from training.ncd_metrics import km_risk, observed_expected


def test_km_risk_matches_the_exponential_truth() -> None:
    rng = np.random.default_rng(0)
    true = rng.exponential(20.0, 20_000)
    censor = rng.uniform(0, 15, 20_000)
    risk, low, high = km_risk(np.minimum(true, censor), true <= censor, 10.0)
    assert low < 1 - np.exp(-10 / 20) < high
    assert risk == pytest.approx(1 - np.exp(-0.5), abs=0.01)
    # observed/expected uses the same Kaplan-Meier risk, per bootstrap replicate.
    time, event = np.minimum(true, censor), true <= censor
    c = np.ones((len(time), 2))
    c[:, 1] = np.r_[np.zeros(10_000), 2 * np.ones(10_000)]  # a replicate of the second half
    oe = observed_expected(time, event, np.full(len(time), 0.2), 10.0, c)
    assert oe[0] == pytest.approx(risk / 0.2)
    half = km_risk(time[10_000:], event[10_000:], 10.0)[0]
    assert oe[1] == pytest.approx(half / 0.2)


def test_who_regions_lists_codes_and_names_and_errors_point_to_it() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["who", "regions", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(r["region"], r["name"]) for r in json.loads(listed.stdout)] == list_regions()
    countries = runner.invoke(app, ["who", "regions", "--countries", "--json"])
    khm = next(r for r in json.loads(countries.stdout) if r["country"] == "KHM")
    assert khm == {"country": "KHM", "name": "Cambodia", "region": "A05GBDR_014_SEA",
                   "region name": "Southeast Asia"}  # fmt: skip
    with pytest.raises(WhoCvdInputError) as err:
        resolve_recalibration("Atlantis", None)
    assert "list_regions()" not in str(err.value)
    assert "tonle who regions" in str(err.value)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = _table(3000, 21)
    table.loc[:99, "sbp"] = np.nan  # 100 incomplete rows
    path = tmp_path_factory.mktemp("cohort") / "cohort.csv"
    table.to_csv(path, index=False)
    return path


def test_the_who_chart_itself_is_validated_on_a_cohort(cohort: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "eval"
    args = ["evaluate", "who-cvd-lab", "--data", str(cohort), "-o", str(out),
            "--bootstrap", "20"]  # fmt: skip
    refused = runner.invoke(app, [*args, "--country", "KHM"])
    assert refused.exit_code == 4
    assert "--drop-incomplete" in " ".join(refused.output.split())  # what the error says works
    done = runner.invoke(app, [*args, "--country", "KHM", "--drop-incomplete"])
    assert done.exit_code == 0, done.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["model_label"] == "WHO 2019 lab chart"
    assert report["overall"]["who"] is None  # not compared with itself
    ages = pd.read_csv(cohort)[100:]["age"]
    assert report["n_rows"] == int(((ages >= 40) & (ages <= 74.99)).sum())
    deciles = report["calibration_deciles"]["model"]
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert sum(d["n"] for d in deciles) == report["n_rows"]
    assert all(d["ci_low"] <= d["observed"] <= d["ci_high"] for d in deciles if d["events"])
    assert report["overall"]["model"]["observed_expected"]["value"] > 0
    page = (out / "evaluation.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "Calibration by decile: WHO 2019 lab chart" in page
    # The region changes the recalibration, so the risks and the O:E.
    other = tmp_path / "eval-eur"
    runner.invoke(app, [*args[:-4], "-o", str(other), "--bootstrap", "20", "--drop-incomplete",
                        "--region", "Western Europe"])  # fmt: skip
    oe = json.loads((other / "evaluation.json").read_text())["overall"]["model"]
    assert (
        oe["observed_expected"]["value"] != report["overall"]["model"]["observed_expected"]["value"]
    )
    bad = runner.invoke(app, [*args, "--region", "Atlantis"])
    assert bad.exit_code == 2
    assert "tonle who regions" in bad.output
    assert runner.invoke(app, [*args, "--split", "test"]).exit_code == 2


@pytest.mark.slow
def test_a_stored_model_on_its_own_test_split_with_another_comparator(
    cohort: Path, tmp_path: Path, model_store: Path
) -> None:
    from models.config import load_config
    from training.ncd_config import NcdTrainConfig
    from training.ncd_table import patient_split
    from training.ncd_train import train

    cfg = load_config(Path("configs/cvd-risk.yaml"), NcdTrainConfig)
    fast = cfg.evaluation.model_copy(update={"bootstrap_reps": 20})
    cfg = cfg.model_copy(update={"candidates": ["logistic"], "evaluation": fast})
    table = _table(6000, 22)
    train(cfg, table, card_root=tmp_path, progress=lambda _: None,
          accept_worse_than_who="test")  # fmt: skip
    csv = tmp_path / "all.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", f"cvd-risk:{cfg.version}", "--data", str(csv),
                                      "-o", str(out), "--split", "test", "--country", "KHM",
                                      "--bootstrap", "20"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    in_test = int((patient_split(table["patient_id"], cfg.seed, cfg.split) == 2).sum())
    assert report["n_rows"] <= in_test
    assert report["n_rows"] > 0.9 * in_test  # only the age range leaves rows out
    assert "country KHM" in report["who_reference"]
    assert {g["group"] for g in report["subgroups"]} >= {"sex", "age band", "site"}


@pytest.mark.slow
def test_recalibrate_refits_intercept_and_slope_and_keeps_the_parent(
    tmp_path: Path, model_store: Path
) -> None:
    from models import registry
    from models.config import load_config
    from models.details import ParentRef
    from models.ncd_predictor import NcdPredictor
    from training.ncd_config import NcdTrainConfig
    from training.ncd_recalibrate import recalibrated
    from training.ncd_table import feature_matrix
    from training.ncd_train import train

    cfg = load_config(Path("configs/cvd-risk.yaml"), NcdTrainConfig)
    fast = cfg.evaluation.model_copy(update={"bootstrap_reps": 20})
    cfg = cfg.model_copy(update={"candidates": ["logistic"], "evaluation": fast})
    parent = train(cfg, _table(6000, 30), card_root=tmp_path, progress=lambda _: None,
                   accept_worse_than_who="test").stored  # fmt: skip
    local = _table(4000, 31)
    rng = np.random.default_rng(1)
    extra = (local["cvd_event"] == 0) & (rng.random(len(local)) < 0.08)
    local.loc[extra, ["cvd_event", "cvd_time"]] = [1, 4.0]  # twice the local risk
    csv = tmp_path / "local.csv"
    local.to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["recalibrate", f"cvd-risk:{cfg.version}", "--data",
                                      str(csv), "--version", "1.0.1", "--cards",
                                      str(tmp_path / "cards"), "--bootstrap", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    child = registry.verify("cvd-risk", "1.0.1")
    assert registry.verify("cvd-risk", cfg.version).metadata.sha256 == parent.metadata.sha256
    details = child.metadata.ncd
    assert details.parent == ParentRef(tag=parent.metadata.tag, sha256=parent.metadata.sha256)
    assert details.who_comparison is None  # serving shows the chart until re-evaluated
    rec = details.recalibration
    assert rec is not None
    assert (rec.before.observed_expected or 0) > 1.3
    assert abs((rec.after_in_sample.observed_expected or 0) - 1) < 0.1
    x = feature_matrix(local, [f.name for f in child.metadata.features])[:500]
    old = NcdPredictor(parent).predict_proba(x).astype(np.float64)
    new = NcdPredictor(child).predict_proba(x).astype(np.float64)
    np.testing.assert_allclose(new, recalibrated(old, rec.intercept, rec.slope), atol=2e-6)
    again = CliRunner().invoke(app, ["recalibrate", "cvd-risk", "--data", str(csv),
                                     "--version", "1.0.1"])  # fmt: skip
    assert again.exit_code == 2
    assert "already in the model store" in again.output
