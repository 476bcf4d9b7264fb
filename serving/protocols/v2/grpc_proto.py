"""The Open Inference Protocol's gRPC messages, both ways: requests into plain values, results
into messages.

The data plane speaks numpy, version numbers and the foundation's types; this module is where
they meet the V2 protobuf messages (our ``digits.v2`` copies, field numbers identical to
Triton's and KServe's). The protocol's constants (datatypes, server name and extensions,
platform, the model's tensor metadata) come from :mod:`contract.v2`, shared with the REST adapter.

Decisions, following Triton (what ``tritonclient`` expects):

- Inputs arrive either all in ``raw_input_contents`` (one little-endian byte string per input,
  in input order; tritonclient's only way) or all in typed ``contents`` (``fp32_contents`` ...);
  their size must be what shape x datatype says. An input of the model must carry the model's
  datatype (FP32 for ``image``): Triton does not convert, nor do we.
- Outputs are always answered in ``raw_output_contents``, one per output in the order of
  ``outputs``, whatever the request used: Triton does so, and ``tritonclient`` reads numeric
  outputs from nowhere else.
- ``model_version``: empty is the default version (highest available), digits a version number;
  anything else names no version of ours (NOT_FOUND), as on the V2 REST routes.
- Parameters (rules shared with REST in :mod:`contract.v2`): the request's ``timeout``
  (microseconds, Triton's; 0 is none) bounds the wait like the gRPC deadline; extensions we do
  not implement (shared memory, classification) are refused with INVALID_ARGUMENT instead of
  being silently ignored; other parameters are ignored, as Triton leaves them to a backend that
  has no use for them here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from contract import v2
from contract.errors import InvalidArgument
from contract.proto import digits_v2_pb2 as pb
from contract.types import check_output_names

_CONTENT_FIELDS = tuple(field.name for field in pb.InferTensorContents.DESCRIPTOR.fields)


@dataclass(frozen=True)
class GrpcInferRequest:
    """A decoded ``ModelInferRequest``: what the data plane needs, as plain values."""

    model_name: str
    version: int | None
    id: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]  # the outputs asked for, in order; empty: all of them
    timeout: float | None  # seconds, from the ``timeout`` parameter


# --- requests ----------------------------------------------------------------------------------
def require_model_name(name: str) -> str:
    if not name:
        raise InvalidArgument("the model name is required")
    return name


def _shape(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(dims)
    if any(dim < 0 for dim in shape):
        raise InvalidArgument(
            f"input {name!r} has shape {list(shape)}; every dimension must be 0 or more"
        )
    return shape


def _from_raw(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    """A read-only array over ``raw``, the little-endian bytes: numpy wraps that bytes object
    without copying it (the data plane only reads inputs). ``raw`` itself is a copy: upb hands out
    a fresh bytes object on each access to ``raw_input_contents``."""
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {tensor.name!r}: raw_input_contents holds {len(raw)} bytes, but shape "
            f"{list(shape)} of {tensor.datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    """The typed ``contents`` of the datatype's field; values in any other field are refused."""
    field = v2.CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(
            f"input {tensor.name!r}: {tensor.datatype} has no typed contents field; "
            "send it in raw_input_contents"
        )
    contents = tensor.contents
    stray = [name for name in _CONTENT_FIELDS if name != field and len(getattr(contents, name))]
    if stray:
        raise InvalidArgument(
            f"input {tensor.name!r} has datatype {tensor.datatype}, so its values belong in "
            f"contents.{field}, not in contents.{stray[0]}"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: contents.{field} holds {len(values)} values, but shape "
            f"{list(shape)} needs {count}"
        )
    return np.array(values, dtype=dtype).reshape(shape)


def _plain(parameters: Mapping[str, pb.InferParameter]) -> dict[str, object]:
    """The parameters as plain values (the set one of each ``parameter_choice``; None if none),
    for the rules :mod:`contract.v2` shares with the REST codec."""
    plain: dict[str, object] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        plain[key] = None if kind is None else getattr(parameter, kind)
    return plain


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's inputs as numpy arrays, all from raw bytes or all from typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidArgument(f"input {tensor.name!r} is given more than once")
        v2.refuse_unsupported(f"input {tensor.name!r}", _plain(tensor.parameters))
        dtype, shape = v2.input_dtype(tensor.name, tensor.datatype), _shape(tensor.name, tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {tensor.name!r} has contents although the request uses "
                    "raw_input_contents; use one or the other for all inputs"
                )
            arrays[tensor.name] = _from_raw(tensor, raw[index], dtype, shape)
        else:
            arrays[tensor.name] = _from_contents(tensor, dtype, shape)
    return arrays


def decode_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The names of the outputs asked for, in order; each must be one of the model's."""
    names: list[str] = []
    for output in request.outputs:
        check_output_names([output.name], "unknown output {first!r} requested; the model outputs {outputs}")
        if output.name in names:
            raise InvalidArgument(f"output {output.name!r} is requested more than once")
        v2.refuse_unsupported(f"output {output.name!r}", _plain(output.parameters))
        names.append(output.name)
    return tuple(names)


def decode_infer_request(request: pb.ModelInferRequest) -> GrpcInferRequest:
    """Everything the data plane needs from a ``ModelInferRequest``; InvalidArgument otherwise."""
    name = require_model_name(request.model_name)
    parameters = _plain(request.parameters)
    v2.refuse_unsupported("request", parameters)
    return GrpcInferRequest(
        model_name=name,
        version=v2.parse_version(name, request.model_version),
        id=request.id,
        inputs=decode_inputs(request),
        outputs=decode_outputs(request),
        timeout=v2.request_timeout(parameters),
    )


# --- results -----------------------------------------------------------------------------------
def infer_response(
    name: str,
    version: int,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    order: Iterable[str] = (),
) -> pb.ModelInferResponse:
    """The outputs in ``raw_output_contents`` (little-endian), in ``order`` (default: the
    model's), with the version that answered and the request's ``id`` echoed."""
    response = pb.ModelInferResponse(
        model_name=name, model_version=v2.version_string(version), id=request_id
    )
    for key in tuple(order) or tuple(k for k in v2.OUTPUTS_BY_NAME if k in outputs):
        value = outputs[key]
        response.outputs.add(name=key, datatype=v2.datatype_of(value.dtype), shape=value.shape)
        little = value.dtype.newbyteorder("<")
        response.raw_output_contents.append(np.ascontiguousarray(value, dtype=little).tobytes())
    return response


def _tensor_metadata(
    tensors: Iterable[v2.TensorMetadata],
) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
        for t in tensors
    ]


def model_metadata_response(name: str, versions: Iterable[int]) -> pb.ModelMetadataResponse:
    """The model's platform, the versions described and its tensors (batch dimension -1)."""
    return pb.ModelMetadataResponse(
        name=name,
        versions=[v2.version_string(v) for v in versions],
        platform=v2.PLATFORM,
        inputs=_tensor_metadata(v2.INPUTS),
        outputs=_tensor_metadata(v2.OUTPUTS),
    )


def server_metadata_response(
    metadata: v2.ServerMetadata = v2.SERVER_METADATA,
) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=list(metadata.extensions)
    )
