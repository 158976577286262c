"""Clinician-facing text in several languages (contract C6).

Every string a clinician reads (CDS cards, no-advice reasons, the web pages) comes
from a catalogue file in this folder: ``en.json``, ``km.json``, ... Adding a
language is adding a file: ``<code>.json`` holding the same keys as ``en.json``
and a ``_meta`` object saying how that language writes numbers and dates.

A key missing from a catalogue falls back to English, so a new English key never
breaks a page in another language; a key missing from English is a programming
error and raises ``KeyError``.

Example:
    >>> t("card.ncd.diabetes.summary", "en", percent=12)
    '10-year diabetes risk 12%'
"""

from __future__ import annotations

import json
import re
import string
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_LANGUAGE",
    "LanguageMeta",
    "available_languages",
    "catalogue",
    "format_date",
    "format_number",
    "format_numbers_in",
    "format_percent",
    "has_message",
    "language_meta",
    "negotiate",
    "placeholders",
    "t",
]

DEFAULT_LANGUAGE = "en"
_LATIN_DIGITS = "0123456789"


class LanguageMeta(BaseModel):
    """How one language writes itself: the ``_meta`` object of its catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The language's own name, e.g. 'ខ្មែរ'.")
    english_name: str
    bcp47: str = Field(description="Tag for HTML lang attributes, e.g. 'km'.")
    digits: str = Field(default=_LATIN_DIGITS, min_length=10, max_length=10)
    decimal: str = "."
    group: str = ","
    months: list[str] = Field(min_length=12, max_length=12)
    date_format: str = Field(description="Uses {day}, {month}, {month_name}, {year}.")
    datetime_format: str = Field(description="Uses the date fields plus {date}, {hour}, {minute}.")
    font_family: str = Field(default="", description="CSS font stack pages use for this language.")
    needs_review: list[str] = Field(
        default_factory=list,
        description="Keys translated without a native speaker's review yet (shown as "
        "written; a reviewer checks them and removes them from this list).",
    )


@cache
def available_languages() -> tuple[str, ...]:
    """Language codes with a catalogue file, English first."""
    codes = sorted(
        entry.name.removesuffix(".json")
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".json")
    )
    return tuple(sorted(codes, key=lambda code: (code != DEFAULT_LANGUAGE, code)))


@cache
def _load(lang: str) -> tuple[LanguageMeta, dict[str, str]]:
    if lang not in available_languages():
        raise ValueError(
            f"language {lang!r} has no catalogue; available: {', '.join(available_languages())}"
        )
    raw: dict[str, Any] = json.loads(
        resources.files(__name__).joinpath(f"{lang}.json").read_text(encoding="utf-8")
    )
    meta = LanguageMeta.model_validate(raw.pop("_meta"))
    bad = [key for key, value in raw.items() if not isinstance(value, str)]
    if bad:
        raise ValueError(f"{lang}.json: values must be strings; not for {bad[:5]}")
    return meta, raw


def catalogue(lang: str) -> dict[str, str]:
    """All messages of one language (a copy), without English fallback.

    Raises:
        ValueError: no catalogue file for ``lang``.
    """
    return dict(_load(lang)[1])


def has_message(key: str, lang: str) -> bool:
    """Whether ``lang``'s own catalogue (no English fallback) has ``key``.

    Raises:
        ValueError: no catalogue file for ``lang``.
    """
    return key in _load(lang)[1]


def language_meta(lang: str) -> LanguageMeta:
    """Number/date conventions and display name of a language.

    Raises:
        ValueError: no catalogue file for ``lang``.
    """
    return _load(lang)[0]


def _resolve(lang: str) -> str:
    return lang if lang in available_languages() else DEFAULT_LANGUAGE


def negotiate(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """Pick the best available language for an ``Accept-Language`` header.

    Quality values are honoured (``km;q=0.9, en;q=0.5``), region subtags match
    their language (``km-KH`` -> ``km``), ``*`` and unknown languages fall to
    ``default`` (the site default), which itself falls to English if unknown.

    Args:
        accept_language: The header value, or None when absent.
        default: The site's default language.

    Returns:
        A language code with a catalogue.
    """
    fallback = _resolve(default)
    if not accept_language:
        return fallback
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            return fallback
        primary = tag.split("-")[0]
        if primary in available_languages():
            return primary
    return fallback


@cache
def _number_marks(lang: str) -> dict[int, str] | None:
    """The ``str.translate`` table from Python's number text (``1,234.5``) to ``lang``'s
    group mark, decimal mark and digits; None where the language writes it as Python does."""
    meta = language_meta(_resolve(lang))
    if (meta.digits, meta.decimal, meta.group) == (_LATIN_DIGITS, ".", ","):
        return None
    return str.maketrans(
        {",": meta.group, ".": meta.decimal, **dict(zip(_LATIN_DIGITS, meta.digits, strict=True))}
    )


@cache
def _digit_table(lang: str) -> dict[int, int] | None:
    """The ``str.translate`` table from Latin digits to ``lang``'s; None where ``lang``
    writes Latin digits."""
    digits = language_meta(_resolve(lang)).digits
    return None if digits == _LATIN_DIGITS else str.maketrans(_LATIN_DIGITS, digits)


def _digits(text: str, lang: str) -> str:
    """``text`` with its Latin digits in ``lang``'s digits (nothing else changed)."""
    table = _digit_table(lang)
    return text if table is None else text.translate(table)


