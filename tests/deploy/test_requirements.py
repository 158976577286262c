"""The serving lock: what the Bento installs is current, pinned as in constraints.txt,
hashed, and holds no training package. Offline: the hashes are checked for form and for
which files they cover, not fetched."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.compile_script import compile_module

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "requirements" / "serving.txt"
# Never needed to serve ONNX; each would add hundreds of MB (torch: gigabytes).
TRAINING_ONLY = {"torch", "torchvision", "monai", "pandas", "matplotlib", "scikit-learn"}


def _pins(path: Path) -> dict[str, str]:
    compile_ = compile_module()
    if path == SERVING:
        return {str(k): v for k, (v, _) in compile_.read_lock(path).items()}
    return {str(k): v for k, v in compile_.read_constraints(path).items()}


def _no_index(name: str, version: str) -> list[str]:
    raise AssertionError(f"{name}=={version} has no hashes: run requirements/compile.py")


def test_serving_lock_is_what_compile_writes_today() -> None:
    compile_ = compile_module()

    text = compile_.render(
        ROOT / "pyproject.toml",
        ROOT / "constraints.txt",
        compile_.keep_or_fetch(SERVING, _no_index),
    )

    assert SERVING.read_text() == text, "run: .venv/bin/python requirements/compile.py"


def test_every_serving_pin_carries_sha256_hashes() -> None:
    lock = compile_module().read_lock(SERVING)

    assert len(lock) > 20
    assert all(hashes for _, hashes in lock.values())
    text = SERVING.read_text()
    assert text.count("--hash=sha256:") == sum(len(h) for _, h in lock.values())
    # pip's hash-checking mode needs every requirement hashed and nothing unpinned.
    assert all(len(set(h)) == len(h) for _, h in lock.values())


_H = {n: f"{n:x}" * 64 for n in range(1, 13)}


def test_the_hashes_cover_the_images_platforms_and_nothing_else() -> None:
    compile_ = compile_module()
    files = [
        ("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", _H[1]),
        ("demo-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", _H[2]),
        ("demo-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", _H[3]),  # abi3 installs on 3.11
        ("demo-1.0-cp311-cp311-musllinux_1_2_x86_64.whl", _H[4]),  # Alpine, not Debian
        ("demo-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", _H[5]),  # newer glibc than 2.36
        ("demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", _H[6]),
        ("demo-1.0-cp311-cp311-win_amd64.whl", _H[7]),
        ("demo-1.0-cp311-cp311-macosx_11_0_arm64.whl", _H[8]),
        ("demo-0.9-cp311-cp311-manylinux_2_17_x86_64.whl", _H[9]),  # another version
        ("demo-1.0.tar.gz", _H[10]),  # both platforms have a wheel: no sdist
        ("other-1.0-py3-none-any.whl", _H[11]),
    ]

    chosen = compile_.image_files("demo", "1.0", files)

    assert chosen == sorted([_H[1], _H[2], _H[3]])


def test_an_sdist_is_hashed_only_where_a_platform_has_no_wheel() -> None:
    compile_ = compile_module()
    x86_only = [
        ("demo-1.0-cp311-cp311-manylinux2014_x86_64.whl", _H[1]),
        ("demo-1.0.tar.gz", _H[2]),
    ]
    pure = [("demo-1.0-py3-none-any.whl", _H[3]), ("demo-1.0.tar.gz", _H[4])]

    assert compile_.image_files("demo", "1.0", x86_only) == sorted([_H[1], _H[2]])
    assert compile_.image_files("demo", "1.0", pure) == [_H[3]]
    assert compile_.image_files("demo", "1.0", [("demo-1.0-cp311-cp311-win32.whl", _H[5])]) == []


def test_a_changed_pin_asks_the_index_and_the_others_keep_their_hashes(tmp_path: Path) -> None:
    compile_ = compile_module()
    lock = tmp_path / "serving.txt"
    lock.write_text(f"a==1.0 \\\n    --hash=sha256:{_H[1]}\nb==2.0 \\\n    --hash=sha256:{_H[2]}\n")
    asked: list[tuple[str, str]] = []

    def index(name: str, version: str) -> list[str]:
        asked.append((name, version))
        return [_H[3]]

    hashes = compile_.keep_or_fetch(lock, index)

    assert hashes("a", "1.0") == [_H[1]]
    assert hashes("b", "2.1") == [_H[3]]
    assert asked == [("b", "2.1")]


def test_a_pin_without_a_file_for_the_image_is_refused() -> None:
    compile_ = compile_module()

    with pytest.raises(ValueError, match=r"no file for CPython 3\.11 on Linux"):
        compile_.render(ROOT / "pyproject.toml", ROOT / "constraints.txt", lambda n, v: [])


@pytest.mark.parametrize(
    "entry",
    [
        "a>=1.0",
        "a==1.0 \\\n    --hash=md5:00",
        f"a==1.0 \\\n    --hash=sha256:{_H[1][:-1]}",
        "-r other.txt",
        f"B==2.0 \\\n    --hash=sha256:{_H[2]}",  # pinned twice
    ],
)
def test_the_lock_reader_refuses_what_is_not_a_hashed_pin(tmp_path: Path, entry: str) -> None:
    lock = tmp_path / "serving.txt"
    lock.write_text(f"# header\nb==2.0 \\\n    --hash=sha256:{_H[2]}\n{entry}\n")

    with pytest.raises(ValueError, match=r"serving\.txt:4: "):
        compile_module().read_lock(lock)


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
    compile_ = compile_module()
    constraints = tmp_path / "constraints.txt"
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    constraints.write_text("\n".join(x for x in lines if not x.lower().startswith("pyjwt==")))

    with pytest.raises(ValueError, match="pyjwt is needed for serving but not pinned"):
        compile_.render(
            ROOT / "pyproject.toml", constraints, compile_.keep_or_fetch(SERVING, _no_index)
        )


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
