"""Turn a trained CxrNet into a registered artifact: calibrate, choose operating
points, export, verify, evaluate, write the card, save.

Calibration (Platt, per label, with smoothed targets) and operating points (a
conservative bound on validation sensitivity) are fitted on the VALIDATION split, on the
images whose label is known; a label with fewer known validation positives than
``gates.min_known_positives`` gets no operating point, and the card says why. The
reported metrics come from the exported ONNX model on the TEST split, and the held-out
gates (:mod:`training.cxr_gates`) decide whether the model is saved at all.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.special import expit
from torch import nn

from models import registry
from models.cxr_drift import IMAGE_STATISTICS, score_name
from models.cxr_export import check_parity, cxr_metadata, export_onnx
from models.cxr_net import CXR_LABELS, CxrNet
from models.cxr_ood import OodScored, embeddings, fit_gate, squared_distances
from models.cxr_predictor import OOD_OUTPUT
from models.details import CxrDetails, CxrSplit, FeatureBins, MaskLoss, OodSummary
from models.metadata import ImageSpec, OperatingPoint
from models.registry import StoredModel
from training.cxr_data import CxrData
from training.cxr_evaluate import CxrReport, evaluate_stored, report_metrics, write_card
from training.cxr_gates import GateError, held_out_failures
from training.cxr_metrics import choose_threshold, fit_platt
from training.distribution import rows_to_matrix, training_distribution

if TYPE_CHECKING:
    from training.cxr_train import CxrTrainConfig

__all__ = [
    "choose_operating_points",
    "drift_reference",
    "image_spec",
    "package_model",
    "predict_torch",
]

LIMITATIONS = [
    "Trained and evaluated on data from the sites and devices listed in its data "
    "manifest; performance elsewhere is unknown until measured locally.",
    "Thresholds were chosen on validation data for this version only; a site must "
    "re-choose them on its own data (WHO asks programmes to set thresholds locally).",
    "Frontal adult (15+) CR/DX radiographs only; the quality gate refuses other input.",
    "The activation map shows where evidence came from at low resolution; it is not "
    "a segmentation. Where training images had finding masks (synthetic masks, NIH / "
    "TBX11K boxes) the maps were supervised to fall inside them; on other data their "
    "localisation is unmeasured until checked against local annotations.",
]


def image_spec(size: int) -> ImageSpec:
    """The preprocessing contract of ``models.cxr_preprocess.to_model_input`` at ``size``."""
    from models import cxr_preprocess

    make = getattr(cxr_preprocess, "image_spec", None)
    if callable(make):
        spec = make(size)
        if isinstance(spec, ImageSpec):
            return spec
    return ImageSpec(
        size=size,
        normalisation="models.cxr_preprocess.to_model_input: area downsample, [0, 1]",
    )


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _code_version() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def _library_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("torch", "monai", "onnx", "onnxruntime", "pydicom", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _previous(name: str, data: CxrData, size: int, reps: int) -> CxrReport | None:
    try:
        prior = registry.list_models(name)
    except Exception:  # bentoml raises NotFound for a name never stored
        return None
    if not prior:
        return None
    stored = registry.verify(name, prior[-1].version)
    if stored.metadata.image is None or stored.metadata.image.size != size:
        return None
    return evaluate_stored(stored, data, reps=reps)


def choose_operating_points(
    logits: npt.NDArray[np.float32],
    labels: npt.NDArray[np.float32],
    cfg: CxrTrainConfig,
) -> tuple[dict[str, dict[str, float]], list[OperatingPoint], dict[str, str]]:
    """Platt calibration and an operating point per label, on validation data.

    Args:
        logits: ``[N, L]`` validation logits, columns in :data:`CXR_LABELS` order.
        labels: ``[N, L]`` truth (NaN: unknown, left out).
        cfg: sensitivity targets and confidences, ``gates.min_known_positives``.

    Returns:
        Calibration parameters by label, the operating points, and label -> why it has
        none (too few known positives).
    """
    calibration: dict[str, dict[str, float]] = {}
    points: list[OperatingPoint] = []
    missing: dict[str, str] = {}
    floor = cfg.gates.min_known_positives
    for j, label in enumerate(CXR_LABELS):
        y = labels[:, j]
        params = fit_platt(logits[:, j], y)
        calibration[label] = params
        n_known = int((~np.isnan(y)).sum())
        n_pos = int((y > 0).sum())
        if n_pos < floor:
            missing[label] = (
                f"{n_pos} known positive(s) among {n_known} validation images with a known "
                f"{label} label; an operating point needs gates.min_known_positives = {floor}"
            )
            continue
        probs = expit(params["scale"] * logits[:, j] + params["offset"])
        target = cfg.sensitivity_targets.get(label, 0.9)
        choice = choose_threshold(y, probs, target, cfg.sensitivity_confidence.get(label))
        points.append(
            OperatingPoint(
                label=label,
                threshold=float(np.clip(choice.threshold, 0.0, 1.0)),
                sensitivity=_finite(choice.sensitivity),
                specificity=_finite(choice.specificity),
                chosen_on=(
                    f"validation split (n={n_known} with a known label, positives={n_pos}), "
                    f"{choice.rule}"
                ),
            )
        )
    return calibration, points, missing


def drift_reference(
    train_statistics: list[dict[str, float]],
    val_logits: npt.NDArray[np.float32],
    calibration: dict[str, dict[str, float]],
) -> dict[str, FeatureBins]:
    """The drift reference (``CxrDetails.training_distribution``) of a CXR model.

    The image statistics (:func:`models.cxr_drift.image_statistics`) over the training
    split; the calibrated scores (``score:<label>``) over the validation split: on the
    images the network learnt from its scores are more confident than on any new image,
    so a training-split reference would show drift on the first day.
    """
    names = list(IMAGE_STATISTICS)
    recorded = training_distribution(rows_to_matrix(train_statistics, names), names)
    scores = np.column_stack(
        [
            expit(calibration[label]["scale"] * val_logits[:, j] + calibration[label]["offset"])
            for j, label in enumerate(CXR_LABELS)
        ]
    )
    recorded.update(training_distribution(scores, [score_name(label) for label in CXR_LABELS]))
    return recorded


def _with_ood_gate(
    cfg: CxrTrainConfig,
    net: CxrNet,
    train_images: npt.NDArray[np.float32] | None,
    val: CxrData,
    test: CxrData,
) -> tuple[torch.nn.Module, OodSummary | None]:
    """The module to export (with the gate when configured) and the gate's description,
    with the share of test images (not used to set it) that it refuses."""
    if not cfg.ood.enabled or train_images is None:
        return net, None
    gate = fit_gate(
        embeddings(net, train_images), embeddings(net, val.images), cfg.ood.quantile, cfg.ood.folds
    )
    mean, precision = np.asarray(gate.mean), np.asarray(gate.precision)
    test_d2 = squared_distances(embeddings(net, test.images), mean, precision)
    described = OodSummary.model_validate(
        {
            **gate.describe(),
            "refused_test": float(np.mean(test_d2 > gate.threshold)),
            "n_test": len(test_d2),
        }
    )
    return OodScored(net, gate), described


def predict_torch(
    net: nn.Module, images: npt.NDArray[np.float32], batch: int = 64
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Eval-mode logits and maps for ``images`` (no gradients)."""
    net.eval()
    logits, cams = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out_logits, out_cam = net(torch.from_numpy(images[start : start + batch]))
            logits.append(out_logits.numpy())
            cams.append(out_cam.numpy())
    return np.concatenate(logits), np.concatenate(cams)


