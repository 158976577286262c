"""The chest X-ray reads of a period, streamed from the audit database.

Reads are stored in table ``imaging_results`` (:mod:`serving.imaging.results`), each in
the transaction of the audit row that answered with it. Monitoring reads them all, of
every tenant, in one pass over the period: the operator's view, never a caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from models.cxr_drift import score_name
from serving.audit import schema
from serving.audit.engine import READ_ONLY
from serving.imaging.results import FORMAT, CxrResult, StoredResult
from serving.monitor.drift import FeatureBins, bin_of, psi

__all__ = ["ScoreDrift", "findings", "iter_reads", "read_of_request", "stored_reference"]

_BATCH = 500


def iter_reads(
    engine: Engine, since: datetime, until: datetime | None = None
) -> Iterator[StoredResult]:
    """Every read made in ``[since, until)``, oldest first, with the tenant that made it.

    Reads stored in a layout this version does not know (a newer version during a
    rolling upgrade) are skipped, not guessed at.
    """
    table = schema.imaging_results
    query = select(table.c.tenant, table.c.format, table.c.result).where(
        table.c.created >= since.astimezone(UTC)
    )
    if until is not None:
        query = query.where(table.c.created < until.astimezone(UTC))
    query = query.order_by(table.c.created, table.c.result_id)
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            result = connection.execution_options(yield_per=_BATCH).execute(query)
            for row in result:
                if row.format == FORMAT:
                    yield StoredResult(row.tenant, CxrResult.model_validate_json(row.result))


def findings(reads: Iterator[StoredResult]) -> Iterator[tuple[str, bool]]:
    """``(label, flagged)`` for every finding of every read."""
    for stored in reads:
        yield from ((f.label, f.flagged) for f in stored.result.findings)


def read_of_request(engine: Engine, request_id: str) -> CxrResult | None:
    """The read a request made (stored with its audit row), if it made one."""
    table = schema.imaging_results
    query = select(table.c.format, table.c.result).where(table.c.request_id == request_id)
    with engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            found = connection.execute(query).first()
    if found is None or found.format != FORMAT:
        return None
    return CxrResult.model_validate_json(found.result)


ReferenceOf = Callable[[str, str, str], Mapping[str, FeatureBins] | None]


def stored_reference(name: str, version: str, sha256: str) -> dict[str, FeatureBins] | None:
    """The drift reference of artifact ``name:version`` in the local model store, if it
    is there and is the artifact with identity ``sha256`` (None otherwise)."""
    from models import registry

    try:
        found = [m for m in registry.list_models(name) if m.version == version]
    except Exception:  # bentoml raises NotFound for a name never stored
        return None
    if len(found) != 1 or found[0].sha256 != sha256:
        return None
    details = found[0].extra
    return dict(details.training_distribution) if details is not None else {}


class ScoreDrift:
    """PSI of a period's calibrated scores, per model version and label, against the
    reference its artifact records (``score:<label>``, :mod:`models.cxr_drift`).

    The reads keep their scores, not the image statistics: image drift is watched live
    (``tonle_cxr_feature_psi``); the report shows the scores' over the whole period.
    """

    def __init__(self, reference_of: ReferenceOf = stored_reference) -> None:
        self._reference_of = reference_of
        self._references: dict[tuple[str, str, str], Mapping[str, FeatureBins]] = {}
        self._counts: dict[tuple[str, str], tuple[FeatureBins, list[float]]] = {}
        self.unreferenced: set[str] = set()  # model versions without a reference here

    def watch(self, reads: Iterator[StoredResult]) -> Iterator[StoredResult]:
        """``reads`` unchanged, each counted on the way (one pass over the database)."""
        for stored in reads:
            self.count(stored.result)
            yield stored

    def count(self, result: CxrResult) -> None:
        """Count the bin of each score of one read."""
        model = result.model
        key = (model.name, model.version, model.sha256)
        reference = self._references.get(key)
        if reference is None:
            reference = self._references[key] = self._reference_of(*key) or {}
        tag = f"{model.name}:{model.version}"
        if not reference:
            self.unreferenced.add(tag)
            return
        for finding in result.findings:
            bins = reference.get(score_name(finding.label))
            if bins is not None:
                counts = self._counts.setdefault(
                    (tag, finding.label), (bins, [0.0] * len(bins.proportions))
                )[1]
                counts[bin_of(finding.probability, bins)] += 1

    def rows(self) -> list[tuple[str, str, int, float]]:
        """(model version, label, reads, PSI), sorted."""
        out = []
        for (tag, label), (bins, counts) in sorted(self._counts.items()):
            value = psi(bins.proportions, counts)
            if value is not None:
                out.append((tag, label, int(sum(counts)), value))
        return out
