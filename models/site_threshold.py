"""A site threshold record: the threshold a site chose for one label of one model version.

``tonle calibrate cxr ... --min-sensitivity 0.9`` (or ``--budget``) writes it after a
local calibration study; serving loads it (``imaging.sites`` in the serving config),
refuses it at start-up when it was made for another site, model version or artifact
sha256, and names it as the threshold's source on every result. A threshold chosen for
one model version does not carry over to the next: recalibrate on every version change.

The record is JSON, parsed strictly (unknown keys, duplicate keys and NaN refused).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "RECORD_KIND",
    "RecordModel",
    "RecordRule",
    "RecordStudy",
    "SiteThresholdError",
    "SiteThresholdRecord",
    "load_record",
]

RECORD_KIND: Final = "tonle.site-threshold"
_MAX_RECORD_BYTES = 1024**2


class SiteThresholdError(ValueError):
    """A record that cannot be read, or does not fit the model and site it is used for."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordModel(_Strict):
    """The artifact the threshold was chosen for."""

    name: str = Field(min_length=1, description="Model name, e.g. 'cxr-triage'.")
    version: str = Field(min_length=1, description="Exact semantic version.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The artifact's sha256.")


class RecordRule(_Strict):
    """How the threshold was chosen."""

    kind: Literal["min-sensitivity", "budget"] = Field(
        description="'min-sensitivity': the highest threshold whose sensitivity lower 95 % "
        "bound meets the target; 'budget': the highest yield whose testing cost per 1,000 "
        "screened is within the target."
    )
    target: float = Field(ge=0, description="Sensitivity (0-1) or cost per 1,000 screened.")
    text: str = Field(min_length=1, description="The rule in words.")


class RecordStudy(_Strict):
    """The local study the threshold was chosen on."""

    file: str = Field(description="The study file's name (no directories).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The study file's sha256.")
    screened: int = Field(ge=1, description="People in the study.")
    with_reference: int = Field(ge=1, description="People with a reference result.")
    estimator: str = Field(
        description="'complete', 'ipw-fractions', 'ipw-weights' or 'verified-only' (biased)."
    )


class SiteThresholdRecord(_Strict):
    """One site's chosen threshold for one label of one model version."""

    kind: Literal["tonle.site-threshold"] = RECORD_KIND
    format_version: Literal[1] = 1
    site: str = Field(min_length=1, max_length=64, description="Site id (TONLE_SITE).")
    model: RecordModel
    label: str = Field(min_length=1, description="The model output it applies to, e.g. 'tb'.")
    threshold: float = Field(ge=0.0, le=1.0, description="Positive when score >= threshold.")
    rule: RecordRule
    numbers: dict[str, float | None] = Field(
        description="The study's thresholds.csv row at this threshold (null: undefined)."
    )
    study: RecordStudy
    chosen_by: str = Field(min_length=1, max_length=200, description="Who chose it.")
    chosen_at: datetime = Field(description="When (UTC).")

    def check(self, *, site: str, name: str, version: str, sha256: str) -> None:
        """Refuse the record unless it was made for this site and artifact.

        Raises:
            SiteThresholdError: another site, model, version or sha256.
        """
        mine = (self.site, self.model.name, self.model.version, self.model.sha256)
        for what, have, want in zip(
            ("site", "model", "model version", "model sha256"),
            mine,
            (site, name, version, sha256),
            strict=True,
        ):
            if have != want:
                raise SiteThresholdError(
                    f"threshold record for {what} {have!r} does not fit {want!r}: "
                    "recalibrate on this site and model version (tonle calibrate cxr)"
                )

    def source_text(self, record_sha256: str) -> str:
        """One line naming the record and the numbers behind it, shown on every result."""
        numbers = self.numbers
        sens, low = numbers.get("sensitivity"), numbers.get("sensitivity_ci_low")
        spec = numbers.get("specificity")
        parts = [
            f"site {self.site} threshold record {record_sha256[:12]}",
            self.rule.text,
            f"local study {self.study.sha256[:12]} ({self.study.screened} screened, "
            f"{self.study.with_reference} with a reference, {self.study.estimator})",
        ]
        if sens is not None and low is not None and spec is not None:
            parts.append(
                f"sensitivity {sens:.2f} (95 % lower bound {low:.2f}), specificity {spec:.2f}"
            )
        parts.append(f"chosen by {self.chosen_by} on {self.chosen_at:%Y-%m-%d}")
        return "; ".join(parts)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SiteThresholdError("the record has a duplicate key")
    return dict(pairs)


def _no_constant(value: str) -> Any:
    raise SiteThresholdError(f"the record has {value}; numbers must be finite")


def load_record(path: Path) -> tuple[SiteThresholdRecord, str]:
    """Read a record file.

    Returns:
        The record and the sha256 of its bytes.

    Raises:
        SiteThresholdError: unreadable, too large, not strict JSON or not a record.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SiteThresholdError(f"cannot read threshold record {path}: {exc}") from None
    if len(data) > _MAX_RECORD_BYTES:
        raise SiteThresholdError(f"threshold record {path} is larger than {_MAX_RECORD_BYTES} B")
    try:
        raw = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        record = SiteThresholdRecord.model_validate(raw)
    except (SiteThresholdError, ValueError, ValidationError) as exc:
        raise SiteThresholdError(f"threshold record {path} is invalid: {exc}") from None
    return record, hashlib.sha256(data).hexdigest()
