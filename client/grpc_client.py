"""gRPC client: TensorFlow Serving's PredictionService / ModelService over one grpcio channel.

Our messages live in the ``digits.tfserving`` proto package (see ``protos/``), wire-identical to
TF Serving's, and no service is declared there, so the TF Serving method paths from
:mod:`contract` are bound here with ``channel.unary_unary``. Inputs travel as
``tensor_content`` (raw little-endian bytes: nothing to print or parse at either end; TF Serving
accepts it). The channel and the calls' error mapping are :mod:`client.grpc_transport`. This
module never imports TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

import contract
from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction, as_batch, checked_prediction
from client.grpc_transport import open_channel, unary_call
from contract.codecs import TensorCodecError, dtype_name, make_ndarray, make_tensor_proto
from contract.errors import ProtocolError
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import ModelMetadata, Signature, TensorSpec, VersionStatus

log = logging.getLogger(__name__)

PROTOCOL = "gRPC"


def model_spec_proto(spec: ModelSpec) -> pb.ModelSpec:
    """The protobuf ModelSpec for a :class:`client.api.ModelSpec`."""
    proto = pb.ModelSpec(name=spec.name, signature_name=spec.signature_name)
    if spec.version is not None:
        proto.version.value = spec.version
    elif spec.label is not None:
        proto.version_label = spec.label
    return proto


def predict_request(
    images: np.ndarray, spec: ModelSpec, *, output_filter: Sequence[str] = ()
) -> pb.PredictRequest:
    """A PredictRequest carrying a float32 [N, 28, 28, 1] batch as ``tensor_content``."""
    request = pb.PredictRequest(model_spec=model_spec_proto(spec), output_filter=list(output_filter))
    request.inputs[contract.INPUT_NAME].CopyFrom(
        make_tensor_proto(as_batch(images), np.float32, use_tensor_content=True)
    )
    return request


def parse_predict_response(response: pb.PredictResponse, expected: int | None = None) -> Prediction:
    """A :class:`Prediction` from the answer's ``probabilities`` and ``digit`` tensors."""
    try:
        probabilities = make_ndarray(response.outputs[contract.OUTPUT_PROBABILITIES])
        digits = make_ndarray(response.outputs[contract.OUTPUT_DIGIT])
    except (KeyError, TensorCodecError) as exc:
        raise ProtocolError(
            f"answer lacks a decodable output ({exc}); outputs: {sorted(response.outputs)}",
            protocol=PROTOCOL,
        ) from None
    version = response.model_spec.version.value if response.model_spec.HasField("version") else None
    return checked_prediction(
        probabilities.astype(np.float32, copy=False),
        digits.astype(np.int64, copy=False),
        expected,
        version,
        PROTOCOL,
    )


def _tensor_spec(info: pb.TensorInfo) -> TensorSpec:
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name=info.name, dtype=dtype_name(info.dtype), shape=shape)


def parse_metadata(response: pb.GetModelMetadataResponse) -> ModelMetadata:
    """Unpack the ``signature_def`` Any (a SignatureDefMap, as TF Serving sends it)."""
    packed = response.metadata.get(contract.METADATA_FIELD_SIGNATURE_DEF)
    if packed is None:
        raise ProtocolError("metadata answer has no 'signature_def' entry", protocol=PROTOCOL)
    if packed.type_url != contract.SIGNATURE_DEF_MAP_TYPE_URL:
        raise ProtocolError(
            f"signature_def holds {packed.type_url!r}, expected {contract.SIGNATURE_DEF_MAP_TYPE_URL!r}",
            protocol=PROTOCOL,
        )
    # Any.Unpack checks the type_url against our package's name, which differs by design, so
    # parse the bytes directly: the wire format is identical.
    sig_map = pb.SignatureDefMap.FromString(packed.value)
    spec = response.model_spec
    return ModelMetadata(
        name=spec.name,
        version=spec.version.value if spec.HasField("version") else None,
        signatures={
            key: Signature(
                inputs={k: _tensor_spec(v) for k, v in sig.inputs.items()},
                outputs={k: _tensor_spec(v) for k, v in sig.outputs.items()},
                method_name=sig.method_name,
            )
            for key, sig in sig_map.signature_def.items()
        },
    )


def parse_status(response: pb.GetModelStatusResponse) -> list[VersionStatus]:
    return [
        VersionStatus(
            version=int(entry.version),
            state=pb.ModelVersionStatus.State.Name(entry.state),
            error_code=pb.Code.Name(entry.status.error_code),
            error_message=entry.status.error_message,
        )
        for entry in response.model_version_status
    ]


class GrpcClient(DigitsClient):
    """:class:`client.api.DigitsClient` over TF Serving's gRPC API.

    >>> with GrpcClient("127.0.0.1:8500") as c:   # doctest: +SKIP
    ...     c.predict(images).digits

    ``interceptors`` are grpc client interceptors applied to the channel (the Locust user passes
    one that reports every call to Locust).
    """

    protocol = PROTOCOL

    def __init__(
        self,
        target: str,
        spec: ModelSpec | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        output_filter: Sequence[str] = (),
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        super().__init__(spec, timeout=timeout)
        self.target = target.removeprefix("grpc://")
        self.output_filter = tuple(output_filter)
        self._channel, channel = open_channel(self.target, interceptors)
        self._predict = channel.unary_unary(
            contract.PREDICT_RPC,
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        self._metadata = channel.unary_unary(
            contract.GET_MODEL_METADATA_RPC,
            request_serializer=pb.GetModelMetadataRequest.SerializeToString,
            response_deserializer=pb.GetModelMetadataResponse.FromString,
        )
        self._status = channel.unary_unary(
            contract.GET_MODEL_STATUS_RPC,
            request_serializer=pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=pb.GetModelStatusResponse.FromString,
        )

    def predict(self, images: np.ndarray) -> Prediction:
        request = predict_request(images, self.spec, output_filter=self.output_filter)
        return self.predict_request(request)

    def predict_request(self, request: pb.PredictRequest) -> Prediction:
        """Send a prepared request (the Locust user builds its requests once and reuses them)."""
        response = self.send_predict(request)
        expected = request.inputs[contract.INPUT_NAME].tensor_shape.dim[0].size
        return parse_predict_response(response, expected=expected)

    def send_predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        """Send a prepared request and return the answer undecoded (errors still typed)."""
        return self._invoke(self._predict, request)

    def status(self) -> list[VersionStatus]:
        request = pb.GetModelStatusRequest(model_spec=model_spec_proto(self.spec))
        request.model_spec.ClearField("signature_name")  # status is per version, not signature
        return parse_status(self._invoke(self._status, request))

    def metadata(self) -> ModelMetadata:
        request = pb.GetModelMetadataRequest(
            model_spec=model_spec_proto(self.spec),
            metadata_field=[contract.METADATA_FIELD_SIGNATURE_DEF],
        )
        request.model_spec.ClearField("signature_name")
        return parse_metadata(self._invoke(self._metadata, request))

    def close(self) -> None:
        self._channel.close()

    def _invoke(self, method: grpc.UnaryUnaryMultiCallable, request: Any) -> Any:
        return unary_call(method, request, self.timeout, PROTOCOL)
