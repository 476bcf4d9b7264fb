"""The client library's public face: one interface over four wire paths, and :func:`connect`.

>>> from client.api import connect            # doctest: +SKIP
>>> with connect(rest="http://127.0.0.1:8501") as c:
...     c.predict(images).digits
>>> with connect(grpc="127.0.0.1:8500", protocol="v2") as c:
...     c.predict(images).digits

:class:`DigitsClient` is what callers program against. :class:`RestClient` and
:class:`GrpcClient` implement it by speaking TensorFlow Serving's own REST and gRPC APIs, so
either works unchanged against TF Serving; :class:`V2RestClient` and :class:`V2GrpcClient` speak
the Open Inference Protocol (KServe V2, Triton, MLServer). Results are plain dataclasses and
numpy arrays. Errors are :mod:`contract.errors`' family, whichever protocol failed.
"""

from __future__ import annotations

from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction
from client.grpc_client import GrpcClient
from client.rest_client import ROW_FORMAT, RestClient
from client.v2_grpc_client import V2GrpcClient
from client.v2_rest_client import BINARY, V2RestClient
from contract.types import ModelMetadata, Signature, TensorSpec, VersionStatus

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DigitsClient",
    "GrpcClient",
    "ModelMetadata",
    "ModelSpec",
    "Prediction",
    "RestClient",
    "V2GrpcClient",
    "V2RestClient",
    "Signature",
    "TensorSpec",
    "VersionStatus",
    "connect",
]

TFSERVING = "tfserving"  # TensorFlow Serving's REST and gRPC APIs
V2 = "v2"  # the Open Inference Protocol
PROTOCOLS = (TFSERVING, V2)


def connect(
    *,
    rest: str | None = None,
    grpc: str | None = None,
    protocol: str = TFSERVING,
    spec: ModelSpec | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    rest_format: str | None = None,
) -> DigitsClient:
    """A client for ``rest="http://host:8501"`` or ``grpc="host:8500"``, speaking ``protocol``.

    ``protocol`` is ``"tfserving"`` (TF Serving's APIs) or ``"v2"`` (the Open Inference Protocol).
    ``rest_format`` is the REST body: ``"row"`` (default) or ``"columnar"`` for TF Serving,
    ``"binary"`` (default: the binary tensor extension) or ``"json"`` for V2.
    """
    if (rest is None) == (grpc is None):
        raise ValueError("give exactly one of rest= (a URL) or grpc= (host:port)")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if grpc is not None:
        if rest_format is not None:
            raise ValueError("rest_format is for REST clients")
        client = GrpcClient if protocol == TFSERVING else V2GrpcClient
        return client(grpc, spec, timeout=timeout)
    if protocol == TFSERVING:
        return RestClient(rest, spec, timeout=timeout, request_format=rest_format or ROW_FORMAT)
    return V2RestClient(rest, spec, timeout=timeout, tensor_format=rest_format or BINARY)
