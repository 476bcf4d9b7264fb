"""TF Serving's model config file, read into plain model entries (contract.model_config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract import model_config
from contract.errors import InvalidArgument
from contract.types import ModelEntry

ROOT = Path(__file__).resolve().parents[2]

TWO_MODELS = """
model_config_list {
  config {
    name: "lenet5"
    base_path: "/models/lenet5"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "lenet5-ensemble" base_path: "ensemble" model_version_policy { all {} } }
}
"""


def test_a_two_model_file_becomes_two_entries_with_relative_paths_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(TWO_MODELS)
    first, second = model_config.read_file(path)
    assert first == ModelEntry("lenet5", "/models/lenet5", "specific:1,2", {"stable": 1, "canary": 2})
    assert second == ModelEntry("lenet5-ensemble", str(tmp_path / "ensemble"), "all", {})


@pytest.mark.parametrize(("policy", "expected"), [
    ("", "latest:1"),
    ("model_version_policy { latest { } }", "latest:1"),  # TF Serving reads 0 as 1
    ("model_version_policy { latest { num_versions: 3 } }", "latest:3"),
    ("model_version_policy { all { } }", "all"),
    ("model_version_policy { specific { versions: 4 } }", "specific:4"),
])
def test_version_policies(policy: str, expected: str) -> None:
    text = f'model_config_list {{ config {{ name: "m" base_path: "/m" {policy} }} }}'
    assert model_config.parse_text(text)[0].policy == expected


@pytest.mark.parametrize(("text", "words"), [
    ('model_config_list { config { name: "m" base_pth: "/m" } }', 'no field named "base_pth"'),
    ('model_config_list { config { name: "m" base_path: "/m" logging_config { } } }',
     'no field named "logging_config"'),
    ('model_config_list { config { name: "m" base_path: "/m" } config { name: "m" base_path: "/n" } }',
     "model 'm' is configured twice"),
    ('model_config_list { config { name: "a/b" base_path: "/m" } }', "model name 'a/b' must be"),
    ('model_config_list { config { name: "m" } }', "model 'm' has no base_path"),
    ('model_config_list { config { name: "m" base_path: "/m" model_platform: "pytorch" } }',
     "model_platform 'pytorch' is not served here"),
    ('model_config_list { config { name: "m" base_path: "/m" model_version_policy { specific { } } } }',
     "names no version"),
    ('model_config_list { config { name: "m" base_path: "/m" version_labels { key: "x" value: 0 } } }',
     "version label 'x'"),
    ('custom_model_config { }', "custom_model_config is not supported"),
    ("model_config_list {", "not a ModelServerConfig in text format: 1:"),
])
def test_a_broken_config_is_refused_saying_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as caught:
        model_config.parse_text(text)
    assert words in caught.value.message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        model_config.read_file(tmp_path / "nope.config")
    assert "cannot read model config file" in caught.value.message and "nope.config" in caught.value.message


def test_entries_survive_the_text_form() -> None:
    entries = model_config.parse_text(TWO_MODELS)
    assert model_config.parse_text(model_config.to_text(entries)) == entries


def test_the_shipped_repository_config_serves_the_shipped_models() -> None:
    entries = model_config.read_file(ROOT / "pretrained" / "models.config")
    assert entries and all((Path(e.base_path) / "1" / "model.onnx").is_file() for e in entries)
    assert entries[0].name == "lenet5"
