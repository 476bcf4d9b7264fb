"""gRPC adapter: TF Serving's PredictionService and ModelService, the Open Inference Protocol's
GRPCInferenceService ("V2"), plus grpc.health.v1, all on one port over one data plane.

Our messages live in our own proto packages (``digits.tfserving``, ``digits.v2``; see
contract/proto/), so the official method paths are bound here with generic handlers under the
services ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata),
``tensorflow.serving.ModelService`` (GetModelStatus) and ``inference.GRPCInferenceService``
(ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer, ModelConfig).
Each handler decodes, calls the data plane and encodes (``serving.tfserving_proto``,
``serving.v2_proto``, ``serving.v2_config``; ``Predict`` writes its answer's bytes directly); it
never catches. One wrapper around every handler translates errors (a ``ServingError`` aborts with
its own code, anything unexpected with INTERNAL, never UNKNOWN) and observes the request once
(``serving.observe``, with the protocol as a label). The client's deadline is honoured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract import GET_MODEL_METADATA_RPC, GET_MODEL_STATUS_RPC, PREDICT_RPC, v2
from contract.errors import Code, DeadlineExceeded, NotFound, ServingError
from contract.proto import digits_tfserving_pb2 as pb
from contract.proto import digits_v2_pb2 as v2pb
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
from serving.v2_config import model_config_response
from serving.v2_proto import (
    decode_infer_request,
    infer_response,
    model_metadata_response,
    require_model_name,
    server_metadata_response,
)

logger = logging.getLogger(__name__)

# Services reported by grpc.health.v1 ("" is the whole server, what Kubernetes probes ask).
HEALTH_SERVICES = (
    "",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    v2.GRPC_SERVICE,
)

Handler = Callable[[Any, grpc.ServicerContext], Any]
# (method path, operation name for metrics and logs, handler, request message type)
MethodTable = list[tuple[str, str, Handler, Any]]


def _serialize(response: Any) -> bytes:
    """A response message's wire bytes; a handler may also return them already written."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def _time_remaining(context: grpc.ServicerContext, limit: float | None = None) -> float | None:
    """Seconds left to serve the call: the client's deadline, bounded by ``limit`` if given."""
    timeout = context.time_remaining()
    if limit is not None:
        timeout = limit if timeout is None else min(timeout, limit)
    if timeout is not None and timeout <= 0:
        raise DeadlineExceeded("deadline exceeded before the request was served")
    return timeout


def translated(observer: RequestObserver | None, operation: str, handler: Handler) -> Handler:
    """``handler`` with its errors turned into gRPC status codes, observed once per call
    (not at all with ``observer`` None: health probes)."""

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
        if observer is not None:
            observer.finished(
                operation, code, time.perf_counter() - started, method=operation, code=code
            )
        if code != Code.OK:
            context.abort(grpc.StatusCode[code], message)
        return response

    return behaviour


def generic_handlers(
    table: MethodTable, observer: RequestObserver, unobserved: frozenset[str] = frozenset()
) -> list[grpc.GenericRpcHandler]:
    """Generic handlers binding each method path of ``table`` to its handler and messages."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, operation, handler, request_type in table:
        service, method = path.lstrip("/").split("/")
        watcher = None if operation in unobserved else observer
        by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            translated(watcher, operation, handler),
            request_deserializer=request_type.FromString,
            response_serializer=_serialize,
        )
    return [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]


class PredictionHandlers:
    """The three RPCs as plain functions of (request, context) over one data plane."""

    def __init__(self, dataplane: DataPlane, access_log: bool = Settings.access_log) -> None:
        self.dataplane = dataplane
        self.observer = RequestObserver("grpc", access_log)

    def predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> bytes:
        """The ``PredictResponse`` as wire bytes, written directly (the same bytes protobuf writes)."""
        timeout = _time_remaining(context)
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

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers binding TF Serving's method paths to our messages."""
        table: MethodTable = [
            (PREDICT_RPC, "predict", self.predict, pb.PredictRequest),
            (GET_MODEL_METADATA_RPC, "metadata", self.metadata, pb.GetModelMetadataRequest),
            (GET_MODEL_STATUS_RPC, "status", self.status, pb.GetModelStatusRequest),
        ]
        return generic_handlers(table, self.observer)


