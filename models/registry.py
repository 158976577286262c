"""The model registry: verified ONNX artifacts in the BentoML model store.

An artifact is a BentoML model whose folder holds ``model.onnx``, ``metadata.json``
(a :class:`~models.metadata.ModelMetadata`) and optionally its model card. The store
lives under ``$BENTOML_HOME`` (``tonle`` sets it from ``TONLE_MODEL_STORE``).

Identity. ``metadata.onnx_sha256`` is the sha256 of ``model.onnx``;
``metadata.sha256``, the artifact's identity that every result, card and audit row
reports, is :func:`artifact_digest`: one sha256 over the metadata (which includes
``onnx_sha256``: thresholds, labels, contract) and every card file. Saving computes
both and records the identity in ``metadata.json`` and in BentoML's ``model.yaml``;
loading (:func:`verify`) re-hashes everything and refuses any mismatch, any symbolic
link or special file inside the artifact, and an unsafe graph.

What this protects against, and what not. A change to one file (an operating
threshold raised to 1.0 in ``metadata.json``, a swapped ``model.onnx``, an edited card,
a card replaced by a symlink to another file), truncation and corruption are refused
at load. An attacker who can write to the store can rewrite every file *and* the
recorded digests consistently; nothing stored next to the artifact can detect that.
Such a replacement does change the identity the service reports with every result, so
it is visible to anyone comparing a result's ``sha256`` with the one published at
release (the model card, the release notes, the serving configuration's review). To
refuse it outright, keep the expected identity outside the store and pass it to
:func:`verify` as ``expected_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
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
    "artifact_digest",
    "card_manifest",
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
    for tensor in (t for g in graphs for t in _tensors(g)):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
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


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in one graph: initializers (dense and sparse) and the
    tensors in node attributes (``Constant`` values, ``ConstantOfShape`` fills, ...)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            sparse_tensors = [*attribute.sparse_tensors]
            if attribute.HasField("sparse_tensor"):
                sparse_tensors.append(attribute.sparse_tensor)
            for sparse in sparse_tensors:
                yield from (sparse.values, sparse.indices)


def _regular_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, refusing symbolic links and anything not a plain file.

    Raises:
        ArtifactError: a symbolic link (to a file or a folder) or a special file.
    """
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise ArtifactError(
                    f"{path.relative_to(root)} in {root} is a symbolic link; "
                    "artifacts must hold plain files only"
                )
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArtifactError(f"{path.relative_to(root)} in {root} is not a plain file")
            if stat.S_ISREG(mode):
                yield path


