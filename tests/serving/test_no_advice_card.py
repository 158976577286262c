"""Which no-advice reasons get the optional info card (serving/no_advice_card.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.assess import NoAdvice, Problem
from serving.config import ServingConfig
from serving.i18n import catalogue, t
from serving.no_advice_card import actionable, no_advice_card


@pytest.mark.parametrize(
    ("problems", "expected"),
    [
        ([("insufficient-data", "sbp")], True),
        ([("insufficient-data", "age")], True),  # no birth date: record it
        ([("insufficient-data", "sex")], False),  # not female/male: nothing to record
        ([("stale-data", "total_chol")], True),
        ([("out-of-range", "sbp")], True),
        ([("out-of-range", "age")], False),  # outside the model's population
        ([("out-of-range", "sex")], False),
        ([("unit", "total_chol")], True),
        ([("already-has-outcome", "diabetes")], False),
        ([("model-output", None)], False),
        ([("internal-error", None)], False),
        ([("insufficient-data", "sbp"), ("stale-data", "bmi")], True),
        ([("insufficient-data", "sbp"), ("out-of-range", "age")], False),
        ([("unit", "total_chol"), ("already-has-outcome", "diabetes")], False),
    ],
)
def test_actionable_reasons(problems: list[tuple[str, str | None]], expected: bool) -> None:
    assert actionable(NoAdvice.of([Problem(r, f) for r, f in problems])) is expected


def test_no_advice_without_problems_lists_its_own_reason() -> None:
    exc = NoAdvice("out-of-range", "age", "must be at least 40 a")
    assert exc.problems == (Problem("out-of-range", "age", "must be at least 40 a"),)
    assert exc.code == "out-of-range:age"
    assert not actionable(exc)


def test_card_refused_for_a_reason_that_is_not_actionable() -> None:
    with pytest.raises(ValueError, match="already-has-outcome:diabetes"):
        no_advice_card(
            NoAdvice("already-has-outcome", "diabetes"),
            None,  # type: ignore[arg-type]  # refused before the model is read
            lang="en",
            max_age_days=365,
        )


def test_option_is_off_by_default_and_read_from_yaml() -> None:
    assert ServingConfig().no_advice_card is False
    shipped_path = Path(__file__).parents[2] / "configs" / "serving.yaml"
    shipped = yaml.safe_load(shipped_path.read_text(encoding="utf-8"))
    assert ServingConfig.model_validate(shipped).no_advice_card is False
    assert ServingConfig.model_validate({"no_advice_card": True}).no_advice_card is True


@pytest.mark.parametrize("lang", ["en", "km"])
def test_one_value_summaries_fit_without_cutting(lang: str) -> None:
    # CDS Hooks: summary < 140 characters. Any one input, any reason, the longest
    # allowed max_data_age_days: named in full (the card cuts only as a last resort).
    features = [k.removeprefix("feature.") for k in catalogue("en") if k.startswith("feature.")]
    for outcome in ("cvd", "diabetes", None):
        head = f"card.noadvice.ncd.{outcome}.summary" if outcome else "card.noadvice.ncd.summary"
        for kind in ("missing", "stale", "range", "unit"):
            for name in features:
                label = t(f"feature.{name}", lang)
                reason = t(f"card.noadvice.ncd.{kind}", lang, name=label, days=3650)
                assert len(t(head, lang, reason=reason)) < 140, (outcome, kind, name)
