"""What one chest X-ray analysis returns, and where the results are kept.

Results live in the audit database (SQLite or PostgreSQL, table ``imaging_results``):
a new read is inserted in the transaction of the audit row of the request that made
it (:meth:`ResultStore.record` builds the row for
:attr:`serving.audit.records.AuditRecord.imaging_result`), so a read exists exactly
when its audit row does, on every worker and replica that shares the database.

Every read carries the tenant of the caller that made it, and every lookup by a caller
names that tenant: patient ids and DICOM instances are unique only within one EHR or
PACS, and another tenant's read must look the same as no read (404, no card). Links
opened from cards (the heatmap and the explanation page) are signed for one result id
(:mod:`serving.ui.links`), minted only after such a scoped lookup; they are looked up
by id alone (:meth:`ResultStore.by_link`).

Stored layout ``FORMAT`` 4: ``result`` is the :class:`CxrResult` JSON, ``heatmap`` is
:meth:`serving.imaging.heatmap.HeatmapSource.encode` in format 3's layout without a
display copy (the analysed image and every label's map: what the card, heatmap and
explanation need), and the reader's copy of the original (its own values, uint16,
:func:`~serving.imaging.heatmap.pack_pixels`) is a row of ``imaging_pixels`` inserted in
the same transaction. That row is not part of the record: a site keeps it
``TONLE_IMAGING_PIXELS_DAYS`` (:mod:`serving.audit.pixels`), after which the reader shows
the analysed image and says the copy is gone (:class:`CopyRemoved`). Format 3 rows (the
copy inside ``heatmap``, kept for ever: the table is append-only), format 2 rows (the
copy as an 8-bit PNG) and format 1 rows (one map, no copy) are still read and shown as
they were stored; a newer format is refused (503). The overlay PNG is drawn on each GET.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, Select, select
from sqlalchemy.exc import SQLAlchemyError

from serving.audit import schema
from serving.audit.engine import READ_ONLY
from serving.audit.records import ImagingResultRecord
from serving.audit.store import AuditUnavailable
from serving.audit.tables import utc
from serving.imaging.heatmap import HeatmapSource, pack_pixels, unpack_pixels
from serving.monitor.drift import FeatureBins

__all__ = [
    "ADVISORY",
    "FORMAT",
    "READABLE",
    "Analysed",
    "CopyRemoved",
    "CxrFinding",
    "CxrResult",
    "ModelIdentity",
    "ResultStore",
    "StoredResult",
    "StudyRef",
    "Timings",
    "tenant_key",
]

logger = logging.getLogger(__name__)

ADVISORY = (
    "AI generated, unverified: advisory chest X-ray triage to support, not replace, a "
    "clinician's reading."
)
FORMAT = 4  # the layout of the stored ``result`` and ``heatmap`` columns (see above)
READABLE = frozenset({1, 2, 3, 4})  # the formats this version reads
_COPY_APART = 4  # the first format keeping the reader's copy in ``imaging_pixels``


class CopyRemoved(LookupError):
    """A read's reader copy was emptied by the site's retention (the read stays).

    Attributes:
        removed: when it was emptied (UTC).
    """

    def __init__(self, result_id: str, removed: datetime) -> None:
        super().__init__(result_id)
        self.removed = removed


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CxrFinding(_Frozen):
    """One label's score and whether it crossed its operating point."""

    label: str = Field(description="'abnormal', 'tb', 'nodule', 'consolidation' or 'effusion'.")
    probability: float = Field(ge=0.0, le=1.0, description="Model probability, 0-1.")
    threshold: float = Field(ge=0.0, le=1.0, description="Operating point applied.")
    threshold_source: Literal["model-version", "site-override"] = Field(
        description="Whether the threshold is the model version's default or a site's."
    )
    threshold_chosen_on: str = Field(description="How that threshold was chosen.")
    flagged: bool = Field(description="probability >= threshold.")
    sensitivity: float | None = Field(
        default=None, description="Validation sensitivity at the model-version threshold."
    )
    specificity: float | None = Field(
        default=None, description="Validation specificity at the model-version threshold."
    )


class ModelIdentity(_Frozen):
    """Which artifact produced a result."""

    name: str
    version: str
    sha256: str


class StudyRef(_Frozen):
    """DICOM identity of the analysed image (UIDs are not PHI on their own)."""

    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    accession: str | None = None
    study_date: str | None = Field(default=None, description="DICOM StudyDate, YYYYMMDD.")
    study_time: str | None = Field(default=None, description="DICOM StudyTime, HHMMSS.")
    view: str | None = Field(default=None, description="DICOM ViewPosition: PA, AP, ...")
    laterality: str | None = Field(default=None, description="DICOM ImageLaterality.")
    orientation: tuple[str, str] | None = Field(
        default=None, description="DICOM PatientOrientation (row, column directions)."
    )


