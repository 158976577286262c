"""``tonle calibrate cxr`` end to end: files, exit codes, images, the site threshold record."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from cli.app import app
from models.registry import StoredModel
from models.site_threshold import load_record
from tests.serving.imaging.cxr_fixtures import dicom_bytes, make_cxr_artifact, radiograph
from tests.training.test_calibrate import HEADER, ROWS
from training.calibrate.table import COLUMNS

runner = CliRunner()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "study.csv"
    path.write_text(f"{HEADER}\n{ROWS}", encoding="utf-8")
    return path


@pytest.fixture
def tiny_cxr(model_store: Path, tmp_path: Path) -> StoredModel:
    return make_cxr_artifact(tmp_path)


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_writes_tables_plots_and_report(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["calibrate", "cxr", str(study), "-o", str(out), "--cost-per-test", "20"]
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "thresholds.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [r["threshold"] for r in rows[:3]] == ["0", "0.01", "0.02"]
    assert len(rows) == 101
    half = next(r for r in rows if r["threshold"] == "0.5")
    assert (half["tp"], half["fp"], half["tn"], half["fn"]) == ("3", "1", "5", "1")
    assert half["referred_fraction"] == f"{5 / 12:.6f}"
    assert half["cost_per_case"] == f"{100 / 3.75:.2f}"
    strata = read_csv(out / "thresholds_by_stratum.csv")
    assert {(r["stratum"], r["group"]) for r in strata} >= {("age", ">=55"), ("hiv", "unknown")}
    for name in ("roc.png", "yield_cost.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.html").read_text()
    assert "Biased estimates" in report
    assert "2 of 12 people screened" in report
    assert not (out / "site-threshold.json").exists()


def test_thresholds_option(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["calibrate", "cxr", str(study), "-o", str(out), "--thresholds", "0.5,0.25"]
    )
    assert result.exit_code == 0, result.output
    assert [r["threshold"] for r in read_csv(out / "thresholds.csv")] == ["0.25", "0.5"]
    assert "By subgroup at threshold 0.5<" in (out / "report.html").read_text()
    assert read_csv(out / "thresholds.csv")[0]["cost_per_case"] == ""  # no costs given


@pytest.mark.parametrize(
    "extra",
    [
        ["--thresholds", "0.5,abc"],
        ["--sampling-fraction", "0.2:0.5"],
        ["--min-sensitivity", "0.9"],  # without --site/--by/--model
        ["--min-sensitivity", "0.9", "--budget", "10"],
    ],
)
def test_usage_errors_exit_2(study: Path, tmp_path: Path, extra: list[str]) -> None:
    result = runner.invoke(app, ["calibrate", "cxr", str(study), "-o", str(tmp_path), *extra])
    assert result.exit_code == 2, result.output


def test_invalid_study_exits_4_naming_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n{ROWS}p13,0.5,1,-4,F,1,1\n")
    result = runner.invoke(app, ["calibrate", "cxr", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 4
    assert "row 14, field 'age'" in flat(result.output)
    assert not (tmp_path / "o").exists()


def test_chooses_and_records_a_threshold(
    study: Path, tmp_path: Path, tiny_cxr: StoredModel
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "calibrate", "cxr", str(study), "-o", str(out), "--model", "cxr-triage:0.1.0",
            "--min-sensitivity", "0.3", "--site", "kampong-cham", "--by", "Dr Sok",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record, digest = load_record(out / "site-threshold.json")
    assert digest == hashlib.sha256((out / "site-threshold.json").read_bytes()).hexdigest()
    rows = read_csv(out / "thresholds.csv")
    meets = [r for r in rows if float(r["sensitivity_ci_low"]) >= 0.3]
    assert record.threshold == float(meets[-1]["threshold"])  # the highest that meets it
    assert record.numbers["sensitivity_ci_low"] == pytest.approx(
        float(meets[-1]["sensitivity_ci_low"]), abs=1e-6
    )
    assert record.model.sha256 == tiny_cxr.metadata.sha256
    assert record.model.version == "0.1.0"
    assert record.label == "tb"
    assert record.study.sha256 == hashlib.sha256(study.read_bytes()).hexdigest()
    assert record.study.estimator == "verified-only"
    assert (record.site, record.chosen_by) == ("kampong-cham", "Dr Sok")
    assert "Chosen threshold" in (out / "report.html").read_text()


def test_budget_rule(study: Path, tmp_path: Path, tiny_cxr: StoredModel) -> None:
    out = tmp_path / "out"
    base = ["calibrate", "cxr", str(study), "-o", str(out), "--model", "cxr-triage:0.1.0",
            "--site", "s", "--by", "me", "--cost-per-test", "12"]  # fmt: skip
    result = runner.invoke(app, [*base, "--budget", "3000"])
    assert result.exit_code == 0, result.output
    record, _ = load_record(out / "site-threshold.json")
    rows = read_csv(out / "thresholds.csv")
    within = [r for r in rows if float(r["cost_per_1000"]) <= 3000]
    best = max(float(r["yield_per_1000"]) for r in within)
    assert record.numbers["yield_per_1000"] == pytest.approx(best, abs=1e-3)
    assert record.numbers["cost_per_1000"] is not None
    assert record.numbers["cost_per_1000"] <= 3000
    nothing = runner.invoke(app, [*base, "--budget", "1"])
    assert nothing.exit_code == 1
    assert "finds any case" in flat(nothing.output)
    assert not (out / "site-threshold.json").exists()  # the earlier run's record is gone


def test_model_without_the_label_is_a_usage_error(
    study: Path, tmp_path: Path, tiny_cxr: StoredModel
) -> None:
    result = runner.invoke(
        app,
        ["calibrate", "cxr", str(study), "-o", str(tmp_path), "--model", "cxr-triage:0.1.0",
         "--label", "pneumothorax"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "output 'pneumothorax'" in flat(result.output)


def test_unknown_model_exits_3(study: Path, tmp_path: Path, model_store: Path) -> None:
    result = runner.invoke(
        app, ["calibrate", "cxr", str(study), "-o", str(tmp_path), "--model", "cxr-triage:9.9.9"]
    )
    assert result.exit_code == 3


def test_scores_an_image_column(tmp_path: Path, tiny_cxr: StoredModel) -> None:
    for name, box in (("a.dcm", True), ("b.dcm", False)):
        (tmp_path / name).write_bytes(dicom_bytes(radiograph(bright_box=box)))
    study = tmp_path / "images.csv"
    study.write_text("person_id,image,reference,age,sex\na,a.dcm,1,40,F\nb,b.dcm,0,30,M\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["calibrate", "cxr", str(study), "-o", str(out), "--model", "cxr-triage:0.1.0",
         "--thresholds", "0,1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "thresholds.csv")
    assert (rows[0]["tp"], rows[0]["fp"]) == ("1", "1")  # everyone positive at 0


def test_image_refused_by_the_quality_gate_names_its_line(
    tmp_path: Path, tiny_cxr: StoredModel
) -> None:
    ct = Path(str(get_testdata_file("CT_small.dcm")))  # pydicom's real CT slice
    study = tmp_path / "images.csv"
    study.write_text(f"person_id,image,reference,age,sex\na,{ct},1,40,F\n")
    result = runner.invoke(
        app, ["calibrate", "cxr", str(study), "-o", str(tmp_path / "o"),
              "--model", "cxr-triage:0.1.0"],
    )  # fmt: skip
    assert result.exit_code == 4
    assert "row 2, field 'image'" in flat(result.output)
    no_model = runner.invoke(app, ["calibrate", "cxr", str(study), "-o", str(tmp_path / "o")])
    assert no_model.exit_code == 2


def test_record_file_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"kind": "tonle.site-threshold", "kind": "x"}')
    with pytest.raises(ValueError, match="duplicate"):
        load_record(path)
    path.write_text(json.dumps({"kind": "tonle.site-threshold", "threshold": 0.5}))
    with pytest.raises(ValueError, match="invalid"):
        load_record(path)