@cache
def _quantum(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def format_number(value: float, lang: str, decimals: int = 0) -> str:
    """A number as the language writes it: separators and digits.

    Rounds half away from zero (as people do), never to a misleading ``-0``.

    Args:
        value: The number.
        lang: Language code (unknown codes use English).
        decimals: Digits after the decimal separator.
    """
    rounded = Decimal(repr(float(value))).quantize(_quantum(decimals), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)
    text = f"{rounded:,.{decimals}f}"
    marks = _number_marks(_resolve(lang))
    return text if marks is None else text.translate(marks)


_NUMBER = re.compile(r"\d+(?:\.(\d+))?")


def format_numbers_in(text: str, lang: str) -> str:
    """Every plain number in ``text`` (e.g. a chart range "6-6.9") as the language writes it.

    Keeps each number's own decimals, so "6-6.9" becomes "6-6,9" where the decimal
    separator is a comma: the ranges on a screen then match the values beside them.
    """
    return _numbers_in(text, _resolve(lang))


@lru_cache(maxsize=1024)
def _numbers_in(text: str, lang: str) -> str:
    # Cached: the texts are the WHO chart's ranges and bands, a few hundred in all.
    return _NUMBER.sub(
        lambda m: format_number(float(m.group(0)), lang, len(m.group(1) or "")), text
    )


def format_percent(fraction: float, lang: str, decimals: int = 0) -> str:
    """A fraction (0.123) as a percentage in the language ("12%")."""
    return format_number(fraction * 100.0, lang, decimals) + "%"


def format_date(value: date | datetime, lang: str) -> str:
    """A date (or date-time, to the minute) as the language writes it.

    English: ``25 Nov 2026``; Khmer: ``25 វិច្ឆិកា 2026``. Month names avoid the
    day/month order ambiguity of numeric dates.
    """
    if isinstance(value, datetime):
        return _written_date(value, lang)
    return _written_day(value, lang)


def _written_date(value: date | datetime, lang: str) -> str:
    meta = language_meta(_resolve(lang))
    fields = {
        "day": str(value.day),
        "month": f"{value.month:02d}",
        "month_name": meta.months[value.month - 1],
        "year": str(value.year),
    }
    if isinstance(value, datetime):
        fields["date"] = meta.date_format.format(**fields)
        text = meta.datetime_format.format(
            **fields, hour=f"{value.hour:02d}", minute=f"{value.minute:02d}"
        )
    else:
        text = meta.date_format.format(**fields)
    return _digits(text, lang)


# A day is written once: the dates on a card are the same few days again and again.
_written_day = lru_cache(maxsize=4096)(_written_date)


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields a message template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _param(value: object, lang: str) -> object:
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return _digits(str(value), lang)
    if isinstance(value, float):
        # Shortest of 0-2 decimals that keeps the value to 2 decimals (1 above 10).
        most = 1 if abs(value) >= 10 else 2
        kept = round(value, most)
        decimals = 0 if round(value, 0) == kept else 1 if round(value, 1) == kept else 2
        return format_number(value, lang, decimals)
    if isinstance(value, datetime | date):
        return format_date(value, lang)
    return value


def t(key: str, lang: str, **params: object) -> str:
    """The message ``key`` in ``lang``, with ``params`` filled in.

    Numbers and dates among ``params`` are formatted for the language; strings
    are inserted as given (translate them first with ``t`` when they are words).
    A key the language lacks falls back to English.

    Args:
        key: Message key, e.g. ``"noadvice.missing-input"``.
        lang: Language code; unknown codes use English.
        **params: Values for the template's ``{fields}``.

    Raises:
        KeyError: the key is not in the English catalogue, or a field is missing.
    """
    template, lang = _template(key, lang)
    if not params:
        return template
    return template.format_map({name: _param(value, lang) for name, value in params.items()})


@lru_cache(maxsize=4096)
def _template(key: str, lang: str) -> tuple[str, str]:
    """The template of ``key`` and the language it is written in (``lang``, or English
    where ``lang`` lacks it): looked up once per key and language."""
    lang = _resolve(lang)
    template = _load(lang)[1].get(key)
    if template is not None:
        return template, lang
    template = _load(DEFAULT_LANGUAGE)[1].get(key)
    if template is None:
        raise KeyError(f"message key {key!r} is not in {DEFAULT_LANGUAGE}.json")
    return template, DEFAULT_LANGUAGE
