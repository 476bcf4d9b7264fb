"""The gRPC server: TF Serving's services, the Open Inference Protocol's and grpc.health.v1, all on
one port over one data plane (``serving.grpc.tfserving_servicer``, ``serving.grpc.v2_servicer``).
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract import v2
from serving.core.dataplane import DataPlane
from serving.grpc.tfserving_servicer import PredictionHandlers
from serving.grpc.v2_servicer import InferenceHandlers
from serving.settings import Settings

# Services reported by grpc.health.v1 ("" is the whole server, what Kubernetes probes ask).
HEALTH_SERVICES = (
    "",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    v2.GRPC_SERVICE,
)


def build_server(
    dataplane: DataPlane,
    address: str,
    *,
    max_threads: int = Settings.grpc_max_threads,
    max_message_bytes: int = Settings.max_request_bytes,
    access_log: bool = Settings.access_log,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A server bound to ``address`` (not yet started), its health servicer and its port.

    SO_REUSEPORT (grpcio's default on Linux) lets every gRPC worker process bind the same port;
    the kernel spreads connections across them.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        handlers=[
            *PredictionHandlers(dataplane, access_log).generic_handlers(),
            *InferenceHandlers(dataplane, access_log).generic_handlers(),
        ],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
        # Beyond this many concurrent RPCs grpcio answers RESOURCE_EXHAUSTED: bounded memory.
        maximum_concurrent_rpcs=max_threads * 32,
    )
    health_servicer = health.HealthServicer()
    for service in HEALTH_SERVICES:
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC address {address}")
    return server, health_servicer, port


def set_health(health_servicer: health.HealthServicer, serving: bool) -> None:
    """Point every health service at SERVING or NOT_SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in HEALTH_SERVICES:
        health_servicer.set(service, status)
