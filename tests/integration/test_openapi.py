"""Fuzz the REST API from the shipped OpenAPI document (schemathesis, offline): never a 5xx.

Every operation of the document is fuzzed (TF Serving's /v1 routes and the Open Inference
Protocol's /v2 ones). The V2 routes are held to more: the status code, the content type and the
JSON body of each answer must be ones the document declares for that operation.
"""

from __future__ import annotations

from importlib import resources

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from contract import v2

SCHEMA_PATH = resources.files("serving.rest").joinpath("openapi.yaml")
schema = schemathesis.openapi.from_path(str(SCHEMA_PATH))
V2_ROUTES = {
    ("GET", v2.HEALTH_LIVE_PATH), ("GET", v2.HEALTH_READY_PATH), ("GET", v2.PREFIX),
    ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/versions/{version}"),
    ("GET", "/v2/models/{name}/ready"), ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("GET", "/v2/models/{name}/config"), ("GET", "/v2/models/{name}/versions/{version}/config"),
    ("POST", v2.REPOSITORY_INDEX_PATH), ("POST", "/v2/repository/models/{name}/load"),
    ("POST", "/v2/repository/models/{name}/unload"),
}
V2_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
             response_schema_conformance]


def test_the_document_covers_the_v2_routes() -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert V2_ROUTES <= operations


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case, running_server) -> None:
    is_v2 = case.operation.path == v2.PREFIX or case.operation.path.startswith(f"{v2.PREFIX}/")
    checks = V2_CHECKS if is_v2 else [not_a_server_error]
    case.call_and_validate(base_url=running_server.rest_url, checks=checks, timeout=30)
