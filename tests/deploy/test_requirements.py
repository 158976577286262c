"""The serving lock: what the Bento installs is current, pinned as in constraints.txt,
and holds no training package."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "requirements" / "serving.txt"
# Never needed to serve ONNX; each would add hundreds of MB (torch: gigabytes).
TRAINING_ONLY = {"torch", "torchvision", "monai", "pandas", "matplotlib", "scikit-learn"}


def _compile_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compile", ROOT / "requirements/compile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    compile_ = _compile_module()
    return {str(k): v for k, v in compile_.read_constraints(path).items()}


def test_serving_lock_is_what_compile_writes_today() -> None:
    compile_ = _compile_module()

    text = compile_.render(ROOT / "pyproject.toml", ROOT / "constraints.txt")

    assert SERVING.read_text() == text, "run: .venv/bin/python requirements/compile.py"


def test_serving_lock_holds_no_training_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    train_extra = {
        canonicalize_name(Requirement(spec).name)
        for spec in project["optional-dependencies"]["train"]
    }

    serving = set(_pins(SERVING))

    assert not serving & (TRAINING_ONLY | train_extra)


def test_every_serving_pin_is_the_constraints_pin() -> None:
    constraints = _pins(ROOT / "constraints.txt")

    serving = _pins(SERVING)

    assert len(serving) > 20  # the closure, not just the direct dependencies
    assert {name: constraints.get(name) for name in serving} == serving


def test_core_dependencies_are_all_in_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}

    assert direct <= set(_pins(SERVING))


def test_compile_refuses_a_package_without_a_pin(tmp_path: Path) -> None:
    compile_ = _compile_module()
    constraints = tmp_path / "constraints.txt"
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    constraints.write_text("\n".join(x for x in lines if not x.lower().startswith("pyjwt==")))

    with pytest.raises(ValueError, match="pyjwt is needed for serving but not pinned"):
        compile_.render(ROOT / "pyproject.toml", constraints)


def test_bentofile_installs_the_serving_lock_and_ships_the_operations_cli() -> None:
    options = yaml.safe_load((ROOT / "bentofile.yaml").read_text())

    assert options["python"] == {
        "requirements_txt": "./requirements/serving.txt",
        "lock_packages": False,
    }
    assert "cli/**/*.py" in options["include"]
    assert "training/" in options["exclude"]


def test_bentofile_packs_the_models_the_shipped_serving_config_pins() -> None:
    """A plain `bentoml build` must pack what configs/serving.yaml pins
    (`tonle bento build` fills `models:` itself from the config it is given)."""
    options = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    config = yaml.safe_load((ROOT / "configs" / "serving.yaml").read_text())

    assert sorted(options["models"]) == sorted(f"{n}:{v}" for n, v in config["models"].items())