def package_model(
    cfg: CxrTrainConfig,
    net: CxrNet,
    val: CxrData,
    test: CxrData,
    *,
    n_train: int,
    train_images: npt.NDArray[np.float32] | None = None,
    train_statistics: list[dict[str, float]] | None = None,
    n_masks: int,
    report: Callable[[str, int, int], None],
    mask_kinds: dict[str, int] | None = None,
    split_source: str = "",
    init: dict[str, Any] | None = None,
) -> StoredModel:
    """Calibrate, choose thresholds, export, evaluate, gate and save ``net``.

    ``train_statistics``: the training split's image statistics (``CxrData.statistics``),
    for the drift reference (:func:`drift_reference`).

    Returns:
        The verified artifact in the model store.

    Raises:
        GateError: the exported model fails a held-out gate; nothing is saved.
    """
    size = cfg.model.image_size
    report("calibrate", 0, 1)
    val_logits, _ = predict_torch(net, val.images)
    calibration, points, missing = choose_operating_points(val_logits, val.labels, cfg)
    report("calibrate", 1, 1)
    with tempfile.TemporaryDirectory(prefix="cxr-export-") as tmp:
        folder = Path(tmp)
        exported, ood = _with_ood_gate(cfg, net, train_images, val, test)
        outputs = ("logits", "cam", OOD_OUTPUT) if ood else ("logits", "cam")
        onnx_path = export_onnx(exported, folder / registry.ONNX_FILE, size, outputs)
        parity = check_parity(net, onnx_path, val.images[:16])
        cam_side = int(predict_torch(net, val.images[:1])[1].shape[-1])
        meta = cxr_metadata(
            name=cfg.output.name,
            version=cfg.output.version,
            image=image_spec(size),
            cam_shape=(cam_side, cam_side),
            operating_points=points,
            calibration=calibration,
            description=(
                f"Chest X-ray triage, MONAI {cfg.model.arch} with class activation maps, "
                f"trained on {n_train} images"
            ),
            training_manifest_sha256=val.manifest_sha256,
            limitations=LIMITATIONS,
            config=cfg.model_dump(mode="json"),
            code_version=_code_version(),
            library_versions=_library_versions(),
            details=CxrDetails(
                labels=list(CXR_LABELS),
                synthetic_training_data=cfg.data.synthetic is not None,
                arch=cfg.model.arch,
                mask_loss=MaskLoss(
                    weight=cfg.localisation.weight, images=n_masks, pairs=dict(mask_kinds or {})
                ),
                parity=parity,
                split=CxrSplit(
                    train=n_train,
                    validation=len(val.table),
                    test=len(test.table),
                    source=split_source,
                ),
                no_operating_point=missing,
                init_weights=init,  # None: trained from scratch
                ood=ood,  # None: no out-of-distribution gate in the graph
                gates=cfg.gates.model_dump(mode="json"),
                training_distribution=drift_reference(
                    train_statistics or [], val_logits, calibration
                ),
            ),
        )
        report("evaluate", 0, 1)
        candidate = StoredModel(metadata=meta, path=folder)
        evaluation = evaluate_stored(candidate, test, reps=cfg.output.bootstrap_reps)
        failures = held_out_failures(evaluation, cfg.gates)
        if failures:
            raise GateError(
                f"{meta.tag} failed the held-out gate(s) on {evaluation.n} test images, not "
                "saved: " + "; ".join(failures)
            )
        previous = _previous(cfg.output.name, test, size, cfg.output.bootstrap_reps)
        meta = meta.model_copy(update={"metrics": report_metrics(evaluation)})
        card = write_card(meta, evaluation, folder / "card", previous)
        report("evaluate", 1, 1)
        return registry.save(onnx_path, meta, card)
