"""TF Serving's REST API (a Flask blueprint) and its predict handler, shared with the fast path.

  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict   row (instances) or columnar (inputs)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]           status (TF Serving's JSON)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata  signature map

Each route decodes (``serving.protocols.tfserving.rest_json``), calls the data plane and encodes;
it never catches (``serving.rest.errors`` answers errors).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from contract import REST_MODELS_PREFIX
from serving.core.dataplane import DataPlane
from serving.observability.observer import RequestObserver
from serving.protocols.tfserving.rest_json import (
    decode_predict_body,
    encode_metadata,
    encode_predict,
    encode_status,
)
from serving.rest import flask_hooks
from serving.rest.errors import JSON, json_body
from serving.rest.routes import TFSERVING, ModelRoute, tfserving_route


def predict(dataplane: DataPlane, route: ModelRoute, body: bytes, timeout: float | None) -> bytes:
    """One predict's answer body, within ``timeout`` seconds (None: no limit)."""
    signature_name, row, inputs = decode_predict_body(body)
    _, outputs = dataplane.predict(
        route.name,
        inputs,
        version=route.version,
        label=route.label,
        signature_name=signature_name,
        timeout=timeout,
    )
    return json_body(encode_predict(row, outputs))


def blueprint(dataplane: DataPlane, timeout: float | None, access_log: bool) -> Blueprint:
    """The TF Serving routes over ``dataplane``, observed with protocol ``tfserving``."""
    routes = Blueprint(TFSERVING, __name__)
    flask_hooks.observe_requests(routes, RequestObserver("rest", access_log))

    @routes.route(f"{REST_MODELS_PREFIX}/<path:rest>", methods=["GET", "POST"])
    def models(rest: str) -> Response:
        route = flask_hooks.start_model_route(tfserving_route, rest)
        if route.operation == "predict":
            answer = predict(dataplane, route, request.get_data(), timeout)
        elif route.operation == "metadata":
            answer = json_body(encode_metadata(dataplane.metadata(route.name, route.version, route.label)))
        else:
            answer = json_body(encode_status(dataplane.status(route.name, route.version, route.label)))
        return Response(answer, 200, mimetype=JSON)

    return routes
