"""The REST route table: which model, version and operation a path names, for both protocols.

One table for the Flask blueprints and the fast path (``serving.rest.fast_path``), so the two
cannot disagree on what a path means:

  /v1/models/{name}[/versions/{v}|/labels/{l}][:predict|/metadata]   TF Serving: predict, metadata, status
  /v2/models/{name}[/versions/{v}][/infer|/ready|/config]            V2: infer, ready, config, metadata

Only predict and infer are POSTed; every other model route is a GET (405 otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contract import REST_MODELS_PREFIX, v2
from contract.errors import Code, InvalidArgument, NotFound, error_for

TFSERVING = "tfserving"
V2 = "v2"

_TFSERVING_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>:predict|/metadata)?$"
)
_TFSERVING_OPERATIONS = {":predict": "predict", "/metadata": "metadata", "": "status"}
_V2_PATH = re.compile(r"^(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<verb>/ready|/infer|/config)?$")
_V2_OPERATIONS = {
    "/infer": v2.OP_INFER,
    "/ready": v2.OP_MODEL_READY,
    "/config": v2.OP_MODEL_CONFIG,
    "": v2.OP_MODEL_METADATA,
}
_POSTED = frozenset({"predict", v2.OP_INFER})
# Paths the fast path may take: ASCII with no "%", decoded identically by werkzeug and by us.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=@/:-]+")


@dataclass(frozen=True)
class ModelRoute:
    """A model route: the protocol, the model, the version (TF Serving's as a number, V2's as
    written: the V2 routes check it themselves), the label and the operation."""

    protocol: str
    name: str
    operation: str
    version: int | None = None
    version_text: str | None = None
    label: str | None = None

    @property
    def method(self) -> str:
        """The one HTTP method the route answers."""
        return "POST" if self.operation in _POSTED else "GET"

    def check_method(self, method: str) -> None:
        """405 (UNIMPLEMENTED) for a method the route does not answer."""
        if method != self.method:
            raise error_for(
                Code.UNIMPLEMENTED, f"{method} not allowed here; use {self.method}", http_status=405
            )


def tfserving_route(rest: str) -> ModelRoute:
    """The route of ``/v1/models/{rest}``; InvalidArgument (400) for a malformed one."""
    match = _TFSERVING_PATH.match(rest)
    if match is None:
        raise InvalidArgument(
            f"malformed request path {REST_MODELS_PREFIX}/{rest}; expected "
            f"{REST_MODELS_PREFIX}/NAME[/versions/N|/labels/L][:predict|/metadata]"
        )
    version = match["version"]
    if version is not None and not (version.isascii() and version.isdigit()):
        raise InvalidArgument(f"model version must be a non-negative integer, got {version!r}")
    return ModelRoute(
        TFSERVING,
        match["name"],
        _TFSERVING_OPERATIONS[match["verb"] or ""],
        version=None if version is None else int(version),
        label=match["label"],
    )


def v2_route(rest: str) -> ModelRoute:
    """The route of ``/v2/models/{rest}``; NotFound (404) for a path that names none."""
    match = _V2_PATH.match(rest)
    if match is None:
        raise NotFound(
            f"no such route {v2.MODELS_PREFIX}/{rest}; expected "
            f"{v2.MODELS_PREFIX}/NAME[/versions/V][/ready|/infer|/config]"
        )
    return ModelRoute(V2, match["name"], _V2_OPERATIONS[match["verb"] or ""], version_text=match["version"])


_PREFIXES = ((REST_MODELS_PREFIX + "/", tfserving_route), (v2.MODELS_PREFIX + "/", v2_route))


def posted_route(path: str) -> ModelRoute | None:
    """The predict or infer route of a plain path, for the fast path; None for anything else
    (another route, a malformed or unusual path), which Flask then answers."""
    if not _PLAIN_PATH.fullmatch(path):
        return None
    for prefix, parse in _PREFIXES:
        if path.startswith(prefix):
            try:
                route = parse(path[len(prefix):])
            except (InvalidArgument, NotFound):
                return None
            return route if route.method == "POST" else None
    return None
