"""Real radiographs sent to a model trained only on synthetic images are refused.

The ``pydicom-data`` package (a dev dependency) ships real computed radiographs: RG1, a
chest PA (Philips), and RG3, a knee/leg AP (Fuji), each uncompressed and as lossy JPEG
2000; pydicom's own test data add real CT, MR and NM images. A model trained on the
synthetic radiographs of ``training.cxr_synthetic`` has never seen a real one, so its
out-of-distribution gate (``models.cxr_ood``, fitted at training, inside the ONNX
graph) must refuse every one of them: "cannot assess: unlike the images this model was
trained on". RG1 carries a CR / CHEST / PA header and passes the quality gate of
``models.cxr_quality``, so only the model's own gate stands between it and a score.
The others are refused by their header first; their pixels alone must be refused too
(as if the header were wrong or the image came as a PNG).

With the gate turned off (``ood: {enabled: false}``) the same model reads RG1 and
flags four of five findings (abnormal 0.84): the quality gate alone does not stop it.

The model is trained here, through the real pipeline, in a module-scoped store; the
held-out check below refused 3 of 100 new synthetic images when the threshold was set
on the 31 validation images alone (before ``ood.folds``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from models.config import load_config
from models.cxr_predictor import OOD_DETAIL, CxrPredictor, refused
from models.cxr_preprocess import decode_dicom, to_model_input
from models.cxr_quality import assess
from models.registry import StoredModel
from tests.serving.imaging.conftest import AppFactory, LockableAudit
from training.cxr_data import load_cxr_data
from training.cxr_synthetic import generate
from training.cxr_train import CxrTrainConfig, train_cxr

pytestmark = pytest.mark.slow

SIZE = 64
CHEST = ("RG1_UNCI.dcm", "RG1_J2KI.dcm")  # real CR chest PA
OTHER = (
    "RG3_UNCI.dcm",  # real CR knee/leg AP
    "RG3_J2KI.dcm",
    "MR2_UNCI.dcm",  # MR shoulder
    "693_UNCI.dcm",  # CT
    "JPEG-LL.dcm",  # NM whole-body bone scan
    "CT_small.dcm",  # pydicom's own test files from here on
    "MR_small.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "JPEG2000.dcm",
)
DICOM = {"content-type": "application/dicom"}


def real_file(name: str) -> Path:
    """A real image from pydicom's test data or the pydicom-data package."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    # The dev extras install pydicom-data: a missing file fails, never skips silently.
    assert found is not None, f"{name} is not installed: pip install pydicom-data (dev extras)"
    return Path(str(found))


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredModel]:
    """A cxr-triage model trained only on synthetic radiographs, with its OOD gate."""
    root = tmp_path_factory.mktemp("synthetic-cxr")
    labels = generate(root / "data", 200, seed=7, size=128)
    cfg = {
        "data": {"labels_csv": str(labels), "split": [0.6, 0.2, 0.2]},
        "gates": dict.fromkeys(
            ("min_known_positives", "min_auroc", "min_sensitivity", "min_specificity"), 0
        )
        | {"min_known_positives": 1},
        "model": {"arch": "resnet-small", "image_size": SIZE},
        "train": {"epochs": 3, "batch_size": 16, "threads": 2, "seed": 1},
        "output": {
            "version": "0.0.1-synthetic",
            "checkpoint_dir": str(root / "ckpt"),
            "bootstrap_reps": 0,
        },
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(root / "bentoml"))
        stored = train_cxr(load_config(root / "cfg.yaml", CxrTrainConfig))
        assert stored is not None
        yield stored
    assert os.environ.get("BENTOML_HOME") != str(root / "bentoml")


@pytest.fixture
def tiny_cxr(synthetic_model: StoredModel) -> StoredModel:
    """``make_app`` (tests/serving/imaging/conftest.py) serves the synthetic-trained model."""
    return synthetic_model


@pytest.mark.parametrize("name", CHEST)
def test_a_real_chest_radiograph_is_refused_by_the_models_gate(
    make_app: AppFactory, audit: LockableAudit, name: str
) -> None:
    data = real_file(name).read_bytes()
    decoded = decode_dicom(data, target_size=SIZE)
    assert (decoded.modality, decoded.body_part, decoded.view) == ("CR", "CHEST", "PA")
    assert assess(decoded).ok  # a frontal chest radiograph to the quality gate
    client, _ = make_app()
    response = client.post("/v1/imaging/cxr", content=data, headers=DICOM)
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["reason"], body["detail"]) == ("out-of-distribution", OOD_DETAIL)
    assert "findings" not in body
    assert [(r.outcome, r.reason) for r in audit.rows()] == [("no-advice", "out-of-distribution")]


def test_real_images_are_refused_on_their_pixels_alone(synthetic_model: StoredModel) -> None:
    names = [*CHEST, *OTHER]
    decoded = [decode_dicom(real_file(n).read_bytes(), target_size=SIZE) for n in names]
    batch = np.stack([to_model_input(d, SIZE) for d in decoded]).astype(np.float32)
    _, _, score = CxrPredictor(synthetic_model).raw_with_ood(batch)
    assert dict(zip(names, refused(score).tolist(), strict=True)) == dict.fromkeys(names, True), (
        dict(zip(names, score.round(2).tolist(), strict=True))
    )


def test_held_out_synthetic_images_are_read(synthetic_model: StoredModel, tmp_path: Path) -> None:
    fresh = load_cxr_data(generate(tmp_path / "fresh", 100, seed=12345, size=128), SIZE)
    _, _, score = CxrPredictor(synthetic_model).raw_with_ood(fresh.images)
    assert refused(score).mean() <= 0.02, np.sort(score)[-5:]
