"""REST adapter: TF Serving's REST API as a Flask app (``create_app``), over the data plane.

Routes (``{name}`` is the model name; a version or label may follow):
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict   row (instances) or columnar (inputs)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]           status (TF Serving's JSON)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata  signature map
  GET  /healthz (liveness), /readyz (readiness), /monitoring/prometheus/metrics and /metrics
and the Open Inference Protocol (V2; ``serving.v2_json``, ``serving.v2_config``) over the same
data plane:
  GET  /v2/health/live, /v2/health/ready, /v2 (server metadata)
  GET  /v2/models/{name}[/versions/{v}][/ready]                model metadata, model readiness
  GET  /v2/models/{name}[/versions/{v}]/config                 Triton's model configuration
  POST /v2/models/{name}[/versions/{v}]/infer                  JSON or binary tensors
The model routes decode (``serving.tfserving_json``, ``serving.v2_json``), call the data plane
and encode; they never catch. Errors become ``{"error": "..."}`` (both protocols' shape) in the
app's error handlers, one per kind: a ``ServingError`` with the HTTP status derived from its gRPC
code, werkzeug's HTTP errors (404, 405, 413) as they are, anything else a 500. Each request on a
model route is observed once, after its response exists (``serving.observe``; protocol
``tfserving`` or ``v2``). The common predict and infer requests never reach Flask:
``serving.rest_fast.FastPredict``, the app's WSGI middleware, answers them identically for a
fraction of the CPU. The app runs under granian in production (``serving.workers``), never Flask's
development server.
"""

from __future__ import annotations

import logging
import re
import time
from importlib import resources
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from contract import (
    LIVENESS_PATH,
    METRICS_ALIAS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    REST_MODELS_PREFIX,
    v2,
)
from contract.errors import Code, InvalidArgument, NotFound, ServingError, code_for_http, error_for
from serving import metrics, webpage
from serving.dataplane import DataPlane
from serving.observe import RequestObserver
from serving.rest_fast import JSON, FastPredict, error_body, json_body, v2_headers, v2_infer
from serving.settings import Settings
from serving.tfserving_json import (
    decode_predict_body,
    encode_metadata,
    encode_predict,
    encode_status,
)
from serving.v2_config import model_config_json
from serving.v2_json import decompress, encode_model_metadata, encode_server_metadata

logger = logging.getLogger(__name__)

_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>:predict|/metadata)?$"
)
_OPERATIONS = {":predict": "predict", "/metadata": "metadata", "": "status"}
_V2_PATH = re.compile(
    r"^(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<verb>/ready|/infer|/config)?$"
)
_V2_OPERATIONS = {
    "/infer": v2.OP_INFER,
    "/ready": v2.OP_MODEL_READY,
    "/config": v2.OP_MODEL_CONFIG,
    "": v2.OP_MODEL_METADATA,
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json_body(body), status, mimetype=JSON)


def _error(status: int, message: str) -> Response:
    return Response(error_body(message), status, mimetype=JSON)


def _parse_path(rest: str) -> tuple[str, int | None, str | None, str]:
    match = _PATH.match(rest)
    if match is None:
        raise InvalidArgument(
            f"malformed request path {REST_MODELS_PREFIX}/{rest}; expected "
            f"{REST_MODELS_PREFIX}/NAME[/versions/N|/labels/L][:predict|/metadata]"
        )
    version = match["version"]
    if version is not None:
        if not (version.isascii() and version.isdigit()):
            raise InvalidArgument(f"model version must be a non-negative integer, got {version!r}")
        version = int(version)
    return match["name"], version, match["label"], match["verb"] or ""


def _parse_v2_path(rest: str) -> tuple[str, str | None, str]:
    """(name, version as written, operation) of ``/v2/models/{rest}``."""
    match = _V2_PATH.match(rest)
    if match is None:
        raise NotFound(
            f"no such route {v2.MODELS_PREFIX}/{rest}; expected "
            f"{v2.MODELS_PREFIX}/NAME[/versions/V][/ready|/infer|/config]"
        )
    return match["name"], match["version"], _V2_OPERATIONS[match["verb"] or ""]


