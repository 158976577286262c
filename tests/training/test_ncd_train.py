"""Training pipeline: input checks, splits, export gate, and one end-to-end run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models import registry
from models.config import load_config
from models.details import MissingInput
from models.ncd_lookback import LOOKBACK_DAYS
from models.ncd_predictor import NcdPredictor
from training.ncd_config import NcdTrainConfig
from training.ncd_export import ExportError, save_verified
from training.ncd_table import TrainingDataError, check_table, feature_matrix, patient_split
from training.synthetic_ncd import simulate

CONFIG = Path(__file__).resolve().parents[2] / "configs"


def _table(n: int, seed: int) -> pd.DataFrame:
    """A C2 feature table straight from the simulator (no FHIR round trip)."""
    c = simulate(n, seed)
    index = pd.Timestamp("2016-01-01")
    cvd_event = c.cvd_years <= c.followup_years
    dm_event = c.diabetes_years <= c.followup_years
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "index_date": index,
            "site": c.site,
            "sex": np.where(c.male, "male", "female"),
            "age": c.age,
            "smoking": c.smoking,
            "sbp": c.sbp,
            "dbp": c.dbp,
            "bmi": c.bmi,
            "total_chol": c.total_chol,
            "hdl": c.hdl,
            "hba1c": c.hba1c,
            "fasting_glucose": c.fasting_glucose,
            "diabetes": c.diabetes,
            "bp_treated": c.bp_treated,
            "sbp_date": index - pd.Timedelta(days=30),
            "cvd_event": cvd_event.astype(int),
            "cvd_time": np.minimum(c.cvd_years, c.followup_years),
            "diabetes_event": dm_event.astype(int),
            "diabetes_time": np.minimum(c.diabetes_years, c.followup_years),
        }
    )


@pytest.fixture(scope="module")
def cvd_config() -> NcdTrainConfig:
    return load_config(CONFIG / "cvd-risk.yaml", NcdTrainConfig)


def _check(table: pd.DataFrame, cfg: NcdTrainConfig) -> pd.DataFrame:
    return check_table(table, cfg, lambda _: None)


def test_configs_load() -> None:
    cvd = load_config(CONFIG / "cvd-risk.yaml", NcdTrainConfig)
    dm = load_config(CONFIG / "diabetes-risk.yaml", NcdTrainConfig)
    assert cvd.outcome == "cvd"
    assert dm.exclude_prevalent_diabetes
    for cfg in (cvd, dm):
        assert set(cfg.reference) == set(cfg.features)
        assert set(cfg.required) <= set(cfg.features)
        assert cfg.export.parity_max_rows >= 10_000  # parity on min(this, rows available)
        assert cfg.export.parity_min_rows <= cfg.export.parity_max_rows


def test_leakage_is_refused(cvd_config: NcdTrainConfig) -> None:
    table = _table(200, 1)
    table.loc[17, "cvd_time"] = -0.5
    with pytest.raises(TrainingDataError) as info:
        _check(table, cvd_config)
    assert info.value.field == "cvd_time"
    assert info.value.patient_id == "p17"
    assert "before the index date" in str(info.value)
    table = _table(200, 1)
    table.loc[3, "sbp_date"] = pd.Timestamp("2016-02-01")
    with pytest.raises(TrainingDataError, match="sbp_date") as info:
        _check(table, cvd_config)
    assert info.value.patient_id == "p3"


@pytest.mark.parametrize(
    ("column", "value", "field", "rule"),
    [
        ("total_chol", 190.0, "total_chol", "check the unit"),  # mg/dL given as mmol/L
        ("sex", "M", "sex", "'female' or 'male'"),
        ("sbp", np.nan, "sbp", "required feature is missing"),
        ("cvd_event", 2, "cvd_event", "0 or 1"),
    ],
)
def test_bad_values_name_patient_and_field(
    cvd_config: NcdTrainConfig, column: str, value: object, field: str, rule: str
) -> None:
    table = _table(100, 2)
    table[column] = table[column].astype(object)
    table.loc[5, column] = value
    with pytest.raises(TrainingDataError) as info:
        _check(table, cvd_config)
    assert info.value.field == field
    assert info.value.patient_id == "p5"
    assert rule in str(info.value)


def test_duplicates_and_missing_columns(cvd_config: NcdTrainConfig) -> None:
    table = _table(50, 3)
    with pytest.raises(TrainingDataError, match="duplicate"):
        _check(pd.concat([table, table.iloc[[4]]]), cvd_config)
    with pytest.raises(TrainingDataError, match="column missing") as info:
        _check(table.drop(columns=["hdl"]), cvd_config)
    assert info.value.field == "hdl"


def test_exclusions_are_explicit(cvd_config: NcdTrainConfig) -> None:
    table = _table(300, 4)
    table.loc[:9, "sbp"] = np.nan
    messages: list[str] = []
    cfg = cvd_config.model_copy(update={"drop_incomplete": True})
    out = check_table(table, cfg, messages.append)
    assert len(out) == 290
    assert any("10 rows missing required feature sbp" in m for m in messages)
    dm = load_config(CONFIG / "diabetes-risk.yaml", NcdTrainConfig)
    kept = check_table(_table(300, 4), dm, messages.append)
    assert (kept["diabetes"] == 0).all()


def test_patient_split_is_by_patient_and_seeded(cvd_config: NcdTrainConfig) -> None:
    ids = pd.Series([f"p{i % 500}" for i in range(2000)])  # each patient 4 times
    split = patient_split(ids, 7, cvd_config.split)
    per_patient = pd.Series(split).groupby(ids).nunique()
    assert (per_patient == 1).all()
    assert np.array_equal(split, patient_split(ids, 7, cvd_config.split))
    assert not np.array_equal(split, patient_split(ids, 8, cvd_config.split))
    share = (
        np.bincount(patient_split(pd.Series([f"q{i}" for i in range(20_000)]), 1, cvd_config.split))
        / 20_000
    )
    assert share == pytest.approx([0.7, 0.15, 0.15], abs=0.02)


def test_feature_matrix_encodes_sex() -> None:
    table = _table(10, 5)
    x = feature_matrix(table, ["sex", "age"])
    assert x.dtype == np.float32
    assert np.array_equal(x[:, 0], (table["sex"] == "male").to_numpy(dtype=np.float32))


def test_unfaithful_export_is_not_saved(model_store: Path) -> None:
    """A calibrator around scaler+logistic exports wrongly (docs/performance.md): refused."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.ncd_fixtures import FIXTURE_FEATURES, fixture_rows

    x, y = fixture_rows(2000)
    x = np.nan_to_num(x, nan=5.0)
    bad = CalibratedClassifierCV(
        make_pipeline(StandardScaler(), LogisticRegression()), method="sigmoid", cv=3
    ).fit(x, y)
    from models.details import NcdDetails
    from models.metadata import ModelMetadata

    meta = ModelMetadata(
        name="bad-export",
        version="1.0.0",
        task="ncd-risk",
        features=FIXTURE_FEATURES,
        extra=NcdDetails(outcome="cvd"),
    )
    with pytest.raises(ExportError, match="not faithful"):
        save_verified(bad, x, meta, min_rows=1000)
    with pytest.raises(ExportError, match="at least 10000 rows"):
        save_verified(bad, x, meta)
    assert not (model_store / "models" / "bad-export").exists()


