"""Protocol-neutral results shared by the server's data plane and the clients.

The data plane returns these; the REST and gRPC adapters encode them (TF Serving's JSON, its
protobuf messages), and the clients decode either back into them. Plain frozen dataclasses: no
protobuf or JSON in them.
"""

from __future__ import annotations

from collections.abc import Iterable
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