class Timings(_Frozen):
    """Milliseconds spent in each stage of the analysis."""

    decode_ms: float = 0.0
    decode_cpu_ms: float = Field(
        default=0.0,
        description="CPU time the analysing thread spent in the decode (at most decode_ms): "
        "what the decode cost as served, beside other requests on the same cores; 0 for "
        "reads stored before it was recorded.",
    )
    quality_ms: float = 0.0
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    heatmap_ms: float = 0.0
    display_ms: float = Field(
        default=0.0,
        description="Kept for reads stored before the reader's copy and the DICOM display "
        "facts came out of the decode (both are in decode_ms now): 0 for new reads.",
    )
    total_ms: float = 0.0
    store_ms: float = Field(
        default=0.0,
        description="Committing the read with its audit row (after total; 0 when read back).",
    )
    model_batch: int = Field(
        default=1, ge=1, description="Images in the model call this read shared (batching)."
    )


class CxrResult(_Frozen):
    """An advisory chest X-ray read, as returned by ``POST /v1/imaging/cxr``."""

    id: str = Field(description="Result id (32 hex digits).")
    assessable: Literal[True] = True
    advisory: str = ADVISORY
    created: datetime
    model: ModelIdentity
    findings: list[CxrFinding]
    flagged: list[str] = Field(description="Labels at or above their threshold.")
    heatmap_label: str = Field(description="Label whose activation map the heatmap shows.")
    heatmap_url: str = Field(description="Relative URL of the overlay PNG.")
    site: str
    patient_ref: str | None = Field(
        default=None, description="Patient id the image belongs to (DICOM PatientID or given)."
    )
    study: StudyRef = Field(default_factory=StudyRef)
    input_sha256: str
    timings: Timings = Field(default_factory=Timings)

    def probability(self, label: str) -> float:
        """The probability for ``label``.

        Raises:
            KeyError: the model has no such label.
        """
        for finding in self.findings:
            if finding.label == label:
                return finding.probability
        raise KeyError(label)


@dataclass(frozen=True)
class Analysed:
    """A new read and what its heatmap is drawn from, not yet stored.

    ``monitored``: the read's image statistics and scores for drift monitoring
    (:mod:`models.cxr_drift`; empty when the model records no reference), and
    ``reference``: the model's drift reference they are binned against. Counted, by
    bin, when the read is committed; never stored.
    """

    result: CxrResult
    heatmap: HeatmapSource
    monitored: dict[str, float] = field(default_factory=dict)
    reference: Mapping[str, FeatureBins] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredResult:
    """A stored read and the tenant of the caller that made it ("" for none)."""

    tenant: str
    result: CxrResult


def tenant_key(tenant: str | None) -> str:
    """The tenant a read is stored under: callers without a tenant share ``""``."""
    return tenant or ""


