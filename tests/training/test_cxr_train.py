"""One-epoch smoke test of ``tonle train cxr`` on tiny synthetic radiographs, then
resume, a new version compared side by side, ``tonle evaluate``, and 2-process DDP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli import app
from models import registry
from models.config import load_config
from models.cxr_net import CXR_LABELS, CxrNet
from models.cxr_predictor import CxrPredictor
from training.cxr_data import load_cxr_data, patient_split
from training.cxr_import import import_dataset
from training.cxr_metrics import sens_spec
from training.cxr_public_formats import write_nih
from training.cxr_synthetic import generate
from training.cxr_train import (
    AugmentConfig,
    CxrTrainConfig,
    _Augmented,
    label_loss,
    mask_loss,
    supervised_pairs,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("cxr") / "data", 40, seed=11, size=64)


LENIENT = {"min_known_positives": 1, "min_auroc": 0, "min_sensitivity": 0, "min_specificity": 0}


def _config(
    tmp_path: Path, labels: Path, version: str, epochs: int, gates: dict[str, object] | None = None
) -> Path:
    cfg = {
        "data": {"labels_csv": str(labels), "split": [0.5, 0.25, 0.25]},
        "gates": gates or LENIENT,
        "model": {"arch": "resnet-small", "image_size": 64},
        "train": {"epochs": epochs, "batch_size": 8, "threads": 1, "seed": 1},
        "localisation": {"weight": 0.5},
        "output": {
            "version": version,
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "bootstrap_reps": 20,
        },
    }
    path = tmp_path / f"cxr-{version}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.slow
def test_train_resume_evaluate(tmp_path: Path, model_store: Path, tiny_set: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app, ["train", "cxr", "--config", str(_config(tmp_path, tiny_set, "0.1.0", 1))]
    )
    assert first.exit_code == 0, first.output
    stored = registry.verify("cxr-triage", "0.1.0")
    meta = stored.metadata
    assert meta.task == "cxr-triage"
    assert meta.image is not None
    assert meta.image.size == 64
    assert meta.inputs == {"image": ["N", 1, 64, 64]}
    pointed = [op.label for op in meta.operating_points]
    assert "abnormal" in pointed
    cxr = meta.cxr
    assert sorted([*pointed, *cxr.no_operating_point]) == sorted(CXR_LABELS)
    assert all("validation split" in op.chosen_on for op in meta.operating_points)
    assert set(cxr.calibration.params) == set(CXR_LABELS)
    assert cxr.parity is not None
    assert cxr.parity.max_abs_diff_logits <= 1e-4
    assert cxr.parity.max_scaled_diff_cam <= 1e-4
    assert meta.training_manifest_sha256
    assert cxr.mask_loss is not None
    assert cxr.mask_loss.weight == 0.5
    assert cxr.mask_loss.images > 0
    assert cxr.mask_loss.pairs["own"] > 0  # the synthetic set's own masks
    assert cxr.mask_loss.pairs["sole finding"] == 0
    card_text = (stored.card_dir / "README.md").read_text()
    assert "mask loss (weight 0.5)" in card_text
    assert "that finding's OWN mask" in card_text  # the definition is on the card
    assert "| findings | every positive (image, finding) pair (" in card_text
    assert (stored.card_dir / "calibration.png").is_file()
    assert json.loads((stored.card_dir / "metrics.json").read_text())["report"]["n"] > 0

    # The drift reference: image statistics of the training split, validation scores.
    reference = meta.cxr.training_distribution
    assert meta.cxr.split is not None
    assert reference["image:mean"].n == meta.cxr.split.train
    assert reference["score:tb"].n == meta.cxr.split.validation
    assert {"image:std", "image:p95", "source:aspect"} <= set(reference)
    assert "## Drift reference" in card_text

    # The checkpoint is tensors only: loadable with weights_only=True.
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert state["epoch"] == 1

    # The out-of-distribution gate is in the graph, and on the card.
    ood = cxr.ood
    assert ood is not None
    assert ood.threshold > 0
    assert ood.refused_test is not None
    assert 0.0 <= ood.refused_test <= 1.0
    assert "## Out-of-distribution gate" in card_text
    assert CxrPredictor(stored).has_ood_gate

    # The artifact serves through the ONNX predictor.
    probs, cams = CxrPredictor(stored).predict(np.full((2, 1, 64, 64), 0.5, np.float32))
    assert probs.shape == (2, 5)
    assert cams.shape[:2] == (2, 5)

    # Resume for one more epoch as a new version; the card compares with 0.1.0.
    second = runner.invoke(
        app,
        ["train", "cxr", "--resume", "--config", str(_config(tmp_path, tiny_set, "0.1.1", 2))],
    )
    assert second.exit_code == 0, second.output
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["epoch"] == 2
    card = (registry.verify("cxr-triage", "0.1.1").card_dir / "README.md").read_text()
    assert "Side by side with cxr-triage:0.1.0" in card

    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", "cxr-triage:0.1.1", "--data", str(tiny_set), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = (out / "README.md").read_text()
    assert "AUROC" in report
    assert "cxr-triage:0.1.0" in report  # previous version side by side
    assert "sex=" in report
    assert "age=" in report


@pytest.mark.slow
def test_unknown_labels_train_to_a_gated_model(
    tmp_path: Path, model_store: Path, tiny_set: Path
) -> None:
    # As every NIH import: TB unknown for every image. This crashed at calibration with
    # "cannot convert float NaN to integer".
    table = pd.read_csv(tiny_set, dtype=str, keep_default_na=False)
    table["tb"] = ""
    nih_like = tiny_set.parent / "labels-no-tb.csv"
    table.to_csv(nih_like, index=False)
    runner = CliRunner()
    gates = LENIENT | {"min_known_positives": 2}
    config = _config(tmp_path, nih_like, "0.5.0", 1, gates)
    result = runner.invoke(app, ["train", "cxr", "--config", str(config)])
    assert result.exit_code == 0, result.output
    stored = registry.verify("cxr-triage", "0.5.0")
    meta = stored.metadata
    assert "tb" not in {op.label for op in meta.operating_points}
    assert meta.cxr.no_operating_point["tb"].startswith("0 known positive(s) among 0")
    assert meta.cxr.split is not None
    assert meta.cxr.split.source.startswith("patient hash (seed 0)")
    card = (stored.card_dir / "README.md").read_text()
    assert "- tb: **no operating point**: 0 known positive(s)" in card
    assert "## Gates it passed" in card

    # The stored operating points reproduce, through the exported model, the validation
    # sensitivity and specificity they claim.
    cfg = load_config(config, CxrTrainConfig)
    data = load_cxr_data(nih_like, 64)
    split = patient_split(data.table, cfg.data.split, cfg.data.split_seed)
    val = data.subset(split.validation)
    predictor = CxrPredictor(stored)
    probs, _ = predictor.predict(val.images)
    assert meta.operating_points
    for op in meta.operating_points:
        j = CXR_LABELS.index(op.label)
        sens, spec = sens_spec(val.labels[:, j], probs[:, j], op.threshold)
        assert sens == pytest.approx(op.sensitivity, abs=1e-9), op.label
        assert spec == pytest.approx(op.specificity, abs=1e-9), op.label

    # Pre-flight: the version is taken -> refused before any training (exit 4).
    again = runner.invoke(app, ["train", "cxr", "--config", str(config)])
    assert again.exit_code == 4
    assert "cxr-triage:0.5.0 is already in the model store" in again.output
    # A model that cannot reach the held-out gate is not saved (exit 1, gate named).
    strict = {"min_known_positives": 2, "min_auroc": 1.0, "min_sensitivity": 1.0,
              "min_specificity": 1.0}  # fmt: skip
    refused = runner.invoke(
        app, ["train", "cxr", "--config", str(_config(tmp_path, nih_like, "0.5.1", 1, strict))]
    )
    assert refused.exit_code == 1, refused.output
    assert "failed the held-out gate(s)" in refused.output
    assert "gates.min_" in refused.output
    assert [m.version for m in registry.list_models("cxr-triage")] == ["0.5.0"]


@pytest.mark.slow
def test_fine_tune_from_init_weights_with_a_frozen_backbone(
    tmp_path: Path, model_store: Path, tiny_set: Path
) -> None:
    start = CxrNet("resnet-small")
    weights = tmp_path / "init.pt"
    torch.save(start.state_dict(), weights)
    config = _config(tmp_path, tiny_set, "0.6.0", 1)
    raw = yaml.safe_load(config.read_text())
    raw["init"] = {"freeze_epochs": 1, "backbone_lr_scale": 0.1}
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(
        app,
        ["train", "cxr", "--config", str(config), "--init-weights", str(weights),
         "--weights-origin", "saved by this test"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = registry.verify("cxr-triage", "0.6.0")
    init = stored.metadata.cxr.init_weights
    assert init is not None
    assert init["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert init["origin"] == "saved by this test"
    assert (init["loaded"], init["not_loaded"], init["freeze_epochs"]) == (init["total"], [], 1)
    card = (stored.card_dir / "README.md").read_text()
    assert f"- Initial weights: `init.pt` (sha256 `{init['sha256']}`, origin: saved by" in card
    trained = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["model"]
    for key, value in start.state_dict().items():
        if key.startswith("features."):  # frozen: weights and batch-norm statistics
            assert torch.equal(trained[key], value), key
    assert not torch.equal(trained["classifier.weight"], start.state_dict()["classifier.weight"])


@pytest.mark.slow
def test_an_nih_import_trains_to_a_saved_model(tmp_path: Path, model_store: Path) -> None:
    # The published NIH layout, imported, then trained with the import's own splits.
    write_nih(tmp_path / "nih", 160, image_side=64, n_boxes=10, distinct=True, seed=3)
    labels = import_dataset("nih-cxr14", tmp_path / "nih", tmp_path / "data", val_fraction=0.3)
    imported = pd.read_csv(labels, dtype=str, keep_default_na=False)
    config = _config(tmp_path, labels, "0.7.0", 1)
    result = CliRunner().invoke(app, ["train", "cxr", "--config", str(config)])
    assert result.exit_code == 0, result.output
    meta = registry.verify("cxr-triage", "0.7.0").metadata
    split = meta.cxr.split
    assert split is not None
    assert split.source == "the labels file's split column"
    counts = imported["split"].value_counts()
    assert (split.train, split.validation, split.test) == (
        counts["train"], counts["val"], counts["test"],
    )  # fmt: skip
    assert "tb" in meta.cxr.no_operating_point  # NIH has no TB label


def test_augmentation_moves_the_mask_with_the_image() -> None:
    image = np.zeros((1, 1, 64, 64), np.float32)
    image[0, 0, 8:22, 38:52] = 1.0
    cfg = AugmentConfig(prob=1.0, rotate_deg=15, translate=0.15, gamma=(1.0, 1.0), noise_std=0)
    masks = np.zeros((1, 5, 64, 64), bool)
    masks[:, 2] = image[:, 0] > 0.5  # one label's mask; the others stay empty
    data = _Augmented(image, np.ones((1, 5), np.float32), masks, cfg)
    moved = 0
    for seed in range(6):
        data.set_random_state(seed)
        x, _, m = data[0]
        assert m.shape == (5, 64, 64)
        assert m[[0, 1, 3, 4]].sum() == 0
        inside = m[2] > 0.5
        assert inside.sum() > 100
        assert (x[0][inside] > 0.25).float().mean() > 0.95  # the mask covers the square
        moved += int(not torch.equal(inside, torch.from_numpy(image[0, 0] > 0.5)))
    assert moved >= 5  # and it did move


def test_mask_loss_pulls_each_supervised_map_into_its_mask() -> None:
    labels = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])  # abnormal + nodule; normal
    masks = torch.zeros(2, 5, 16, 16)
    masks[0, 0, :8, :8] = 1.0  # abnormal: the union
    masks[0, 2, :8, :8] = 1.0  # the nodule's own mask
    assert supervised_pairs(labels, masks).tolist() == [
        [True, False, True, False, False],
        [False] * 5,
    ]
    two = labels.clone()
    two[0, 4] = 1.0  # a second finding without a mask of its own: not supervised
    assert supervised_pairs(two, masks)[0].tolist() == [True, False, True, False, False]
    inside = torch.zeros(2, 5, 4, 4)
    inside[:, :, 0, 0] = 5.0
    outside = torch.zeros(2, 5, 4, 4)
    outside[:, :, 3, 3] = 5.0
    assert mask_loss(inside, labels, masks) < 0.1 < 2.0 < mask_loss(outside, labels, masks)
    cam = outside.clone().requires_grad_(True)
    mask_loss(cam, labels, masks).backward()  # type: ignore[no-untyped-call]
    assert cam.grad is not None
    assert cam.grad[0, 0, 0, 0] < 0 < cam.grad[0, 0, 3, 3]  # up inside, down outside
    assert cam.grad[1].abs().sum() == 0  # the normal image is not supervised
    assert mask_loss(outside, labels * 0, masks).item() == 0.0
    with pytest.raises(ValueError, match="one channel per label"):
        supervised_pairs(labels, masks[:, :1])  # a lone union mask is ambiguous


def test_mask_loss_uses_each_findings_own_mask() -> None:
    # Nodule top left, effusion bottom right, in one image: each map is pulled into its
    # own finding, the abnormal map into the union.
    labels = torch.tensor([[1.0, 0, 1, 0, 1]])
    masks = torch.zeros(1, 5, 16, 16)
    masks[0, 2, :4, :4] = 1.0
    masks[0, 4, 12:, 12:] = 1.0
    masks[0, 0] = masks[0, 2] + masks[0, 4]
    right = torch.zeros(1, 5, 4, 4)
    right[0, 2, 0, 0] = right[0, 4, 3, 3] = right[0, 0, 0, 0] = 5.0
    swapped = torch.zeros(1, 5, 4, 4)
    swapped[0, 2, 3, 3] = swapped[0, 4, 0, 0] = swapped[0, 0, 0, 0] = 5.0
    assert mask_loss(right, labels, masks) < 0.1 < 2.0 < mask_loss(swapped, labels, masks)


def test_unknown_labels_are_left_out_of_the_loss() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 0.0]])
    known = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])
    unknown_tb = known.clone()
    unknown_tb[0, 1] = float("nan")  # NIH: no TB label
    weight = torch.ones(5)
    loss = label_loss(logits, unknown_tb, weight)
    assert torch.isfinite(loss)
    keep = [0, 2, 3, 4]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, keep], known[:, keep])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        label_loss(logits, known, weight),
        torch.nn.functional.binary_cross_entropy_with_logits(logits, known),
    )
    # An unknown label is never supervised, even with a mask.
    assert supervised_pairs(unknown_tb, torch.ones(1, 5, 4, 4)).tolist() == [
        [True, False, True, False, False]
    ]


def test_bad_config_exits_4(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {labels_csv: x.csv}\nmodel: {arch: vgg}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "cxr", "--config", str(bad)])
    assert result.exit_code == 4
    assert "model.arch" in result.output


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path, tiny_set: Path) -> None:
    config = _config(tmp_path, tiny_set, "0.2.0", 1)
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "store"), OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2",
         "-m", "training.cxr_train", "--config", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved cxr-triage:0.2.0" in result.stdout
    assert result.stdout.count("saved cxr-triage") == 1  # rank 0 only
    meta = json.loads(next((tmp_path / "store").rglob("metadata.json")).read_text(encoding="utf-8"))
    assert meta["version"] == "0.2.0"
