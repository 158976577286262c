"""What a running service holds: settings, configuration, verified models, auth and audit."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from models import registry
from models.config import load_config
from models.metadata import ModelMetadata
from models.registry import ArtifactError, StoredModel
from serving.config import ServingConfig
from serving.http.caller import Caller
from serving.settings import Settings
from serving.synthetic import check_servable

if TYPE_CHECKING:
    import httpx

    from models.ncd_predictor import NcdPredictor
    from serving.audit import AuditStore
    from serving.audit.records import AuditRecord
    from serving.http.cds import CdsHandler
    from serving.imaging.state import ImagingState
    from serving.ui.links import LinkSigner

__all__ = ["ApiKeyAuth", "AuditSink", "CdsAuth", "Runtime"]

logger = logging.getLogger(__name__)


class CdsAuth(Protocol):
    """Checks CDS Hooks JWTs (:class:`serving.auth.CdsAuthenticator`)."""

    async def authenticate(self, authorization: str | None, endpoint_url: str) -> Caller: ...
    def fhir_server_allowed(self, caller: Caller, fhir_server: str) -> bool: ...


class ApiKeyAuth(Protocol):
    """Checks REST API keys (:class:`serving.auth.ApiKeyAuthenticator`)."""

    def authenticate(self, header_value: str | None) -> Caller: ...


class AuditSink(Protocol):
    """Durable audit rows (contract C4 ``AuditStore``)."""

    def record(self, row: AuditRecord) -> None: ...
    async def record_async(self, row: AuditRecord) -> None: ...


@dataclass
class Runtime:
    """Loaded once per worker, in the BentoML service's ``__init__``.

    ``cds_auth`` / ``api_keys`` are ``None`` only in ``--dev`` mode (no authentication,
    loopback clients only). ``cds_services`` holds every service behind
    ``/cds-services/{id}``: the NCD services and, when imaging is configured,
    ``cxr-triage``. ``imaging`` is the chest X-ray state when imaging is configured;
    ``link_signer`` is made on first use (:func:`serving.ui.links.signer`);
    ``fhir_transport`` replaces the network for FHIR prefetch (tests only).
    """

    settings: Settings
    config: ServingConfig
    models: dict[str, StoredModel] = field(default_factory=dict)
    ncd: dict[str, NcdPredictor] = field(default_factory=dict)
    audit: AuditSink | None = None
    cds_auth: CdsAuth | None = None
    api_keys: ApiKeyAuth | None = None
    ready: bool = False
    cds_services: dict[str, CdsHandler] = field(default_factory=dict)
    imaging: ImagingState | None = None
    link_signer: LinkSigner | None = None
    fhir_transport: httpx.AsyncBaseTransport | None = None

    @property
    def language(self) -> str:
        """The site's default card language."""
        return self.config.language or self.settings.language

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read the serving config, verify every pinned model (sha256, graph), open NCD
        predictors, the audit store and the authenticators. Not ready until :meth:`warm_up`.

        Raises:
            models.registry.ArtifactError: a pinned model is missing or does not verify;
                the service must not become ready.
            ValueError: no link key outside dev mode and the demo (the message says what
                to set), or a serving config that does not check out (e.g. a
                ``max_data_age_days`` longer than a served model's training look-back).
        """
        from models.ncd_predictor import NcdPredictor
        from serving.cds_hooks import NcdService
        from serving.ui.links import require_key

        require_key(settings)  # before anything slow: the start fails at once
        config = load_config(settings.serving_config, ServingConfig)
        runtime = cls(settings=settings, config=config)
        for name, version in config.models.items():
            runtime.models[name] = registry.verify(name, version)
            check_servable(
                runtime.models[name].metadata,
                dev=settings.dev,
                allow_synthetic=config.allow_synthetic_models,
            )
            logger.info("verified model %s", runtime.models[name].metadata.tag)
        for service_id, service in config.ncd_services.items():
            stored = runtime.models[service.model]
            _check_lookback(service_id, stored.metadata, config.max_data_age_days)
            runtime.ncd[service_id] = NcdPredictor(stored, threads=1)
            runtime.cds_services[service_id] = NcdService(service_id, service, runtime)
        # Concurrent requests share one durable commit (group commit in the store).
        store = runtime.audit = _open_audit(settings)
        if settings.dev:
            logger.warning(
                "DEV MODE: CDS Hooks and REST callers are NOT authenticated. "
                "Never use --dev outside a loopback demo."
            )
        else:
            runtime.cds_auth, runtime.api_keys = _open_auth(settings, store)
        from serving.imaging.state import attach

        imaging = attach(runtime)  # the chest X-ray model, when configured
        if imaging is not None:
            from serving.imaging.cds import SERVICE_ID, CxrTriage

            runtime.cds_services[SERVICE_ID] = CxrTriage(imaging)
        unknown = sorted(set(config.silent) - set(runtime.cds_services))
        if unknown:
            raise ValueError(f"silent names unknown CDS service(s) {unknown}")
        return runtime

    def silent(self, service_id: str) -> bool:
        """Whether ``service_id`` keeps its cards from the EHR at this site."""
        sites = self.config.silent.get(service_id, ())
        return "*" in sites or self.settings.site in sites

    def warm_up(self) -> None:
        """Run each model on its golden input (the reference row) and the WHO chart on a
        known case; the service becomes ready only if every answer is a valid risk.

        Raises:
            models.registry.ArtifactError: a model gave no valid probability.
        """
        from models.ncd_predictor import encode_rows
        from models.who_cvd import WhoCvdInputs, who_cvd_risk

        for service_id, predictor in self.ncd.items():
            details = predictor.metadata.ncd
            reference: dict[str, Any] = dict(details.reference)
            for name, codes in details.encodings.items():
                by_code = {v: k for k, v in codes.items()}
                reference[name] = by_code.get(reference[name], reference[name])
            row = encode_rows(predictor.metadata, [reference])
            for _ in range(3):
                risk, _contributions = predictor.explain(row)
            batch = predictor.predict_proba(np.repeat(row, 4, axis=0))
            if not (math.isfinite(risk) and 0.0 <= risk <= 1.0) or not np.allclose(batch, risk):
                raise ArtifactError(f"{service_id}: golden input gave no valid probability")
        golden = who_cvd_risk(
            WhoCvdInputs(sex="male", age=60, smoking=True, sbp=160, total_chol=6.0, diabetes=False),
            "lab",
            region=self.config.who_region,
            country=self.config.who_country,
        )
        if not 0.0 < golden.risk < 1.0:
            raise ArtifactError("WHO CVD equations gave no valid risk on the golden input")
        self.ready = True


def _open_audit(settings: Settings) -> AuditStore:
    from serving.audit import AuditStore

    return AuditStore.open(
        settings.database_url.get_secret_value(), pixels_days=settings.imaging_pixels_days
    )


def _open_auth(settings: Settings, store: AuditStore) -> tuple[CdsAuth, ApiKeyAuth]:
    from serving.auth import build_authenticators

    # One engine: the audit store is also the JWT replay store and the API-key table.
    cds, keys = build_authenticators(settings, store)
    return cds, keys


def _check_lookback(service_id: str, meta: ModelMetadata, max_age_days: int) -> None:
    """Refuse a serving max age longer than the model's training look-back.

    Serving would then score measurements older than any the model learned from
    (train/serve skew, silently); refusing at start-up fails closed where the operator
    sees it. An artifact that does not record its look-back (built before it was
    recorded, or from a ready-made feature table) is allowed with a warning.
    """
    if meta.lookback_days is None:
        logger.warning(
            "%s: %s does not record its training look-back; cannot check "
            "max_data_age_days = %d against it",
            service_id,
            meta.tag,
            max_age_days,
        )
    elif max_age_days > meta.lookback_days:
        raise ValueError(
            f"max_data_age_days = {max_age_days}, but {service_id}'s model {meta.tag} was "
            f"trained on measurements at most {meta.lookback_days} days old: set "
            f"max_data_age_days to {meta.lookback_days} or less, or serve a model trained "
            "with a longer --lookback-days"
        )
