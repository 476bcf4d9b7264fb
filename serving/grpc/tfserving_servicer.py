"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``tensorflow.serving.ModelService`` (GetModelStatus) over the data plane.

Each handler decodes, calls the data plane and encodes (``serving.protocols.tfserving.grpc_proto``;
``Predict`` writes its answer's bytes directly); it never catches (``serving.grpc.calls``). The
client's deadline is honoured.
"""

from __future__ import annotations

import grpc

from contract import GET_MODEL_METADATA_RPC, GET_MODEL_STATUS_RPC, PREDICT_RPC
from contract.proto import digits_tfserving_pb2 as pb
from serving.core.dataplane import DataPlane
from serving.grpc.calls import MethodTable, generic_handlers, time_remaining
from serving.observability.observer import RequestObserver
from serving.protocols.tfserving.grpc_proto import (
    check_metadata_fields,
    decode_inputs,
    decode_model_spec,
    metadata_response,
    predict_response_bytes,
    status_response,
)
from serving.settings import Settings


class PredictionHandlers:
    """The three RPCs as plain functions of (request, context) over one data plane."""

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

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers binding TF Serving's method paths to our messages."""
        table: MethodTable = [
            (PREDICT_RPC, "predict", self.predict, pb.PredictRequest),
            (GET_MODEL_METADATA_RPC, "metadata", self.metadata, pb.GetModelMetadataRequest),
            (GET_MODEL_STATUS_RPC, "status", self.status, pb.GetModelStatusRequest),
        ]
        return generic_handlers(table, self.observer)
