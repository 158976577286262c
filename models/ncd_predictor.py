"""Trained NCD risk models (CVD, diabetes): ONNX inference and explanations.

The ONNX contract (contract C3): input ``features`` float32 ``[N, F]`` with columns in
the order of ``metadata.features``; output ``probabilities`` float32 ``[N, 2]`` whose
column 1 is the probability of the event within 10 years. ``metadata.task`` is
``"ncd-risk"``, ``metadata.ncd.outcome`` is ``"cvd"`` or ``"diabetes"`` and
``metadata.ncd.reference`` maps each feature to the reference value that
explanations compare against.

Explanations are computed with the served ONNX model itself, in one batched call:
the patient's row plus, for each feature, the same row with that one feature set to
its reference value. A feature's contribution is the risk change that its actual value
causes relative to the reference ("what if this value were typical"), so an
explanation can never disagree with the risk the model returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from models.errors import InputError
from models.metadata import FeatureSpec, ModelMetadata
from models.onnx_runtime import open_session
from models.registry import ArtifactError, StoredModel
from models.who_cvd import band_of_percent, round_percent

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Contribution",
    "NcdInputError",
    "NcdPredictor",
    "encode_rows",
    "encode_value",
    "risk_band",
]

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


class NcdInputError(InputError):
    """A feature row cannot be scored: wrong shape, missing column or bad value.

    ``field`` is the feature (column) concerned, or ``"features"`` for the whole row.
    """


class Contribution(BaseModel):
    """How much one feature's value moves the risk, relative to its reference value."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float
    unit: str
    delta_risk: float
    text: str


def risk_band(risk: float) -> tuple[int, str]:
    """The WHO chart band of a risk fraction: ``(band_index, label)``.

    The chart prints the risk rounded to a whole percent (half up) and colours the
    cell by that percent, so the band is taken from the rounded percent.
    """
    return band_of_percent(round_percent(risk))


def encode_value(metadata: ModelMetadata, spec: FeatureSpec, raw: Any) -> float:
    """One present feature value as the model reads it (the check :func:`encode_rows`
    applies to every value), so a caller can name every bad value, not only the first.

    Raises:
        NcdInputError: the value is not a number (or code) the feature accepts, or is
            outside its valid range.
    """
    encodings = metadata.ncd.encodings
    if spec.name in encodings:
        codes = encodings[spec.name]
        if str(raw) not in codes:
            raise NcdInputError(spec.name, raw, f"must be one of {sorted(codes)}")
        value = float(codes[str(raw)])
    elif isinstance(raw, bool):
        value = float(raw)
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise NcdInputError(spec.name, raw, f"must be a number in {spec.unit}") from exc
        if not math.isfinite(value):
            raise NcdInputError(spec.name, raw, "must be a finite number")
    if spec.minimum is not None and value < spec.minimum:
        raise NcdInputError(spec.name, raw, f"must be at least {spec.minimum:g} {spec.unit}")
    if spec.maximum is not None and value > spec.maximum:
        raise NcdInputError(spec.name, raw, f"must be at most {spec.maximum:g} {spec.unit}")
    return value


