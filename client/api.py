"""The client library's public face: one interface over both protocols, and :func:`connect`.

>>> from client.api import connect            # doctest: +SKIP
>>> with connect(rest="http://127.0.0.1:8501") as c:
...     c.predict(images).digits

:class:`DigitsClient` is what callers program against; :class:`RestClient` and
:class:`GrpcClient` implement it by speaking TensorFlow Serving's own REST and gRPC APIs, so
either works unchanged against TF Serving. Results are plain dataclasses and numpy arrays.
Errors are :mod:`contract.errors`' family, whichever protocol failed.
"""

from __future__ import annotations

from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction
from client.grpc_client import GrpcClient
from client.rest_client import RestClient
from contract.types import ModelMetadata, Signature, TensorSpec, VersionStatus

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DigitsClient",
    "GrpcClient",
    "ModelMetadata",
    "ModelSpec",
    "Prediction",
    "RestClient",
    "Signature",
    "TensorSpec",
    "VersionStatus",
    "connect",
]


def connect(
    *,
    rest: str | None = None,
    grpc: str | None = None,
    spec: ModelSpec | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DigitsClient:
    """A REST client for ``rest="http://host:8501"`` or a gRPC one for ``grpc="host:8500"``."""
    if (rest is None) == (grpc is None):
        raise ValueError("give exactly one of rest= (a URL) or grpc= (host:port)")
    if rest is not None:
        return RestClient(rest, spec, timeout=timeout)
    return GrpcClient(grpc, spec, timeout=timeout)
