"""Fuzz the REST API from the shipped OpenAPI document (schemathesis, offline): never a 5xx."""

from __future__ import annotations

from importlib import resources

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

SCHEMA_PATH = resources.files("serving").joinpath("openapi.yaml")
schema = schemathesis.openapi.from_path(str(SCHEMA_PATH))


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case, running_server) -> None:
    case.call_and_validate(base_url=running_server.rest_url, checks=[not_a_server_error], timeout=30)
