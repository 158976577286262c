"""Observed against expected risk of NCD cards: follow-up, censoring and Kaplan-Meier
per risk band, checked against tables worked out by hand (numbers in the comments)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from serving.monitor.ncd_outcomes import (
    DEFAULT_CODES,
    CardShown,
    Record,
    band_calibration,
    follow,
    km_risk,
    matches,
    read_records,
)
from serving.monitor.outcomes import OutcomeError

UNTIL = date(2026, 1, 1)
BANDS = {0.05: ("<10%", 0), 0.1: ("10-<20%", 1), 0.25: ("20-<30%", 2)}


def card(patient: str, shown: str, risk: float, model: str = "1.0.0") -> CardShown:
    band, index = BANDS[risk]
    when = datetime.fromisoformat(shown).replace(tzinfo=UTC)
    return CardShown(patient, when, risk, band, index, model, "live")


CARDS = [
    # Band 10-<20 % (risk 0.1): event ~2 y, censored 3 y, event ~5 y, two followed 10 y.
    card("P1", "2010-01-01", 0.1),
    card("P2", "2010-01-01", 0.1),
    card("P3", "2010-01-01", 0.1),
    card("P4", "2010-01-01", 0.1),
    card("P5", "2010-01-01", 0.1),
    # Band 20-<30 % (risk 0.25): shown 5.6 years before the file ends: never evaluable.
    card("P6", "2020-06-01", 0.25),
    card("P7", "2020-06-01", 0.25),
    # Band <10 % (risk 0.05): P8 had the event already; three followed 10 years.
    card("P8", "2011-03-01", 0.05),
    card("P8", "2012-03-01", 0.05),  # a later card of P8: not counted again
    card("P9", "2011-03-01", 0.05),
    card("P10", "2011-03-01", 0.05),
    card("P11", "2011-03-01", 0.05),
]
RECORDS = [
    Record("P1", date(2012, 1, 1), "I21.4"),  # MI after 730 days
    Record("P2", date(2013, 1, 1), "censored"),  # moved away after 3 years
    Record("P3", date(2015, 1, 1), "stroke"),  # after 1826 days
    Record("P5", date(2022, 1, 1), "I63"),  # 12 years on: outside the horizon
    Record("P7", date(2021, 1, 1), "E11"),  # diabetes: not a CVD event, ignored
    Record("P8", date(2011, 3, 1), "I21"),  # on the day of the card: prior
]


def table() -> dict[tuple[str, str], dict[str, object]]:
    followed, counts = follow(CARDS, RECORDS, codes=DEFAULT_CODES["cvd"], followed_until=UNTIL)
    assert counts == {"repeat": 1, "other_codes": 1}
    return {(str(r["group"]), str(r["band"])): r for r in band_calibration(followed)}


def test_codes_match_exactly_or_by_prefix() -> None:
    cvd = DEFAULT_CODES["cvd"]
    assert matches("I21.4", cvd)
    assert matches("i63", cvd)
    assert matches("MI", cvd)
    assert not matches("I2", cvd)
    assert not matches("migraine", cvd)
    assert not matches("E11", cvd)
    assert matches("E11.9", DEFAULT_CODES["diabetes"])


def test_each_status_is_worked_out_from_follow_up() -> None:
    followed, _ = follow(CARDS, RECORDS, codes=DEFAULT_CODES["cvd"], followed_until=UNTIL)
    status = {f.card.patient: f.status for f in followed}
    assert status == {
        "P1": "event", "P2": "censored", "P3": "event", "P4": "complete",
        "P5": "complete", "P6": "censored", "P7": "censored", "P8": "prior",
        "P9": "complete", "P10": "complete", "P11": "complete",
    }  # fmt: skip
    years = {f.card.patient: f.years for f in followed}
    assert years["P1"] == pytest.approx(730 / 365.25)
    assert years["P2"] == pytest.approx(1096 / 365.25)
    assert years["P6"] == pytest.approx(2040 / 365.25)  # 2020-06-01 to 2026-01-01
    assert years["P4"] == 10.0


def test_a_band_with_censoring_gets_the_kaplan_meier_risk() -> None:
    row = table()[("all", "10-<20%")]
    # At 2 y: 5 at risk, 1 event -> S 0.8. P2 leaves at 3 y. At 5 y: 3 at risk, 1 event
    # -> S = 0.8 * 2/3 = 0.5333; risk 0.4667 (events/people would say 0.4: P2 counted
    # as a negative; leaving P2 out would say 0.5).
    assert row["patients"] == 5
    assert (row["events"], row["complete"], row["censored"], row["prior"]) == (2, 2, 1, 0)
    assert row["observed"] == pytest.approx(1 - 0.8 * 2 / 3)
    assert row["observed"] == pytest.approx(0.466667, abs=1e-6)
    # Greenwood variance 1/(5*4) + 1/(3*2) = 0.21667 on the log(-log) scale, by hand:
    assert row["observed_low"] == pytest.approx(0.13693, abs=1e-4)
    assert row["observed_high"] == pytest.approx(0.93167, abs=1e-4)
    assert row["mean_predicted"] == pytest.approx(0.1)
    assert row["expected_events"] == pytest.approx(0.5)
    assert row["o_e"] == pytest.approx(4.66667, abs=1e-4)


def test_a_band_nobody_was_followed_long_enough_is_not_evaluable() -> None:
    row = table()[("all", "20-<30%")]
    assert (row["patients"], row["events"], row["censored"]) == (2, 0, 2)
    assert row["observed"] is None  # unknown, not 0 %
    assert row["o_e"] is None
    assert row["mean_predicted"] == pytest.approx(0.25)


def test_prior_events_are_excluded_and_no_events_is_zero() -> None:
    row = table()[("all", "<10%")]
    assert (row["patients"], row["prior"], row["complete"]) == (3, 1, 3)
    assert row["observed"] == 0.0
    assert row["observed_low"] is None  # no interval around a curve that never drops
    assert row["o_e"] == 0.0


def test_calibration_in_the_large_over_all_bands() -> None:
    rows = table()
    row = rows[("all", "all")]
    # 10 people. At 2 y: 10 at risk, 1 event -> 0.9. P2 leaves at 3 y. At 5 y: P3, P6,
    # P7 and five followed 10 y at risk (8), 1 event -> 0.9 * 7/8 = 0.7875: risk 0.2125.
    # Mean predicted (5 x 0.1 + 2 x 0.25 + 3 x 0.05) / 10 = 0.115; O/E 1.8478.
    assert (row["patients"], row["events"], row["censored"], row["prior"]) == (10, 2, 3, 1)
    assert row["observed"] == pytest.approx(0.2125)
    assert row["mean_predicted"] == pytest.approx(0.115)
    assert row["expected_events"] == pytest.approx(1.15)
    assert row["o_e"] == pytest.approx(0.2125 / 0.115)
    assert rows[("model=1.0.0", "all")]["patients"] == 10
    assert rows[("mode=live", "10-<20%")]["observed"] == pytest.approx(0.466667, abs=1e-6)


def test_the_file_end_censors_people_seen_late() -> None:
    # The same P1-P5 with the file ending in 2014: P4 and P5 are censored at 4 years,
    # P3's 2015 event is after the end (not seen), so nobody reached 10 years.
    followed, _ = follow(CARDS[:5], RECORDS, codes=DEFAULT_CODES["cvd"],
                         followed_until=date(2014, 1, 1))  # fmt: skip
    assert [f.status for f in followed] == ["event", "censored", "censored", "censored",
                                            "censored"]  # fmt: skip
    (row, _all) = [r for r in band_calibration(followed) if r["group"] == "all"]
    assert row["observed"] is None


def test_a_shorter_horizon_scales_the_expected_risk() -> None:
    followed, _ = follow(CARDS[:1], RECORDS, codes=DEFAULT_CODES["cvd"], followed_until=UNTIL,
                         horizon_years=1.0)  # fmt: skip
    # 10-year risk 0.1 as a 1-year risk under a constant hazard: 1 - 0.9 ** 0.1.
    assert followed[0].expected == pytest.approx(0.0104807, abs=1e-6)
    assert followed[0].status == "complete"  # the MI at 2 years is outside 1 year


def test_km_risk_of_small_samples() -> None:
    assert km_risk([], 10.0) == (None, None, None)
    assert km_risk([(1.0, True)], 10.0) == (1.0, None, None)  # the curve reached 0
    assert km_risk([(1.0, False)], 10.0) == (None, None, None)
    risk, _, _ = km_risk([(1.0, True), (1.0, False), (10.0, False), (10.0, False)], 10.0)
    assert risk == pytest.approx(0.25)  # tie: the censored one was at risk at 1 year


def test_outcome_files_csv_and_fhir(tmp_path: Path) -> None:
    csv_file = tmp_path / "events.csv"
    csv_file.write_text("person_id,date,outcome\nPatient/7,2024-05-01,I21\n8,2024-06-01,censored\n")
    assert read_records(csv_file) == [Record("7", date(2024, 5, 1), "I21"),
                                      Record("8", date(2024, 6, 1), "censored")]  # fmt: skip
    (tmp_path / "bad.csv").write_text("person_id,date\n7,2024-05-01\n")
    with pytest.raises(OutcomeError, match="outcome"):
        read_records(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("person_id,date,outcome\n7,May 2024,I21\n")
    with pytest.raises(OutcomeError, match="line 2"):
        read_records(tmp_path / "bad2.csv")
    bulk = tmp_path / "export.ndjson"
    bulk.write_text(
        '{"resourceType":"Condition","subject":{"reference":"Patient/7"},'
        '"code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10","code":"I63.9"}]},'
        '"onsetDateTime":"2024-05-01T10:00:00Z"}\n'
        '{"resourceType":"Patient","id":"8","deceasedDateTime":"2024-06-01"}\n'
        '{"resourceType":"Observation","subject":{"reference":"Patient/9"}}\n'
    )
    assert read_records(bulk) == [Record("7", date(2024, 5, 1), "I63.9"),
                                  Record("8", date(2024, 6, 1), "death-other")]  # fmt: skip
