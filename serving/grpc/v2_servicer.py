"""The Open Inference Protocol's gRPC API: ``inference.GRPCInferenceService`` (ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer, ModelConfig, and the model
repository extension's RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) over the data
plane.

Each handler decodes, calls the data plane and encodes (``serving.protocols.v2.grpc_proto``,
``serving.protocols.v2.model_config``); it never catches (``serving.grpc.calls``).
"""

from __future__ import annotations

import grpc

from contract import v2
from contract.errors import NotFound
from contract.proto import digits_v2_pb2 as v2pb
from serving.core.dataplane import DataPlane
from serving.grpc.calls import MethodTable, generic_handlers, time_remaining
from serving.observability.observer import RequestObserver
from serving.protocols.v2.grpc_proto import (
    decode_infer_request,
    infer_response,
    model_metadata_response,
    require_model_name,
    server_metadata_response,
)
from serving.protocols.v2.model_config import model_config_response
from serving.protocols.v2.repository import decode_index_request, decode_load_request, index_response
from serving.settings import Settings


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
            timeout=time_remaining(context, infer.timeout),
        )
        return infer_response(infer.model_name, answered, infer.id, outputs, infer.outputs)

    def repository_index(
        self, request: v2pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> v2pb.RepositoryIndexResponse:
        return index_response(self.dataplane.repository_index(decode_index_request(request)))

    def model_load(
        self, request: v2pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> v2pb.RepositoryModelLoadResponse:
        name = decode_load_request(request, "model load")
        self.dataplane.load_model(name, time_remaining(context))
        return v2pb.RepositoryModelLoadResponse()

    def model_unload(
        self, request: v2pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> v2pb.RepositoryModelUnloadResponse:
        name = decode_load_request(request, "model unload")
        self.dataplane.unload_model(name, time_remaining(context))
        return v2pb.RepositoryModelUnloadResponse()

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
            (v2.REPOSITORY_INDEX_RPC, v2.OP_REPOSITORY_INDEX, self.repository_index,
             v2pb.RepositoryIndexRequest),
            (v2.REPOSITORY_MODEL_LOAD_RPC, v2.OP_MODEL_LOAD, self.model_load,
             v2pb.RepositoryModelLoadRequest),
            (v2.REPOSITORY_MODEL_UNLOAD_RPC, v2.OP_MODEL_UNLOAD, self.model_unload,
             v2pb.RepositoryModelUnloadRequest),
        ]
        return generic_handlers(table, self.observer, self.PROBES)
