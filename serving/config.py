"""The serving configuration file (``configs/serving.yaml``): what runs, pinned."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.metadata import SEMVER
from models.ncd_lookback import LOOKBACK_DAYS
from serving.imaging.config import ImagingConfig
from serving.monitor.alerts import MonitorConfig
from serving.protocol import ActiveProtocol, Approval, load_protocol

__all__ = ["DiabetesScale", "NcdServiceConfig", "ProtocolConfig", "ServingConfig"]

#: The shipped protocol table (next to this package, in the source tree and the Bento).
DEFAULT_PROTOCOL = Path(__file__).resolve().parents[1] / "configs" / "protocol.yaml"

Indicator = Literal["info", "warning", "critical"]


class NcdServiceConfig(BaseModel):
    """One NCD CDS Hooks service: which pinned model answers it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Name of a model pinned under `models`.")
    title: str = Field(description="Title shown in CDS Hooks discovery.")
    description: str = Field(default="", description="Discovery description.")


class ProtocolConfig(BaseModel):
    """The care protocol table the cards follow, and the site's approval of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Path = Field(
        default=DEFAULT_PROTOCOL,
        description="The protocol table (YAML); default: the shipped configs/protocol.yaml.",
    )
    approval: Approval | None = Field(
        default=None,
        description="Who approved the table, when, and its sha256. Unset: not approved "
        "(no drug suggestions; rows the site must confirm do not fire).",
    )

    def load(self) -> ActiveProtocol:
        """The checked table (cached per path and approval).

        Raises:
            models.config.ConfigError: the table is invalid or its approval is stale.
        """
        return load_protocol(self.table, self.approval)


class DiabetesScale(BaseModel):
    """Card severity for a 10-year diabetes risk: its own scale, never ``critical``
    (a risk of diabetes within ten years is not an emergency)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning_percent: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Risk (whole percent) from which a diabetes card is a warning; info below.",
    )


class ServingConfig(BaseModel):
    """Pinned model versions and site options. Loaded once at service start."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(
        default_factory=dict,
        description="Model name -> pinned semantic version. Never 'latest' in production.",
    )

    ncd_services: dict[str, NcdServiceConfig] = Field(
        default_factory=dict,
        description="CDS service id (e.g. 'ncd-cvd-risk') -> the NCD model that answers it.",
    )
    indicators: list[Indicator] = Field(
        default=["info", "info", "warning", "critical", "critical"],
        min_length=5,
        max_length=5,
        description="Card indicator for each WHO risk band: <5, 5-<10, 10-<20, 20-<30, >=30 %.",
    )
    diabetes_scale: DiabetesScale = Field(
        default_factory=DiabetesScale, description="Severity of diabetes-risk cards."
    )
    protocol: ProtocolConfig = Field(
        default_factory=ProtocolConfig, description="The care protocol table and its approval."
    )
    allow_synthetic_models: bool = Field(
        default=False,
        description="Load models trained on synthetic data outside --dev (demo only: every "
        "output then says 'demo model: synthetic training data, not for clinical use').",
    )
    max_data_age_days: int = Field(
        default=LOOKBACK_DAYS,
        gt=0,
        le=3650,
        description="Older measurements give no advice (days). Not longer than the "
        "look-back each served NCD model was trained with (the service refuses to start).",
    )
    no_advice_card: bool = Field(
        default=False,
        description="When an NCD service can give no estimate for a reason the chart can "
        "fix (a required value not recorded, older than max_data_age_days, outside the "
        "model's range or in an unreadable unit), answer one `info` card saying which "
        "values and why, with no risk and no suggestion, instead of `cards: []`. Other "
        "reasons (patient outside the model's population, internal errors) keep "
        "`cards: []`; see serving/no_advice_card.py. Off: `cards: []` for every no-advice.",
    )
    language: str | None = Field(
        default=None, description="Default card language; unset uses TONLE_LANGUAGE."
    )
    who_region: str | None = Field(
        default="A05GBDR_014_SEA", description="WHO 2019 GBD region code for the CVD charts."
    )
    who_country: str | None = Field(
        default="KHM", description="ISO alpha-3 country recalibration (falls back to region)."
    )
    fetch_timeout_s: float = Field(
        default=2.0, gt=0, le=10, description="Deadline for fetching missing prefetch (s)."
    )
    silent: dict[str, list[str]] = Field(
        default_factory=dict,
        description="CDS service id -> the sites (TONLE_SITE) where it runs silently, '*' "
        "for every site: the model runs and its results, cards and audit rows (mode "
        "'silent') are stored, and the EHR gets `cards: []`. For a site proving a model "
        "on its own traffic before go-live.",
    )
    imaging: ImagingConfig | None = Field(
        default=None,
        description="Chest X-ray serving (model, site thresholds, PACS); unset = no imaging.",
    )
    monitoring: MonitorConfig = Field(
        default_factory=MonitorConfig,
        description="Drift window and alert rules, evaluated when /metrics is scraped.",
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

    @model_validator(mode="after")
    def _protocol_loads(self) -> ServingConfig:
        if self.ncd_services:  # checked at start-up, not on the first patient
            self.protocol.load()
        return self

    @model_validator(mode="after")
    def _services_pinned(self) -> ServingConfig:
        for service_id, service in self.ncd_services.items():
            if service.model not in self.models:
                raise ValueError(
                    f"ncd_services.{service_id}.model = {service.model!r}: "
                    f"pin it under models (pinned: {sorted(self.models) or 'none'})"
                )
        return self