class InferenceHandlers:
    """The Open Inference Protocol's RPCs as plain functions of (request, context).

    Readiness follows Triton: ``ServerLive`` is the process answering, ``ServerReady`` the data
    plane's readiness (a version AVAILABLE, not draining), ``ModelReady`` whether the addressed
    version is AVAILABLE and the server not draining (``DataPlane.model_ready``, as over REST):
    an unknown model or version is not ready (``ready: false``, status OK, as Triton answers and
    as ``tritonclient.is_model_ready`` expects), never an error.
    """

    # Probes, like grpc.health.v1: not counted in the request metrics nor access-logged.
    PROBES = frozenset({"server_live", "server_ready"})

    def __init__(self, dataplane: DataPlane, access_log: bool = Settings.access_log) -> None:
        self.dataplane = dataplane
        self.observer = RequestObserver("grpc", access_log, protocol="v2")

    def server_live(
        self, request: v2pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> v2pb.ServerLiveResponse:
        return v2pb.ServerLiveResponse(live=True)

    def server_ready(
        self, request: v2pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> v2pb.ServerReadyResponse:
        return v2pb.ServerReadyResponse(ready=self.dataplane.ready)

    def model_ready(
        self, request: v2pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> v2pb.ModelReadyResponse:
        name = require_model_name(request.name)
        try:
            ready = self.dataplane.model_ready(name, v2.parse_version(name, request.version))
        except NotFound:  # another model, or a version string that is no number
            ready = False
        return v2pb.ModelReadyResponse(ready=ready)

    def server_metadata(
        self, request: v2pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> v2pb.ServerMetadataResponse:
        return server_metadata_response()

    def model_metadata(
        self, request: v2pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> v2pb.ModelMetadataResponse:
        """The addressed version (``versions`` is it alone), or by default every AVAILABLE one."""
        name = require_model_name(request.name)
        versions = self.dataplane.described_versions(name, v2.parse_version(name, request.version))
        return model_metadata_response(name, versions)

    def model_config(
        self, request: v2pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> v2pb.ModelConfigResponse:
        """Triton's model configuration extension; every version has the same configuration."""
        name = require_model_name(request.name)
        self.dataplane.resolve(name, v2.parse_version(name, request.version))  # as ModelMetadata
        return model_config_response(name, self.dataplane.max_batch)

    def model_infer(
        self, request: v2pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2pb.ModelInferResponse:
        infer = decode_infer_request(request)
        answered, outputs = self.dataplane.predict(
            infer.model_name,
            infer.inputs,
            version=infer.version,
            output_filter=infer.outputs,
            timeout=_time_remaining(context, infer.timeout),
        )
        return infer_response(infer.model_name, answered, infer.id, outputs, infer.outputs)

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers binding ``/inference.GRPCInferenceService/*`` to our messages."""
        table: MethodTable = [
            (v2.SERVER_LIVE_RPC, "server_live", self.server_live, v2pb.ServerLiveRequest),
            (v2.SERVER_READY_RPC, "server_ready", self.server_ready, v2pb.ServerReadyRequest),
            (v2.MODEL_READY_RPC, v2.OP_MODEL_READY, self.model_ready, v2pb.ModelReadyRequest),
            (v2.SERVER_METADATA_RPC, v2.OP_SERVER_METADATA, self.server_metadata,
             v2pb.ServerMetadataRequest),
            (v2.MODEL_METADATA_RPC, v2.OP_MODEL_METADATA, self.model_metadata, v2pb.ModelMetadataRequest),
            (v2.MODEL_INFER_RPC, v2.OP_INFER, self.model_infer, v2pb.ModelInferRequest),
            (v2.MODEL_CONFIG_RPC, v2.OP_MODEL_CONFIG, self.model_config, v2pb.ModelConfigRequest),
        ]
        return generic_handlers(table, self.observer, self.PROBES)


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