class ResultStore:
    """The chest X-ray reads in the audit database.

    Writes go with an audit row (:meth:`record`); reads are scoped to a tenant except
    :meth:`by_link`. Database failures raise
    :class:`~serving.audit.store.AuditUnavailable` (answer 503).

    Args:
        engine: the audit store's engine.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def record(analysed: Analysed, tenant: str | None) -> ImagingResultRecord:
        """The row that stores ``analysed`` for ``tenant``, to commit with its audit row."""
        result, source = analysed.result, analysed.heatmap
        old = source.stored_format == 2  # a format-2 source (tests of old rows): as it was
        copy = None if old else pack_pixels(source.pixels) or None
        return ImagingResultRecord(
            result_id=result.id,
            tenant=tenant_key(tenant),
            patient_ref=result.patient_ref,
            sop_instance_uid=result.study.sop_instance_uid,
            created=result.created,
            format=2 if old else FORMAT,
            result=result.model_dump_json(),
            heatmap=(source if old else replace(source, pixels=None)).encode(),
            pixels=copy,
        )

    def get(self, result_id: str, *, tenant: str | None) -> CxrResult:
        """The read ``result_id`` if ``tenant`` made it.

        Raises:
            KeyError: no such read for this tenant.
        """
        table = schema.imaging_results
        found = self._one(
            _reads().where(table.c.result_id == result_id, table.c.tenant == tenant_key(tenant))
        )
        if found is None:
            raise KeyError(result_id)
        return found.result

    def by_link(self, result_id: str) -> StoredResult:
        """The read ``result_id`` for a signed link, which names it alone.

        Raises:
            KeyError: no such read.
        """
        found = self._one(_reads().where(schema.imaging_results.c.result_id == result_id))
        if found is None:
            raise KeyError(result_id)
        return found

    def for_instance(self, sop_instance_uid: str, *, tenant: str | None) -> CxrResult | None:
        """The latest read of a DICOM instance by ``tenant``, if it was analysed."""
        table = schema.imaging_results
        query = _reads().where(
            table.c.tenant == tenant_key(tenant), table.c.sop_instance_uid == sop_instance_uid
        )
        found = self._one(query.order_by(table.c.created.desc()).limit(1))
        return None if found is None else found.result

    def for_patient(
        self, patient_ref: str, *, tenant: str | None, since: datetime | None = None
    ) -> list[CxrResult]:
        """``tenant``'s reads for a patient, newest first (made at or after ``since``)."""
        table = schema.imaging_results
        query = _reads().where(
            table.c.tenant == tenant_key(tenant), table.c.patient_ref == patient_ref
        )
        if since is not None:
            query = query.where(table.c.created >= since.astimezone(UTC))
        return [found.result for found in self._all(query.order_by(table.c.created.desc()))]

    def latest_for_patient(
        self, patient_ref: str, since: datetime, *, tenant: str | None
    ) -> CxrResult | None:
        """``tenant``'s newest read for a patient made at or after ``since``, if any."""
        table = schema.imaging_results
        query = _reads().where(
            table.c.tenant == tenant_key(tenant),
            table.c.patient_ref == patient_ref,
            table.c.created >= since.astimezone(UTC),
        )
        found = self._one(query.order_by(table.c.created.desc()).limit(1))
        return None if found is None else found.result

    def heatmap(self, result_id: str) -> bytes:
        """The overlay PNG of a read already found by a scoped or linked lookup.

        Raises:
            KeyError: no such read.
        """
        return self.source(result_id).overlay_png()

    def image(self, result_id: str) -> bytes:
        """The display copy of a read's original (8-bit grey PNG, long side <= 1024; a
        format-3 or 4 read's values drawn at their default window).

        Reads stored in format 1 kept none, and retention may have emptied a format-4
        read's: their analysed image (model input size).

        Raises:
            KeyError: no such read.
        """
        return self.source(result_id).display_png()

    def pixels(self, result_id: str) -> bytes:
        """A format-3 or 4 read's display values for the reader (gzip of uint16 rows).

        Raises:
            KeyError: no such read, or one that kept no values (before format 3, or
                ``display_short_side`` 0).
            CopyRemoved: the site's retention emptied them.
        """
        source, removed = self.kept_source(result_id)
        data = source.pixels_gzip()
        if data is not None:
            return data
        if removed is not None:
            raise CopyRemoved(result_id, removed)
        raise KeyError(result_id)

    def source(self, result_id: str) -> HeatmapSource:
        """What a read's images and per-label maps are drawn from.

        Raises:
            KeyError: no such read.
        """
        return self.kept_source(result_id)[0]

    def kept_source(self, result_id: str) -> tuple[HeatmapSource, datetime | None]:
        """:meth:`source`, and when retention emptied its reader's copy (None: kept, or
        none was), in one query.

        Raises:
            KeyError: no such read.
        """
        reads, copies = schema.imaging_results, schema.imaging_pixels
        query = (
            select(reads.c.format, reads.c.heatmap, copies.c.data, copies.c.removed)
            .select_from(reads.outerjoin(copies, copies.c.result_id == reads.c.result_id))
            .where(reads.c.result_id == result_id)
        )
        found = self._run(lambda c: c.execute(query).one_or_none())
        if found is None:
            raise KeyError(result_id)
        _check_format(found.format)
        removed = None if found.removed is None else utc(found.removed)
        if found.format < _COPY_APART:
            return HeatmapSource.decode(found.heatmap, found.format), removed
        source = HeatmapSource.decode(found.heatmap, 3)  # format 3's layout, no copy inside
        return replace(source, pixels=unpack_pixels(found.data or b"")), removed

    def _one(self, query: Select[Any]) -> StoredResult | None:
        found = self._all(query)
        return found[0] if found else None

    def _all(self, query: Select[Any]) -> list[StoredResult]:
        rows = self._run(lambda c: c.execute(query).all())
        return [_decoded(row) for row in rows]

    def _run(self, work: Callable[[Any], Any]) -> Any:
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**{READ_ONLY: True})
                with connection.begin():
                    return work(connection)
        except SQLAlchemyError as exc:
            logger.error("imaging results database error: %s", type(exc).__name__)
            raise AuditUnavailable(f"audit database unavailable: {type(exc).__name__}") from exc


def _reads() -> Select[Any]:
    table = schema.imaging_results
    return select(table.c.tenant, table.c.format, table.c.result)


def _check_format(found: int) -> None:
    if found not in READABLE:  # written by a newer version (a rolling upgrade): not ours
        raise AuditUnavailable(
            f"imaging result stored in format {found}; this version reads {sorted(READABLE)}"
        )


def _decoded(row: Any) -> StoredResult:
    _check_format(row.format)
    return StoredResult(row.tenant, CxrResult.model_validate_json(row.result))


def now() -> datetime:
    """The current UTC time (one place, so tests can reason about it)."""
    return datetime.now(UTC)
