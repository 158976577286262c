"""Site thresholds come from calibration records: applied, named on every result, refused
when made for another site, model version or artifact."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.registry import StoredModel
from models.site_threshold import RecordModel, RecordRule, RecordStudy, SiteThresholdRecord
from serving.imaging.card import cxr_card
from serving.imaging.config import ImagingConfig, SiteThresholds
from serving.ui.links import LinkSigner
from tests.serving.imaging.conftest import AppFactory
from tests.serving.imaging.cxr_fixtures import dicom_bytes

DICOM = {"content-type": "application/dicom"}


def write_record(tmp_path: Path, stored: StoredModel, **changes: Any) -> Path:
    meta = stored.metadata
    fields: dict[str, Any] = {
        "site": "test-site",
        "model": RecordModel(name=meta.name, version=meta.version, sha256=meta.sha256),
        "label": "tb",
        "threshold": 0.01,
        "rule": RecordRule(
            kind="min-sensitivity",
            target=0.9,
            text="highest threshold whose sensitivity lower 95 % bound >= 0.9",
        ),
        "numbers": {"sensitivity": 0.95, "sensitivity_ci_low": 0.91, "specificity": 0.6},
        "study": RecordStudy(
            file="study.csv",
            sha256="ab" * 32,
            screened=1000,
            with_reference=400,
            estimator="ipw-fractions",
        ),
        "chosen_by": "Dr Sok",
        "chosen_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    fields.update(changes)
    path = tmp_path / f"record-{len(list(tmp_path.glob('record-*')))}.json"
    path.write_text(SiteThresholdRecord(**fields).model_dump_json(indent=2))
    return path


def sites(*records: Path) -> dict[str, SiteThresholds]:
    return {"test-site": SiteThresholds(records=list(records))}


def test_record_threshold_is_applied_and_named_on_every_result(
    make_app: AppFactory, tiny_cxr: StoredModel, tmp_path: Path
) -> None:
    client, state = make_app(sites=sites(write_record(tmp_path, tiny_cxr)))
    body = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).json()
    tb = next(f for f in body["findings"] if f["label"] == "tb")
    assert tb["threshold"] == 0.01
    assert tb["threshold_source"] == "site-override"
    assert tb["flagged"] is True
    source = tb["threshold_chosen_on"]
    assert "site test-site threshold record" in source
    assert "sensitivity lower 95 % bound >= 0.9" in source
    assert "chosen by Dr Sok on 2026-12-01" in source
    assert "1000 screened, 400 with a reference, ipw-fractions" in source
    nodule = next(f for f in body["findings"] if f["label"] == "nodule")
    assert nodule["threshold_source"] == "model-version"
    fhir = json.dumps(client.get(f"/v1/imaging/results/{body['id']}/fhir").json())
    assert "site test-site threshold record" in fhir
    result = state.store.get(body["id"], tenant=None)
    signer = LinkSigner(b"k" * 32, timedelta(days=1))
    card = cxr_card(result, public_url="https://tonle.test", signer=signer, lang="en")
    assert "threshold chosen locally: site test-site threshold record" in (card.detail or "")
    khmer = cxr_card(result, public_url="https://tonle.test", signer=signer, lang="km")
    assert "site test-site threshold record" in (khmer.detail or "")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"site": "other-site"}, "site 'other-site'"),
        ({"label": "pneumothorax"}, "label 'pneumothorax'"),
    ],
)
def test_record_for_another_site_or_label_is_refused_at_start(
    make_app: AppFactory, tiny_cxr: StoredModel, tmp_path: Path, changes: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_app(sites=sites(write_record(tmp_path, tiny_cxr, **changes)))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"version": "0.2.0"}, "model version '0.2.0'"),
        ({"sha256": "0" * 64}, "model sha256"),
        ({"name": "cxr-other"}, "model 'cxr-other'"),
    ],
)
def test_record_for_another_model_version_is_refused_at_start(
    make_app: AppFactory,
    tiny_cxr: StoredModel,
    tmp_path: Path,
    model: dict[str, str],
    message: str,
) -> None:
    meta = tiny_cxr.metadata
    ref = RecordModel(name=meta.name, version=meta.version, sha256=meta.sha256)
    record = write_record(tmp_path, tiny_cxr, model=ref.model_copy(update=model))
    with pytest.raises(ValueError, match=message):
        make_app(sites=sites(record))


def test_bad_record_files_are_refused_at_start(
    make_app: AppFactory, tiny_cxr: StoredModel, tmp_path: Path
) -> None:
    twice = [write_record(tmp_path, tiny_cxr), write_record(tmp_path, tiny_cxr)]
    with pytest.raises(ValueError, match="two threshold records for label 'tb'"):
        make_app(sites=sites(*twice))
    tampered = write_record(tmp_path, tiny_cxr)
    tampered.write_text(tampered.read_text().replace('"threshold": 0.01', '"threshold": NaN'))
    with pytest.raises(ValueError, match="finite"):
        make_app(sites=sites(tampered))
    with pytest.raises(ValueError, match="cannot read"):
        make_app(sites=sites(tmp_path / "missing.json"))


def test_free_text_site_thresholds_are_gone(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        ImagingConfig.model_validate(
            {"sites": {"s": {"thresholds": {"tb": 0.3}, "chosen_on": "local audit"}}}
        )
    with pytest.raises(ValidationError):
        ImagingConfig.model_validate({"sites": {"s": {"records": []}}})


def test_a_record_made_by_tonle_calibrate_is_served(
    make_app: AppFactory, tiny_cxr: StoredModel, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli.app import app
    from tests.training.test_calibrate import HEADER, ROWS

    study = tmp_path / "study.csv"
    study.write_text(f"{HEADER}\n{ROWS}")
    out = tmp_path / "calib"
    result = CliRunner().invoke(
        app,
        ["calibrate", "cxr", str(study), "-o", str(out), "--model", tiny_cxr.metadata.tag,
         "--min-sensitivity", "0.3", "--site", "test-site", "--by", "Dr Sok"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client, state = make_app(sites=sites(out / "site-threshold.json"))
    chosen = json.loads((out / "site-threshold.json").read_text())["threshold"]
    assert state.analyser.thresholds["tb"].threshold == chosen
    body = client.post("/v1/imaging/cxr", content=dicom_bytes(), headers=DICOM).json()
    tb = next(f for f in body["findings"] if f["label"] == "tb")
    assert tb["threshold"] == chosen
    assert "chosen by Dr Sok" in tb["threshold_chosen_on"]
