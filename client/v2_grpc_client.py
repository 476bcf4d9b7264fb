"""V2 gRPC client: the Open Inference Protocol's ``inference.GRPCInferenceService`` with grpcio.

Our messages live in the ``digits.v2`` proto package (``contract/proto/digits_v2.proto``, field
numbers identical to the protocol's ``grpc_predict_v2.proto``) and no service is declared there,
so the method paths ``/inference.GRPCInferenceService/ModelInfer`` etc. from :mod:`contract.v2`
are bound here with ``channel.unary_unary``, as :mod:`client.grpc_client` binds TF Serving's,
over the channel of :mod:`client.grpc_transport`. It works against Triton, KServe and MLServer as
well as ours.

The pixels travel as ``raw_input_contents`` (raw little-endian float32: what ``tritonclient``
sends, with nothing to convert at either end); answers are read from ``raw_output_contents``
or, from a server that answers in typed ``contents``, from those.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction, as_batch
from client.grpc_transport import open_channel, unary_call
from client.v2_base import (
    check_spec,
    model_metadata,
    prediction_from_tensors,
    tensor_spec,
    version_status,
    version_text,
)
from contract import OUTPUT_NAMES, v2
from contract.errors import DigitsError, ProtocolError, Unavailable
from contract.proto import digits_v2_pb2 as pb
from contract.types import ModelMetadata, VersionStatus

log = logging.getLogger(__name__)

PROTOCOL = "V2 gRPC"


def infer_request(
    images: np.ndarray, spec: ModelSpec, *, outputs: Sequence[str] = OUTPUT_NAMES, request_id: str = ""
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying a float32 [N, 28, 28, 1] batch as ``raw_input_contents``."""
    batch = as_batch(images)
    request = pb.ModelInferRequest(
        model_name=spec.name,
        model_version=version_text(spec),
        id=request_id,
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs],
    )
    request.inputs.add(name=v2.INPUT.name, datatype=v2.INPUT.datatype, shape=list(batch.shape))
    request.raw_input_contents.append(batch.astype("<f4", copy=False).tobytes())
    return request


def output_tensor(output: Any, raw: bytes | None) -> np.ndarray:
    """One output of a ModelInferResponse as an array: from its raw bytes, else typed contents."""
    try:
        dtype = v2.numpy_dtype(output.datatype)
    except DigitsError as exc:
        raise ProtocolError(f"output {output.name!r}: {exc}", protocol=PROTOCOL) from None
    shape = [int(size) for size in output.shape]
    try:
        if raw is not None:
            return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
        field = v2.CONTENTS_FIELD.get(output.datatype)
        if field is None:
            raise ProtocolError(f"output {output.name!r} is {output.datatype}; this client reads numbers",
                                protocol=PROTOCOL)  # fmt: skip
        return np.asarray(getattr(output.contents, field), dtype=dtype).reshape(shape)
    except ValueError as exc:  # the bytes or values do not fill the shape
        raise ProtocolError(
            f"output {output.name!r} {output.datatype} {shape}: {exc}", protocol=PROTOCOL
        ) from None


def parse_infer_response(response: pb.ModelInferResponse, expected: int | None = None) -> Prediction:
    """A :class:`Prediction` from the answer's ``probabilities`` and ``digit`` outputs."""
    raw = list(response.raw_output_contents)
    if raw and len(raw) != len(response.outputs):
        raise ProtocolError(
            f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs", protocol=PROTOCOL
        )
    tensors = {
        output.name: output_tensor(output, raw[k] if raw else None)
        for k, output in enumerate(response.outputs)
    }
    return prediction_from_tensors(tensors, expected, response.model_version, PROTOCOL)


def parse_model_metadata(response: pb.ModelMetadataResponse, spec: ModelSpec) -> ModelMetadata:
    return model_metadata(
        spec,
        name=response.name,
        versions=list(response.versions),
        platform=response.platform,
        inputs=[tensor_spec(t.name, t.datatype, t.shape) for t in response.inputs],
        outputs=[tensor_spec(t.name, t.datatype, t.shape) for t in response.outputs],
        protocol=PROTOCOL,
    )


