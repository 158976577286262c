"""Runtime settings, read once from ``TONLE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ImportSettings", "Settings"]

_MIN_LINK_SECRET = 32
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAKE_ONE = "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"


class ImportSettings(BaseSettings):
    """The settings the service definition needs when ``serving.service`` is imported,
    before the service reads :class:`Settings`."""

    model_config = SettingsConfigDict(
        env_prefix="TONLE_", extra="ignore", hide_input_in_errors=True
    )

    tracing: bool = Field(
        default=False,
        description=(
            "Pass requests through BentoML's OpenTelemetry middleware (spans are recorded "
            "only as BentoML's own tracing configuration says: exporter, sample rate). Off, "
            "no route is traced; the chest X-ray upload never is."
        ),
    )


class Settings(ImportSettings):
    """Everything a deployment sets without touching code.

    Secrets are ``SecretStr`` so they never show in ``repr`` or logs, and a validation
    error never repeats the value it refused (it could be a secret).
    """

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
    imaging_pixels_days: int = Field(
        default=0,
        ge=0,
        le=36500,
        description=(
            "Days the X-ray reader's full-resolution copy of a chest X-ray read is kept "
            "(0.5-0.9 MB a read), then emptied by the service (and `tonle db "
            "prune-pixels`); the read, its card and heatmap stay. 0: kept for ever."
        ),
    )
    link_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key signing the page and heatmap links opened from browsers (32+ characters). "
            "Required unless TONLE_DEV or the demo (TONLE_DEMO_ISSUER_DIR): there, when "
            "unset, one is generated once and kept in the database, shared by all workers."
        ),
    )
    link_secret_file: Path | None = Field(
        default=None,
        description=(
            "File holding the link key instead of TONLE_LINK_SECRET (a Docker or "
            "Kubernetes secret); surrounding whitespace is ignored. Not both."
        ),
    )
    link_secret_previous: SecretStr | None = Field(
        default=None,
        description=(
            "The link key before a rotation (32+ characters): links it signed still "
            "open until they expire; new links are always signed with TONLE_LINK_SECRET."
        ),
    )
    link_secret_previous_file: Path | None = Field(
        default=None,
        description="File holding TONLE_LINK_SECRET_PREVIOUS instead of the variable. Not both.",
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
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token a Prometheus scraper sends to read /metrics (32+ characters; "
            "Prometheus: `authorization: {credentials_file: ...}`). Unset: /metrics "
            "answers 401 to everyone (dev mode: loopback clients only)."
        ),
    )
    api_docs: bool = Field(
        default=False,
        description=(
            "Serve interactive REST API docs at /docs (Swagger UI from the service "
            "itself, no third-party script). The API description /v1/openapi.json is "
            "always served."
        ),
    )
    log_json: bool = Field(default=False, description="Log one JSON object per line.")
    log_level: str = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."
    )
    demo_issuer_dir: Path | None = Field(
        default=None,
        description=(
            "Demo only: folder of the demo EHR issuer's keys (serving/demo_issuer.py). When "
            "set, /ui/ehr and its token endpoint exist. Never set in production."
        ),
    )

    @field_validator("link_secret", "link_secret_previous", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            _check_length(value.get_secret_value(), f"TONLE_{str(info.field_name).upper()}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"TONLE_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @model_validator(mode="after")
    def _read_link_secret_files(self) -> Settings:
        self.link_secret = _secret_or_file(self.link_secret, self.link_secret_file, "LINK_SECRET")
        self.link_secret_previous = _secret_or_file(
            self.link_secret_previous, self.link_secret_previous_file, "LINK_SECRET_PREVIOUS"
        )
        return self


def _check_length(secret: str, source: str) -> None:
    if len(secret) < _MIN_LINK_SECRET:
        raise ValueError(
            f"{source} has {len(secret)} characters; use {_MIN_LINK_SECRET} or more ({_MAKE_ONE})"
        )


def _secret_or_file(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    """``TONLE_<name>`` or the content of the file ``TONLE_<name>_FILE`` names."""
    if path is None:
        return value
    if value is not None:
        raise ValueError(f"TONLE_{name} and TONLE_{name}_FILE are both set; set only one")
    source = f"TONLE_{name}_FILE ({path})"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{source} cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:  # its message would quote a byte of the key
        raise ValueError(f"{source} is not UTF-8 text") from None
    _check_length(text, source)
    return SecretStr(text)
