"""TF Serving's model server config (``--model_config_file``, ``HandleReloadConfigRequest``).

The file is a ``ModelServerConfig`` in protobuf text format, read with our own mirror of TF
Serving's messages (``contract/proto/digits_tfserving.proto``, the same field numbers), so the
same file serves ``tensorflow/serving`` and us::

    model_config_list {
      config {
        name: "lenet5"
        base_path: "/models/lenet5"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }
        version_labels { key: "stable" value: 1 }
      }
    }

Each ``config`` becomes a plain :class:`contract.types.ModelEntry`, the form the server's core
works with. A relative ``base_path`` is resolved against the directory of the file it came from
(TF Serving resolves it against its working directory; a config file carried beside its models
works from anywhere this way). ``model_platform`` may be empty, ``tensorflow`` (the same base
path then serves TF Serving its SavedModel and us its ``model.onnx``) or ``onnxruntime``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format

from contract.errors import InvalidArgument
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import ModelEntry, check_unique_names

PLATFORMS = ("", "tensorflow", "onnxruntime")


def _policy(config: pb.ModelConfig) -> str:
    """``latest:N`` / ``all`` / ``specific:V1,V2`` of a config's ServableVersionPolicy."""
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        if not policy.specific.versions:
            raise InvalidArgument(f"model {config.name!r}: a specific version policy names no version")
        return "specific:" + ",".join(str(v) for v in policy.specific.versions)
    # TF Serving's default, and its reading of num_versions 0: the latest version alone.
    return f"latest:{max(1, policy.latest.num_versions) if choice else 1}"


def _entry(config: pb.ModelConfig, base_dir: Path | None) -> ModelEntry:
    if config.model_platform not in PLATFORMS:
        raise InvalidArgument(
            f"model {config.name!r}: model_platform {config.model_platform!r} is not served here "
            f"(one of {', '.join(repr(p) for p in PLATFORMS)})"
        )
    base_path = config.base_path
    if base_path and base_dir is not None and not Path(base_path).is_absolute():
        base_path = str(base_dir / base_path)
    return ModelEntry(config.name, base_path, _policy(config), dict(config.version_labels))


def entries_of(config: pb.ModelServerConfig, base_dir: Path | None = None) -> list[ModelEntry]:
    """The models a ``ModelServerConfig`` lists; InvalidArgument naming what is wrong."""
    if config.WhichOneof("config") == "custom_model_config":
        raise InvalidArgument("custom_model_config is not supported: give a model_config_list")
    entries = [_entry(c, base_dir) for c in config.model_config_list.config]
    check_unique_names(entries)
    return entries


def parse_text(text: str, base_dir: Path | None = None) -> list[ModelEntry]:
    """The models of a config in text format; InvalidArgument with the parser's line and column."""
    config = pb.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"not a ModelServerConfig in text format: {exc}") from None
    return entries_of(config, base_dir)


def read_file(path: str | Path) -> list[ModelEntry]:
    """The models of a ``--model_config_file``; InvalidArgument naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read model config file {path}: {exc}") from None
    try:
        return parse_text(text, path.resolve().parent)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc.message}") from None


def to_proto(entries: Sequence[ModelEntry]) -> pb.ModelServerConfig:
    """The ``ModelServerConfig`` listing ``entries`` (what ``digits`` sends to reload a config)."""
    config = pb.ModelServerConfig()
    for entry in entries:
        item = config.model_config_list.config.add(name=entry.name, base_path=entry.base_path)
        kind, _, values = entry.policy.partition(":")
        if kind == "all":
            item.model_version_policy.all.SetInParent()
        elif kind == "specific":
            item.model_version_policy.specific.versions.extend(int(v) for v in values.split(","))
        else:
            item.model_version_policy.latest.num_versions = int(values)
        item.version_labels.update(entry.labels)
    return config


def to_text(entries: Sequence[ModelEntry]) -> str:
    """``entries`` as a config file's text."""
    return text_format.MessageToString(to_proto(entries))