def card_manifest(card_dir: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file of a model card (empty if none).

    Raises:
        ArtifactError: the card holds a symbolic link or a special file.
    """
    if card_dir.is_symlink():
        raise ArtifactError(f"{card_dir} is a symbolic link; artifacts must hold plain files only")
    if not card_dir.exists():
        return {}
    return {
        path.relative_to(card_dir).as_posix(): sha256_file(path)
        for path in _regular_files(card_dir)
    }


def artifact_digest(metadata: ModelMetadata, card: dict[str, str]) -> str:
    """The artifact's identity: sha256 over its metadata (``sha256`` itself left out,
    ``onnx_sha256`` in) and its card manifest, as canonical JSON.

    Fields at their default value are left out, so a field added to
    :class:`~models.metadata.ModelMetadata` later keeps the identity of older
    artifacts; setting a field to its default still changes the identity.
    """
    content = metadata.model_dump(mode="json", exclude={"sha256"}, exclude_defaults=True)
    canonical = json.dumps(
        {"metadata": content, "card": card}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save(onnx_path: Path, metadata: ModelMetadata, card_dir: Path | None = None) -> StoredModel:
    """Store an ONNX file with its metadata (and card) as ``name:version``.

    ``onnx_sha256`` and ``sha256`` (:func:`artifact_digest`) in the stored metadata are
    computed here, whatever the caller set.

    Raises:
        ArtifactError: the graph fails :func:`check_onnx_graph`, the card holds a
            symbolic link, or that version exists.
    """
    check_onnx_graph(onnx_path)
    card = card_manifest(card_dir) if card_dir is not None else {}
    if _exists(metadata.tag):
        raise ArtifactError(
            f"{metadata.tag} is already in the model store; versions are immutable, "
            "bump the version to save a new artifact"
        )
    final = metadata.model_copy(update={"onnx_sha256": sha256_file(onnx_path), "sha256": ""})
    final = final.model_copy(update={"sha256": artifact_digest(final, card)})
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
    except (bentoml.exceptions.NotFound, ValueError):  # ValueError: cannot be a model name
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
            raise ArtifactError(f"no versions of model {name!r} in the store; {_names()}")
        version = max(versions, key=_version_key)
    try:
        bento_model = bentoml.models.get(f"{name}:{version}", _model_store=_store())
    except ValueError as exc:  # not a BentoML tag; its message says why
        raise ArtifactError(f"{name}:{version} is not a model tag: {exc}") from None
    except (bentoml.exceptions.NotFound, bentoml.exceptions.BentoMLException) as exc:
        available = ", ".join(m.tag for m in list_models(name))
        if not available:  # a misspelt name: say which names there are
            available = f"no model named {name!r}; {_names()}"
        raise ArtifactError(f"model {name}:{version} not found; available: {available}") from exc
    folder = Path(bento_model.path)
    return StoredModel(metadata=_read_metadata(folder), path=folder)


def _names() -> str:
    return "models in the store: " + (", ".join(sorted({m.name for m in list_models()})) or "none")


def verify(name: str, version: str, expected_sha256: str | None = None) -> StoredModel:
    """Locate ``name:version`` and check its files and graph against its metadata.

    Args:
        name: the model name.
        version: its version (``latest`` in tools only).
        expected_sha256: the artifact identity to insist on, kept outside the store;
            None checks the artifact against the digests it records.

    Raises:
        ArtifactError: missing files, invalid metadata, a symbolic link or special file
            in the artifact, a digest mismatch or an unsafe graph.
    """
    stored = get(name, version)
    meta = stored.metadata
    if meta.name != name or stored.path.name != meta.version:
        raise ArtifactError(
            f"metadata names {meta.tag}, but the store holds it as {name}:{stored.path.name}"
        )
    files = set(_regular_files(stored.path))  # refuses links anywhere in the artifact
    if stored.onnx_path not in files:
        raise ArtifactError(f"{meta.tag} has no {ONNX_FILE}")
    if not meta.onnx_sha256:
        raise ArtifactError(
            f"{meta.tag} was saved before artifacts recorded their identity; delete it "
            f"from the store ({stored.path}) and save it again"
        )
    actual = sha256_file(stored.onnx_path)
    if actual != meta.onnx_sha256:
        raise ArtifactError(
            f"{meta.tag}: sha256 of {ONNX_FILE} is {actual}, metadata says "
            f"{meta.onnx_sha256}; the artifact was modified or corrupted and will not be loaded"
        )
    identity = artifact_digest(meta, card_manifest(stored.card_dir))
    record = bentoml.models.get(meta.tag, _model_store=_store()).info.metadata
    recorded = str(record.get("sha256") or "nothing")
    if identity != meta.sha256 or identity != recorded:
        raise ArtifactError(
            f"{meta.tag}: the digest of {METADATA_FILE} and the card is {identity}, the "
            f"artifact records {meta.sha256} ({METADATA_FILE}) and {recorded} (model.yaml); "
            "the metadata or the card was modified and will not be loaded"
        )
    if expected_sha256 is not None and identity != expected_sha256:
        raise ArtifactError(
            f"{meta.tag} has identity {identity}, but {expected_sha256} is expected; "
            "the artifact was replaced and will not be loaded"
        )
    check_onnx_graph(stored.onnx_path)
    return stored


def describe(stored: StoredModel) -> dict[str, object]:
    """A JSON-ready summary for ``tonle models show``."""
    return json.loads(stored.metadata.model_dump_json())  # type: ignore[no-any-return]
