"""Score preprocessed chest X-rays with a verified ``cxr-triage`` ONNX artifact.

ONNX Runtime only (no PyTorch), so serving can use it. Sessions default to one
intra-op thread: on 2 cores two callers on one-thread sessions beat one two-thread
session and adaptive batching (docs/performance.md).

Metadata this module reads (written by ``training/cxr_train.py``):

* ``metadata.image`` (:class:`~models.metadata.ImageSpec`): the input side ``S``.
* ``metadata.cxr.labels``: the output columns.
* ``metadata.cxr.calibration``: Platt parameters per label, ``{"scale": a, "offset":
  b}``; probability = ``sigmoid(a * logit + b)``.
* ``metadata.cxr.ood``: present when the graph has the out-of-distribution
  output ``ood_score`` (:mod:`models.cxr_ood`; above 1 = unlike the training images).
  :meth:`CxrPredictor.predict` gives such an image all-NaN probabilities and maps, so
  every caller fails closed on it; :func:`refused` says which they are.
* ``metadata.operating_points``: a threshold per label on that probability; a label
  with too few known validation positives has none, and ``cxr.no_operating_point``
  says why.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from models.details import PlattParams
from models.metadata import ModelMetadata
from models.onnx_runtime import open_session
from models.registry import StoredModel

__all__ = [
    "OOD_DETAIL",
    "OOD_OUTPUT",
    "OOD_REASON",
    "AppliedThreshold",
    "CxrPredictionError",
    "CxrPredictor",
    "Finding",
    "cam_peak",
    "refused",
    "upsample_cam",
]


# The graph output of the out-of-distribution gate (models.cxr_ood), and what serving
# says when it refuses an image.
OOD_OUTPUT = "ood_score"
OOD_REASON = "out-of-distribution"
OOD_DETAIL = "cannot assess: unlike the images this model was trained on"


class CxrPredictionError(ValueError):
    """The input batch does not fit the model, or the model gave non-finite output."""


class AppliedThreshold(BaseModel):
    """The threshold used for one label, and where it came from."""

    label: str
    threshold: float = Field(ge=0.0, le=1.0)
    source: str = Field(description="'model' (chosen on validation data) or 'site'.")
    chosen_on: str = Field(description="How it was chosen, e.g. 'validation, sensitivity>=0.90'.")
    sensitivity: float | None = None
    specificity: float | None = None


class Finding(BaseModel):
    """One label's calibrated probability and whether it crosses its threshold."""

    label: str
    probability: float = Field(ge=0.0, le=1.0)
    positive: bool
    threshold: AppliedThreshold


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows: logits of several hundred are possible after scaling.
    z = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)), dtype=np.float64)


