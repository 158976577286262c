"""What one chest X-ray analysis returns, and where the results are kept.

Results are files under ``imaging.results_dir`` (one folder per result id, written
atomically), plus a per-patient index keyed by a hash of the patient identifier so
that no identifier appears in a file name. The result JSON itself holds the patient
reference because the CDS Hooks service must answer by patient.

Durability: the audit row (committed with fsync before any answer) is the record of
what was advised. Result files are written atomically (temp file + rename) but not
fsynced: three fsyncs cost ~20 ms per request here, a third of the latency budget.
After a power loss a result may be missing or unreadable; it then reads as "no
result" (no card, 404), never as a wrong one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.imaging.heatmap import HeatmapSource

__all__ = [
    "ADVISORY",
    "CxrFinding",
    "CxrResult",
    "ModelIdentity",
    "ResultStore",
    "StudyRef",
    "Timings",
]

ADVISORY = (
    "AI generated, unverified: advisory chest X-ray triage to support, not replace, a "
    "clinician's reading."
)
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_SOURCE = "heatmap-source.npz"  # what heatmap.png and image.png are drawn from


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


class Timings(_Frozen):
    """Milliseconds spent in each stage of the analysis."""

    decode_ms: float = 0.0
    quality_ms: float = 0.0
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    heatmap_ms: float = 0.0
    total_ms: float = 0.0
    store_ms: float = Field(default=0.0, description="Writing the result files (after total).")
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


def patient_key(identifier: str) -> str:
    """A file-name-safe hash of an identifier (never the identifier itself)."""
    return hashlib.sha256(identifier.encode("utf-8")).hexdigest()


class ResultStore:
    """Results and heatmaps as files; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "results").mkdir(parents=True, exist_ok=True)
        (root / "patients").mkdir(parents=True, exist_ok=True)
        (root / "instances").mkdir(parents=True, exist_ok=True)

    def _folder(self, result_id: str) -> Path:
        if not _RESULT_ID.match(result_id):
            raise KeyError(result_id)
        return self.root / "results" / result_id

    def save(
        self, result: CxrResult, heatmap: bytes | HeatmapSource, image_png: bytes | None = None
    ) -> None:
        """Store a result, its heatmap (and plain image), and index it.

        ``heatmap`` is the overlay PNG, or the :class:`HeatmapSource` both PNGs are
        drawn from on first read (the analysis stores that: it saves ~5 ms a request).
        """
        folder = self._folder(result.id)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(heatmap, HeatmapSource):
            _atomic_write(folder / _SOURCE, heatmap.encode())
        else:
            _atomic_write(folder / "heatmap.png", heatmap)
        if image_png is not None:
            _atomic_write(folder / "image.png", image_png)
        _atomic_write(folder / "result.json", result.model_dump_json().encode("utf-8"))
        if result.study.sop_instance_uid:
            key = patient_key(result.study.sop_instance_uid)
            _atomic_write(self.root / "instances" / key, result.id.encode("ascii"))
        if result.patient_ref:
            index = self.root / "patients" / patient_key(result.patient_ref)
            index.mkdir(exist_ok=True)
            stamp = result.created.strftime("%Y%m%dT%H%M%S%fZ")
            _atomic_write(index / f"{stamp}-{result.id}", b"")

    def get(self, result_id: str) -> CxrResult:
        """The stored result.

        Raises:
            KeyError: no result with that id.
        """
        path = self._folder(result_id) / "result.json"
        try:
            return CxrResult.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValueError) as exc:  # missing, or torn by a power loss
            raise KeyError(result_id) from exc

    def delete(self, result_id: str) -> None:
        """Remove a result (its files; index entries then read as missing)."""
        folder = self._folder(result_id)
        for name in ("result.json", "heatmap.png", "image.png", _SOURCE):
            (folder / name).unlink(missing_ok=True)

    def image(self, result_id: str) -> bytes:
        """The plain analysed image (model input size) of a stored result.

        Raises:
            KeyError: no result, or it was stored without its image.
        """
        return self._png(result_id, "image.png", HeatmapSource.image_png)

    def for_instance(self, sop_instance_uid: str) -> CxrResult | None:
        """The latest stored result for a DICOM instance, if it was analysed."""
        try:
            result_id = (self.root / "instances" / patient_key(sop_instance_uid)).read_text("ascii")
            return self.get(result_id.strip())
        except (FileNotFoundError, KeyError, ValueError):
            return None

    def heatmap(self, result_id: str) -> bytes:
        """The overlay PNG of a stored result.

        Raises:
            KeyError: no result with that id.
        """
        return self._png(result_id, "heatmap.png", HeatmapSource.overlay_png)

    def _png(self, result_id: str, name: str, draw: Callable[[HeatmapSource], bytes]) -> bytes:
        """A stored PNG, drawn from the stored :class:`HeatmapSource` (and kept) if needed."""
        folder = self._folder(result_id)
        try:
            return (folder / name).read_bytes()
        except FileNotFoundError:
            pass
        try:
            png = draw(HeatmapSource.decode((folder / _SOURCE).read_bytes()))
        except (FileNotFoundError, ValueError) as exc:  # missing, or torn by a power loss
            raise KeyError(result_id) from exc
        _atomic_write(folder / name, png)
        return png

    def for_patient(self, patient_ref: str) -> list[CxrResult]:
        """Every stored result for a patient, newest first."""
        index = self.root / "patients" / patient_key(patient_ref)
        if not index.is_dir():
            return []
        results: list[CxrResult] = []
        for entry in sorted(os.listdir(index), reverse=True):
            try:
                results.append(self.get(entry.rsplit("-", 1)[-1]))
            except KeyError:
                continue
        return results

    def latest_for_patient(self, patient_ref: str, since: datetime) -> CxrResult | None:
        """The newest result for a patient created at or after ``since``, if any."""
        for result in self.for_patient(patient_ref):
            if result.created >= since:
                return result
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def now() -> datetime:
    """The current UTC time (one place, so tests can reason about it)."""
    return datetime.now(UTC)


def dumps(result: CxrResult) -> str:
    """JSON text of a result."""
    return json.dumps(result.model_dump(mode="json"))
