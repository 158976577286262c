"""The clinician-text catalogues and their formatting (contract C6)."""

from __future__ import annotations

import json
from datetime import date, datetime
from importlib import resources

import pytest

from models.who_cvd import list_regions
from serving import i18n
from serving.cards import country_name
from serving.i18n import (
    available_languages,
    catalogue,
    format_date,
    format_number,
    format_percent,
    language_meta,
    negotiate,
    placeholders,
    t,
)

# Khmer script block; a Khmer message must actually be written in Khmer.
_KHMER = range(0x1780, 0x1800)
# Keys whose text is the same in every language (names, codes).
_LANGUAGE_NEUTRAL = {"ui.app.name", "card.source.label", "card.ncd.factor", "feature.hba1c"}


def test_languages_are_the_files() -> None:
    files = sorted(
        p.name.removesuffix(".json")
        for p in resources.files(i18n).iterdir()
        if p.name.endswith(".json")
    )
    assert sorted(available_languages()) == files
    assert available_languages()[0] == "en"
    assert "km" in available_languages()


@pytest.mark.parametrize("lang", ["km"])
def test_catalogue_matches_english(lang: str) -> None:
    english, other = catalogue("en"), catalogue(lang)
    assert set(other) <= set(english), f"keys not in en.json: {set(other) - set(english)}"
    for key, text in other.items():
        assert placeholders(text) == placeholders(english[key]), key
    # Everything the UI and card templates use is translated, not left to fallback.
    owned = [k for k in english if k.split(".")[0] in {"ui", "card", "advisory", "override"}]
    missing = [k for k in owned if k not in other]
    assert not missing, f"{lang}.json lacks {missing}"


@pytest.mark.parametrize("lang", ["km"])
def test_keys_awaiting_native_review_exist(lang: str) -> None:
    """``_meta.needs_review`` names translations not yet checked by a native speaker."""
    pending = language_meta(lang).needs_review
    assert len(pending) == len(set(pending))
    assert set(pending) <= set(catalogue(lang)), set(pending) - set(catalogue(lang))


def test_khmer_text_is_khmer() -> None:
    for key, text in catalogue("km").items():
        if key in _LANGUAGE_NEUTRAL:
            continue
        assert any(ord(ch) in _KHMER for ch in text), f"km {key!r} has no Khmer: {text!r}"


def test_every_who_region_has_a_name() -> None:
    for code, name in list_regions():
        assert catalogue("en")[f"region.{code}"] == name
        assert f"region.{code}" in catalogue("km"), code
        assert catalogue("km")[f"region.{code}"] != name, f"{code} is still English in km"


@pytest.mark.parametrize("lang", available_languages())
def test_keys_awaiting_native_review_are_real_keys(lang: str) -> None:
    """``_meta.needs_review`` names keys a native speaker has still to check."""
    review = language_meta(lang).needs_review
    assert len(set(review)) == len(review)
    assert set(review) <= set(catalogue(lang)), set(review) - set(catalogue(lang))


def test_countries_are_named_not_coded() -> None:
    from models.who_cvd_equations import list_countries

    names = {code: name for code, name, _ in list_countries()}
    for key, text in catalogue("en").items():
        if key.startswith("country."):
            assert text == names[key.removeprefix("country.")], key
    assert country_name("KHM", "km") == "កម្ពុជា"
    assert country_name("KHM", "en") == "Cambodia"
    assert country_name("FRA", "km") == "France"  # no Khmer name yet: the WHO table's
    assert country_name("XXX", "en") == "XXX"


def test_follow_up_of_one_month_is_singular() -> None:
    assert t("card.protocol.follow_up_one", "en", rule="r1") == (
        "Follow-up visit within 1 month (rule r1)"
    )
    assert "months" not in t("card.protocol.follow_up_one", "en", rule="r1")
    assert "1" in t("card.protocol.follow_up_one", "km", rule="r1")


def test_catalogue_files_have_no_duplicate_keys() -> None:
    for lang in available_languages():
        text = resources.files(i18n).joinpath(f"{lang}.json").read_text(encoding="utf-8")

        def no_dupes(pairs: list[tuple[str, object]], lang: str = lang) -> dict[str, object]:
            keys = [k for k, _ in pairs]
            dupes = {k for k in keys if keys.count(k) > 1}
            assert not dupes, f"{lang}.json repeats {dupes}"
            return dict(pairs)

        json.loads(text, object_pairs_hook=no_dupes)


def test_card_summaries_fit_cds_hooks_limit() -> None:
    # CDS Hooks: summary "SHOULD be less than 140 characters".
    for lang in available_languages():
        assert len(t("card.ncd.cvd.summary", lang, percent=100, band=">=30%")) < 140
        longest = t(
            "card.ncd.cvd.summary_chart_model",
            lang,
            percent=100,
            who_percent=100,
            who_band="20-<30%",
        )
        assert len(longest) < 140


