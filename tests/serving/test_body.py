"""Strict JSON bodies: the nesting limit, exactly at its boundary."""

from __future__ import annotations

import pytest

from serving.body import MAX_DEPTH, BadRequest, loads_strict


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1), True),  # the 1 is level 32
        ("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH, False),  # level 33
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, True),  # an empty list at level 32
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), False),
        ('{"a":' * (MAX_DEPTH - 1) + "null" + "}" * (MAX_DEPTH - 1), True),
        ('{"a":' * MAX_DEPTH + "{}" + "}" * MAX_DEPTH, False),
        ('[{"a": [1, {"b": 2}]}, 3, "x"]', True),
        ("7", True),
    ],
)
def test_nesting_limit_boundary(text: str, allowed: bool) -> None:
    if allowed:
        loads_strict(text.encode())
    else:
        with pytest.raises(BadRequest) as refused:
            loads_strict(text.encode())
        assert refused.value.reason == "too-deep"
