"""The serving configuration file (``configs/serving.yaml``): what runs, pinned."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.metadata import SEMVER

__all__ = ["ServingConfig"]


class ServingConfig(BaseModel):
    """Pinned model versions and site options. Loaded once at service start."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(
        default_factory=dict,
        description="Model name -> pinned semantic version. Never 'latest' in production.",
    )

    @field_validator("models")
    @classmethod
    def _pinned(cls, value: dict[str, str]) -> dict[str, str]:
        for name, version in value.items():
            if not SEMVER.match(version):
                raise ValueError(
                    f"models.{name} = {version!r}: pin an exact semantic version like '1.0.0'"
                )
        return value
