"""Hand-made chest X-ray results, for tests of what is built from a result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select

from models.cxr_preprocess.display import DisplayValues
from serving.audit import AuditRecord, AuditStore, schema
from serving.http.audit import Exchange
from serving.http.caller import Caller
from serving.imaging.exchange import new_read
from serving.imaging.heatmap import HeatmapSource
from serving.imaging.results import (
    Analysed,
    CxrFinding,
    CxrResult,
    ModelIdentity,
    ResultStore,
    StudyRef,
)
from serving.imaging.state import ImagingState

LABELS = ["abnormal", "tb", "nodule", "consolidation", "effusion"]


def make_finding(label: str, probability: float, threshold: float) -> CxrFinding:
    """One label's score at a model-version threshold, flagged at or above it."""
    return CxrFinding(
        label=label,
        probability=probability,
        threshold=threshold,
        threshold_source="model-version",
        threshold_chosen_on="cxr-triage:1.0.0: validation, sensitivity >= 0.90",
        flagged=probability >= threshold,
        sensitivity=0.9,
        specificity=0.75,
    )


def make_result(
    patient: str | None = "PAT-001",
    probs: tuple[float, ...] = (0.92, 0.81, 0.10, 0.05, 0.30),
    threshold: float = 0.5,
    created: datetime | None = None,
    study_uid: str = "1.2.3.4",
    sop_instance_uid: str = "1.2.3.4.1.1",
) -> CxrResult:
    """A result with the given probabilities, all thresholds at ``threshold``."""
    result_id = uuid.uuid4().hex
    findings = [make_finding(label, p, threshold) for label, p in zip(LABELS, probs, strict=True)]
    return CxrResult(
        id=result_id,
        created=created or datetime.now(UTC),
        model=ModelIdentity(name="cxr-triage", version="1.0.0", sha256="ab" * 32),
        findings=findings,
        flagged=[f.label for f in findings if f.flagged],
        heatmap_label="tb",
        heatmap_url=f"/v1/imaging/results/{result_id}/heatmap.png",
        site="default",
        patient_ref=patient,
        study=StudyRef(
            study_uid=study_uid, series_uid="1.2.3.4.1", sop_instance_uid=sop_instance_uid
        ),
        input_sha256="cd" * 32,
    )


def heatmap_source() -> HeatmapSource:
    """A gradient image with a map hottest in the top-left corner."""
    image = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    cam = np.zeros((8, 8), np.float32)
    cam[0, 0] = 5.0
    return HeatmapSource.of(image, cam)


def with_copy(seed: int = 0) -> HeatmapSource:
    """A read's maps and a 300 x 250 reader's copy (uint16 values, as format 3 kept)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 60000, size=(300, 250)).astype(np.uint16)
    cams = rng.normal(size=(2, 8, 8)).astype(np.float32)
    image = rng.random((64, 64), dtype=np.float32)
    shown = DisplayValues(values, center=30000.0, width=20000.0)
    return HeatmapSource.of(image, cams[1], labels=("abnormal", "tb"), cams=cams, pixels=shown)


def commit_read(audit: AuditStore, read: Analysed, request_id: str | None = None) -> None:
    """Commit ``read`` for tenant ``a`` with an audit row, as the imaging route does."""
    audit.record(
        AuditRecord(
            request_id=request_id or uuid.uuid4().hex,
            service_id="imaging-cxr",
            outcome="advice",
            latency_ms=1.0,
            caller_tenant="a",
            imaging_result=ResultStore.record(read, "a"),
        )
    )


def heatmap_png() -> bytes:
    """The overlay drawn from :func:`heatmap_source`."""
    return heatmap_source().overlay_png()


def store_read(
    state: ImagingState,
    result: CxrResult,
    tenant: str | None = None,
    source: HeatmapSource | None = None,
) -> None:
    """Store ``result`` (its maps from ``source``) for ``tenant`` as the routes do: on
    the call's exchange, committed with its audit row."""
    caller = Caller(iss="api-key", sub="test", tenant=tenant, kind="api-key")
    exchange = Exchange("imaging-cxr", caller=caller)
    new_read(exchange, Analysed(result, source or heatmap_source()))
    state.audit.record(exchange.row("advice", None))


def stored_ids(audit: AuditStore) -> list[str]:
    """The ids of every read in the database, whoever made it."""
    with audit.engine.connect() as connection:
        table = schema.imaging_results
        return list(connection.execute(select(table.c.result_id)).scalars())
