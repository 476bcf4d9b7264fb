"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest) over the data
plane. A config reload returns once every worker serves the new config (``serving.core.control``).

Each handler decodes, calls the data plane and encodes (``serving.protocols.tfserving.grpc_proto``;
``Predict`` writes its answer's bytes directly); it never catches (``serving.grpc.calls``). The
client's deadline is honoured.
"""

from __future__ import annotations

import grpc

from contract import GET_MODEL_METADATA_RPC, GET_MODEL_STATUS_RPC, PREDICT_RPC, RELOAD_CONFIG_RPC
from contract.proto import digits_tfserving_pb2 as pb
from serving.core.dataplane import DataPlane
from serving.grpc.calls import MethodTable, generic_handlers, time_remaining
from serving.observability.observer import RequestObserver
from serving.protocols.tfserving.grpc_proto import (
    check_metadata_fields,
    decode_inputs,
    decode_model_spec,
    decode_reload_request,
    metadata_response,
    predict_response_bytes,
    reload_response,
    status_response,
)
from serving.settings import Settings


class PredictionHandlers:
    """The four RPCs as plain functions of (request, context) over one data plane."""

    def __init__(self, dataplane: DataPlane, access_log: bool = Settings.access_log) -> None:
        self.dataplane = dataplane
        self.observer = RequestObserver("grpc", access_log)

    def predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> bytes:
        """The ``PredictResponse`` as wire bytes, written directly (the same bytes protobuf writes)."""
        timeout = time_remaining(context)
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

    def reload_config(
        self, request: pb.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> pb.ReloadConfigResponse:
        self.dataplane.reload_config(decode_reload_request(request), time_remaining(context))
        return reload_response()

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers binding TF Serving's method paths to our messages."""
        table: MethodTable = [
            (PREDICT_RPC, "predict", self.predict, pb.PredictRequest),
            (GET_MODEL_METADATA_RPC, "metadata", self.metadata, pb.GetModelMetadataRequest),
            (GET_MODEL_STATUS_RPC, "status", self.status, pb.GetModelStatusRequest),
            (RELOAD_CONFIG_RPC, "reload_config", self.reload_config, pb.ReloadConfigRequest),
        ]
        return generic_handlers(table, self.observer)