def encode_rows(metadata: ModelMetadata, rows: list[Mapping[str, Any]]) -> np.ndarray:
    """Turn feature dictionaries into the model's float32 ``[N, F]`` input.

    Categorical values are mapped with ``metadata.ncd.encodings`` (e.g.
    ``{"sex": {"female": 0, "male": 1}}``); booleans become 0/1. A missing optional
    feature becomes NaN (the model handles it); a missing required feature or a value
    outside the feature's valid range raises :class:`NcdInputError`, never a default.

    Raises:
        NcdInputError: naming the feature and the rule broken.
    """
    out = np.full((len(rows), len(metadata.features)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, spec in enumerate(metadata.features):
            raw = row.get(spec.name)
            if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                if spec.required:
                    raise NcdInputError(spec.name, raw, f"{spec.description} is required")
                continue
            out[i, j] = encode_value(metadata, spec, raw)
    return out


class NcdPredictor:
    """Risk and explanations from a verified ``ncd-risk`` ONNX artifact.

    Args:
        stored: a model from :func:`models.registry.verify`.
        threads: ONNX Runtime intra-op threads (1 suits one-row serving).

    Raises:
        ArtifactError: the artifact does not follow the NCD ONNX contract.
    """

    def __init__(self, stored: StoredModel, threads: int = 1) -> None:
        meta = stored.metadata
        if meta.task != "ncd-risk":
            raise ArtifactError(f"{meta.tag} has task {meta.task!r}, expected 'ncd-risk'")
        if not meta.features:
            raise ArtifactError(f"{meta.tag} lists no features")
        self.metadata: ModelMetadata = meta
        self.feature_names: list[str] = [f.name for f in meta.features]
        reference = meta.ncd.reference
        if set(reference) != set(self.feature_names):
            raise ArtifactError(f"{meta.tag}: extra.reference must give a value for each feature")
        self.reference = np.array(
            [float(reference[name]) for name in self.feature_names], dtype=np.float32
        )
        self._session = open_session(stored, threads=threads)
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ArtifactError(
                f"{meta.tag}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found inputs {[i.name for i in inputs]} and outputs {outputs}"
            )
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if isinstance(width, int) and width != len(self.feature_names):
            raise ArtifactError(
                f"{meta.tag}: ONNX input has {width} columns, metadata lists "
                f"{len(self.feature_names)} features"
            )

    def _check(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != len(self.feature_names):
            raise NcdInputError(
                "features",
                tuple(array.shape),
                f"expected shape (N, {len(self.feature_names)}) in the order {self.feature_names}",
            )
        return np.ascontiguousarray(array)

    def _run(self, array: np.ndarray) -> np.ndarray:
        probs = self._session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]
        return np.asarray(probs, dtype=np.float32)[:, 1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the event within 10 years for each row, shape ``(N,)``.

        Raises:
            NcdInputError: ``x`` does not have one column per feature.
        """
        return self._run(self._check(x))

    def explain(self, x: np.ndarray, top: int = 3) -> tuple[float, list[Contribution]]:
        """Risk of one row and its ``top`` largest contributions, largest first.

        Contributions are ordered by absolute risk change; features whose value is
        missing (NaN) or equals the reference contribute nothing and are left out.

        Raises:
            NcdInputError: ``x`` is not exactly one row of the right width.
        """
        row = self._check(x)
        if row.shape[0] != 1:
            raise NcdInputError("features", tuple(row.shape), "explain takes exactly one row")
        n = len(self.feature_names)
        batch = np.repeat(row, n + 1, axis=0)
        idx = np.arange(n)
        batch[idx + 1, idx] = self.reference
        probs = self._run(batch)
        risk = float(probs[0])
        deltas = probs[0] - probs[1:]
        found: list[tuple[float, int]] = []
        for j in range(n):
            value = float(row[0, j])
            if math.isnan(value) or value == float(self.reference[j]):
                continue
            found.append((float(deltas[j]), j))
        found.sort(key=lambda item: -abs(item[0]))
        contributions: list[Contribution] = []
        for rank, (delta, j) in enumerate(found[: max(top, 0)]):
            spec = self.metadata.features[j]
            contributions.append(
                Contribution(
                    feature=spec.name,
                    value=float(row[0, j]),
                    unit=spec.unit,
                    delta_risk=delta,
                    text=self._describe(j, float(row[0, j]), delta, rank == 0),
                )
            )
        return risk, contributions

    def _describe(self, j: int, value: float, delta: float, first: bool) -> str:
        spec = self.metadata.features[j]
        details = self.metadata.ncd
        label = details.labels.get(spec.name, spec.description)
        encodings = details.encodings
        if spec.name in encodings:
            names = {v: k for k, v in encodings[spec.name].items()}
            what = f"{label} {names.get(value, f'{value:g}')}"
        elif spec.unit == "1" and value in (0.0, 1.0):
            what = label if value == 1.0 else f"no {label}"
        else:
            unit = "" if spec.unit == "1" else f" {_display_unit(spec.unit)}"
            what = f"{label} {value:.3g}{unit}"
        if abs(delta) < 0.0005:
            return f"{what} barely changes the risk"
        verb = "raises" if delta > 0 else "lowers"
        most = " most" if first else ""
        return f"{what} {verb} the risk{most} ({delta * 100:+.1f} percentage points)"


def _display_unit(ucum: str) -> str:
    return {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "years"}.get(ucum, ucum)