class CxrPredictor:
    """Calibrated multi-label scores and class activation maps from one ONNX call.

    Args:
        stored: a verified artifact with ``metadata.task == "cxr-triage"``.
        threads: ONNX Runtime intra-op threads.

    Raises:
        CxrPredictionError: the artifact is not a cxr-triage model or lacks metadata.
    """

    def __init__(self, stored: StoredModel, threads: int = 1) -> None:
        meta = stored.metadata
        if meta.task != "cxr-triage" or meta.image is None:
            raise CxrPredictionError(
                f"{meta.tag} is a {meta.task!r} model without the image contract; "
                "CxrPredictor needs task 'cxr-triage' with metadata.image set"
            )
        self.metadata: ModelMetadata = meta
        self.labels: list[str] = list(meta.cxr.labels)  # at least one (CxrDetails)
        self.size: int = meta.image.size
        params = meta.cxr.calibration.params
        identity = PlattParams(scale=1.0, offset=0.0)
        self._scale = np.array([params.get(label, identity).scale for label in self.labels])
        self._offset = np.array([params.get(label, identity).offset for label in self.labels])
        self._session = open_session(stored, threads=threads)
        names = {o.name for o in self._session.get_outputs()}
        self.has_ood_gate: bool = OOD_OUTPUT in names
        self._outputs = ["logits", "cam", *([OOD_OUTPUT] if self.has_ood_gate else [])]

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated ``(logits [N, L], cam [N, L, h, w])`` for ``batch`` (no gate).

        Raises:
            CxrPredictionError: wrong shape or dtype, non-finite input or output.
        """
        logits, cam, _ = self.raw_with_ood(batch)
        return logits, cam

    def raw_with_ood(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(logits, cam, ood_score [N])``; the score is 0 without a gate in the graph.

        Raises:
            CxrPredictionError: wrong shape or dtype, non-finite input or output.
        """
        expected = (1, self.size, self.size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.shape[0] < 1:
            raise CxrPredictionError(
                f"image batch has shape {tuple(batch.shape)}; expected (N, *{expected})"
            )
        if batch.dtype != np.float32:
            raise CxrPredictionError(f"image batch has dtype {batch.dtype}; expected float32")
        if not np.isfinite(batch).all():
            raise CxrPredictionError("image batch contains NaN or infinite values")
        out = self._session.run(self._outputs, {"image": batch})
        logits, cam = out[0], out[1]
        if not (np.isfinite(logits).all() and np.isfinite(cam).all()):
            raise CxrPredictionError("the model returned NaN or infinite values")
        score = np.asarray(out[2]) if self.has_ood_gate else np.zeros(len(batch))
        return np.asarray(logits), np.asarray(cam), score

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[N, L]`` from raw logits."""
        return _sigmoid(logits * self._scale + self._offset)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities ``[N, L]`` and raw maps ``[N, L, h, w]``; an image the
        out-of-distribution gate refuses gets NaN in both (never a score).

        Args:
            batch: float32 ``[N, 1, S, S]`` from ``models.cxr_preprocess.to_model_input``.
        """
        logits, cam, score = self.raw_with_ood(batch)
        probs = self.calibrate(logits)
        out_of_scope = refused(score)
        if out_of_scope.any():
            probs[out_of_scope] = np.nan
            cam = cam.astype(np.float32, copy=True)
            cam[out_of_scope] = np.nan
        return probs, cam

    def thresholds(
        self, overrides: Mapping[str, float] | None = None, *, missing_ok: bool = False
    ) -> list[AppliedThreshold]:
        """The threshold for each label: a site override if given, else the model's.

        Args:
            overrides: label -> threshold from site configuration.
            missing_ok: leave out a label that has neither (a model may have no
                operating point for a label with too few known positives; evaluation
                still reports its AUROC) instead of raising.

        Raises:
            CxrPredictionError: an override names an unknown label or is outside [0, 1],
                or (unless ``missing_ok``) a label has neither an override nor a model
                operating point.
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.labels))
        if unknown:
            raise CxrPredictionError(
                f"threshold override for unknown label(s) {unknown}; labels: {self.labels}"
            )
        points = {op.label: op for op in self.metadata.operating_points}
        applied: list[AppliedThreshold] = []
        for label in self.labels:
            if label in overrides:
                value = float(overrides[label])
                if not 0.0 <= value <= 1.0:
                    raise CxrPredictionError(
                        f"threshold override {label}={value} is outside [0, 1]"
                    )
                applied.append(
                    AppliedThreshold(
                        label=label, threshold=value, source="site", chosen_on="site configuration"
                    )
                )
            elif label in points:
                op = points[label]
                applied.append(
                    AppliedThreshold(
                        label=label,
                        threshold=op.threshold,
                        source="model",
                        chosen_on=f"{self.metadata.tag}: {op.chosen_on}",
                        sensitivity=op.sensitivity,
                        specificity=op.specificity,
                    )
                )
            elif not missing_ok:
                raise CxrPredictionError(f"{self.metadata.tag} has no operating point for {label}")
        return applied

    def findings(
        self, probabilities: np.ndarray, overrides: Mapping[str, float] | None = None
    ) -> list[Finding]:
        """Per-label findings for ONE image's probabilities ``[L]``."""
        probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if probs.shape[0] != len(self.labels):
            raise CxrPredictionError(
                f"expected {len(self.labels)} probabilities, got {probs.shape[0]}"
            )
        return [
            Finding(
                label=t.label,
                probability=float(p),
                positive=bool(p >= t.threshold),
                threshold=t,
            )
            for p, t in zip(probs, self.thresholds(overrides), strict=True)
        ]


def refused(ood_score: np.ndarray) -> np.ndarray:
    """Which images the out-of-distribution gate refuses (score above 1, or not finite)."""
    score = np.asarray(ood_score, dtype=np.float64)
    return np.asarray(~(score <= 1.0))


def upsample_cam(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsample of one raw map ``[h, w]`` to ``[height, width]`` (float32)."""
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def cam_peak(cam: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """Row and column of the hottest point of one map upsampled to ``[height, width]``."""
    up = upsample_cam(cam, height, width)
    row, col = np.unravel_index(int(np.argmax(up)), up.shape)
    return int(row), int(col)
