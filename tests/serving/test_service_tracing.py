"""BentoML's OpenTelemetry middleware is skipped unless ``TONLE_TRACING`` asks for it.

The service definition decides it when ``serving.service`` is imported, so each case
imports it in a fresh interpreter and asks OpenTelemetry's own URL filter (the one
BentoML builds from ``tracing.excluded_urls``) which URLs it would trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
URLS = (
    "http://127.0.0.1:3000/cds-services/ncd-cvd-risk",
    "http://127.0.0.1:3000/v1/who-cvd",
    "http://127.0.0.1:3000/v1/imaging/cxr",
    "https://tonle.example.org/ui/explain/abc?sig=1",
)
_PROBE = (
    "import json, sys; from opentelemetry.util.http import ExcludeList; "
    "from serving.service import Tonle; "
    "excluded = ExcludeList(Tonle.config['tracing']['excluded_urls']); "
    "print(json.dumps([url for url in sys.argv[1:] if not excluded.url_disabled(url)]))"
)


def _traced(tracing: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TONLE_TRACING"}
    if tracing is not None:
        env["TONLE_TRACING"] = tracing
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE, *URLS], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    traced: list[str] = json.loads(out.stdout.splitlines()[-1])
    return traced


def test_no_url_goes_through_the_tracing_middleware_by_default() -> None:
    assert _traced(None) == []
    assert _traced("false") == []


def test_tonle_tracing_traces_every_route_but_the_x_ray_upload() -> None:
    assert _traced("true") == [URLS[0], URLS[1], URLS[3]]


def test_an_unreadable_tonle_tracing_stops_the_import() -> None:
    with pytest.raises(AssertionError, match="tracing"):
        _traced("sometimes")