class V2GrpcClient(DigitsClient):
    """:class:`client.api.DigitsClient` over the Open Inference Protocol's gRPC API.

    >>> with V2GrpcClient("127.0.0.1:8500") as c:   # doctest: +SKIP
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
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        super().__init__(check_spec(spec or ModelSpec()), timeout=timeout)
        self.target = target.removeprefix("grpc://")
        self._channel, channel = open_channel(self.target, interceptors)

        def bind(path: str, request: Any, response: Any) -> grpc.UnaryUnaryMultiCallable:
            return channel.unary_unary(
                path, request_serializer=request.SerializeToString, response_deserializer=response.FromString
            )

        self._infer = bind(v2.MODEL_INFER_RPC, pb.ModelInferRequest, pb.ModelInferResponse)
        self._model_metadata = bind(v2.MODEL_METADATA_RPC, pb.ModelMetadataRequest, pb.ModelMetadataResponse)
        self._model_ready = bind(v2.MODEL_READY_RPC, pb.ModelReadyRequest, pb.ModelReadyResponse)
        self._server_ready = bind(v2.SERVER_READY_RPC, pb.ServerReadyRequest, pb.ServerReadyResponse)
        self._server_live = bind(v2.SERVER_LIVE_RPC, pb.ServerLiveRequest, pb.ServerLiveResponse)
        self._server_metadata = bind(
            v2.SERVER_METADATA_RPC, pb.ServerMetadataRequest, pb.ServerMetadataResponse
        )

    # -- the API --------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        request = infer_request(images, self.spec)
        return parse_infer_response(self.send_infer(request), expected=request.inputs[0].shape[0])

    def send_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Send a prepared request and return the answer undecoded (errors still typed)."""
        return self._invoke(self._infer, request)

    def metadata(self) -> ModelMetadata:
        request = pb.ModelMetadataRequest(name=self.spec.name, version=version_text(self.spec))
        return parse_model_metadata(self._invoke(self._model_metadata, request), self.spec)

    def status(self) -> list[VersionStatus]:
        if self.spec.version is not None:
            versions = [self.spec.version]
        else:
            answer = self._invoke(self._model_metadata, pb.ModelMetadataRequest(name=self.spec.name))
            try:
                versions = sorted(int(text) for text in answer.versions)
            except ValueError as exc:
                raise ProtocolError(f"versions are not integers: {exc}", protocol=PROTOCOL) from None
        return [version_status(version, self._ready(str(version))) for version in versions]

    def ready(self) -> bool:
        return self._ready(version_text(self.spec))

    def server_ready(self) -> bool:
        return self._invoke(self._server_ready, pb.ServerReadyRequest()).ready

    def server_live(self) -> bool:
        return self._invoke(self._server_live, pb.ServerLiveRequest()).live

    def server_metadata(self) -> v2.ServerMetadata:
        answer = self._invoke(self._server_metadata, pb.ServerMetadataRequest())
        return v2.ServerMetadata(
            name=answer.name, version=answer.version, extensions=tuple(answer.extensions)
        )

    def close(self) -> None:
        self._channel.close()

    def _ready(self, version: str) -> bool:
        """ModelReady; a "not ready" is checked against ModelMetadata, because V2 gRPC servers
        (Triton, ours) answer ``ready: false`` rather than NOT_FOUND for a model or version they
        do not have: an unknown one raises NotFound here, as over REST. ModelMetadata answers
        UNAVAILABLE while no version has loaded (or the one asked for is loading): not ready."""
        request = pb.ModelReadyRequest(name=self.spec.name, version=version)
        if self._invoke(self._model_ready, request).ready:
            return True
        try:
            self._invoke(self._model_metadata, pb.ModelMetadataRequest(name=self.spec.name, version=version))
        except Unavailable:
            pass
        return False

    def _invoke(self, method: grpc.UnaryUnaryMultiCallable, request: Any) -> Any:
        return unary_call(method, request, self.timeout, PROTOCOL)
