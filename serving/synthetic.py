"""Models trained on synthetic data: said on every output, refused in production.

Training records in each artifact whether its training data was synthetic
(``synthetic_training_data`` in its details, models.details: the demo's generated cohorts and
radiographs). Such a model has never seen a real patient or a real radiograph: every
card, FHIR resource and page that shows its output says "demo model: synthetic
training data, not for clinical use", and the service refuses to load it unless it
runs with ``--dev`` or the serving configuration sets ``allow_synthetic_models`` (the
demo's does, and says so). An artifact that records nothing is read as not synthetic
(artifacts built before the flag existed).
"""

from __future__ import annotations

from typing import Final

from models.metadata import ModelMetadata
from models.registry import ArtifactError

__all__ = [
    "DEMO_NOTE",
    "advisory_for",
    "check_servable",
    "trained_on_synthetic",
]

#: The English note on machine-read outputs (FHIR notes); cards and pages use the
#: ``advisory.demo_model`` message in the reader's language.
DEMO_NOTE: Final = "Demo model: synthetic training data, not for clinical use."


def trained_on_synthetic(meta: ModelMetadata) -> bool:
    """Whether the artifact records that it was trained on synthetic data."""
    return meta.synthetic_training_data


def advisory_for(meta: ModelMetadata, advisory: str) -> str:
    """``advisory`` (a machine-read output's advisory line), after the demo note for a
    synthetic-trained model."""
    return f"{DEMO_NOTE} {advisory}" if trained_on_synthetic(meta) else advisory


def check_servable(meta: ModelMetadata, *, dev: bool, allow_synthetic: bool) -> None:
    """Refuse a synthetic-trained model outside ``--dev`` unless the config allows it.

    Raises:
        models.registry.ArtifactError: naming the model and the setting that allows it.
    """
    if trained_on_synthetic(meta) and not (dev or allow_synthetic):
        raise ArtifactError(
            f"{meta.tag} was trained on synthetic data and is not for clinical use; "
            "serve it only with --dev or with allow_synthetic_models: true in the serving "
            "configuration (a demo)"
        )
