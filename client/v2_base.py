"""What the Open Inference Protocol ("V2") clients share: addressing, metadata, answers.

:mod:`client.v2_rest_client` and :mod:`client.v2_grpc_client` speak V2 (KServe, Triton, MLServer)
on the wire; this module turns what both receive into the library's protocol-neutral results, so a
V2 client is a drop-in :class:`client.base.DigitsClient`:

- V2 addresses a model by name and an optional version *string*; it has no version labels and no
  signatures, so a :class:`ModelSpec` with a label is refused before anything is sent and the
  signature name is not sent at all.
- V2's model metadata (name, versions, platform, input/output tensors with V2 datatypes and ``-1``
  for a variable dimension) becomes a :class:`ModelMetadata` with one signature, keyed by the
  spec's signature name, whose method name is the V2 platform.
- V2 has no per-version state table: :meth:`DigitsClient.status` asks each version's readiness and
  reports ``AVAILABLE`` for a ready one, else ``UNKNOWN`` with the error code ``UNAVAILABLE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import contract
from client.base import ModelSpec, Prediction, checked_prediction
from contract import v2
from contract.errors import ProtocolError
from contract.types import AVAILABLE, UNKNOWN, ModelMetadata, Signature, TensorSpec, VersionStatus


def check_spec(spec: ModelSpec) -> ModelSpec:
    """The spec, or ValueError when it asks for something V2 cannot say (a version label)."""
    if spec.label is not None:
        raise ValueError(f"the V2 protocol has no version labels (got {spec.label!r}); give a version number")
    return spec


def version_text(spec: ModelSpec) -> str:
    """The spec's version as V2 carries it: ``"3"``, or ``""`` for the server's default."""
    return "" if spec.version is None else v2.version_string(spec.version)


def parse_version(text: Any, protocol: str) -> int | None:
    """A V2 version string back to our integer versions (``""`` or absent -> None)."""
    if text in (None, ""):
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ProtocolError(f"model version {text!r} is not an integer", protocol=protocol) from None


def prediction_from_tensors(
    tensors: Mapping[str, np.ndarray], expected: int | None, version: Any, protocol: str
) -> Prediction:
    """A :class:`Prediction` from decoded output tensors (name -> array), shapes checked."""
    missing = [name for name in contract.OUTPUT_NAMES if name not in tensors]
    if missing:
        raise ProtocolError(f"answer lacks output(s) {missing}; it has {sorted(tensors)}", protocol=protocol)
    return checked_prediction(
        np.asarray(tensors[contract.OUTPUT_PROBABILITIES], dtype=np.float32),
        np.asarray(tensors[contract.OUTPUT_DIGIT], dtype=np.int64),
        expected,
        parse_version(version, protocol),
        protocol,
    )


def tensor_spec(name: str, datatype: str, shape: Iterable[Any]) -> TensorSpec:
    """A V2 tensor description as a :class:`TensorSpec` (dtype keeps V2's name, -1 -> None)."""
    sizes = tuple(int(size) for size in shape)
    return TensorSpec(name=name, dtype=datatype, shape=tuple(None if s < 0 else s for s in sizes))


def model_metadata(
    spec: ModelSpec,
    *,
    name: str,
    versions: Sequence[Any],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    protocol: str,
) -> ModelMetadata:
    """V2 model metadata as the library's :class:`ModelMetadata`.

    The version is the one addressed, else the highest the server lists (the one it serves by
    default, as the repository's version policy says).
    """
    listed = [parse_version(text, protocol) for text in versions]
    numbers = [v for v in listed if v is not None]
    version = spec.version if spec.version is not None else (max(numbers) if numbers else None)
    signature = Signature(
        inputs={tensor.name: tensor for tensor in inputs},
        outputs={tensor.name: tensor for tensor in outputs},
        method_name=platform,
    )
    return ModelMetadata(name=name, version=version, signatures={spec.signature_name: signature})


def version_status(version: int, ready: bool) -> VersionStatus:
    """One row of :meth:`DigitsClient.status` from a V2 readiness answer."""
    if ready:
        return VersionStatus(version=version, state=AVAILABLE)
    return VersionStatus(
        version=version,
        state=UNKNOWN,  # V2 says only "not ready": loading, failed or unloading look the same
        error_code="UNAVAILABLE",
        error_message="the server says this version is not ready",
    )
