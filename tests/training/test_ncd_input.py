"""One NCD input path: encodings, delimiters, the problem report, and one rule everywhere."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from training.csv_adapter import CsvInputError, sniff
from training.ncd_input import NcdInputError, read_input

HEADER = "patient_id,sex,age,smoking,sbp,total_chol,diabetes,bmi,cvd_event,cvd_time"
ROWS = [f"p{i},{'male' if i % 2 else 'female'},{45 + i % 25},{i % 3 == 0:d},{120 + i % 40},"
        f"{4 + (i % 30) / 10:.1f},{i % 7 == 0:d},{22 + i % 8},{i % 9 == 0:d},{5 + i % 5}"
        for i in range(40)]  # fmt: skip
ACCENTED = [r.replace("p1,", "Sokhà,", 1) if r.startswith("p1,") else r for r in ROWS]


def _csv(path: Path, rows: list[str], sep: str = ",", encoding: str = "utf-8") -> Path:
    text = "\n".join([HEADER, *rows]) + "\n"
    path.write_bytes(text.replace(",", sep).encode(encoding))
    return path


def test_encodings_and_delimiters_are_detected(tmp_path: Path) -> None:
    rows = ACCENTED
    for name, sep, encoding, want in [
        ("utf8.csv", ",", "utf-8", ("utf-8", ",")),
        ("bom.csv", ",", "utf-8-sig", ("utf-8-sig", ",")),
        ("excel.csv", ";", "cp1252", ("cp1252", ";")),
        ("tab.tsv", "\t", "utf-16", ("utf-16", "\t")),
    ]:
        path = _csv(tmp_path / name, rows, sep, encoding)
        fmt = sniff(path)
        assert (fmt.encoding, fmt.delimiter) == want, name
        table, report = read_input(path)
        assert len(table) == 40, name
        assert not report.problems, name
        assert "Sokhà" in set(table["patient_id"]), name  # the accent survives every encoding
        assert table["sbp"].notna().all()


def test_semicolon_files_read_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text("patient_id;sex;age;sbp;total_chol\np1;F;52;131,5;5,2\n", encoding="cp1252")
    table, _ = read_input(path)
    assert table.loc[0, "sbp"] == pytest.approx(131.5)
    assert table.loc[0, "total_chol"] == pytest.approx(5.2)


def test_unreadable_files_get_a_plain_hint(tmp_path: Path) -> None:
    binary = tmp_path / "sheet.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(CsvInputError, match=r"NUL bytes.*CSV UTF-8"):
        read_input(binary)
    one_column = tmp_path / "pipes.csv"
    one_column.write_text("patient_id|sex|age\np1|F|50\n", encoding="utf-8")
    with pytest.raises(CsvInputError, match="cannot find the column separator"):
        read_input(one_column)


def test_duplicates_and_bad_values_are_reported_with_row_and_count(tmp_path: Path) -> None:
    rows = [*ROWS, ROWS[3], ROWS[4].replace(",124,", ",295,").replace("p4,", "p40,")]
    path = _csv(tmp_path / "x.csv", rows)
    with pytest.raises(NcdInputError) as err:
        read_input(path)
    report = err.value.report
    assert report.problems.counts["patient_id", "duplicate patient_id and index_date"] == 1
    dup = next(i for i in report.problems.examples if i.field == "patient_id")
    assert (dup.row, dup.patient_id, dup.value) == (42, "p3", "first at row 5")
    sbp = next(i for i in report.problems.examples if i.field == "sbp")
    assert (sbp.row, sbp.patient_id, sbp.value) == (43, "p40", "295")
    text = "\n".join(report.lines())
    assert "sbp: impossible value: must be 60-280 mm[Hg]: 1 (row 43, patient p40 value '295')" in (
        text
    )


def test_one_sbp_of_295_is_refused_the_same_way_everywhere(tmp_path: Path) -> None:
    """score, train and data check: exit 4, row and field named, nothing written."""
    rows = [r.replace(",124,", ",295,") for r in ROWS]
    path = _csv(tmp_path / "cohort.csv", rows)
    runner = CliRunner()
    out = tmp_path / "risk.csv"
    cards = tmp_path / "cards"
    calls = {
        "score": ["score", "who-cvd-lab", str(path), "-o", str(out), "--country", "KHM"],
        "train": ["train", "cvd-risk", "--data", str(path), "--cards", str(cards)],
        "check": ["data", "check", str(path)],
    }
    for name, args in calls.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 4, (name, result.output)
        assert "row 6, patient p4 value '295'" in result.output, name
        assert "sbp: impossible value" in result.output, name
    assert not out.exists()
    assert not list(tmp_path.glob("*.part"))
    assert not cards.exists()
    # --skip-invalid: the value is read as not recorded, and the row says why.
    result = runner.invoke(app, [*calls["score"], "--skip-invalid"])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out, dtype={"reason": str}).set_index("patient_id")
    assert scored.loc["p4", "reason"] == "sbp:rejected"
    assert scored["risk"].notna().sum() == 39


def test_data_check_prints_the_report_and_writes_nothing(tmp_path: Path) -> None:
    path = _csv(tmp_path / "ok.csv", ACCENTED, ";", "cp1252")
    before = set(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["data", "check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == 40
    assert report["problem_count"] == 0
    assert report["layout"] == "CSV, encoding cp1252, delimiter semicolon"
    assert set(tmp_path.iterdir()) == before


def test_score_refuses_duplicates_and_fails_when_nothing_is_scored(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "risk.csv"
    dup = _csv(tmp_path / "dup.csv", [*ROWS, ROWS[0]])
    result = runner.invoke(app, ["score", "who-cvd-lab", str(dup), "-o", str(out), "--country",
                                 "KHM"])  # fmt: skip
    assert result.exit_code == 4
    assert "duplicate patient_id" in result.output
    assert "row 42, patient p0" in result.output
    assert not out.exists()
    young = _csv(tmp_path / "young.csv", [r.replace(",45,", ",30,") for r in ROWS[:1]])
    result = runner.invoke(app, ["score", "who-cvd-lab", str(young), "-o", str(out),
                                 "--country", "KHM"])  # fmt: skip
    assert result.exit_code == 4
    assert "no row" in result.output
    assert "age:out-of-range: 1 rows" in result.output


def test_fhir_problems_are_reported_like_csv_ones_and_only_where_they_count(
    tmp_path: Path,
) -> None:
    """An impossible SBP inside the look-back refuses the export, naming patient and
    day; one measured years later (never read for this index date) is only counted."""
    from tests.training.test_fhir_bulk import _obs, _patient, _write

    folder = _write(tmp_path / "fhir", [
        _patient("a"), _patient("b"),
        _obs("a", "2015-10-01", "8480-6", 295, "mm[Hg]"),
        _obs("b", "2015-10-01", "8480-6", 140, "mm[Hg]"),
        _obs("b", "2019-03-01", "8480-6", 12, "mm[Hg]"),
    ])  # fmt: skip
    with pytest.raises(NcdInputError) as err:
        read_input(folder, index_date=date(2016, 1, 1))
    report = err.value.report
    assert len(report.problems) == 1
    assert "patient a on 2015-10-01: sbp: impossible value" in str(err.value)
    assert report.excluded == {
        "sbp: impossible value: must be 60-280 mm[Hg], outside the look-back (not used)": 1
    }
    result = CliRunner().invoke(app, ["data", "check", str(folder), "--index-date", "2016-01-01"])
    assert result.exit_code == 4
    assert "patient a on 2015-10-01 value '295 mm[Hg]'" in result.output
    table, _ = read_input(folder, index_date=date(2016, 1, 1), skip_invalid=True)
    sbp = table.set_index("patient_id")["sbp"]
    assert sbp["b"] == 140.0
    assert np.isnan(sbp["a"])
