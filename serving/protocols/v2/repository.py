"""Triton's model repository extension, both wire forms: the index, load and unload.

  REST  POST /v2/repository/index                {"ready"?: bool} -> [{"name", "version", "state", "reason"}]
  REST  POST /v2/repository/models/{name}/load   {"parameters"?: {}} -> 200, empty body
  REST  POST /v2/repository/models/{name}/unload {"parameters"?: {}} -> 200, empty body
  gRPC  RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload (``inference.*`` messages)

The server has one repository (its models), so ``repository_name`` must be empty. Load takes no
parameters: Triton's ``config`` and ``file:`` parameters carry a model's files, which our models
are not (a model is a base path in the model config); they are refused, never ignored. Unload
takes ``unload_dependents`` (tritonclient always sends it): our models have no dependents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from contract.errors import InvalidArgument
from contract.proto import digits_v2_pb2 as pb
from contract.types import IndexRow

_INDEX_KEYS = {"repository_name", "ready"}
_LOAD_KEYS = {"parameters"}
_HARMLESS = {"model unload": {"unload_dependents"}}  # parameters that change nothing here


def _check_repository(name: str) -> None:
    if name:
        raise InvalidArgument(f"unknown repository {name!r}: this server has one, unnamed")


def _check_parameters(parameters: Iterable[str], operation: str) -> None:
    names = sorted(set(parameters) - _HARMLESS.get(operation, set()))
    if names:
        raise InvalidArgument(
            f"{operation} takes no parameters, got {names} (a model is a base path in the model "
            "config; Triton's 'config' and 'file:' parameters are not supported)"
        )


def _json_object(body: bytes, allowed: set[str], where: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{where}: malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: the body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidArgument(f"{where}: unknown keys {unknown} (allowed: {sorted(allowed)})")
    return value


# --- REST -----------------------------------------------------------------------------------------
def decode_index_body(body: bytes) -> bool:
    """Whether the index asks for READY models alone."""
    value = _json_object(body, _INDEX_KEYS, "repository index")
    _check_repository(value.get("repository_name", ""))
    ready = value.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidArgument(f"repository index: 'ready' must be true or false, got {ready!r}")
    return ready


def encode_index(rows: Iterable[IndexRow]) -> list[dict[str, str]]:
    return [row.as_dict() for row in rows]


def check_load_body(body: bytes, operation: str) -> None:
    """A load or unload body: nothing, ``{}``, or ``{"parameters": {}}``."""
    value = _json_object(body, _LOAD_KEYS, operation)
    parameters = value.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise InvalidArgument(f"{operation}: 'parameters' must be a JSON object")
    _check_parameters(parameters, operation)


# --- gRPC -----------------------------------------------------------------------------------------
def decode_index_request(request: pb.RepositoryIndexRequest) -> bool:
    _check_repository(request.repository_name)
    return request.ready


def index_response(rows: Iterable[IndexRow]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(models=[
        pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state,
                                              reason=r.reason)
        for r in rows
    ])


def decode_load_request(
    request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest, operation: str
) -> str:
    """The model a load or unload names."""
    _check_repository(request.repository_name)
    _check_parameters(request.parameters, operation)
    if not request.model_name:
        raise InvalidArgument(f"{operation}: model_name is required")
    return request.model_name
