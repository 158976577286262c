"""Which no-advice reasons get the optional info card (serving/no_advice_card.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.assess import NoAdvice, Problem
from serving.config import ServingConfig
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