def create_app(
    dataplane: DataPlane,
    *,
    max_request_bytes: int = Settings.max_request_bytes,
    timeout_seconds: float | None = Settings.rest_api_timeout_in_ms / 1000,
    access_log: bool = Settings.access_log,
    fast_predict: bool = True,
) -> Flask:
    """The Flask app for one data plane (tests build their own with a tiny model).

    With ``fast_predict`` (the default) the common predict requests bypass Flask through
    ``serving.rest_fast.FastPredict``, installed as the app's ``wsgi_app`` middleware, with
    answers identical to the Flask route's; ``False`` serves everything through Flask.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    openapi = resources.files("serving").joinpath("openapi.yaml").read_bytes()
    observer = RequestObserver("rest", access_log)
    v2_observer = RequestObserver("rest", access_log, protocol="v2")

    @app.route(f"{REST_MODELS_PREFIX}/<path:rest>", methods=["GET", "POST"])
    def models(rest: str) -> Response:
        # What the observer reads once the response exists (g.code is set by an error handler).
        g.started, g.operation = time.perf_counter(), "unknown"
        name, version, label, verb = _parse_path(rest)
        g.operation = operation = _OPERATIONS[verb]
        if (request.method == "POST") != (operation == "predict"):
            allowed = "POST" if operation == "predict" else "GET"
            raise error_for(
                Code.UNIMPLEMENTED,
                f"{request.method} not allowed here; use {allowed}",
                http_status=405,
            )
        if operation == "predict":
            signature_name, row, inputs = decode_predict_body(request.get_data())
            _, outputs = dataplane.predict(
                name,
                inputs,
                version=version,
                label=label,
                signature_name=signature_name,
                timeout=timeout_seconds,
            )
            return _json(encode_predict(row, outputs))
        if operation == "metadata":
            return _json(encode_metadata(dataplane.metadata(name, version, label)))
        return _json(encode_status(dataplane.status(name, version, label)))

    @app.after_request
    def observe(response: Response) -> Response:
        operation = g.get("operation")
        if operation is not None:  # the model routes only: probes and scrapes are not observed
            g.get("observer", observer).finished(
                operation,
                g.get("code", Code.OK),
                time.perf_counter() - g.started,
                method=request.method,
                path=request.path,
                status=response.status_code,
            )
        return response

    # --- the Open Inference Protocol (V2) ------------------------------------------------------
    @app.get(v2.PREFIX)
    def v2_server_metadata() -> Response:
        g.started, g.operation, g.observer = time.perf_counter(), v2.OP_SERVER_METADATA, v2_observer
        return _json(encode_server_metadata())

    @app.route(f"{v2.MODELS_PREFIX}/<path:rest>", methods=["GET", "POST"])
    def v2_models(rest: str) -> Response:
        g.started, g.operation, g.observer = time.perf_counter(), "unknown", v2_observer
        name, version_text, operation = _parse_v2_path(rest)
        g.operation = operation
        if (request.method == "POST") != (operation == v2.OP_INFER):
            allowed = "POST" if operation == v2.OP_INFER else "GET"
            raise error_for(
                Code.UNIMPLEMENTED, f"{request.method} not allowed here; use {allowed}", http_status=405
            )
        version = v2.parse_version(name, version_text)
        if operation == v2.OP_INFER:
            body = decompress(request.get_data(), request.headers.get("Content-Encoding"), max_request_bytes)
            payload, header_length = v2_infer(
                dataplane, name, version, body, request.headers.get(v2.HEADER_CONTENT_LENGTH),
                timeout_seconds,
            )
            return Response(payload, 200, headers=v2_headers(payload, header_length))
        # Ready, metadata and config address a version the way infer does: an unknown one is a
        # 404, none loaded yet a 503 (UNAVAILABLE), exactly as TF Serving's routes answer.
        if operation == v2.OP_MODEL_METADATA:
            return _json(encode_model_metadata(name, dataplane.described_versions(name, version)))
        dataplane.resolve(name, version)
        # A draining server's models are not ready either (DataPlane.model_ready decides): 503.
        if operation == v2.OP_MODEL_READY:
            if not dataplane.model_ready(name, version):
                raise error_for(Code.UNAVAILABLE, f"model {name!r} is not ready: the server is shutting down")
            return _json({"name": name, "ready": True})
        return _json(model_config_json(name, dataplane.max_batch))

    @app.get(v2.HEALTH_LIVE_PATH)
    def v2_live() -> Response:
        return _json({"live": True})

    @app.get(v2.HEALTH_READY_PATH)
    def v2_ready() -> Response:
        if dataplane.ready:
            return _json({"ready": True})
        return _error(503, "not ready: no model version available or shutting down")

    @app.get(LIVENESS_PATH)
    def liveness() -> Response:
        return _json({"status": "alive"})

    @app.get(READINESS_PATH)
    def readiness() -> Response:
        if dataplane.ready:
            return _json({"status": "ready"})
        return _error(503, "not ready: no model version available or shutting down")

    @app.get(METRICS_PATH)
    @app.get(METRICS_ALIAS_PATH)
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, 200, content_type=content_type)

    @app.get("/openapi.yaml")
    def openapi_document() -> Response:
        return Response(openapi, 200, mimetype="application/yaml")

    @app.errorhandler(ServingError)
    def serving_error(exc: ServingError) -> Response:
        g.code = exc.code
        return _error(exc.http_status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Routing and body-size errors (404, 405, 413) in TF Serving's error shape.
        status = exc.code or 500
        g.code = code_for_http(status)
        if status == 413:
            message = f"request body larger than {max_request_bytes} bytes"
        else:
            message = exc.description or exc.name
        return _error(status, message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        g.code = Code.INTERNAL
        return _error(500, f"internal error: {type(exc).__name__}")

    app.register_blueprint(webpage.blueprint(dataplane.model_name))  # the page at /
    if fast_predict:
        app.wsgi_app = FastPredict(  # type: ignore[method-assign]
            app.wsgi_app,
            dataplane,
            observer,
            max_request_bytes=max_request_bytes,
            timeout_seconds=timeout_seconds,
            v2_observer=v2_observer,
        )
    return app