def test_t_fills_params_and_formats_numbers_per_language() -> None:
    # demo-02: "WHO chart" is the printed cell's number and band, and it leads.
    assert t(
        "card.ncd.cvd.summary_chart_model", "en", percent=16, who_percent=23, who_band="20-<30%"
    ) == ("10-year heart attack or stroke risk, WHO chart: 23% (20-<30%); local model 16%")
    km = t("card.ncd.cvd.summary", "km", percent=12, band="10-<20%")
    assert "12%" in km
    assert "ហានិភ័យ" in km
    assert t("ui.explain.whatif.chol", "km", value=5.5, percent=9, band="5-<10%").startswith(
        "ប្រសិនបើកូឡេស្តេរ៉ុលសរុប 5,5 mmol/L"
    )
    assert "5.5 mmol/L" in t("ui.explain.whatif.chol", "en", value=5.5, percent=9, band="x")


def test_t_falls_back_to_english_and_rejects_unknown_keys() -> None:
    assert t("advisory.short", "fr") == "Advisory only"
    with pytest.raises(KeyError, match=r"no\.such\.key"):
        t("no.such.key", "km")
    with pytest.raises(KeyError):
        t("card.ncd.cvd.summary", "en", percent=3)  # band missing


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "en", "en"),
        ("", "km", "km"),
        ("km", "en", "km"),
        ("km-KH,km;q=0.9,en-US;q=0.8", "en", "km"),
        ("en-GB,en;q=0.9,km;q=0.8", "km", "en"),
        ("fr-FR, km;q=0.3, en;q=0.2", "en", "km"),
        ("en;q=0.2, km;q=0.9", "en", "km"),
        ("fr, de", "km", "km"),
        ("*", "km", "km"),
        ("km;q=0", "en", "en"),
        ("km;q=bogus, en", "km", "en"),
        ("fr", "xx", "en"),
    ],
)
def test_negotiate(header: str | None, default: str, expected: str) -> None:
    assert negotiate(header, default) == expected


@pytest.mark.parametrize(
    ("value", "lang", "decimals", "expected"),
    [
        (1234.56, "en", 1, "1,234.6"),
        (1234.56, "km", 1, "1.234,6"),
        (0.125, "en", 2, "0.13"),
        (2.5, "en", 0, "3"),
        (-0.04, "en", 1, "0.0"),
        (165, "km", 0, "165"),
    ],
)
def test_format_number(value: float, lang: str, decimals: int, expected: str) -> None:
    assert format_number(value, lang, decimals) == expected


def _forget_written() -> None:
    """Empty the caches of what i18n has already written (its languages were changed)."""
    for cached in (i18n._digit_table, i18n._number_marks, i18n._numbers_in, i18n._written_day):
        cached.cache_clear()


def test_a_language_with_its_own_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digits, decimal and group marks all change, in numbers, ranges, dates and
    integer parameters (no shipped catalogue has digits of its own yet)."""
    real = i18n.language_meta
    khmer = real("km").model_copy(update={"digits": "០១២៣៤៥៦៧៨៩"})
    monkeypatch.setattr(i18n, "language_meta", lambda lang: khmer if lang == "km" else real(lang))
    _forget_written()
    try:
        assert format_number(1234.56, "km", 1) == "១.២៣៤,៦"
        assert format_number(1234.56, "en", 1) == "1,234.6"
        assert i18n.format_numbers_in("6-6.9", "km") == "៦-៦,៩"
        assert format_date(date(2026, 1, 5), "km") == "៥ មករា ២០២៦"
        assert i18n.t("card.ncd.diabetes.summary", "km", percent=12).endswith("១២%")
    finally:
        _forget_written()


def test_format_percent_and_dates() -> None:
    assert format_percent(0.1234, "en") == "12%"
    assert format_percent(0.1234, "km", 1) == "12,3%"
    assert format_date(date(2026, 11, 25), "en") == "25 Nov 2026"
    assert format_date(date(2026, 1, 5), "km") == "5 មករា 2026"
    assert format_date(datetime(2026, 4, 14, 9, 5), "km") == "14 មេសា 2026 ម៉ោង 09:05"
    assert format_date(datetime(2026, 4, 14, 9, 5), "en") == "14 Apr 2026, 09:05"
    assert "វិច្ឆិកា" in t("ui.explain.measured", "km", date=date(2026, 11, 3))


def test_unknown_language_catalogue_is_an_error() -> None:
    with pytest.raises(ValueError, match="no catalogue"):
        catalogue("xx")
