"""The Open Inference Protocol's REST API (a Flask blueprint) and its infer handler, shared with
the fast path.

  GET  /v2/health/live, /v2/health/ready, /v2 (server metadata)
  GET  /v2/models/{name}[/versions/{v}][/ready]     model metadata, model readiness
  GET  /v2/models/{name}[/versions/{v}]/config      Triton's model configuration
  POST /v2/models/{name}[/versions/{v}]/infer       JSON or binary tensors (gzip/deflate allowed)
  POST /v2/repository/index                         the models and their versions' states
  POST /v2/repository/models/{name}/load|unload     runtime changes (--model_control_mode explicit)

Each route decodes (``serving.protocols.v2``), calls the data plane and encodes; it never catches
(``serving.rest.errors`` answers errors).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from contract import v2
from contract.errors import Code, error_for
from serving.core.dataplane import DataPlane
from serving.observability.observer import RequestObserver
from serving.protocols.v2.model_config import model_config_json
from serving.protocols.v2.repository import check_load_body, decode_index_body, encode_index
from serving.protocols.v2.rest_json import (
    decode_infer_request,
    decompress,
    encode_infer_response,
    encode_model_metadata,
    encode_server_metadata,
)
from serving.rest import flask_hooks
from serving.rest.errors import JSON, error_body, json_body
from serving.rest.routes import V2, ModelRoute, v2_route

NOT_READY = "not ready: no model version available or shutting down"


def infer(
    dataplane: DataPlane,
    route: ModelRoute,
    body: bytes,
    headers: tuple[str | None, str | None],
    limits: tuple[int, float | None],
) -> tuple[bytes, list[tuple[str, str]]]:
    """One infer's answer body and headers. ``headers``: the request's ``Content-Encoding`` and
    ``Inference-Header-Content-Length``; ``limits``: the largest body and the server's timeout
    (the request's own ``timeout`` parameter may shorten it)."""
    encoding, header_length = headers
    max_request_bytes, timeout = limits
    version = v2.parse_version(route.name, route.version_text)
    request_ = decode_infer_request(decompress(body, encoding, max_request_bytes), header_length)
    deadlines = [limit for limit in (timeout, request_.timeout) if limit is not None]
    served, outputs = dataplane.predict(
        route.name, request_.inputs, version=version, output_filter=request_.output_names,
        timeout=min(deadlines, default=None),
    )
    payload, json_length = encode_infer_response(request_, route.name, served, outputs)
    if json_length is None:
        return payload, [("Content-Type", JSON), ("Content-Length", str(len(payload)))]
    return payload, [
        (v2.HEADER_CONTENT_LENGTH, str(json_length)),
        ("Content-Type", v2.BINARY_CONTENT_TYPE),
        ("Content-Length", str(len(payload))),
    ]


def _model_route(dataplane: DataPlane, route: ModelRoute) -> bytes:
    """Ready, metadata and config: they address a version the way infer does (an unknown one is
    a 404, none loaded yet a 503), exactly as TF Serving's routes answer."""
    version = v2.parse_version(route.name, route.version_text)
    if route.operation == v2.OP_MODEL_METADATA:
        return json_body(encode_model_metadata(route.name, dataplane.described_versions(route.name, version)))
    dataplane.resolve(route.name, version)
    if route.operation == v2.OP_MODEL_CONFIG:
        return json_body(model_config_json(route.name, dataplane.max_batch))
    # A draining server's models are not ready either (DataPlane.model_ready decides): 503.
    if not dataplane.model_ready(route.name, version):
        raise error_for(Code.UNAVAILABLE, f"model {route.name!r} is not ready: the server is shutting down")
    return json_body({"name": route.name, "ready": True})


def blueprint(dataplane: DataPlane, limits: tuple[int, float | None], access_log: bool) -> Blueprint:
    """The V2 routes over ``dataplane``, observed with protocol ``v2``. ``limits``: the largest
    request body and the server's timeout."""
    routes = Blueprint(V2, __name__)
    flask_hooks.observe_requests(routes, RequestObserver("rest", access_log, protocol="v2"))

    @routes.get(v2.PREFIX)
    def server_metadata() -> Response:
        flask_hooks.start(v2.OP_SERVER_METADATA)
        return Response(json_body(encode_server_metadata()), 200, mimetype=JSON)

    @routes.route(f"{v2.MODELS_PREFIX}/<path:rest>", methods=["GET", "POST"])
    def models(rest: str) -> Response:
        route = flask_hooks.start_model_route(v2_route, rest)
        if route.operation != v2.OP_INFER:
            return Response(_model_route(dataplane, route), 200, mimetype=JSON)
        headers = (request.headers.get("Content-Encoding"), request.headers.get(v2.HEADER_CONTENT_LENGTH))
        payload, answer_headers = infer(dataplane, route, request.get_data(), headers, limits)
        return Response(payload, 200, headers=answer_headers)

    @routes.post(v2.REPOSITORY_INDEX_PATH)
    def repository_index() -> Response:
        flask_hooks.start(v2.OP_REPOSITORY_INDEX)
        rows = dataplane.repository_index(decode_index_body(request.get_data()))
        return Response(json_body(encode_index(rows)), 200, mimetype=JSON)

    @routes.post(f"{v2.REPOSITORY_PREFIX}/models/<name>/<any(load, unload):change>")
    def repository_change(name: str, change: str) -> Response:
        flask_hooks.start(v2.OP_MODEL_LOAD if change == "load" else v2.OP_MODEL_UNLOAD)
        check_load_body(request.get_data(), f"model {change}")
        run = dataplane.load_model if change == "load" else dataplane.unload_model
        run(name, limits[1])
        return Response(b"", 200)

    @routes.get(v2.HEALTH_LIVE_PATH)
    def live() -> Response:
        return Response(json_body({"live": True}), 200, mimetype=JSON)

    @routes.get(v2.HEALTH_READY_PATH)
    def ready() -> Response:
        if dataplane.ready:
            return Response(json_body({"ready": True}), 200, mimetype=JSON)
        return Response(error_body(NOT_READY), 503, mimetype=JSON)

    return routes
