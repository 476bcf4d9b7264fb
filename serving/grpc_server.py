"""gRPC adapter: TF Serving's PredictionService and ModelService, plus grpc.health.v1.

Our messages live in the ``digits.tfserving`` proto package (see protos/), so the TF Serving
method paths are bound here with generic handlers under the services
``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus). Each handler decodes, calls the data plane
and encodes (``serving.tfserving_proto``; ``Predict`` writes its answer's wire bytes directly); it
never catches. One wrapper around every handler
translates errors (a ``ServingError`` aborts with its own code, anything unexpected with
INTERNAL, so a bad request never surfaces as UNKNOWN) and observes the request once
(``serving.observe``). The client's deadline is honoured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract import GET_MODEL_METADATA_RPC, GET_MODEL_STATUS_RPC, PREDICT_RPC
from contract.errors import Code, DeadlineExceeded, ServingError
from contract.proto import digits_tfserving_pb2 as pb
from serving.dataplane import DataPlane
from serving.observe import RequestObserver
from serving.settings import Settings
from serving.tfserving_proto import (
    check_metadata_fields,
    decode_inputs,
    decode_model_spec,
    metadata_response,
    predict_response_bytes,
    status_response,
)

logger = logging.getLogger(__name__)

# Services reported by grpc.health.v1 ("" is the whole server, what Kubernetes probes ask).
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")

Handler = Callable[[Any, grpc.ServicerContext], Any]


def _serialize(response: Any) -> bytes:
    """A response message's wire bytes; a handler may also return them already written."""
    return response if isinstance(response, bytes) else response.SerializeToString()


class PredictionHandlers:
    """The three RPCs as plain functions of (request, context) over one data plane."""

    def __init__(self, dataplane: DataPlane, access_log: bool = Settings.access_log) -> None:
        self.dataplane = dataplane
        self.observer = RequestObserver("grpc", access_log)

    def predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> bytes:
        """The ``PredictResponse`` as wire bytes, written directly (the same bytes protobuf writes)."""
        timeout = context.time_remaining()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("deadline exceeded before the request was served")
        name, version, label = decode_model_spec(request.model_spec)
        answered, outputs = self.dataplane.predict(
            name,
            decode_inputs(request),
            version=version,
            label=label,
            signature_name=request.model_spec.signature_name,
            output_filter=request.output_filter,
            timeout=timeout,
        )
        return predict_response_bytes(name, answered, outputs)

    def metadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetModelMetadataResponse:
        name, version, label = decode_model_spec(request.model_spec)
        check_metadata_fields(request.metadata_field)
        return metadata_response(self.dataplane.metadata(name, version, label))

    def status(
        self, request: pb.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetModelStatusResponse:
        name, version, label = decode_model_spec(request.model_spec)
        return status_response(self.dataplane.status(name, version, label))

    def translated(self, operation: str, handler: Handler) -> Handler:
        """``handler`` with its errors turned into gRPC status codes, observed once per call."""

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code, message, response = Code.OK, "", None
            try:
                response = handler(request, context)
            except ServingError as exc:
                code, message = exc.code, exc.message
            except Exception as exc:  # a bug: INTERNAL, never UNKNOWN
                logger.exception("unhandled error in gRPC %s", operation)
                code, message = Code.INTERNAL, f"internal error: {type(exc).__name__}"
            self.observer.finished(
                operation, code, time.perf_counter() - started, method=operation, code=code
            )
            if code != Code.OK:
                context.abort(grpc.StatusCode[code], message)
            return response

        return behaviour

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers binding TF Serving's method paths to our messages."""
        table = [
            (PREDICT_RPC, "predict", self.predict, pb.PredictRequest),
            (GET_MODEL_METADATA_RPC, "metadata", self.metadata, pb.GetModelMetadataRequest),
            (GET_MODEL_STATUS_RPC, "status", self.status, pb.GetModelStatusRequest),
        ]
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path, operation, handler, request_type in table:
            service, method = path.lstrip("/").split("/")
            by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
                self.translated(operation, handler),
                request_deserializer=request_type.FromString,
                response_serializer=_serialize,
            )
        return [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]


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
        handlers=PredictionHandlers(dataplane, access_log).generic_handlers(),
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

