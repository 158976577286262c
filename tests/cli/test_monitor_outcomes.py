"""``tonle monitor outcomes``: later bacteriology joined to stored reads, per tenant."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from serving.audit import AuditRecord, AuditStore
from serving.imaging.results import Analysed, ResultStore
from serving.monitor.outcomes import OutcomeError, read_outcomes
from tests.serving.imaging.results_fixtures import heatmap_source, make_result

runner = CliRunner()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


READS = [  # patient, tb probability (threshold 0.5), read time, tenant
    ("P1", 0.81, "2026-11-01", "site-a"),
    ("P2", 0.20, "2026-11-02", "site-a"),
    ("P3", 0.70, "2026-11-03", "site-a"),
    ("P4", 0.10, "2026-11-03", "site-a"),
    ("P5", 0.90, "2026-06-01", "site-a"),  # more than 90 days before the test
    ("P6", 0.90, "2026-11-01", "site-b"),  # another tenant's read
    ("P7", 0.90, "2026-12-01", "site-a"),  # after the test
]
OUTCOMES = [  # patient, test date, result, sex
    ("P1", "2026-11-20", "positive", "male"),
    ("P2", "2026-11-20", "positive", "female"),
    ("P3", "2026-11-20", "negative", "male"),
    ("P4", "2026-11-20", "negative", "female"),
    ("P5", "2026-11-20", "positive", "male"),
    ("P6", "2026-11-20", "positive", "male"),
    ("P7", "2026-11-20", "positive", "male"),
]


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore.open(url)
    for i, (patient, tb, day, tenant) in enumerate(READS):
        result = make_result(patient=patient, probs=(0.9, tb, 0.1, 0.1, 0.1), created=when(day))
        store.record(
            AuditRecord(
                request_id=f"r{i}",
                service_id="imaging-cxr",
                caller_tenant=tenant,
                outcome="advice",
                latency_ms=1.0,
                created=result.created,
                imaging_result=ResultStore.record(Analysed(result, heatmap_source()), tenant),
            )
        )
    store.close()
    return url


def rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as handle:
        return {(r["group"], r["period"]): r for r in csv.DictReader(handle)}


def test_outcomes_join_reads_of_the_tenant_in_the_window(tmp_path: Path, database: str) -> None:
    file = tmp_path / "xpert.csv"
    lines = ["patient_id,date,result,sex"] + [",".join(o) for o in OUTCOMES]
    file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["monitor", "outcomes", str(file), "--tenant", "site-a", "-o", str(out),
            "--database-url", database]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 of 7 outcomes joined" in " ".join(result.output.split())
    table = rows(out / "performance.csv")
    overall = table[("all", "all")]
    assert [overall[k] for k in ("tp", "fp", "tn", "fn")] == ["1", "1", "1", "1"]
    assert float(overall["sensitivity"]) == 0.5
    assert float(overall["specificity"]) == 0.5
    # Wilson 95 % for 1 of 2: 0.0945 to 0.9055.
    assert float(overall["sensitivity_low"]) == pytest.approx(0.0945, abs=1e-4)
    assert float(overall["sensitivity_high"]) == pytest.approx(0.9055, abs=1e-4)
    male = table[("sex=male", "2026-11")]
    assert [male[k] for k in ("tp", "fp", "tn", "fn")] == ["1", "1", "0", "0"]
    assert ("model=1.0.0", "all") in table
    with (out / "calibration.csv").open() as handle:
        calib = {r["bin_low"]: r for r in csv.DictReader(handle)}
    assert calib["0.8"]["n"] == "1"
    assert float(calib["0.8"]["observed"]) == 1.0
    assert float(calib["0.7"]["observed"]) == 0.0
    html = (out / "outcomes.html").read_text()
    assert "P1" not in html  # patient ids only join
    assert "P1" not in (out / "performance.csv").read_text()


def test_fhir_bulk_observations_and_conditions(tmp_path: Path, database: str) -> None:
    def observation(patient: str, code: str, status: str = "final") -> dict[str, object]:
        return {"resourceType": "Observation", "status": status,
                "subject": {"reference": f"Patient/{patient}"},
                "effectiveDateTime": "2026-11-20T10:00:00Z",
                "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                                     "code": code}]}}  # fmt: skip

    resources = [
        observation("P1", "10828004"),  # positive
        observation("P3", "260385009"),  # negative
        observation("P4", "10828004", status="preliminary"),  # not final: ignored
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/P2"},
            "onsetDateTime": "2026-11-20",
        },
        {"resourceType": "Patient", "id": "P1"},
    ]
    file = tmp_path / "Observation.ndjson"
    file.write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    found = read_outcomes(file)
    assert [(o.patient, o.positive) for o in found] == [("P1", True), ("P3", False),
                                                        ("P2", True)]  # fmt: skip
    out = tmp_path / "fhir"
    result = runner.invoke(app, ["monitor", "outcomes", str(file), "--tenant", "site-a",
                                 "-o", str(out), "--database-url", database])  # fmt: skip
    assert result.exit_code == 0, result.output
    overall = rows(out / "performance.csv")[("all", "all")]
    assert [overall[k] for k in ("tp", "fp", "tn", "fn")] == ["1", "1", "0", "1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient_id,date\nP1,2026-11-20\n", "missing column"),
        ("patient_id,date,result\nP1,20/11/2026,positive\n", "line 2"),
        ("patient_id,date,result\nP1,2026-11-20,maybe\n", "neither positive"),
        ("patient_id,date,result\n,2026-11-20,positive\n", "no patient_id"),
    ],
)
def test_malformed_outcomes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.csv"
    file.write_text(text)
    with pytest.raises(OutcomeError, match=message):
        read_outcomes(file)
    result = runner.invoke(app, ["monitor", "outcomes", str(file), "--tenant", "a", "-o",
                                 str(tmp_path / "o"), "--database-url", "sqlite://"])  # fmt: skip
    assert result.exit_code == 4


def test_hostile_files_are_refused_not_crashed_on(tmp_path: Path) -> None:
    binary = tmp_path / "nul.csv"
    binary.write_bytes(b"patient_id,date,result\nP1\x00,2026-11-20,positive\n\xff\xfe")
    ndjson = tmp_path / "x.ndjson"
    ndjson.write_text('{"resourceType": "Observation"\n')
    for file in (binary, ndjson, tmp_path / "absent.csv"):
        args = ["monitor", "outcomes", str(file), "--tenant", "a", "-o", str(tmp_path / "o")]
        result = runner.invoke(app, [*args, "--database-url", "sqlite://"])
        assert result.exit_code == 4, (file, result.output)


NCD_CARDS = [  # patient, shown, tenant, risk (cards with a stored explanation)
    ("P1", "2010-01-01", "site-a", 0.1),
    ("P2", "2010-01-01", "site-a", 0.1),
    ("P3", "2010-01-01", "site-a", 0.1),
    ("P4", "2010-01-01", "site-a", 0.1),
    ("P5", "2010-01-01", "site-a", 0.1),
    ("P4", "2010-01-01", "site-b", 0.25),  # another tenant's card: not joined
]


@pytest.fixture
def ncd_database(tmp_path: Path) -> str:
    from datetime import timedelta

    from serving.audit.records import ExplanationRecord

    url = f"sqlite:///{tmp_path / 'ncd.db'}"
    store = AuditStore.open(url)
    expires = datetime.now(UTC) + timedelta(days=30)
    for i, (patient, day, tenant, risk) in enumerate(NCD_CARDS):
        band, index = ("10-<20%", 1) if risk < 0.2 else ("20-<30%", 2)
        content = {"outcome": "cvd", "risk": risk, "band": band, "band_index": index}
        store.record(
            AuditRecord(
                request_id=f"n{i}", service_id="ncd-cvd-risk", card_ids=[f"card-{i}"],
                caller_tenant=tenant, outcome="advice", latency_ms=1.0, created=when(day),
                patient_ref=f"Patient/{patient}", model_version="1.0.0",
                explanation=ExplanationRecord(card_uuid=f"card-{i}", service_id="ncd-cvd-risk",
                                              expires=expires, content=json.dumps(content)),
            )
        )  # fmt: skip
    # A site-a card whose explanation was purged: no stored risk, counted apart.
    store.record(AuditRecord(request_id="gone", service_id="ncd-cvd-risk", card_ids=["old"],
                             caller_tenant="site-a", outcome="advice", latency_ms=1.0,
                             created=when("2010-02-01"), patient_ref="Patient/P9"))  # fmt: skip
    store.close()
    return url


def test_ncd_events_join_the_tenants_cards_per_band(tmp_path: Path, ncd_database: str) -> None:
    file = tmp_path / "events.csv"
    file.write_text(
        "patient_id,date,outcome\nP1,2012-01-01,I21.4\nP2,2013-01-01,censored\n"
        "P3,2015-01-01,stroke\nP5,2022-01-01,I63\nP4,2011-01-01,E11\n"
    )
    out = tmp_path / "ncd"
    args = ["monitor", "outcomes", str(file), "--tenant", "site-a", "--service",
            "ncd-cvd-risk", "--followed-until", "2026-01-01", "-o", str(out),
            "--database-url", ncd_database]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "5 cards with a stored risk (1 more whose explanation was purged" in said
    assert "1 outcome rows with other codes ignored" in said
    with (out / "ncd_calibration.csv").open() as handle:
        table = {(r["group"], r["band"]): r for r in csv.DictReader(handle)}
    assert ("all", "20-<30%") not in table  # site-b's card
    band = table[("all", "10-<20%")]
    # The hand-worked band of tests/serving/test_monitor_ncd_outcomes.py: KM 0.4667.
    assert [band[k] for k in ("patients", "events", "complete", "censored")] == ["5", "2", "2", "1"]
    assert float(band["observed"]) == pytest.approx(1 - 0.8 * 2 / 3)
    assert float(band["o_e"]) == pytest.approx((1 - 0.8 * 2 / 3) / 0.1)
    html = (out / "ncd_outcomes.html").read_text()
    assert "Kaplan-Meier" in html
    assert "P1" not in html
    assert "P1" not in (out / "ncd_calibration.csv").read_text()


def test_ncd_outcomes_need_the_date_the_file_is_complete_to(
    tmp_path: Path, ncd_database: str
) -> None:
    file = tmp_path / "events.csv"
    file.write_text("patient_id,date,outcome\nP1,2012-01-01,I21\n")
    args = ["monitor", "outcomes", str(file), "--tenant", "site-a", "-o", str(tmp_path / "o"),
            "--database-url", ncd_database]  # fmt: skip
    assert runner.invoke(app, [*args, "--service", "ncd-cvd-risk"]).exit_code == 2
    assert runner.invoke(app, [*args, "--followed-until", "2026-01-01"]).exit_code == 2


@pytest.mark.parametrize("service", ["imaging-cxr", "ncd-cvd-riks"])
def test_ncd_outcomes_refuse_a_service_without_ncd_cards(
    tmp_path: Path, ncd_database: str, service: str
) -> None:
    """A chest X-ray service's cards, or a misspelt id, are not reported as purged."""
    store = AuditStore.open(ncd_database)
    result = make_result(patient="P1", created=when("2010-01-01"))
    store.record(AuditRecord(request_id="x1", service_id="imaging-cxr", card_ids=["x-card"],
                             caller_tenant="site-a", outcome="advice", latency_ms=1.0,
                             created=result.created, patient_ref="Patient/P1",
                             imaging_result=ResultStore.record(
                                 Analysed(result, heatmap_source()), "site-a")))  # fmt: skip
    store.close()
    file = tmp_path / "events.csv"
    file.write_text("patient_id,date,outcome\nP1,2012-01-01,I21\n")
    args = ["monitor", "outcomes", str(file), "--tenant", "site-a", "--service", service,
            "--followed-until", "2026-01-01", "-o", str(tmp_path / "o"),
            "--database-url", ncd_database]  # fmt: skip
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"--service '{service}' gave site 'site-a' no NCD cards" in said
    assert "NCD services with cards there: ncd-cvd-risk" in said
    assert "purged" not in said
    assert not (tmp_path / "o").exists()
