"""REST adapter: TF Serving's REST API as a Flask app (``create_app``), over the data plane.

Routes (``{name}`` is the model name; a version or label may follow):
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict   row (instances) or columnar (inputs)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]           status (TF Serving's JSON)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata  signature map
  GET  /healthz (liveness), /readyz (readiness), /monitoring/prometheus/metrics and /metrics
Errors are ``{"error": "..."}`` with the HTTP status derived from the gRPC code. The app runs
under granian in production (``serving.workers``), never Flask's development server.
"""

from __future__ import annotations

import logging
import re
import time
from importlib import resources
from typing import Any

import numpy as np
import orjson
from flask import Flask, Response, request
from google.protobuf import json_format
from werkzeug.exceptions import HTTPException

from contract import (
    INPUT_NAME,
    LIVENESS_PATH,
    METADATA_FIELD_SIGNATURE_DEF,
    METRICS_ALIAS_PATH,
    METRICS_PATH,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    READINESS_PATH,
    REST_MODELS_PREFIX,
)
from contract.errors import InvalidArgument, ServingError
from serving import metrics
from serving.dataplane import DataPlane
from serving.json_tensor import parse_predict_body

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("serving.access")

_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>:predict|/metadata)?$"
)
_ROW_KEYS = {"instances", "signature_name"}
_COLUMNAR_KEYS = {"inputs", "signature_name"}
_JSON = "application/json"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, mimetype=_JSON)


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status, mimetype=_JSON)


def _parse_path(rest: str) -> tuple[str, int | None, str | None, str]:
    match = _PATH.match(rest)
    if match is None:
        raise InvalidArgument(
            f"malformed request path {REST_MODELS_PREFIX}/{rest}; expected "
            f"{REST_MODELS_PREFIX}/NAME[/versions/N|/labels/L][:predict|/metadata]"
        )
    version = match["version"]
    if version is not None:
        if not version.isdigit():
            raise InvalidArgument(f"model version must be a non-negative integer, got {version!r}")
        version = int(version)
    return match["name"], version, match["label"], match["verb"] or ""


def _array(value: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"{where} is not a rectangular array of numbers (ragged lists?)"
        ) from None


def decode_predict_body(data: bytes) -> tuple[str, bool, dict[str, np.ndarray]]:
    """``(signature_name, row_format, inputs)`` from a TF Serving predict body."""
    fast = parse_predict_body(data)
    if fast is not None:
        return fast[0], fast[1], {INPUT_NAME: fast[2]}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument('request body must be a JSON object with "instances" or "inputs"')
    row = "instances" in body
    if row == ("inputs" in body):
        raise InvalidArgument(
            'request body must have exactly one of "instances" (row format) '
            'or "inputs" (columnar format)'
        )
    unknown = sorted(set(body) - (_ROW_KEYS if row else _COLUMNAR_KEYS))
    if unknown:
        raise InvalidArgument(f"unknown key(s) {unknown} in request body")
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise InvalidArgument('"signature_name" must be a string')
    if row:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidArgument('"instances" must be a non-empty list of images')
        if isinstance(instances[0], dict):
            # Named-input rows: [{"image": ...}, ...]
            if not all(isinstance(i, dict) and set(i) == {INPUT_NAME} for i in instances):
                raise InvalidArgument(
                    f'every instance object must hold exactly the key "{INPUT_NAME}"'
                )
            instances = [i[INPUT_NAME] for i in instances]
        return signature_name, True, {INPUT_NAME: _array(instances, '"instances"')}
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        return signature_name, False, {k: _array(v, f'"inputs.{k}"') for k, v in inputs.items()}
    return signature_name, False, {INPUT_NAME: _array(inputs, '"inputs"')}


def encode_predict(row: bool, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """TF Serving's response for a two-output signature: per-row objects or named columns."""
    if not row:
        return {"outputs": outputs}
    probabilities, digits = outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_DIGIT]
    return {
        "predictions": [
            {OUTPUT_PROBABILITIES: probabilities[i], OUTPUT_DIGIT: int(digits[i])}
            for i in range(len(digits))
        ]
    }


def _message_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def create_app(
    dataplane: DataPlane,
    *,
    max_request_bytes: int = 32 << 20,
    timeout_seconds: float | None = 30.0,
    access_log: bool = True,
) -> Flask:
    """The Flask app for one data plane (tests build their own with a tiny model)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    openapi = resources.files("serving").joinpath("openapi.yaml").read_bytes()

    def finish(method: str, code: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        metrics.observe_request("rest", method, code, elapsed)
        if access_log:
            access_logger.info(
                "%s",
                orjson.dumps(
                    {
                        "api": "rest",
                        "method": request.method,
                        "path": request.path,
                        "status": status,
                        "ms": round(elapsed * 1e3, 3),
                    }
                ).decode(),
            )

    @app.route(f"{REST_MODELS_PREFIX}/<path:rest>", methods=["GET", "POST"])
    def models(rest: str) -> Response:
        started = time.perf_counter()
        method = "unknown"
        try:
            name, version, label, verb = _parse_path(rest)
            method = {":predict": "predict", "/metadata": "metadata", "": "status"}[verb]
            if (request.method == "POST") != (method == "predict"):
                allowed = "POST" if method == "predict" else "GET"
                response = _error(405, f"{request.method} not allowed here; use {allowed}")
                finish(method, "UNIMPLEMENTED", 405, started)
                return response
            if method == "predict":
                signature_name, row, inputs = decode_predict_body(request.get_data())
                answered, outputs = dataplane.predict(
                    name,
                    inputs,
                    version=version,
                    label=label,
                    signature_name=signature_name,
                    timeout=timeout_seconds,
                )
                response = _json(encode_predict(row, outputs))
            elif method == "metadata":
                meta = dataplane.metadata(name, version, label)
                signatures = dataplane.signature_map_json
                response = _json(
                    {
                        "model_spec": _message_json(meta.model_spec),
                        "metadata": {METADATA_FIELD_SIGNATURE_DEF: signatures},
                    }
                )
            else:
                response = _json(_message_json(dataplane.status(name, version, label)))
        except ServingError as exc:
            finish(method, exc.code, exc.http_status, started)
            return _error(exc.http_status, exc.message)
        finish(method, "OK", 200, started)
        return response

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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Routing and body-size errors (404, 405, 413) in TF Serving's error shape.
        status = exc.code or 500
        if status == 413:
            message = f"request body larger than {max_request_bytes} bytes"
        else:
            message = exc.description or exc.name
        return _error(status, message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    return app
