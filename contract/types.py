"""Protocol-neutral results shared by the server's data plane and the clients.

The data plane returns these; the REST and gRPC adapters encode them (TF Serving's JSON, its
protobuf messages), and the clients decode either back into them. Plain frozen dataclasses: no
protobuf or JSON in them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import contract
from contract.errors import InvalidArgument

# TF Serving's ModelVersionStatus.State names.
UNKNOWN = "UNKNOWN"
START = "START"
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"
STATES = (UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END)


@dataclass(frozen=True)
class VersionStatus:
    """One model version's state (a row of ``GetModelStatus``) and the error that ended it."""

    version: int
    state: str  # one of STATES
    error_code: str = "OK"  # a contract.errors.Code name
    error_message: str = ""

    @property
    def available(self) -> bool:
        return self.state == AVAILABLE


@dataclass(frozen=True)
class TensorSpec:
    """A signature's input or output: tensor name, dtype (``DT_FLOAT``) and shape (None = any)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str


@dataclass(frozen=True)
class ModelMetadata:
    """A model version and its signature map (``GetModelMetadata``)."""

    name: str
    version: int | None
    signatures: dict[str, Signature] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (for ``--json``)."""
        return {
            "name": self.name,
            "version": self.version,
            "signatures": {
                key: {
                    "method_name": sig.method_name,
                    "inputs": {k: v.as_dict() for k, v in sig.inputs.items()},
                    "outputs": {k: v.as_dict() for k, v in sig.outputs.items()},
                }
                for key, sig in self.signatures.items()
            },
        }


# numpy dtype names of the contract -> TensorFlow DataType names, as signatures report them.
_DATA_TYPE_NAMES = {"float32": "DT_FLOAT", "int64": "DT_INT64"}


def _spec(name: str, dtype: str, shape: tuple[int | None, ...]) -> TensorSpec:
    return TensorSpec(name=name, dtype=_DATA_TYPE_NAMES[dtype], shape=shape)


def served_signature() -> Signature:
    """The contract's one signature (``serving_default``), batch dimension None."""
    return Signature(
        inputs={n: _spec(n, dtype, shape) for n, (dtype, shape) in contract.INPUT_SPEC.items()},
        outputs={n: _spec(n, dtype, shape) for n, (dtype, shape) in contract.OUTPUT_SPEC.items()},
        method_name=contract.PREDICT_METHOD_NAME,
    )


def served_metadata(name: str, version: int) -> ModelMetadata:
    """The metadata of a version this contract's model serves."""
    return ModelMetadata(name=name, version=version,
                         signatures={contract.SIGNATURE_NAME: served_signature()})


def check_output_names(names: Iterable[str], refusal: str) -> None:
    """InvalidArgument unless every name is one of the model's outputs: the one check of requested
    outputs for every protocol. ``refusal`` is the protocol's own words, formatted with
    ``unknown`` (the unknown names), ``first`` (the first of them) and ``outputs`` (the model's)."""
    unknown = [name for name in names if name not in contract.OUTPUT_NAMES]
    if unknown:
        outputs = list(contract.OUTPUT_NAMES)
        raise InvalidArgument(refusal.format(unknown=unknown, first=unknown[0], outputs=outputs))


@dataclass(frozen=True)
class IndexRow:
    """A row of the model repository index (the Open Inference Protocol's extension)."""

    name: str
    version: str  # "" for a model with no version to list (unloaded)
    state: str  # READY, LOADING or UNAVAILABLE (contract.v2's INDEX_*)
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "reason": self.reason}


# --- The models a server serves (TF Serving's ModelConfig, as plain values) -------------------------
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # safe in a URL path
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
VERSION_POLICY_PATTERN = re.compile(r"^(latest:[1-9][0-9]*|all|specific:[0-9]+(,[0-9]+)*)$")


@dataclass(frozen=True)
class ModelEntry:
    """One served model: its name, where its versions live, which versions serve, their labels.

    ``policy`` is ``latest:N``, ``all`` or ``specific:V1,V2`` (``--model_version_policy``'s
    spelling of TF Serving's ServableVersionPolicy)."""

    name: str
    base_path: str
    policy: str = "latest:1"
    labels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not MODEL_NAME_PATTERN.match(self.name):
            raise InvalidArgument(
                f"model name {self.name!r} must be 1-128 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if not self.base_path:
            raise InvalidArgument(f"model {self.name!r} has no base_path")
        if not VERSION_POLICY_PATTERN.match(self.policy):
            raise InvalidArgument(
                f"model {self.name!r}: version policy {self.policy!r} is not latest:N, all or "
                "specific:V1,V2"
            )
        for label, version in self.labels.items():
            if not LABEL_PATTERN.match(label) or isinstance(version, bool) or version < 1:
                raise InvalidArgument(
                    f"model {self.name!r}: version label {label!r} -> {version!r} must name a "
                    "positive version with letters, digits, '_', '.' or '-'"
                )
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_path": self.base_path, "policy": self.policy,
                "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEntry:
        return cls(data["name"], data["base_path"], data["policy"], dict(data["labels"]))


def check_unique_names(entries: Iterable[ModelEntry]) -> None:
    """InvalidArgument naming the first model name given twice."""
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise InvalidArgument(f"model {entry.name!r} is configured twice")
        seen.add(entry.name)
