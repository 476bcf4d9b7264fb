"""TF Serving's gRPC messages, both ways: requests into plain values, results into messages.

The data plane speaks the foundation's protocol-neutral types (``contract.types``) and numpy;
this module is where they meet TF Serving's protobuf messages (our ``digits.tfserving`` copies,
field numbers identical to TF Serving's):

- ``ModelSpec`` -> (name, version, label); ``PredictRequest.inputs`` -> numpy arrays;
- outputs -> ``PredictResponse``; ``ModelMetadata`` -> ``GetModelMetadataResponse`` (the
  ``SignatureDefMap`` packed in an ``Any`` whose type URL names TF Serving's message, so official
  clients unpack it); ``VersionStatus`` rows -> ``GetModelStatusResponse``.

The REST adapter renders status and metadata as the proto3 JSON of these same messages, as TF
Serving's own REST handler does (``serving.tfserving_json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from contract import METADATA_FIELD_SIGNATURE_DEF, SIGNATURE_DEF_MAP_TYPE_URL, SIGNATURE_NAME
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import InvalidArgument
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import ModelMetadata, Signature, TensorSpec, VersionStatus


# --- requests ----------------------------------------------------------------------------------
def decode_model_spec(spec: pb.ModelSpec) -> tuple[str, int | None, str | None]:
    """``(name, version, label)`` a request addresses; at most one of version and label is set."""
    if not spec.name:
        raise InvalidArgument("model_spec.name is required")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, spec.version.value, None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


def decode_inputs(request: pb.PredictRequest) -> dict[str, np.ndarray]:
    """The request's input tensors as numpy arrays (``tensor_content`` or typed fields)."""
    return {key: make_ndarray(tensor) for key, tensor in request.inputs.items()}


def check_metadata_fields(fields: Sequence[str]) -> None:
    """``GetModelMetadataRequest.metadata_field`` must ask for the signature map, and only it."""
    if not fields:
        raise InvalidArgument(
            "GetModelMetadataRequest must name a metadata_field "
            f"({METADATA_FIELD_SIGNATURE_DEF!r})"
        )
    unsupported = [f for f in fields if f != METADATA_FIELD_SIGNATURE_DEF]
    if unsupported:
        raise InvalidArgument(
            f"metadata field(s) {unsupported} not supported; "
            f"only {METADATA_FIELD_SIGNATURE_DEF!r}"
        )


# --- results -----------------------------------------------------------------------------------
def predict_response(
    name: str, version: int, outputs: Mapping[str, np.ndarray]
) -> pb.PredictResponse:
    """The outputs as typed TensorProtos (TF Serving's default), with the version that answered."""
    response = pb.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.model_spec.signature_name = SIGNATURE_NAME
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(make_tensor_proto(value))
    return response


def _tensor_info(spec: TensorSpec) -> pb.TensorInfo:
    info = pb.TensorInfo(name=spec.name, dtype=pb.DataType.Value(spec.dtype))
    if spec.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        info.tensor_shape.dim.extend(
            pb.TensorShapeProto.Dim(size=-1 if size is None else size) for size in spec.shape
        )
    return info


def signature_def_map(signatures: Mapping[str, Signature]) -> pb.SignatureDefMap:
    """TF Serving's ``SignatureDefMap`` (an unknown batch dimension is -1)."""
    result = pb.SignatureDefMap()
    for key, signature in signatures.items():
        message = pb.SignatureDef(method_name=signature.method_name)
        for name, spec in signature.inputs.items():
            message.inputs[name].CopyFrom(_tensor_info(spec))
        for name, spec in signature.outputs.items():
            message.outputs[name].CopyFrom(_tensor_info(spec))
        result.signature_def[key].CopyFrom(message)
    return result


def model_spec(metadata: ModelMetadata) -> pb.ModelSpec:
    """The ``ModelSpec`` a metadata answer carries: the model and the version described."""
    spec = pb.ModelSpec(name=metadata.name)
    if metadata.version is not None:
        spec.version.value = metadata.version
    return spec


def metadata_response(metadata: ModelMetadata) -> pb.GetModelMetadataResponse:
    """``GetModelMetadataResponse`` with the signature map packed in an ``Any``."""
    response = pb.GetModelMetadataResponse(model_spec=model_spec(metadata))
    packed = response.metadata[METADATA_FIELD_SIGNATURE_DEF]
    packed.Pack(signature_def_map(metadata.signatures))
    packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL  # official clients unpack TF Serving's type
    return response


def status_response(rows: Iterable[VersionStatus]) -> pb.GetModelStatusResponse:
    """``GetModelStatusResponse``: one ``ModelVersionStatus`` per row, error code by name."""
    response = pb.GetModelStatusResponse()
    for row in rows:
        entry = response.model_version_status.add(
            version=row.version, state=pb.ModelVersionStatus.State.Value(row.state)
        )
        entry.status.error_code = pb.Code.Value(row.error_code)
        entry.status.error_message = row.error_message
    return response
