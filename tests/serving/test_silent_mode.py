"""Silent mode: a CDS service runs and stores its cards, the EHR gets ``cards: []``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from serving.runtime import Runtime
from tests.serving.cds_fixtures import (
    app_for,
    cds_request,
    prefetch,
    runtime_for,
    shared_store,
    write_config,
)
from tests.serving.test_cds_hooks import CVD, DIABETES, audit_row, call


def own(tmp: Path) -> Path:
    """A folder for this test's serving YAML (runtime_for writes its default in ``tmp``)."""
    folder = tmp / "config"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("silent")
    config = write_config(own(tmp), silent={"ncd-cvd-risk": ["test-site"], "ncd-diabetes-risk": []})
    with runtime_for(shared_store(), tmp, serving_config=config, site="test-site") as rt:
        yield rt


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> Starlette:
    return app_for(runtime)


def test_silent_service_answers_no_cards_and_stores_what_it_would_have_shown(
    app: Starlette, runtime: Runtime
) -> None:
    response = call(app, "POST", CVD, cds_request(prefetch()))
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    row = audit_row(runtime, response)
    assert (row.outcome, row.mode) == ("advice", "silent")
    assert row.model_name == "cvd-risk"
    assert row.input_sha256 is not None
    assert len(row.card_ids) == 1  # the card that would have been shown
    assert runtime.audit.explanation(row.card_ids[0]) is not None  # type: ignore[union-attr]


def test_other_services_and_refusals_are_unchanged(app: Starlette, runtime: Runtime) -> None:
    live = call(app, "POST", DIABETES, cds_request(prefetch()))
    assert len(live.json()["cards"]) == 1
    assert audit_row(runtime, live).mode == "live"
    bad = call(app, "POST", CVD, raw=b"{")
    assert bad.status_code == 400
    assert audit_row(runtime, bad).mode == "live"


def test_silent_no_advice_is_recorded_as_silent(app: Starlette, runtime: Runtime) -> None:
    no_sbp = {"resourceType": "Bundle", "type": "searchset"}
    response = call(app, "POST", CVD, cds_request({**prefetch(), "sbp": no_sbp}))
    assert response.json() == {"cards": []}
    row = audit_row(runtime, response)
    assert (row.outcome, row.mode) == ("no-advice", "silent")


def test_silent_only_at_the_sites_named(tmp_path: Path) -> None:
    config = write_config(own(tmp_path), silent={"ncd-cvd-risk": ["other-site"]})
    with runtime_for(shared_store(), tmp_path, serving_config=config, site="test-site") as rt:
        assert not rt.silent("ncd-cvd-risk")
    everywhere = write_config(own(tmp_path / "b"), silent={"ncd-cvd-risk": ["*"]})
    with runtime_for(shared_store(), tmp_path, serving_config=everywhere) as rt:
        assert rt.silent("ncd-cvd-risk")
        assert not rt.silent("ncd-diabetes-risk")


def test_unknown_service_in_silent_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(own(tmp_path), silent={"ncd-typo": ["*"]})
    with (
        pytest.raises(ValueError, match="ncd-typo"),
        runtime_for(shared_store(), tmp_path, serving_config=config),
    ):
        pass
