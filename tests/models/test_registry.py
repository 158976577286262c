from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import registry
from models.metadata import ModelMetadata, OperatingPoint
from models.onnx_runtime import open_session
from tests.onnx_fixtures import write_linear_onnx


def _meta(version: str = "1.0.0") -> ModelMetadata:
    return ModelMetadata(name="toy-linear", version=version, task="test", intended_use="tests")


@pytest.mark.usefixtures("model_store")
def test_save_then_verify_and_run(tmp_path: Path) -> None:
    onnx_path = write_linear_onnx(tmp_path / "m.onnx", weight=3.0)
    card = tmp_path / "card"
    card.mkdir()
    (card / "README.md").write_text("# card")

    stored = registry.save(onnx_path, _meta(), card_dir=card)

    assert stored.metadata.onnx_sha256 == registry.sha256_file(onnx_path)
    card_files = registry.card_manifest(card)
    assert stored.metadata.sha256 == registry.artifact_digest(stored.metadata, card_files)
    assert stored.metadata.sha256 != stored.metadata.onnx_sha256
    assert (stored.card_dir / "README.md").read_text() == "# card"
    again = registry.verify("toy-linear", "1.0.0")
    session = open_session(again, threads=1)
    (y,) = session.run(None, {"x": np.array([[2.0]], dtype=np.float32)})
    assert y.tolist() == [[6.0]]


@pytest.mark.usefixtures("model_store")
def test_list_sorts_semantic_versions_and_latest(tmp_path: Path) -> None:
    for version in ["1.2.0", "1.10.0", "1.9.1"]:
        registry.save(write_linear_onnx(tmp_path / f"{version}.onnx"), _meta(version))

    assert [m.version for m in registry.list_models("toy-linear")] == ["1.2.0", "1.9.1", "1.10.0"]
    assert registry.get("toy-linear", "latest").metadata.version == "1.10.0"


@pytest.mark.usefixtures("model_store")
def test_versions_are_immutable(tmp_path: Path) -> None:
    registry.save(write_linear_onnx(tmp_path / "a.onnx"), _meta())
    with pytest.raises(registry.ArtifactError, match="already in the model store"):
        registry.save(write_linear_onnx(tmp_path / "b.onnx", weight=5.0), _meta())


@pytest.mark.usefixtures("model_store")
def test_tampered_bytes_are_refused(tmp_path: Path) -> None:
    stored = registry.save(write_linear_onnx(tmp_path / "m.onnx"), _meta())
    tampered = write_linear_onnx(tmp_path / "evil.onnx", weight=100.0)
    stored.onnx_path.write_bytes(tampered.read_bytes())

    with pytest.raises(registry.ArtifactError, match=r"sha256 of model\.onnx is"):
        registry.verify("toy-linear", "1.0.0")


@pytest.mark.usefixtures("model_store")
def test_missing_model_names_what_exists(tmp_path: Path) -> None:
    registry.save(write_linear_onnx(tmp_path / "m.onnx"), _meta())
    with pytest.raises(
        registry.ArtifactError, match=r"toy-linear:9\.9\.9 not found.*toy-linear:1\.0\.0"
    ):
        registry.verify("toy-linear", "9.9.9")
    # A misspelt name lists the names there are (was "available: none").
    with pytest.raises(
        registry.ArtifactError,
        match=r"no model named 'toy-linaer'; models in the store: toy-linear",
    ):
        registry.verify("toy-linaer", "1.0.0")


def test_custom_operator_domain_is_refused(tmp_path: Path) -> None:
    path = write_linear_onnx(tmp_path / "custom.onnx", domain="evil.ops")
    with pytest.raises(registry.ArtifactError, match="operator domains"):
        registry.check_onnx_graph(path)


def test_external_data_is_refused(tmp_path: Path) -> None:
    path = write_linear_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, size_threshold=0,
              location="weights.bin")  # fmt: skip
    with pytest.raises(registry.ArtifactError, match="external data"):
        registry.check_onnx_graph(path)


def _if_graph(path: Path, domain: str = "") -> Path:
    """``y = x * w`` inside both branches of an If: the weight and the op live in subgraphs."""

    def branch(name: str) -> onnx.GraphProto:
        weight = numpy_helper.from_array(np.array([2.0], dtype=np.float32), name=f"w_{name}")
        return helper.make_graph(
            [helper.make_node("Mul", ["x", f"w_{name}"], [f"y_{name}"], domain=domain)],
            name,
            [],
            [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, ["N", 1])],
            initializer=[weight],
        )

    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("no")
            )
        ],
        "nested",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_subgraphs_are_checked_too(tmp_path: Path) -> None:
    registry.check_onnx_graph(_if_graph(tmp_path / "ok.onnx"))  # a plain If is fine
    with pytest.raises(registry.ArtifactError, match="operator domains"):
        registry.check_onnx_graph(_if_graph(tmp_path / "custom.onnx", domain="evil.ops"))
    path = _if_graph(tmp_path / "external.onnx")
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, size_threshold=0,
              location="weights.bin")  # fmt: skip
    with pytest.raises(registry.ArtifactError, match=r"stores tensor 'w_\w+' as external data"):
        registry.check_onnx_graph(path)


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = write_linear_onnx(tmp_path / "m.onnx")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    with pytest.raises(registry.ArtifactError, match="symbolic link"):
        registry.check_onnx_graph(link)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Bad Name", "model name 'Bad Name' is not allowed"),
        ("version", "latest", "version 'latest' is not a semantic version"),
    ],
)
def test_metadata_rejects_bad_identity(field: str, value: str, message: str) -> None:
    data = {"name": "ok-name", "version": "1.0.0", "task": "test", field: value}
    with pytest.raises(ValueError, match=message):
        ModelMetadata.model_validate(data)


