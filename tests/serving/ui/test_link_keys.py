"""The key signing browser links: configured outside dev mode and the demo (variable or
file), rotated with a previous key that still checks but never signs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from serving.runtime import Runtime
from serving.settings import Settings
from serving.ui import links
from tests.serving.cds_fixtures import cds_request, prefetch
from tests.serving.ui.ui_fixtures import cvd_app, request

TTL = timedelta(days=30)
NOW = 1_800_000_000.0
CURRENT = "current-link-key-".ljust(40, "c")
PREVIOUS = "previous-link-key-".ljust(40, "p")
UNKNOWN = "unknown-link-key-".ljust(40, "u")
_VARIABLES = (
    "TONLE_DEV",
    "TONLE_DEMO_ISSUER_DIR",
    "TONLE_LINK_SECRET",
    "TONLE_LINK_SECRET_FILE",
    "TONLE_LINK_SECRET_PREVIOUS",
    "TONLE_LINK_SECRET_PREVIOUS_FILE",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _params(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query))


def _signed(key: str, path: str, now: float = NOW) -> str:
    return links.LinkSigner(key.encode(), TTL).sign(path, now=now)


# -- the signer ---------------------------------------------------------------------


def test_previous_key_checks_links_but_never_signs() -> None:
    rotated = links.LinkSigner(CURRENT.encode(), TTL, previous=(PREVIOUS.encode(),))
    path = "/ui/explain/abc"
    assert rotated.check(path, _params(_signed(PREVIOUS, path)), now=NOW) == "ok"
    assert rotated.check(path, _params(_signed(CURRENT, path)), now=NOW) == "ok"
    assert rotated.check(path, _params(_signed(UNKNOWN, path)), now=NOW) == "invalid"
    # A previous-key link to another path, or past its expiry, is no better than before.
    assert rotated.check("/ui/explain/abd", _params(_signed(PREVIOUS, path)), now=NOW) == (
        "invalid"
    )
    stale = _signed(PREVIOUS, path, now=NOW - 31 * 86400)
    assert rotated.check(path, _params(stale), now=NOW) == "expired"
    # New links: the current key only.
    assert rotated.sign(path, now=NOW) == _signed(CURRENT, path)
    # Once the rotation is over (no previous key), old links are refused.
    done = links.LinkSigner(CURRENT.encode(), TTL)
    assert done.check(path, _params(_signed(PREVIOUS, path)), now=NOW) == "invalid"


def test_short_keys_are_refused_by_the_signer() -> None:
    with pytest.raises(ValueError, match="31 bytes"):
        links.LinkSigner(CURRENT.encode(), TTL, previous=(b"p" * 31,))


# -- through the service ------------------------------------------------------------


def _card_link(app: Starlette) -> str:
    body = cds_request(prefetch(), context={"userId": "Practitioner/1", "patientId": "p-keys"})
    response = request(app, "POST", "/cds-services/ncd-cvd-risk", json=body)
    assert response.status_code == 200, response.text
    url: str = response.json()["cards"][0]["links"][0]["url"]
    return url.removeprefix("http://testserver")


def test_rotation_keeps_links_in_ehr_cards_working(ui_store_home: Path, tmp_path: Path) -> None:
    with cvd_app(ui_store_home, tmp_path, link_secret=PREVIOUS) as before:
        old_link = _card_link(before)
    rotated = {"link_secret": CURRENT, "link_secret_previous": PREVIOUS}
    with cvd_app(ui_store_home, tmp_path, **rotated) as after:
        assert request(after, "GET", old_link).status_code == 200
        page = urlsplit(old_link).path
        forged = _signed(UNKNOWN, page, now=NOW) + "&lang=en"
        assert request(after, "GET", forged).status_code == 403
        new_link = _card_link(after)
        assert request(after, "GET", new_link).status_code == 200
        # Signed with the current key, not the previous one.
        page, params = urlsplit(new_link).path, _params(new_link)
        assert links.LinkSigner(CURRENT.encode(), TTL).check(page, params) == "ok"
        assert links.LinkSigner(PREVIOUS.encode(), TTL).check(page, params) == "invalid"
    # The rotation done: the previous key's links are refused like forged ones.
    with cvd_app(ui_store_home, tmp_path, link_secret=CURRENT) as done:
        assert request(done, "GET", old_link).status_code == 403
        assert request(done, "GET", new_link).status_code == 200


# -- configuration ------------------------------------------------------------------


def test_the_service_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    settings = Settings(
        # Not even read: the key is checked before the config and the models.
        serving_config=tmp_path / "absent.yaml",
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",  # type: ignore[arg-type]
        dev=False,
    )
    with pytest.raises(ValueError, match="TONLE_LINK_SECRET is not set") as refused:
        Runtime.load(settings)
    assert "TONLE_LINK_SECRET_FILE" in str(refused.value)
    assert not (tmp_path / "audit.db").exists()  # nothing generated behind its back
    # Nor does a runtime built some other way sign with a database key.
    runtime = SimpleNamespace(settings=settings, link_signer=None, audit=None)
    with pytest.raises(ValueError, match="TONLE_LINK_SECRET is not set"):
        links.signer(runtime)


def test_dev_mode_and_the_demo_may_generate_the_key(tmp_path: Path) -> None:
    links.require_key(Settings(dev=True))
    links.require_key(Settings(demo_issuer_dir=tmp_path))
    links.require_key(Settings(link_secret=CURRENT))  # type: ignore[arg-type]


def test_key_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "link-key"
    key_file.write_text(CURRENT + "\n", encoding="utf-8")  # as `echo` writes it
    previous_file = tmp_path / "previous-key"
    previous_file.write_text(PREVIOUS, encoding="utf-8")
    monkeypatch.setenv("TONLE_LINK_SECRET_FILE", str(key_file))
    monkeypatch.setenv("TONLE_LINK_SECRET_PREVIOUS_FILE", str(previous_file))
    settings = Settings()
    assert settings.link_secret is not None
    assert settings.link_secret.get_secret_value() == CURRENT
    assert settings.link_secret_previous is not None
    assert settings.link_secret_previous.get_secret_value() == PREVIOUS
    assert CURRENT not in repr(settings)
    links.require_key(settings)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"TONLE_LINK_SECRET": CURRENT, "TONLE_LINK_SECRET_FILE": "{key}"},
            "TONLE_LINK_SECRET and TONLE_LINK_SECRET_FILE are both set",
        ),
        (
            {"TONLE_LINK_SECRET_PREVIOUS": PREVIOUS, "TONLE_LINK_SECRET_PREVIOUS_FILE": "{key}"},
            "TONLE_LINK_SECRET_PREVIOUS and TONLE_LINK_SECRET_PREVIOUS_FILE are both set",
        ),
        ({"TONLE_LINK_SECRET_FILE": "{short}"}, r"TONLE_LINK_SECRET_FILE \(.*\) has 20 char"),
        ({"TONLE_LINK_SECRET_FILE": "{absent}"}, r"TONLE_LINK_SECRET_FILE \(.*\) cannot be read"),
        ({"TONLE_LINK_SECRET": "short-secret-value"}, "TONLE_LINK_SECRET has 18 characters"),
        ({"TONLE_LINK_SECRET_PREVIOUS": "short-secret-value"}, "PREVIOUS has 18 characters"),
    ],
)
def test_bad_key_configuration_is_refused_without_showing_the_key(
    variables: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"key": tmp_path / "key", "short": tmp_path / "short", "absent": tmp_path / "absent"}
    files["key"].write_text(CURRENT, encoding="utf-8")
    files["short"].write_text("short-secret-in-file\n", encoding="utf-8")
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(**{k: str(v) for k, v in files.items()}))
    with pytest.raises(ValidationError, match=message) as refused:
        Settings()
    for secret in ("short-secret", CURRENT, PREVIOUS):
        assert secret not in str(refused.value)
