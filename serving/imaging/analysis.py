"""One chest X-ray through the pipeline: decode, quality gate, preprocess, model, heatmap.

The steps are split so that the HTTP route can run the CPU-bound parts in a worker
thread and send the model call through the adaptive batcher (:mod:`serving.imaging.batching`):
:meth:`CxrAnalyser.prepare` (decode + quality gate + preprocessing),
a model call on the ``[N, 1, S, S]`` batch, then :meth:`CxrAnalyser.finish`
(thresholds, heatmap source). :meth:`CxrAnalyser.analyse` does all three in line. Nothing
is stored here: the route commits the read with its audit row
(:mod:`serving.imaging.results`).

Decoding, the quality gate and preprocessing are the ones training uses
(``models.cxr_preprocess``, ``models.cxr_quality``): train/serve skew is a defect.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.cxr_drift import image_statistics, score_values
from models.cxr_predictor import OOD_DETAIL, OOD_REASON
from models.cxr_preprocess.display import DisplayValues
from models.registry import StoredModel
from models.site_threshold import load_record
from serving.imaging.config import ImagingConfig
from serving.imaging.heatmap import HeatmapSource
from serving.imaging.results import (
    ADVISORY,
    Analysed,
    CxrFinding,
    CxrResult,
    ModelIdentity,
    StudyRef,
    Timings,
    now,
)
from serving.monitor.drift import FeatureBins
from serving.synthetic import advisory_for

__all__ = [
    "AppliedThreshold",
    "CannotAssess",
    "CxrAnalyser",
    "CxrModelRunner",
    "Prepared",
    "model_labels",
]

logger = logging.getLogger(__name__)

DICOM_TYPES = frozenset({"application/dicom"})
PNG_TYPES = frozenset({"image/png"})
# Reason codes that mean "we could not read it" rather than "not what the model is for".
_UNSUPPORTED = {"no-decoder": 415, "too-large": 413}


class CannotAssess(Exception):
    """The image cannot be assessed; carries a machine-readable reason code.

    Attributes:
        reason: code such as ``not-chest``, ``lateral-view``, ``unreadable``.
        detail: plain-words explanation without PHI.
        status: HTTP status to answer with (4xx).
    """

    def __init__(self, reason: str, detail: str, status: int = 422) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status


class CxrModelRunner(Protocol):
    """Runs the CXR network on a batch: ``[N,1,S,S]`` -> (probabilities ``[N,L]``, cams)."""

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class AppliedThreshold:
    """The threshold used for one label and where it came from."""

    label: str
    threshold: float
    source: str
    chosen_on: str
    sensitivity: float | None = None
    specificity: float | None = None


@dataclass
class Prepared:
    """An image that passed the quality gate, ready for the model."""

    model_input: np.ndarray  # [1, S, S] float32
    input_sha256: str
    patient_ref: str | None
    study: StudyRef
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    display: DisplayValues | None = None  # the reader's copy of the original's values
    monitored: dict[str, float] = field(default_factory=dict)  # models.cxr_drift statistics


def model_labels(stored: StoredModel) -> list[str]:
    """The label order of the ``logits`` output, from the artifact's metadata."""
    return list(stored.metadata.cxr.labels)


def _preprocess_module() -> Any:
    import models.cxr_preprocess as preprocess

    return preprocess


def _quality_module() -> Any:
    import models.cxr_quality as quality

    return quality


