"""Typed per-task metadata (models.details): round trip, task checks, older artifacts.

``data/metadata_before_details/`` holds ``metadata.json`` files (and card manifests)
saved by the code before the details were typed, when ``extra`` was a free dictionary:
a trained CVD model, one saved worse than the chart with a reason, a recalibrated one,
the test fixture's (integers where training writes floats), and two trained X-ray
models (one fine-tuned from pretrained weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.details import CxrDetails, FeatureBins, NcdDetails
from models.metadata import ModelMetadata
from models.registry import artifact_digest

BEFORE = Path(__file__).parent / "data" / "metadata_before_details"
OLD = sorted(p.name.removesuffix(".metadata.json") for p in BEFORE.glob("*.metadata.json"))


def _old(name: str) -> tuple[str, dict[str, str]]:
    text = (BEFORE / f"{name}.metadata.json").read_text("utf-8")
    card = json.loads((BEFORE / f"{name}.card.json").read_text("utf-8"))
    return text, card


def test_the_fixtures_cover_both_tasks() -> None:
    assert {"ncd-trained", "ncd-recalibrated", "cxr-trained", "cxr-fine-tuned"} <= set(OLD)


@pytest.mark.parametrize("name", OLD)
def test_an_artifact_saved_before_loads_and_keeps_its_identity(name: str) -> None:
    text, card = _old(name)
    meta = ModelMetadata.model_validate_json(text)
    assert artifact_digest(meta, card) == meta.sha256
    # Serialised again, the details are the very object that was stored.
    assert json.loads(meta.model_dump_json())["extra"] == json.loads(text)["extra"]
    again = ModelMetadata.model_validate_json(meta.model_dump_json())
    assert again == meta
    assert artifact_digest(again, card) == meta.sha256


def test_old_ncd_details_read_as_attributes() -> None:
    meta = ModelMetadata.model_validate_json(_old("ncd-recalibrated")[0])
    ncd = meta.ncd
    assert ncd.outcome == "cvd"
    assert ncd.parent is not None
    assert ncd.parent.tag == "cvd-risk:1.0.0"
    assert ncd.recalibration is not None
    assert ncd.recalibration.events >= 20
    assert ncd.who_comparison is None  # the parent's comparison no longer applies
    assert ncd.input_support is not None
    assert "sbp" in ncd.input_support.features
    assert all(isinstance(b, FeatureBins) for b in ncd.training_distribution.values())
    assert ncd.encodings["sex"] == {"female": 0, "male": 1}
    assert isinstance(ncd.encodings["sex"]["male"], int)  # as written: the digest needs it
    worse = ModelMetadata.model_validate_json(_old("ncd-accepted-worse")[0]).ncd
    assert worse.who_comparison is not None
    assert worse.who_comparison.accepted_reason
    with pytest.raises(ValueError, match="not 'cxr-triage'"):
        _ = meta.cxr


def test_old_cxr_details_read_as_attributes() -> None:
    meta = ModelMetadata.model_validate_json(_old("cxr-fine-tuned")[0])
    cxr = meta.cxr
    assert cxr.labels == next(o for o in meta.outputs if o.name == "logits").labels
    assert set(cxr.calibration.params) == set(cxr.labels)
    assert cxr.init_weights is not None
    assert cxr.mask_loss is not None
    assert cxr.split is not None
    assert cxr.split.train > 0
    assert cxr.training_distribution == {}
    with pytest.raises(ValueError, match="not 'ncd-risk'"):
        _ = meta.ncd


def _raw(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(_old(name)[0])
    return loaded


def test_a_key_this_version_does_not_know_is_refused() -> None:
    raw = _raw("ncd-trained")
    raw["extra"] = {**raw["extra"], "calibrated_by": "someone"}  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match=r"calibrated_by.*refused, not dropped"):
        ModelMetadata.model_validate(raw)


def test_details_of_another_task_are_refused() -> None:
    cxr = _raw("cxr-trained")
    with pytest.raises(ValidationError, match="not valid NcdDetails for a 'ncd-risk'"):
        ModelMetadata.model_validate({**cxr, "task": "ncd-risk"})
    ncd = ModelMetadata.model_validate_json(_old("ncd-trained")[0])
    with pytest.raises(ValidationError, match="'cxr-triage' artifact cannot carry NcdDetails"):
        ModelMetadata(name="x-ray", version="1.0.0", task="cxr-triage", extra=ncd.ncd)
    with pytest.raises(ValidationError, match="'test' artifact carries no details"):
        ModelMetadata(name="toy", version="1.0.0", task="test", extra=ncd.ncd)
    with pytest.raises(ValidationError, match="outcome: Field required") as info:
        ModelMetadata(name="risk", version="1.0.0", task="ncd-risk")  # needs its outcome
    assert "not dropped" not in str(info.value)
    with pytest.raises(ValidationError, match="synthetic_training_data"):  # a flag, not text
        ModelMetadata(
            name="risk", version="1.0.0", task="ncd-risk",
            extra={"outcome": "cvd", "synthetic_training_data": "yes"},
        )  # fmt: skip


def test_a_test_model_has_no_details_and_an_empty_object_on_disk() -> None:
    meta = ModelMetadata(name="toy", version="1.0.0", task="test")
    assert meta.extra is None
    assert not meta.synthetic_training_data
    assert json.loads(meta.model_dump_json())["extra"] == {}
    assert ModelMetadata.model_validate_json(meta.model_dump_json()) == meta
    assert "extra" not in meta.model_dump(mode="json", exclude_defaults=True)


def test_new_details_round_trip() -> None:
    bins = FeatureBins(edges=[1.0, 2.0], proportions=[0.25, 0.5, 0.25], n=40)
    ncd = ModelMetadata(
        name="cvd-risk",
        version="2.0.0",
        task="ncd-risk",
        extra=NcdDetails(
            outcome="cvd", reference={"sbp": 120.0}, training_distribution={"sbp": bins}
        ),
    )
    cxr = ModelMetadata(
        name="cxr-triage",
        version="2.0.0",
        task="cxr-triage",
        extra=CxrDetails(
            labels=["abnormal"], synthetic_training_data=True, training_distribution={"p": bins}
        ),
    )
    for meta in (ncd, cxr):
        again = ModelMetadata.model_validate_json(meta.model_dump_json())
        assert again == meta
        assert artifact_digest(again, {}) == artifact_digest(meta, {})
    assert json.loads(ncd.model_dump_json())["extra"] == {
        "outcome": "cvd",
        "reference": {"sbp": 120.0},
        "training_distribution": {
            "sbp": {"edges": [1.0, 2.0], "proportions": [0.25, 0.5, 0.25], "n": 40}
        },
    }
    assert cxr.synthetic_training_data
    assert not ncd.synthetic_training_data
    with pytest.raises(ValidationError, match="labels"):
        CxrDetails(labels=[])
    with pytest.raises(ValidationError, match="frozen"):
        ncd.ncd.outcome = "diabetes"  # type: ignore[misc]
