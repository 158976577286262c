"""The model registry: verified ONNX artifacts in the BentoML model store.

An artifact is a BentoML model whose folder holds ``model.onnx``, ``metadata.json``
(a :class:`~models.metadata.ModelMetadata`) and optionally its model card. The store
lives under ``$BENTOML_HOME`` (``tonle`` sets it from ``TONLE_MODEL_STORE``).

Saving computes the sha256 and checks the graph is safe to load; loading re-hashes
the bytes and refuses any mismatch, so a tampered or truncated file never serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import bentoml
import onnx
from bentoml._internal.models import ModelStore

from models.metadata import SEMVER, ModelMetadata

__all__ = [
    "ALLOWED_ONNX_DOMAINS",
    "ArtifactError",
    "StoredModel",
    "check_onnx_graph",
    "describe",
    "get",
    "list_models",
    "save",
    "sha256_file",
    "store_home",
    "verify",
]

ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CARD_DIR = "card"
# Operator domains our exporters produce; anything else is a custom op we cannot vouch for.
ALLOWED_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_MAX_ONNX_BYTES = 2 * 1024**3


def store_home() -> Path:
    """The store's home: the Bento this code runs from when it packs models, else
    ``$BENTOML_HOME``, else ``$TONLE_MODEL_STORE``, else ``.tonle/models``.

    A Bento serves only the models built into it (BentoML's layout: ``BENTO/src/models/``
    holds this module, ``BENTO/models/`` the artifacts), whatever store the host has.
    Read on every call so that tests and the CLI can point at another store.
    """
    bento = Path(__file__).resolve().parents[2]
    if (bento / "bento.yaml").is_file() and (bento / "models").is_dir():
        return bento
    home = os.environ.get("BENTOML_HOME") or os.environ.get("TONLE_MODEL_STORE")
    return Path(home or ".tonle/models").resolve()


def _store() -> ModelStore:
    folder = store_home() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return ModelStore(str(folder))


class ArtifactError(Exception):
    """An artifact is missing, malformed, or does not match its metadata."""


@dataclass(frozen=True)
class StoredModel:
    """A model in the store whose bytes were checked against its metadata."""

    metadata: ModelMetadata
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def card_dir(self) -> Path:
        return self.path / CARD_DIR


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_onnx_graph(path: Path) -> None:
    """Refuse ONNX files that are unsafe or unexpected to load.

    Raises:
        ArtifactError: the file is a symlink, too large, fails ``onnx.checker``, uses
            external data, or uses operators outside :data:`ALLOWED_ONNX_DOMAINS`.
    """
    if path.is_symlink():
        raise ArtifactError(f"{path.name} is a symbolic link; artifacts must be plain files")
    if path.stat().st_size > _MAX_ONNX_BYTES:
        raise ArtifactError(f"{path.name} is larger than {_MAX_ONNX_BYTES} bytes")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types
        raise ArtifactError(f"{path.name} is not a valid ONNX model: {exc}") from exc
    graphs = _graphs(proto.graph)
    for tensor in (t for g in graphs for t in g.initializer):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ArtifactError(
                f"{path.name} stores tensor {tensor.name!r} as external data; "
                "artifacts must be a single self-contained file"
            )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ArtifactError(f"{path.name} is not a valid ONNX model: {exc}") from exc
    domains = {node.domain for g in graphs for node in g.node}
    unexpected = sorted(domains - ALLOWED_ONNX_DOMAINS)
    if unexpected:
        raise ArtifactError(
            f"{path.name} uses operator domains {unexpected}; "
            f"allowed: {sorted(ALLOWED_ONNX_DOMAINS)}"
        )


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    graphs = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g.node:
                graphs.extend(_graphs(attribute.g))
            for subgraph in attribute.graphs:
                graphs.extend(_graphs(subgraph))
    return graphs


def save(onnx_path: Path, metadata: ModelMetadata, card_dir: Path | None = None) -> StoredModel:
    """Store an ONNX file with its metadata (and card) as ``name:version``.

    The sha256 in the stored metadata is computed here, whatever the caller set.

    Raises:
        ArtifactError: the graph fails :func:`check_onnx_graph`, or that version exists.
    """
    check_onnx_graph(onnx_path)
    if _exists(metadata.tag):
        raise ArtifactError(
            f"{metadata.tag} is already in the model store; versions are immutable, "
            "bump the version to save a new artifact"
        )
    final = metadata.model_copy(update={"sha256": sha256_file(onnx_path)})
    with bentoml.models.create(
        metadata.tag,
        labels={"task": final.task, "framework": "onnx"},
        metadata={"sha256": final.sha256, "tonle_version": final.version},
        _model_store=_store(),
    ) as bento_model:
        folder = Path(bento_model.path)
        shutil.copyfile(onnx_path, folder / ONNX_FILE)
        (folder / METADATA_FILE).write_text(final.model_dump_json(indent=2), encoding="utf-8")
        if card_dir is not None:
            shutil.copytree(card_dir, folder / CARD_DIR)
    return verify(final.name, final.version)


def _exists(tag: str) -> bool:
    try:
        bentoml.models.get(tag, _model_store=_store())
    except bentoml.exceptions.NotFound:
        return False
    return True


def _read_metadata(folder: Path) -> ModelMetadata:
    try:
        return ModelMetadata.model_validate_json((folder / METADATA_FILE).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{folder.name} has no {METADATA_FILE}") from exc
    except ValueError as exc:
        raise ArtifactError(f"{METADATA_FILE} in {folder} is invalid: {exc}") from exc


def list_models(name: str | None = None) -> list[ModelMetadata]:
    """Metadata of every Tonle artifact in the store (optionally one name), sorted."""
    found: list[ModelMetadata] = []
    try:
        bento_models = bentoml.models.list(name, _model_store=_store())
    except bentoml.exceptions.NotFound:
        return []
    for bento_model in bento_models:
        folder = Path(bento_model.path)
        if (folder / METADATA_FILE).exists():
            found.append(_read_metadata(folder))
    return sorted(found, key=lambda m: (m.name, _version_key(m.version)))


def _version_key(version: str) -> tuple[int, ...]:
    match = SEMVER.match(version)
    return tuple(int(part) for part in match.groups()[:3]) if match else (0,)


def get(name: str, version: str) -> StoredModel:
    """Locate ``name:version`` without hashing (see :func:`verify`).

    ``version="latest"`` picks the highest semantic version; use it in tools, never in
    serving configuration, which pins versions.

    Raises:
        ArtifactError: no such model or version.
    """
    if version == "latest":
        versions = [m.version for m in list_models(name)]
        if not versions:
            raise ArtifactError(f"no versions of model {name!r} in the store")
        version = max(versions, key=_version_key)
    try:
        bento_model = bentoml.models.get(f"{name}:{version}", _model_store=_store())
    except (bentoml.exceptions.NotFound, bentoml.exceptions.BentoMLException) as exc:
        available = ", ".join(m.tag for m in list_models(name))
        if not available:  # a misspelt name: say which names there are
            names = ", ".join(sorted({m.name for m in list_models()})) or "none"
            available = f"no model named {name!r}; models in the store: {names}"
        raise ArtifactError(f"model {name}:{version} not found; available: {available}") from exc
    folder = Path(bento_model.path)
    return StoredModel(metadata=_read_metadata(folder), path=folder)


def verify(name: str, version: str) -> StoredModel:
    """Locate ``name:version`` and check its bytes and graph against its metadata.

    Raises:
        ArtifactError: missing files, invalid metadata, a sha256 mismatch or an unsafe graph.
    """
    stored = get(name, version)
    meta = stored.metadata
    if meta.name != name or stored.path.name != meta.version:
        raise ArtifactError(
            f"metadata names {meta.tag}, but the store holds it as {name}:{stored.path.name}"
        )
    if not stored.onnx_path.is_file():
        raise ArtifactError(f"{meta.tag} has no {ONNX_FILE}")
    actual = sha256_file(stored.onnx_path)
    if actual != meta.sha256:
        raise ArtifactError(
            f"{meta.tag}: sha256 of {ONNX_FILE} is {actual}, metadata says {meta.sha256}; "
            "the artifact was modified or corrupted and will not be loaded"
        )
    check_onnx_graph(stored.onnx_path)
    return stored


def describe(stored: StoredModel) -> dict[str, object]:
    """A JSON-ready summary for ``tonle models show``."""
    return json.loads(stored.metadata.model_dump_json())  # type: ignore[no-any-return]
