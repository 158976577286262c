from __future__ import annotations

from pathlib import Path

import pytest

from models.config import ConfigError, load_config
from serving.config import ServingConfig


def test_valid_serving_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("models:\n  cvd-risk: '1.0.0'\n")
    assert load_config(path, ServingConfig).models == {"cvd-risk": "1.0.0"}


def test_error_names_key_value_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("models:\n  cvd-risk: latest\nunknown_key: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ServingConfig)
    text = str(info.value)
    assert "models = {'cvd-risk': 'latest'}" in text
    assert "pin an exact semantic version" in text
    assert "unknown_key = 3: Extra inputs are not permitted" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [("models: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a mapping")],
)
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path, ServingConfig)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", ServingConfig)


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    load_config(root / "configs" / "serving.yaml", ServingConfig)
