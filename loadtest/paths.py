"""The wire paths the load tests compare: TF Serving's REST and gRPC, V2 REST (binary, JSON), V2 gRPC.

One table, read by the Locust users (their class and statistics names), the Locust benchmark
(``--protocols``) and the C-generator benchmark (scenario names, the server's metrics labels), so
a path is named the same way everywhere. No Locust import here: the benchmark's driver and the
reports import this module without bringing in gevent.
"""

from __future__ import annotations

from dataclasses import dataclass

from client import grpc_client, rest_client, v2_grpc_client, v2_rest_client
from client.api import TFSERVING, V2


@dataclass(frozen=True)
class WirePath:
    """One way of asking the server for a prediction."""

    name: str  # statistics and reports: "REST", "V2 gRPC", ...
    key: str  # command lines and scenario names: "rest", "v2-grpc", ...
    transport: str  # "rest" or "grpc": the server's ``api`` metrics label
    protocol: str  # "tfserving" or "v2": the server's ``protocol`` metrics label
    user_class: str  # the Locust user of loadtest/locust_bench/locustfile.py
    stats_name: str  # the Locust statistics row of its requests
    rest_format: str | None = None  # the client library's REST body format, for REST paths


REST = rest_client.PROTOCOL  # "REST"
GRPC = grpc_client.PROTOCOL  # "gRPC"
V2_REST = v2_rest_client.PROTOCOL  # "V2 REST" (binary tensors)
V2_JSON = V2_REST + " JSON"
V2_GRPC = v2_grpc_client.PROTOCOL  # "V2 gRPC"

PATHS: dict[str, WirePath] = {
    path.name: path
    for path in (
        WirePath(REST, "rest", "rest", TFSERVING, "RestDigitsUser", ":predict", rest_client.ROW_FORMAT),
        WirePath(GRPC, "grpc", "grpc", TFSERVING, "GrpcDigitsUser", "Predict"),
        WirePath(V2_REST, "v2-rest", "rest", V2, "V2RestDigitsUser", "infer", v2_rest_client.BINARY),
        WirePath(V2_JSON, "v2-json", "rest", V2, "V2JsonRestDigitsUser", "infer (json)", v2_rest_client.JSON),
        WirePath(V2_GRPC, "v2-grpc", "grpc", V2, "V2GrpcDigitsUser", "ModelInfer"),
    )
}
BY_KEY: dict[str, WirePath] = {path.key: path for path in PATHS.values()}
BY_STATS_NAME: dict[str, WirePath] = {path.stats_name: path for path in PATHS.values()}


def parse_paths(text: str) -> list[str]:
    """``"grpc,v2-rest"`` -> ``["gRPC", "V2 REST"]``, in the table's order (TF Serving first)."""
    keys = [x.strip().lower() for x in text.split(",") if x.strip()]
    unknown = sorted(set(keys) - set(BY_KEY))
    if not keys or unknown:
        raise ValueError(f"--protocols takes {', '.join(BY_KEY)} (comma-separated), got {text!r}")
    return [path.name for path in PATHS.values() if path.key in keys]