def test_card_states_the_lookback_or_that_it_is_unknown() -> None:
    from training.ncd_card import _lookback_text

    assert "at most 180 days (0.5 years) before it" in _lookback_text(180)
    assert "`max_data_age_days` may be at most 180" in _lookback_text(180)
    assert "look-back not recorded" in _lookback_text(None)


@pytest.mark.slow
def test_train_end_to_end_from_fhir(
    model_store: Path, tmp_path: Path, artifacts_dir: Path, cvd_config: NcdTrainConfig
) -> None:
    """Synthetic FHIR NDJSON -> feature table -> train -> ONNX -> registry -> evaluate."""
    from cli import app

    runner = CliRunner()
    cfg = cvd_config.model_copy(
        update={
            "export": cvd_config.export.model_copy(update={"parity_min_rows": 3000}),
            "evaluation": cvd_config.evaluation.model_copy(update={"bootstrap_reps": 30}),
        }
    )
    cfg_path = tmp_path / "cvd.yaml"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    cards = tmp_path / "cards"
    result = runner.invoke(
        app,
        [
            "train",
            "cvd-risk",
            "--synthetic",
            "4000",
            "--seed",
            "3",
            "--config",
            str(cfg_path),
            "--cards",
            str(cards),
            "--version",
            "0.1.0",
            "--accept-worse-than-who",
            "synthetic test cohort",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[6/6]" in result.output
    stored = registry.verify("cvd-risk", "0.1.0")
    meta = stored.metadata
    assert meta.task == "ncd-risk"
    assert meta.ncd.outcome == "cvd"
    assert meta.ncd.parity is not None
    assert meta.ncd.parity.max_abs_diff <= 1e-5
    assert meta.ncd.parity.band_mismatches == 0
    # The training distribution serving measures drift against: every feature binned.
    assert set(meta.ncd.training_distribution) == {f.name for f in meta.features}
    assert meta.training_manifest_sha256
    assert meta.library_versions["skl2onnx"]
    assert meta.config["seed"] == cfg.seed
    # The WHO comparison serving reads: typed, with the acceptance when it was needed.
    who = meta.ncd.who_comparison
    assert who is not None
    assert who.n > 0
    assert who.at_least_as_good == (who.discrimination_ok and who.calibration_ok)
    assert who.accepted_reason == (None if who.at_least_as_good else "synthetic test cohort")
    assert {"test_auroc", "who_test_auroc", "test_uno_c", "test_calibration_slope"} <= set(
        meta.metrics
    )
    assert meta.metrics["test_auroc"].ci_low is not None
    for name in ("model-card.md", "model-card.json", "calibration.png", "decision_curve.png"):
        assert (stored.card_dir / name).is_file(), name
    card = (stored.card_dir / "model-card.md").read_text()
    assert "TRIPOD+AI" in card
    assert "WHO 2019 chart" in card
    # Read by clinicians: no Python dicts or raw metric names, and intervals that stay
    # readable when a bound is negative ("-0.380-0.255" was ambiguous).
    split = meta.ncd.split_counts
    assert f"{split['train']:,} training, {split['val']:,} validation" in card
    assert not re.search(r"[{\[]'", card)  # no Python dict or list
    assert "{" not in card
    assert "test_auroc" not in card
    assert "fit_seconds" not in card
    assert "IPCW Brier score" in card
    # The look-back the FHIR export was read with (serving's default max age), in words.
    assert meta.lookback_days == LOOKBACK_DAYS == 365
    assert "at most 365 days (1.0 years) before it" in card
    intervals = re.findall(r"\((-?\d+\.\d+)(.{1,4}?)(-?\d+\.\d+)\)", card)
    assert intervals
    assert {sep for _, sep, _ in intervals} == {" to "}, intervals
    # bp_treated is never missing in the synthetic export, so an unknown one is scored
    # as untreated: measured into the metadata, stated on the card.
    assert meta.ncd.missing_inputs["bp_treated"] == MissingInput(
        missing_in_training=0.0, scored_as=0.0
    )
    assert "| 0.0 % | **0 (no)**: unknown is treated as this |" in card
    # The training range of every input, kept for serving (outside it: no model estimate).
    support = meta.ncd.input_support
    assert support is not None
    sbp = support.features["sbp"]
    assert 60 <= sbp.low < sbp.high <= 260
    assert support.features["sex"].low == 0.0
    assert support.features["sex"].high == 1.0
    # ONNX parity also on 500 rows per optional input (5 of them) with that input missing.
    assert "and 2500 with an optional input missing" in " ".join(result.output.split())
    (artifacts_dir / "ncd-model-card-example.md").write_text(card, encoding="utf-8")

    predictor = NcdPredictor(stored)
    risk, contributions = predictor.explain(
        np.array([1, 66, 1, 172, 6.8, 1, 24, 1.0, 0], dtype=np.float32)
    )
    assert 0.05 < risk < 0.9
    assert contributions
    assert contributions[0].delta_risk > 0

    # the WHO chart generated the outcomes: the model should rank about as well
    data = json.loads((stored.card_dir / "evaluation.json").read_text())
    assert data["overall"]["model"]["auroc"]["value"] > 0.6
    assert data["overall"]["who"]["auroc"]["value"] > 0.6

    # tonle evaluate on a fresh cohort, as a CSV feature table
    table = _table(3000, 11)
    csv = tmp_path / "features.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", "cvd-risk:0.1.0", "--data", str(csv), "-o", str(out), "--bootstrap", "20"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["n_rows"] == 3000
    assert report["overall"]["who"] is not None
    assert {g["group"] for g in report["subgroups"]} == {"sex", "age band", "site"}

    # leakage in the input: exit code 4 with the patient and field named
    table.loc[0, "cvd_time"] = -1.0
    table.to_csv(csv, index=False)
    result = runner.invoke(app, ["evaluate", "cvd-risk:0.1.0", "--data", str(csv)])
    assert result.exit_code == 4
    assert "cvd_time" in result.output


def test_evaluate_against_the_non_lab_chart_with_a_stated_assumption() -> None:
    from training.ncd_evaluate import evaluate_table

    table = _table(1500, 6)
    table.loc[: 1500 // 2, "smoking"] = np.nan
    risk = np.full(len(table), 0.05)
    kwargs: dict[str, Any] = {
        "bootstrap_reps": 0,
        "who_model": "nonlab",
        "who_region": None,
        "who_country": "USA",
    }
    strict = evaluate_table(table, risk, "cvd", **kwargs)
    assert strict.n_compared < 800
    assert strict.not_compared["smoking:missing"] == 751
    assumed = evaluate_table(table, risk, "cvd", who_missing_smoking_as_non_smoker=True, **kwargs)
    assert assumed.n_compared == 1500
    assert "751 patients without a smoking record were scored as non-smokers" in str(
        assumed.who_reference
    )
    assert "non-laboratory" in str(assumed.who_reference)
    # a constant risk cannot discriminate: AUROC exactly one half
    assert assumed.overall.model.auroc.value == pytest.approx(0.5)


def test_evaluate_refuses_an_artifact_without_training_config(
    model_store: Path, tmp_path: Path
) -> None:
    from cli import app
    from tests.ncd_fixtures import make_ncd_artifact

    make_ncd_artifact(tmp_path)
    csv = tmp_path / "t.csv"
    _table(50, 1).to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["evaluate", "cvd-risk:1.0.0", "--data", str(csv)])
    assert result.exit_code == 3
    assert "training config" in result.output
