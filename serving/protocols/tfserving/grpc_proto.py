"""TF Serving's gRPC messages, both ways: requests into plain values, results into messages.

The data plane speaks the foundation's protocol-neutral types (``contract.types``) and numpy;
this module is where they meet TF Serving's protobuf messages (our ``digits.tfserving`` copies,
field numbers identical to TF Serving's):

- ``ModelSpec`` -> (name, version, label); ``PredictRequest.inputs`` -> numpy arrays;
- outputs -> ``PredictResponse`` (a message, or its wire bytes written directly for the hot
  path: ``predict_response_bytes``); ``ModelMetadata`` -> ``GetModelMetadataResponse`` (the
  ``SignatureDefMap`` packed in an ``Any`` whose type URL names TF Serving's message, so official
  clients unpack it); ``VersionStatus`` rows -> ``GetModelStatusResponse``;
- ``ReloadConfigRequest`` -> the models it lists (``contract.model_config``), and its answer.

The REST adapter renders status and metadata as the proto3 JSON of these same messages, as TF
Serving's own REST handler does (``serving.protocols.tfserving.rest_json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from contract import METADATA_FIELD_SIGNATURE_DEF, SIGNATURE_DEF_MAP_TYPE_URL, SIGNATURE_NAME
from contract.codecs import data_type, make_ndarray, make_tensor_proto
from contract.errors import InvalidArgument
from contract.model_config import entries_of
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import ModelEntry, ModelMetadata, Signature, TensorSpec, VersionStatus


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
    """The request's input tensors as numpy arrays (``tensor_content`` or typed fields).

    Arrays decoded from ``tensor_content`` are read-only views of the request's bytes (no copy):
    the data plane only reads its inputs.
    """
    return {key: make_ndarray(tensor, copy=False) for key, tensor in request.inputs.items()}


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


# --- the PredictResponse's bytes, written directly (the gRPC hot path) -------------------------
# Building TensorProto messages and copying them into the response map is most of the handler's
# own cost. The answer's wire bytes are simple: for each output a map entry whose bytes before
# the values depend only on (key, dtype, shape), cached, then the values as protobuf packs them:
# ``float_val`` as little-endian fixed32, ``int64_val`` as varints (one byte each for 0..127);
# then the ``ModelSpec`` (cached per name and version). Exactly the bytes protobuf's
# deterministic serialisation writes for ``predict_response`` (tests compare them); any other
# dtype or value range falls back to protobuf's own encoding of that tensor.
_FLOAT_VAL, _INT64_VAL = 5, 10  # TensorProto field numbers
_F4, _I8 = np.dtype("<f4"), np.dtype("<i8")  # little-endian only: native order elsewhere differs


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its 10-byte two's complement, as protobuf writes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint_field(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""  # proto3 omits zero


def _string_field(field: int, text: str) -> bytes:
    return _delimited(field, text.encode()) if text else b""


@lru_cache(maxsize=1024)
def _entry_prefix(key: str, dtype: int, shape: tuple[int, ...], field: int, size: int) -> bytes:
    """A map entry's bytes up to its packed values (``size`` bytes of them follow)."""
    dims = b"".join(_delimited(2, _varint_field(1, dim)) for dim in shape)
    head = _varint_field(1, dtype) + _delimited(2, dims)
    head += _varint(field << 3 | 2) + _varint(size) if size else b""
    value_head = _varint(2 << 3 | 2) + _varint(len(head) + size)
    entry = _string_field(1, key) + value_head + head
    return _varint(1 << 3 | 2) + _varint(len(entry) + size) + entry


def _entry(key: str, value: np.ndarray) -> bytes:
    if value.dtype == _F4 and value.ndim:
        field, packed = _FLOAT_VAL, value.tobytes()
    elif value.dtype == _I8 and value.ndim and (not value.size or value.view(np.uint64).max() < 0x80):
        field, packed = _INT64_VAL, value.astype(np.uint8).tobytes()  # one-byte varints
    else:
        tensor = make_tensor_proto(value).SerializeToString()
        return _delimited(1, _string_field(1, key) + _delimited(2, tensor))
    return _entry_prefix(key, data_type(value.dtype), value.shape, field, len(packed)) + packed


@lru_cache(maxsize=64)
def _model_spec_field(name: str, version: int) -> bytes:
    version_value = _delimited(2, _varint_field(1, version))
    return _delimited(2, _string_field(1, name) + version_value + _string_field(3, SIGNATURE_NAME))


def predict_response_bytes(name: str, version: int, outputs: Mapping[str, np.ndarray]) -> bytes:
    """``predict_response(...).SerializeToString(deterministic=True)``, byte for byte, faster.

    Deterministic: map entries sorted by key. (protobuf's default order is its hash table's,
    seeded per process, so two server processes would otherwise write the same answer two ways.)
    """
    entries = [_entry(key, outputs[key]) for key in sorted(outputs)]
    return b"".join(entries) + _model_spec_field(name, version)


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


def decode_reload_request(request: pb.ReloadConfigRequest) -> list[ModelEntry]:
    """The models a ``HandleReloadConfigRequest`` asks to serve (relative base paths stay as
    written: the server resolves them against its working directory, as TF Serving does). No
    config, or an empty list, is a config of no models: every model is unloaded."""
    if request.metric_names:
        raise InvalidArgument(f"metric_names {list(request.metric_names)} are not reported here")
    return entries_of(request.config)


def reload_response() -> pb.ReloadConfigResponse:
    """The answer to a config reload that every worker applied."""
    response = pb.ReloadConfigResponse()
    response.status.error_code = pb.Code.Value("OK")
    return response
