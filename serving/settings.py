"""Runtime settings, read once from ``TONLE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything a deployment sets without touching code.

    Secrets are ``SecretStr`` so they never show in ``repr`` or logs.
    """

    model_config = SettingsConfigDict(env_prefix="TONLE_", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///.tonle/tonle.db"),
        description="SQLAlchemy URL of the audit store: SQLite (default) or PostgreSQL.",
    )
    serving_config: Path = Field(
        default=Path("configs/serving.yaml"),
        description="YAML with pinned model versions and per-site thresholds.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Base URL EHRs call; JWT 'aud' must equal this plus the endpoint path.",
    )
    allowed_issuers: Path | None = Field(
        default=None, description="YAML of trusted CDS clients: issuer -> JWKS and FHIR servers."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API."
    )
    language: str = Field(default="en", description="Default language for clinician text.")
    site: str = Field(default="default", description="Site id selecting site configuration.")
    dev: bool = Field(
        default=False, description="Disable caller authentication (loopback only, never prod)."
    )
    explanation_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description=(
            "Days an NCD card's explanation is kept (then purged; its page says expired) "
            "and a signed page or heatmap link stays valid."
        ),
    )
    link_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key signing the page and heatmap links opened from browsers (32+ characters). "
            "Unset: one is generated once and kept in the database, shared by all workers."
        ),
    )
    shutdown_drain_s: float = Field(
        default=5.0,
        ge=0.0,
        le=60.0,
        description=(
            "On SIGTERM, seconds /readyz answers 503 while requests are still served (so "
            "load balancers stop sending), before in-flight requests finish and it exits."
        ),
    )
    log_json: bool = Field(default=False, description="Log one JSON object per line.")
    log_level: str = Field(default="INFO")
    demo_issuer_dir: Path | None = Field(
        default=None,
        description=(
            "Demo only: folder of the demo EHR issuer's keys (serving/demo_issuer.py). When "
            "set, /ui/ehr and its token endpoint exist. Never set in production."
        ),
    )

    @field_validator("link_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                f"TONLE_LINK_SECRET has {len(value.get_secret_value())} characters; use 32 or "
                "more (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return value