@pytest.mark.usefixtures("model_store")
def test_unknown_name_is_an_artifact_error() -> None:
    assert registry.list_models("never-stored") == []
    with pytest.raises(registry.ArtifactError, match="no versions of model 'never-stored'"):
        registry.get("never-stored", "latest")
    with pytest.raises(registry.ArtifactError, match=r"never-stored:1\.0\.0 not found"):
        registry.verify("never-stored", "1.0.0")


def _with_threshold(version: str = "1.0.0") -> ModelMetadata:
    point = OperatingPoint(label="tb", threshold=0.4, chosen_on="validation, sens >= 0.9")
    return _meta(version).model_copy(update={"operating_points": [point]})


@pytest.mark.usefixtures("model_store")
def test_tampered_metadata_is_refused(tmp_path: Path) -> None:
    stored = registry.save(write_linear_onnx(tmp_path / "m.onnx"), _with_threshold())
    original = (stored.path / "metadata.json").read_text()
    tampered = json.loads(original)
    tampered["operating_points"][0]["threshold"] = 1.0  # nothing would ever be flagged
    (stored.path / "metadata.json").write_text(json.dumps(tampered))
    with pytest.raises(registry.ArtifactError, match="the metadata or the card was modified"):
        registry.verify("toy-linear", "1.0.0")
    # Recomputing the digest in metadata.json alone is caught by model.yaml's record.
    forged = ModelMetadata.model_validate(tampered)
    tampered["sha256"] = registry.artifact_digest(forged, {})
    (stored.path / "metadata.json").write_text(json.dumps(tampered))
    with pytest.raises(registry.ArtifactError, match=r"\(model\.yaml\)"):
        registry.verify("toy-linear", "1.0.0")
    (stored.path / "metadata.json").write_text(original)
    assert registry.verify("toy-linear", "1.0.0").metadata.sha256 == stored.metadata.sha256


@pytest.mark.usefixtures("model_store")
def test_an_identity_kept_outside_the_store_is_enforced(tmp_path: Path) -> None:
    stored = registry.save(write_linear_onnx(tmp_path / "m.onnx"), _meta())
    assert registry.verify("toy-linear", "1.0.0", expected_sha256=stored.metadata.sha256)
    with pytest.raises(registry.ArtifactError, match="was replaced"):
        registry.verify("toy-linear", "1.0.0", expected_sha256="0" * 64)


@pytest.mark.usefixtures("model_store")
def test_card_edits_and_symlinks_are_refused(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    (card / "model-card.md").write_text("# card")
    stored = registry.save(write_linear_onnx(tmp_path / "m.onnx"), _meta(), card_dir=card)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the model page")
    shown = stored.card_dir / "model-card.md"
    shown.unlink()
    shown.symlink_to(secret)
    with pytest.raises(registry.ArtifactError, match=r"model-card\.md .* is a symbolic link"):
        registry.verify("toy-linear", "1.0.0")
    shown.unlink()
    shown.write_text("# a different card")
    with pytest.raises(registry.ArtifactError, match="the metadata or the card was modified"):
        registry.verify("toy-linear", "1.0.0")
    # A card folder holding a link is refused at save, before anything is stored.
    (card / "extra.md").symlink_to(secret)
    with pytest.raises(registry.ArtifactError, match="symbolic link"):
        registry.save(write_linear_onnx(tmp_path / "n.onnx"), _meta("2.0.0"), card_dir=card)
    assert [m.version for m in registry.list_models("toy-linear")] == ["1.0.0"]


def _constant_graph(path: Path, attribute: str) -> Path:
    """``y = x * c`` where ``c`` comes from a Constant node whose tensor is external."""
    value = numpy_helper.from_array(np.array([2.0], dtype=np.float32), name="c_value")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    entry = value.external_data.add()
    entry.key, entry.value = "location", "weights.bin"  # next to the model: the checker allows it
    if attribute == "value":
        constant = helper.make_node("Constant", [], ["c"], value=value)
    else:  # a sparse constant: its values tensor is the external one
        indices = numpy_helper.from_array(np.array([0], dtype=np.int64), name="c_indices")
        sparse = helper.make_sparse_tensor(value, indices, [1])
        constant = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    graph = helper.make_graph(
        [constant, helper.make_node("Mul", ["x", "c"], ["y"])],
        "constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("attribute", ["value", "sparse_value"])
def test_external_data_in_constant_attributes_is_refused(tmp_path: Path, attribute: str) -> None:
    path = _constant_graph(tmp_path / "constant.onnx", attribute)
    with pytest.raises(registry.ArtifactError, match=r"stores tensor 'c_value' as external"):
        registry.check_onnx_graph(path)


@pytest.mark.usefixtures("model_store")
def test_an_artifact_saved_without_an_identity_says_so(tmp_path: Path) -> None:
    stored = registry.save(write_linear_onnx(tmp_path / "m.onnx"), _meta())
    old = json.loads((stored.path / "metadata.json").read_text())
    old["sha256"] = old.pop("onnx_sha256")  # the layout before artifact identities
    (stored.path / "metadata.json").write_text(json.dumps(old))
    with pytest.raises(registry.ArtifactError, match="saved before artifacts recorded"):
        registry.verify("toy-linear", "1.0.0")
