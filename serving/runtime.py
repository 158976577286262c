"""What a running service holds: settings, configuration and verified models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from models import registry
from models.config import load_config
from models.registry import StoredModel
from serving.config import ServingConfig
from serving.settings import Settings

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Loaded once per worker, in the BentoML service's ``__init__``."""

    settings: Settings
    config: ServingConfig
    models: dict[str, StoredModel] = field(default_factory=dict)
    ready: bool = False

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read the serving config and verify every pinned model (sha256, graph).

        Raises:
            models.registry.ArtifactError: a pinned model is missing or does not verify;
                the service must not become ready.
        """
        config = load_config(settings.serving_config, ServingConfig)
        runtime = cls(settings=settings, config=config)
        for name, version in config.models.items():
            runtime.models[name] = registry.verify(name, version)
            logger.info("verified model %s", runtime.models[name].metadata.tag)
        return runtime