class CxrAnalyser:
    """Analyses chest X-rays with one verified model."""

    def __init__(
        self,
        stored: StoredModel,
        runner: CxrModelRunner,
        config: ImagingConfig,
        site: str = "default",
    ) -> None:
        if stored.metadata.task != "cxr-triage":
            raise ValueError(f"{stored.metadata.tag} is a {stored.metadata.task!r} model")
        if stored.metadata.image is None:
            raise ValueError(f"{stored.metadata.tag} has no image input contract")
        self.stored = stored
        self.runner = runner
        self.config = config
        self.site = site
        self.size = stored.metadata.image.size
        self.labels = model_labels(stored)
        self.identity = ModelIdentity(
            name=stored.metadata.name,
            version=stored.metadata.version,
            sha256=stored.metadata.sha256,
        )
        self.thresholds = self._thresholds()
        # The drift reference the artifact records ({}: nothing is computed or counted).
        self.reference: dict[str, FeatureBins] = dict(stored.metadata.cxr.training_distribution)

    def _thresholds(self) -> dict[str, AppliedThreshold]:
        applied: dict[str, AppliedThreshold] = {}
        for point in self.stored.metadata.operating_points:
            applied[point.label] = AppliedThreshold(
                label=point.label,
                threshold=point.threshold,
                source="model-version",
                chosen_on=f"{self.stored.metadata.tag}: {point.chosen_on}",
                sensitivity=point.sensitivity,
                specificity=point.specificity,
            )
        site = self.config.sites.get(self.site)
        for path in site.records if site is not None else []:
            record, digest = load_record(path)
            meta = self.stored.metadata
            try:
                record.check(
                    site=self.site, name=meta.name, version=meta.version, sha256=meta.sha256
                )
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if record.label not in self.labels:
                raise ValueError(
                    f"threshold record {path} is for label {record.label!r}; "
                    f"the model's labels are {self.labels}"
                )
            earlier = applied.get(record.label)
            if earlier is not None and earlier.source == "site-override":
                raise ValueError(f"two threshold records for label {record.label!r}")
            applied[record.label] = AppliedThreshold(
                label=record.label,
                threshold=record.threshold,
                source="site-override",
                chosen_on=record.source_text(digest),
            )
        missing = [label for label in self.labels if label not in applied]
        if missing:
            raise ValueError(
                f"{self.stored.metadata.tag} has no operating point for {missing}; "
                "set them in the model metadata or imaging.sites in the serving config"
            )
        return applied

    def prepare(self, data: bytes, content_type: str, patient_ref: str | None = None) -> Prepared:
        """Decode, check and preprocess one image.

        Raises:
            CannotAssess: unsupported type, unreadable bytes or a failed quality gate.
        """
        started = time.perf_counter()
        media = content_type.split(";", 1)[0].strip().lower()
        if len(data) > self.config.max_body_bytes:
            raise CannotAssess("too-large", "the image is larger than allowed", status=413)
        if media not in DICOM_TYPES | PNG_TYPES:
            raise CannotAssess(
                "unsupported-media-type",
                f"content type {media[:64]!r} is not application/dicom or image/png",
                status=415,
            )
        preprocess = _preprocess_module()
        decode = preprocess.decode_dicom if media in DICOM_TYPES else preprocess.decode_png
        cpu_started = time.thread_time()
        try:
            # The reader's copy comes out of this one decode (display_size).
            decoded = decode(
                data,
                max_pixels=self.config.max_pixels,
                target_size=self.size,
                display_size=self.config.display_short_side,
            )
        except CannotAssess:
            raise
        except Exception as exc:  # every decoder failure is a 4xx with a reason
            reason = str(getattr(exc, "reason", "") or "unreadable")
            detail = str(getattr(exc, "detail", "") or "the image could not be decoded")
            raise CannotAssess(reason, detail, _UNSUPPORTED.get(reason, 422)) from exc
        t_decode = time.perf_counter()
        decode_cpu = time.thread_time() - cpu_started
        quality = _quality_module().assess(decoded, min_side=self.size)
        t_quality = time.perf_counter()
        if not quality.ok:
            reason = str(quality.reason or "out-of-distribution")
            raise CannotAssess(reason, str(quality.detail), _UNSUPPORTED.get(reason, 422))
        model_input = np.ascontiguousarray(
            preprocess.to_model_input(decoded, size=self.size), dtype=np.float32
        )
        if model_input.shape != (1, self.size, self.size) or not np.isfinite(model_input).all():
            raise CannotAssess("unreadable", "preprocessing produced an invalid image")
        monitored = image_statistics(model_input, decoded) if self.reference else {}
        t_pre = time.perf_counter()
        return Prepared(
            model_input=model_input,
            input_sha256=hashlib.sha256(model_input.tobytes()).hexdigest(),
            patient_ref=patient_ref or decoded.patient_id,
            study=StudyRef(
                study_uid=decoded.study_uid,
                series_uid=decoded.series_uid,
                sop_instance_uid=decoded.sop_instance_uid,
                accession=decoded.accession,
                study_date=decoded.study_date,
                view=decoded.view,
                study_time=decoded.study_time,
                laterality=decoded.laterality,
                orientation=decoded.orientation,
            ),
            timings={
                "decode_ms": (t_decode - started) * 1000,
                "decode_cpu_ms": decode_cpu * 1000,
                "quality_ms": (t_quality - t_decode) * 1000,
                "preprocess_ms": (t_pre - t_quality) * 1000,
            },
            started=started,
            display=decoded.display,
            monitored=monitored,
        )

    def finish(
        self,
        prepared: Prepared,
        probs: np.ndarray,
        cam: np.ndarray,
        model_ms: float,
        model_batch: int = 1,
    ) -> Analysed:
        """Apply thresholds; the read and what its heatmap is drawn from, not stored.

        Args:
            prepared: the output of :meth:`prepare`.
            probs: ``[L]`` probabilities for :attr:`labels`.
            cam: ``[L, h, w]`` raw activation maps.
            model_ms: time the model call took.
            model_batch: images in that model call (adaptive batching).

        Raises:
            CannotAssess: the model's out-of-distribution gate refused the image
                (all-NaN outputs, ``out-of-distribution``), or it returned non-finite or
                out-of-range values.
        """
        if probs.shape != (len(self.labels),) or cam.ndim != 3 or cam.shape[0] != len(self.labels):
            raise CannotAssess("model-error", "the model returned outputs of the wrong shape", 503)
        if np.isnan(probs).all() and np.isnan(cam).all():  # the model's own OOD gate
            raise CannotAssess(OOD_REASON, OOD_DETAIL)
        if not (np.isfinite(probs).all() and np.isfinite(cam).all()):
            raise CannotAssess("model-error", "the model returned non-finite values", 503)
        if ((probs < 0) | (probs > 1)).any():
            raise CannotAssess("model-error", "the model returned probabilities outside 0-1", 503)
        t0 = time.perf_counter()
        findings: list[CxrFinding] = []
        for index, label in enumerate(self.labels):
            applied = self.thresholds[label]
            probability = float(probs[index])
            findings.append(
                CxrFinding(
                    label=label,
                    probability=probability,
                    threshold=applied.threshold,
                    threshold_source=applied.source,  # type: ignore[arg-type]
                    threshold_chosen_on=applied.chosen_on,
                    flagged=probability >= applied.threshold,
                    sensitivity=applied.sensitivity,
                    specificity=applied.specificity,
                )
            )
        flagged = [f.label for f in findings if f.flagged]
        heat_label = self._heatmap_label(findings)
        result_id = uuid.uuid4().hex
        # The PNGs are drawn when they are asked for (serving.imaging.heatmap).
        heatmap = HeatmapSource.of(
            prepared.model_input[0],
            cam[self.labels.index(heat_label)],
            labels=tuple(self.labels),
            cams=cam,
            pixels=prepared.display,
        )
        t_heat = time.perf_counter()
        timings = Timings(
            **prepared.timings,
            model_ms=model_ms,
            model_batch=model_batch,
            heatmap_ms=(t_heat - t0) * 1000,
            total_ms=(t_heat - prepared.started) * 1000,
        )
        result = CxrResult(
            id=result_id,
            created=now(),
            # With the demo note first for a synthetic-trained model (SR, SC, REST, FHIR).
            advisory=advisory_for(self.stored.metadata, ADVISORY),
            model=self.identity,
            findings=findings,
            flagged=flagged,
            heatmap_label=heat_label,
            heatmap_url=f"/v1/imaging/results/{result_id}/heatmap.png",
            site=self.site,
            patient_ref=prepared.patient_ref,
            study=prepared.study,
            input_sha256=prepared.input_sha256,
            timings=timings,
        )
        scores = score_values(self.labels, probs.tolist()) if self.reference else {}
        return Analysed(result, heatmap, {**prepared.monitored, **scores}, self.reference)

    def _heatmap_label(self, findings: list[CxrFinding]) -> str:
        """The flagged finding with the highest (calibrated) probability, else 'abnormal'.

        Not the probability-to-threshold ratio: a finding with a low threshold (nodule,
        0.03) beat a far likelier one (TB 0.89 at 0.78) and the heatmap showed the nodule.
        """
        specific = [f for f in findings if f.flagged and f.label != "abnormal"]
        if specific:
            return max(specific, key=lambda f: f.probability).label
        return "abnormal" if "abnormal" in self.labels else self.labels[0]

    def predict_one(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray, float]:
        """The model call for one prepared image, in line (no batching)."""
        t0 = time.perf_counter()
        try:
            probs, cams = self.runner.predict(prepared.model_input[None, ...])
        except Exception as exc:  # fail closed: no advice, a reason, never a guess
            raise CannotAssess("model-error", "the model call failed", 503) from exc
        return probs[0], cams[0], (time.perf_counter() - t0) * 1000

    def analyse(self, data: bytes, content_type: str, patient_ref: str | None = None) -> Analysed:
        """The whole pipeline for one image, in the calling thread.

        Raises:
            CannotAssess: see :meth:`prepare` and :meth:`finish`.
        """
        prepared = self.prepare(data, content_type, patient_ref)
        probs, cam, model_ms = self.predict_one(prepared)
        return self.finish(prepared, probs, cam, model_ms)
