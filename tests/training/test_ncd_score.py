"""CSV adapter, batch scoring (WHO and trained ONNX models) and the NCD data CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from models.who_cvd import WhoCvdInputs, who_cvd_risk
from training.csv_adapter import CsvInputError
from training.ncd_data_cli import register
from training.ncd_input import NcdInputError, read_input
from training.ncd_score import count_rows, open_scorer, score_file

CSV = """patient_id,sex,age,smoking,sbp,total_chol,total_chol_unit,diabetes,bmi,hba1c,hba1c_unit
p1,male,62,1,150,5.5,mmol/L,0,24,6.0,%
p2,F,52,no,130,154.68,mg/dL,yes,31,53,mmol/mol
p3,female,39,0,120,4.0,,0,22,,
p4,male,55,maybe,140,5.0,mmol/L,0,27,,
p5,male,60,0,140,5.0,g/L,0,27,,
p6,male,60,0,,5.0,mmol/L,0,27,,
p7,male,60,0,400,5.0,mmol/L,0,27,,
"""


@pytest.fixture
def patients_csv(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    path.write_text(CSV, encoding="utf-8")
    return path


def test_csv_adapter_converts_units_and_reports_bad_values(patients_csv: Path) -> None:
    table, report = read_input(patients_csv, skip_invalid=True)
    df = table.set_index("patient_id")
    assert df.loc["p2", "sex"] == "female"
    assert df.loc["p2", "total_chol"] == pytest.approx(4.0)
    assert df.loc["p2", "hba1c"] == pytest.approx(53 / 10.929 + 2.15)
    assert df.loc["p2", "smoking"] == 0
    assert df.loc["p2", "diabetes"] == 1
    assert np.isnan(df.loc["p4", "smoking"])
    assert np.isnan(df.loc["p5", "total_chol"])
    assert np.isnan(df.loc["p7", "sbp"])
    found = {(i.row, i.patient_id, i.field) for i in report.problems.examples}
    assert found == {(5, "p4", "smoking"), (6, "p5", "total_chol_unit"), (8, "p7", "sbp")}
    with pytest.raises(NcdInputError) as err:
        read_input(patients_csv)
    assert "row 5, patient p4: smoking" in str(err.value)
    assert len(err.value.report.problems) == 3


def test_csv_without_required_column_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("patient_id,age\np1,50\n", encoding="utf-8")
    with pytest.raises(CsvInputError) as err:
        read_input(path)
    assert err.value.issues[0].field == "sex"
    assert "columns found: patient_id, age" in str(err.value)


def test_who_scoring_matches_scalar_and_gives_reasons(patients_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "risk.csv"
    scorer = open_scorer("who-cvd-lab", country="KHM")
    summary = score_file(scorer, patients_csv, out, chunksize=3, skip_invalid=True)
    res = pd.read_csv(out, dtype={"reason": str}).set_index("patient_id")
    assert list(res.index) == [f"p{i}" for i in range(1, 8)]  # input order, one row each
    assert summary.rows == 7
    assert summary.scored == 2
    counts = summary.report.problems.counts
    assert counts["smoking", "must be 1/0, yes/no or true/false"] == 1
    assert sum(counts.values()) == 3  # p4 smoking, p5 unit, p7 impossible SBP
    want = who_cvd_risk(
        WhoCvdInputs(sex="male", age=62, smoking=True, sbp=150, total_chol=5.5, diabetes=False),
        "lab",
        country="KHM",
    )
    assert res.loc["p1", "risk"] == pytest.approx(want.risk, abs=1e-6)
    assert res.loc["p1", "percent"] == want.percent
    assert res.loc["p1", "band"] == want.band
    assert res.loc["p1", "model"] == "who-cvd-lab"
    assert res.loc["p1", "country_code"] == "KHM"
    assert res.loc["p3", "reason"] == "age:out-of-range"
    # A value that was there but refused is "rejected", not "missing".
    assert res.loc["p4", "reason"] == "smoking:rejected"
    assert res.loc["p5", "reason"] == "total_chol:rejected"
    assert res.loc["p6", "reason"] == "sbp:missing"
    assert res.loc["p7", "reason"] == "sbp:rejected"
    assert res.loc["p1":"p2", "reason"].isna().all()
    assert res.loc["p3":"p7", "risk"].isna().all()
    # Extrapolation scores the 39-year-old and says so.
    score_file(
        open_scorer("who-cvd-lab", country="KHM", allow_extrapolation=True),
        patients_csv,
        out,
        skip_invalid=True,
    )
    res = pd.read_csv(out).set_index("patient_id")
    assert res.loc["p3", "extrapolated"] == 1
    assert res.loc["p3", "risk"] > 0
    assert res.loc["p1", "extrapolated"] == 0


def test_every_row_without_a_risk_says_why(tmp_path: Path) -> None:
    """An extrapolated row the WHO equation saturates on (age 18, SBP 280, cholesterol
    20 mmol/L, smoker with diabetes: plausible values, far outside the charts) gets no
    risk, and its output row must say why (``risk:saturated``), like every refused row."""
    source = tmp_path / "extreme.csv"
    source.write_text(
        "patient_id,sex,age,smoking,sbp,total_chol,diabetes,bmi\n"
        "sat,male,18,1,280,20,1,24\n"
        "ok,male,39,0,120,4.0,0,22\n",
        encoding="utf-8",
    )
    out = tmp_path / "risk.csv"
    scorer = open_scorer("who-cvd-lab", country="KHM", allow_extrapolation=True)
    summary = score_file(scorer, source, out)
    res = pd.read_csv(out, dtype={"reason": str}).set_index("patient_id")
    assert np.isnan(res.loc["sat", "risk"])
    assert res.loc["sat", "reason"] == "risk:saturated"
    assert res.loc["sat", "extrapolated"] == 0  # no risk, so nothing was extrapolated
    assert res.loc["ok", "risk"] > 0
    assert res.loc["ok", "extrapolated"] == 1
    assert pd.isna(res.loc["ok", "reason"])
    assert (summary.scored, summary.refused) == (1, 1)
    assert res.loc[res["risk"].isna(), "reason"].notna().all()


@pytest.mark.slow
def test_trained_model_scoring(patients_csv: Path, tmp_path: Path, model_store: Path) -> None:
    from models.ncd_predictor import NcdPredictor
    from tests.ncd_fixtures import make_ncd_artifact

    stored = make_ncd_artifact(tmp_path)
    out = tmp_path / "risk.csv"
    tag = f"{stored.metadata.name}:{stored.metadata.version}"
    score_file(open_scorer(tag), patients_csv, out, skip_invalid=True)
    res = pd.read_csv(out, dtype={"reason": str}).set_index("patient_id")
    assert res.loc["p1", "model_sha256"] == stored.metadata.sha256
    predictor = NcdPredictor(stored)
    row = np.array(
        [
            [
                float(
                    {
                        "sex": 1,
                        "age": 62,
                        "smoking": 1,
                        "sbp": 150,
                        "total_chol": 5.5,
                        "diabetes": 0,
                        "bmi": 24,
                    }.get(f.name, np.nan)
                )
                for f in predictor.metadata.features
            ]
        ],
        np.float32,
    )
    assert res.loc["p1", "risk"] == pytest.approx(float(predictor.predict_proba(row)[0]), abs=1e-6)
    assert res.loc["p3", "reason"] == "age:out-of-range"  # the fixture model is 40-74
    assert res.loc["p6", "reason"] == "sbp:missing"


def test_count_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n2\n3", encoding="utf-8")
    assert count_rows(path) == 3
    path.write_text("a\n1\n2\n3\n", encoding="utf-8")
    assert count_rows(path) == 3


def _app() -> typer.Typer:
    app, data_app = typer.Typer(), typer.Typer()
    app.add_typer(data_app, name="data")
    register(app, data_app)
    return app


def test_cli_synthetic_then_score_fhir(tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    res = runner.invoke(app, ["data", "synthetic-ncd", str(tmp_path / "syn"), "--n", "300"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "risk.csv"
    res = runner.invoke(
        app,
        [
            "score",
            "who-cvd-lab",
            str(tmp_path / "syn"),
            "-o",
            str(out),
            "--region",
            "A05GBDR_014_SEA",
            "--index-date",
            "2016-01-01",
        ],
    )
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(out)
    assert len(scored) == 300
    assert scored["risk"].notna().all()  # the synthetic cohort is complete and in range


def test_cli_errors_have_exit_codes(patients_csv: Path, tmp_path: Path, model_store: Path) -> None:
    runner = CliRunner()
    app = _app()
    out = str(tmp_path / "o.csv")
    assert runner.invoke(app, ["score", "who-cvd-lab", str(patients_csv), "-o", out]).exit_code == 2
    missing = runner.invoke(
        app, ["score", "who-cvd-lab", "nope.csv", "-o", out, "--country", "KHM"]
    )
    assert missing.exit_code == 4
    unknown = runner.invoke(app, ["score", "no-such-model:1.0.0", str(patients_csv), "-o", out])
    assert unknown.exit_code == 3
