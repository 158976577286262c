"""Who may read a stored result: callers first (401), then the lookup (404); heatmap
links are signed (403 tampered, 410 expired, one body) and reveal no ids."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from serving.auth import AuthError
from serving.ui.links import REFUSED_BODY, LinkSigner
from tests.serving.imaging.conftest import AppFactory, LockableAudit
from tests.serving.imaging.results_fixtures import heatmap_png, make_result, store_read

_KEY = {"x-api-key": "good-key"}
_MISSING = "0" * 32


class _OneKey:
    """Accepts exactly one API key."""

    def authenticate(self, key: str | None) -> Any:
        if key != "good-key":
            raise AuthError("unknown key")
        return SimpleNamespace(iss="api-key", sub="k1", tenant="t1")


@pytest.mark.parametrize("suffix", ["", "/fhir"])
def test_result_routes_refuse_unauthenticated_callers_before_any_lookup(
    make_app: AppFactory, suffix: str
) -> None:
    client, state = make_app(dev=False, authenticator=_OneKey())
    result = make_result(patient="P1")
    store_read(state, result, tenant="t1")
    existing = client.get(f"/v1/imaging/results/{result.id}{suffix}")
    missing = client.get(f"/v1/imaging/results/{_MISSING}{suffix}")
    wrong_key = client.get(f"/v1/imaging/results/{result.id}{suffix}", headers={"x-api-key": "x"})
    # An unauthenticated caller cannot tell an existing id from a missing one.
    assert existing.status_code == missing.status_code == wrong_key.status_code == 401
    assert existing.content == missing.content == wrong_key.content
    assert client.get(f"/v1/imaging/results/{result.id}{suffix}", headers=_KEY).status_code == 200
    assert client.get(f"/v1/imaging/results/{_MISSING}{suffix}", headers=_KEY).status_code == 404


def test_result_carries_a_fresh_signed_heatmap_link(make_app: AppFactory) -> None:
    client, state = make_app(dev=False, authenticator=_OneKey())
    result = make_result(patient="P1")
    store_read(state, result, tenant="t1")
    body = client.get(f"/v1/imaging/results/{result.id}", headers=_KEY).json()
    link = body["heatmap_url"].removeprefix("https://tonle.test")
    assert link.startswith(f"{result.heatmap_url}?exp=")
    png = client.get(link)  # no credentials: the browser case
    assert png.status_code == 200
    assert png.content == heatmap_png()


def test_heatmap_needs_a_valid_signed_link(make_app: AppFactory) -> None:
    client, state = make_app()
    signer: LinkSigner = client.app.state.runtime.link_signer
    result, other = make_result(patient="P1"), make_result(patient="P2")
    for stored in (result, other):
        store_read(state, stored)
    good = signer.sign(result.heatmap_url)
    assert client.get(good).status_code == 200
    path, _, query = good.partition("?")
    sig = query.split("sig=")[1]
    tampered_sig = good[:-1] + ("0" if sig[-1] != "0" else "1")
    later_exp = good.replace("exp=", "exp=9")  # a longer life is not the one signed
    other_id = f"{other.heatmap_url}?{query}"  # a signature for one id opens no other
    past = signer.sign(result.heatmap_url, now=time.time() - timedelta(days=31).total_seconds())
    refusals = {
        "unsigned": client.get(path),
        "unsigned-missing-id": client.get(f"/v1/imaging/results/{_MISSING}/heatmap.png"),
        "tampered": client.get(tampered_sig),
        "longer-life": client.get(later_exp),
        "other-id": client.get(other_id),
        "expired": client.get(past),
    }
    statuses = {name: r.status_code for name, r in refusals.items()}
    assert statuses == {
        "unsigned": 403,
        "unsigned-missing-id": 403,
        "tampered": 403,
        "longer-life": 403,
        "other-id": 403,
        "expired": 410,
    }
    assert {r.content for r in refusals.values()} == {REFUSED_BODY}
    # A valid link to an id that does not exist is a plain 404.
    missing = signer.sign(f"/v1/imaging/results/{_MISSING}/heatmap.png")
    assert client.get(missing).status_code == 404


def test_signer_refuses_short_keys() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        LinkSigner(b"short", timedelta(days=1))


@pytest.mark.parametrize("suffix", ["", "/fhir", "/heatmap.png"])
def test_stored_reads_are_audited_and_withheld_without_their_row(
    make_app: AppFactory, audit: LockableAudit, suffix: str
) -> None:
    client, state = make_app(dev=False, authenticator=_OneKey())
    signer: LinkSigner = client.app.state.runtime.link_signer
    result = make_result(patient="P1")
    store_read(state, result, tenant="t1")
    path = f"/v1/imaging/results/{result.id}{suffix}"
    url = signer.sign(path) if suffix == "/heatmap.png" else path
    before = audit.count()
    answer = client.get(url, headers=_KEY)
    assert answer.status_code == 200
    (row,) = audit.rows()[before:]
    assert row.request_id == answer.headers["x-request-id"]  # the pipeline's own row
    assert (row.outcome, row.caller_tenant) == ("read", "t1")
    assert (row.patient_ref, row.input_sha256) == ("P1", result.input_sha256)
    # A signed link's holder has no key: audited as such, under the read's tenant.
    holder = ("tonle-link", None) if suffix == "/heatmap.png" else ("api-key", "k1")
    assert (row.caller_iss, row.caller_sub) == holder
    audit.fail = True
    withheld = client.get(url, headers=_KEY)
    assert withheld.status_code == 503
    assert withheld.json() == {"error": "audit-unavailable"}
