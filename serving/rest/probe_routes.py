"""Probes, metrics and the API description (a Flask blueprint); none of them is observed.

  GET /healthz (liveness), /readyz (readiness: a version AVAILABLE and not draining)
  GET /monitoring/prometheus/metrics and /metrics (Prometheus)
  GET /openapi.yaml (the REST API of both protocols)
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response

from contract import LIVENESS_PATH, METRICS_ALIAS_PATH, METRICS_PATH, READINESS_PATH
from serving.core.dataplane import DataPlane
from serving.observability import metrics
from serving.rest.errors import JSON, error_body, json_body
from serving.rest.v2_routes import NOT_READY


def blueprint(dataplane: DataPlane) -> Blueprint:
    routes = Blueprint("probes", __name__)
    openapi = resources.files("serving.rest").joinpath("openapi.yaml").read_bytes()

    @routes.get(LIVENESS_PATH)
    def liveness() -> Response:
        return Response(json_body({"status": "alive"}), 200, mimetype=JSON)

    @routes.get(READINESS_PATH)
    def readiness() -> Response:
        if dataplane.ready:
            return Response(json_body({"status": "ready"}), 200, mimetype=JSON)
        return Response(error_body(NOT_READY), 503, mimetype=JSON)

    @routes.get(METRICS_PATH)
    @routes.get(METRICS_ALIAS_PATH)
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, 200, content_type=content_type)

    @routes.get("/openapi.yaml")
    def openapi_document() -> Response:
        return Response(openapi, 200, mimetype="application/yaml")

    return routes
