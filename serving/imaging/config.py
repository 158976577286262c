"""The ``imaging:`` section of ``configs/serving.yaml``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DicomWebConfig", "ImagingConfig", "SiteThresholds"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteThresholds(_Strict):
    """A site's own operating points: the records of its local calibration studies.

    Each record (``tonle calibrate cxr ... --min-sensitivity`` or ``--budget`` writes
    one, :mod:`models.site_threshold`) holds one label's threshold, the study and rule
    it was chosen by, who chose it and when. The service refuses to start when a record
    was made for another site, model version or artifact sha256.
    """

    records: list[Path] = Field(
        min_length=1,
        description="Site threshold record files (JSON; relative to the working directory).",
    )


class DicomWebConfig(_Strict):
    """The PACS Tonle reads studies from and writes results back to."""

    base_url: str = Field(description="DICOMweb root, e.g. 'http://127.0.0.1:8042/dicom-web'.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per-request timeout, seconds.")
    write_back: bool = Field(default=True, description="STOW-RS the SR and heatmap back.")
    username: str | None = Field(default=None, description="HTTP basic auth user, if any.")
    password_env: str | None = Field(
        default=None, description="Environment variable holding the basic-auth password."
    )


class ImagingConfig(_Strict):
    """Which chest X-ray model serves, site thresholds, PACS and limits."""

    model: str = Field(
        default="cxr-triage", description="Model name; its version is pinned under 'models:'."
    )
    sites: dict[str, SiteThresholds] = Field(
        default_factory=dict, description="Site id (TONLE_SITE) -> its threshold records."
    )
    pacs: DicomWebConfig | None = Field(default=None, description="DICOMweb PACS, if any.")
    max_body_bytes: int = Field(
        default=64 * 1024**2, gt=0, description="Largest image body accepted, bytes."
    )
    max_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest Rows x Columns x frames decoded."
    )
    display_short_side: int = Field(
        default=512,
        ge=0,
        description="Short side (pixels) of the display copy kept for the X-ray reader: the "
        "original's own values (uint16) block-summed from the pixels the model's decode "
        "already holds, long side <= 1024 (a JPEG 2000 frame reduced below this is decoded "
        "once more at the level needed). 0: keep none; the reader shows the 8-bit "
        "analysed image (model input size).",
    )
    model_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "ONNX Runtime intra-op threads per worker; unset = all cores. Set cores / workers "
            "when running several BentoML workers (one thread costs ~10 % less CPU per image)."
        ),
    )
    adaptive_batching: bool = Field(
        default=True, description="Batch concurrent model calls (serving.imaging.batching)."
    )
    max_batch_size: int = Field(default=8, ge=1, le=64, description="Most images per model call.")
    max_latency_ms: int = Field(
        default=2000, ge=10, description="Longest wait + run for a model call before 503, ms."
    )
    recent_days: int = Field(
        default=90, gt=0, description="cxr-triage shows reads of studies this recent, days."
    )
