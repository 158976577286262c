"""The error a model raises for an input it cannot take."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """An input a model cannot take, with the rule it broke.

    Attributes:
        field: The input's name, e.g. ``"age"``.
        value: The value given (``None`` when missing).
        rule: The rule it broke, in plain words.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")
