"""gRPC adapter: TF Serving's PredictionService and ModelService, plus grpc.health.v1.

Our messages live in the ``digits.tfserving`` proto package (see protos/), so the TF Serving
method paths are bound here with generic handlers under the services
``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus). Each handler decodes, calls the data plane
and encodes; a ``ServingError`` aborts with its own code and anything unexpected with INTERNAL,
so a bad request never surfaces as UNKNOWN. The client's deadline is honoured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract import (
    GET_MODEL_METADATA_RPC,
    GET_MODEL_STATUS_RPC,
    PREDICT_RPC,
    SIGNATURE_NAME,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import DeadlineExceeded, InvalidArgument, ServingError
from contract.proto import digits_tfserving_pb2 as pb
from serving import metrics
from serving.dataplane import DataPlane

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("serving.access")

# Services reported by grpc.health.v1 ("" is the whole server, what Kubernetes probes ask).
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _split(path: str) -> tuple[str, str]:
    service, method = path.lstrip("/").split("/")
    return service, method


def _spec(spec: pb.ModelSpec) -> tuple[str, int | None, str | None]:
    if not spec.name:
        raise InvalidArgument("model_spec.name is required")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, spec.version.value, None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


class PredictionHandlers:
    """The three RPCs as plain functions of (request, context) over one data plane."""

    def __init__(self, dataplane: DataPlane, access_log: bool = True) -> None:
        self.dataplane = dataplane
        self.access_log = access_log

    def predict(
        self, request: pb.PredictRequest, context: grpc.ServicerContext
    ) -> pb.PredictResponse:
        timeout = context.time_remaining()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("deadline exceeded before the request was served")
        name, version, label = _spec(request.model_spec)
        inputs = {key: make_ndarray(tensor) for key, tensor in request.inputs.items()}
        answered, outputs = self.dataplane.predict(
            name,
            inputs,
            version=version,
            label=label,
            signature_name=request.model_spec.signature_name,
            output_filter=request.output_filter,
            timeout=timeout,
        )
        response = pb.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = answered
        response.model_spec.signature_name = SIGNATURE_NAME
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(make_tensor_proto(value))
        return response

    def metadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetModelMetadataResponse:
        name, version, label = _spec(request.model_spec)
        return self.dataplane.metadata(name, version, label, request.metadata_field)

    def status(
        self, request: pb.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetModelStatusResponse:
        name, version, label = _spec(request.model_spec)
        return self.dataplane.status(name, version, label)

    def _wrap(self, method: str, fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code, message, response = "OK", "", None
            try:
                response = fn(request, context)
            except ServingError as exc:
                code, message = exc.code, exc.message
            except Exception as exc:  # a bug: INTERNAL, never UNKNOWN
                logger.exception("unhandled error in gRPC %s", method)
                code, message = "INTERNAL", f"internal error: {type(exc).__name__}"
            elapsed = time.perf_counter() - started
            metrics.observe_request("grpc", method, code, elapsed)
            if self.access_log:
                access_logger.info(
                    '{"api":"grpc","method":"%s","code":"%s","ms":%.3f}',
                    method,
                    code,
                    elapsed * 1e3,
                )
            if code != "OK":
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
        for path, label, fn, request_type in table:
            service, method = _split(path)
            by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
                self._wrap(label, fn),
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
        return [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]


def build_server(
    dataplane: DataPlane,
    address: str,
    *,
    max_threads: int = 4,
    max_message_bytes: int = 32 << 20,
    access_log: bool = True,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A started-ready (not yet started) gRPC server bound to ``address``; returns its port.

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
