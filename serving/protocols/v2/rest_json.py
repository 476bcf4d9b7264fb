"""The Open Inference Protocol's (V2) REST JSON, both ways, with the binary tensor data extension.

- Infer requests: ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data"}],
  "outputs"?: [{"name", "parameters"?}]}``, ``data`` flat or nested. With the binary extension
  (``Inference-Header-Content-Length: n``) the first n bytes are that JSON and the raw
  little-endian tensors follow in input order, each input giving its ``binary_data_size``
  instead of ``data``. Decoded into numpy arrays; every inconsistency is an ``InvalidArgument``
  that says what to fix.
- Infer answers: each output in JSON or, when asked (``binary_data`` per output,
  ``binary_data_output`` for all), as raw bytes after the JSON; the encoder returns the JSON's
  length for the ``Inference-Header-Content-Length`` header.
- Parameters: ``timeout`` and the extensions refused (shared memory, classification) by the
  rules :mod:`contract.v2` shares with the gRPC codec. Server and model metadata.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from contract import v2
from contract.errors import InvalidArgument
from contract.types import check_output_names

_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
_INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
_OUTPUT_KEYS = {"name", "parameters"}
# The numpy kinds JSON numbers may arrive as, per kind of the declared dtype (JSON ints are
# fine for FP32; floats are not integers; only true/false are BOOL).
_JSON_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # its own ``binary_data``; None: the request's default


@dataclass(frozen=True)
class RestInferRequest:
    """A decoded infer request: what the data plane needs, and how to answer."""

    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] = ()  # empty: every output of the model
    binary_output: bool = False  # ``binary_data_output``: outputs in binary unless they say
    id: str | None = None
    timeout: float | None = None  # seconds, from the ``timeout`` parameter (microseconds)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.outputs)


# --- decoding ----------------------------------------------------------------------------------
def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object")
    return value


def _unknown_keys(value: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidArgument(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f'"{key}" in {where} must be true or false, got {value!r}')
    return value


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body under its ``Content-Encoding`` (tritonclient may gzip or deflate requests),
    inflated to at most ``limit`` bytes (a larger one is refused like a too-large body: 413)."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise InvalidArgument(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if kind == "gzip" else zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(f"request body is not valid {kind} data: {exc}") from None
    if len(data) > limit:
        raise InvalidArgument(f"request body inflates to more than {limit} bytes", http_status=413)
    if not inflater.eof or inflater.unused_data:
        raise InvalidArgument(f"request body is not one complete {kind} stream")
    return data


def _split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """(JSON, binary tensors) by the binary extension's header, as views of ``body`` (the
    tensors are not copied before numpy reads them); all JSON without it."""
    view = memoryview(body)
    if header_length is None:
        return view, view[:0]
    size, header = v2.header_length_value(header_length), v2.HEADER_CONTENT_LENGTH
    if size is None:
        raise InvalidArgument(f"{header} must be a non-negative integer, got {header_length!r}")
    if size > len(body):
        raise InvalidArgument(f"{header} {size} is past the end of the {len(body)}-byte body")
    return view[:size], view[size:]


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list) and all(type(dim) is int and dim >= 0 for dim in value):
        return tuple(value)
    raise InvalidArgument(f'"shape" of {where} must be a list of non-negative integers, got {value!r}')


def _from_json(data: Any, dtype: np.dtype, datatype: str, where: str) -> np.ndarray:
    """The values of ``data`` (flat or nested lists) as ``dtype``, refusing other kinds."""
    if not isinstance(data, list):
        raise InvalidArgument(f'"data" of {where} must be a JSON array (flat or nested)')
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):  # ragged lists
        raise InvalidArgument(f'"data" of {where} must be a rectangular array of {datatype} values') from None
    if array.size and array.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise InvalidArgument(f'"data" of {where} must be {datatype} values, got {array.dtype.name} values')
    if array.size and dtype.kind in "iu":  # integers must fit, never wrap round
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidArgument(
                f'"data" of {where} holds values outside {datatype}\'s range [{limits.min}, {limits.max}]'
            )
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range pixels: the data plane says
        return array.astype(dtype, copy=False)


def _decode_input(
    tensor: Any, index: int, binary: bytes, offset: int
) -> tuple[str, np.ndarray, int]:
    """(name, array, binary bytes used) of one entry of ``inputs``."""
    tensor = _object(tensor, f"inputs[{index}]")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f'inputs[{index}] needs a "name" (a string)')
    where = f"input {name!r}"
    _unknown_keys(tensor, _INPUT_KEYS, where)
    for key in ("shape", "datatype"):
        if key not in tensor:
            raise InvalidArgument(f'{where} has no "{key}"')
    shape = _shape(tensor["shape"], where)
    datatype = tensor["datatype"]
    dtype = v2.input_dtype(name, datatype)
    parameters = _object(tensor.get("parameters", {}), f'"parameters" of {where}')
    v2.refuse_unsupported(where, parameters)
    size = parameters.get(v2.PARAM_BINARY_DATA_SIZE)
    if size is None:
        return name, _json_data(tensor, shape, dtype, where), 0
    if "data" in tensor:
        raise InvalidArgument(f'{where} has both "data" and a {v2.PARAM_BINARY_DATA_SIZE}; send one')
    return name, _binary_data(size, shape, (dtype, datatype), (binary, offset), where), size


def _json_data(tensor: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    """An input's array from its JSON ``data``."""
    if "data" not in tensor:
        raise InvalidArgument(f'{where} has neither "data" nor a {v2.PARAM_BINARY_DATA_SIZE}')
    array = _from_json(tensor["data"], dtype, tensor["datatype"], where)
    count = math.prod(shape)
    if array.size != count:
        raise InvalidArgument(
            f"{where} has shape {list(shape)} ({count} values) but its data holds {array.size}"
        )
    return array.reshape(shape)


def _binary_data(
    size: Any, shape: tuple[int, ...], kind: tuple[np.dtype, str], tail: tuple[bytes, int], where: str
) -> np.ndarray:
    """An input's array (``kind``: its dtype and V2 datatype) from ``size`` bytes of the binary
    ``tail`` (the bytes, and where this input's start); not copied."""
    dtype, datatype = kind
    binary, offset = tail
    if type(size) is not int or size < 0:
        raise InvalidArgument(
            f"{v2.PARAM_BINARY_DATA_SIZE} of {where} must be a non-negative integer, got {size!r}"
        )
    if offset + size > len(binary):
        raise InvalidArgument(
            f"{where}: {v2.PARAM_BINARY_DATA_SIZE} {size} runs past the end of the binary data "
            f"({len(binary) - offset} bytes left after the JSON header and the inputs before it)"
        )
    count = math.prod(shape)
    if size != count * dtype.itemsize:
        raise InvalidArgument(
            f"{where} has shape {list(shape)} of {datatype}, which is {count * dtype.itemsize} bytes, "
            f"but its {v2.PARAM_BINARY_DATA_SIZE} is {size}"
        )
    return np.frombuffer(binary, dtype.newbyteorder("<"), count, offset).reshape(shape)


def _decode_outputs(value: Any) -> tuple[RequestedOutput, ...]:
    if not isinstance(value, list):
        raise InvalidArgument('"outputs" must be a list of {"name": ...} objects')
    outputs: list[RequestedOutput] = []
    for index, output in enumerate(value):
        output = _object(output, f"outputs[{index}]")
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f'outputs[{index}] needs a "name" (a string)')
        _unknown_keys(output, _OUTPUT_KEYS, f"output {name!r}")
        check_output_names([name], "unknown output {first!r}; this model outputs {outputs}")
        if name in (o.name for o in outputs):
            raise InvalidArgument(f"output {name!r} is asked for twice")
        parameters = _object(output.get("parameters", {}), f'"parameters" of output {name!r}')
        v2.refuse_unsupported(f"output {name!r}", parameters)
        outputs.append(RequestedOutput(name, _flag(parameters, v2.PARAM_BINARY_DATA, f"output {name!r}")))
    return tuple(outputs)


def decode_infer_request(body: bytes, header_length: str | None = None) -> RestInferRequest:
    """An infer request from its body and its ``Inference-Header-Content-Length`` (if sent)."""
    text, binary = _split_body(body, header_length)
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        where = "request body" if header_length is None else (
            f"the request's JSON header (the first {len(text)} bytes, by {v2.HEADER_CONTENT_LENGTH})"
        )
        raise InvalidArgument(f"{where} is not valid JSON: {exc}") from None
    request = _object(request, "the request body")
    _unknown_keys(request, _REQUEST_KEYS, "the request body")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f'"id" must be a string, got {request_id!r}')
    parameters = _object(request.get("parameters", {}), '"parameters" of the request')
    binary_output = _flag(parameters, v2.PARAM_BINARY_DATA_OUTPUT, '"parameters" of the request')
    v2.refuse_unsupported("request", parameters)
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InvalidArgument('request body needs "inputs": a non-empty list of tensors')
    inputs: dict[str, np.ndarray] = {}
    used = 0
    for index, tensor in enumerate(tensors):
        name, array, size = _decode_input(tensor, index, binary, used)
        if name in inputs:
            raise InvalidArgument(f"input {name!r} appears twice")
        inputs[name] = array
        used += size
    if used != len(binary):
        raise InvalidArgument(
            f"{len(binary)} bytes of binary data follow the JSON header but the inputs' "
            f"{v2.PARAM_BINARY_DATA_SIZE} add up to {used}"
        )
    return RestInferRequest(
        inputs=inputs,
        outputs=_decode_outputs(request.get("outputs", [])),
        binary_output=bool(binary_output),
        id=request_id,
        timeout=v2.request_timeout(parameters),
    )


# --- encoding ----------------------------------------------------------------------------------
def encode_infer_response(
    request: RestInferRequest, model_name: str, version: int, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """(body, JSON header length) of the answer; the length is None when no output is binary.

    Outputs come in the order the request named them (else the model's), each in JSON or binary
    as the request asked.
    """
    binary_of = {output.name: output.binary for output in request.outputs}
    tensors, chunks = [], []
    for name in request.output_names or tuple(outputs):
        array = outputs[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": v2.datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        binary = binary_of.get(name)
        if binary if binary is not None else request.binary_output:
            data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {v2.PARAM_BINARY_DATA_SIZE: len(data)}
            chunks.append(data)
        else:
            tensor["data"] = array.ravel()
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": v2.version_string(version)}
    answer.update({"id": request.id} if request.id is not None else {}, outputs=tensors)
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode_server_metadata() -> dict[str, Any]:
    """``{"name": "digits", "version": ..., "extensions": [...]}``."""
    return v2.SERVER_METADATA.as_dict()


def encode_model_metadata(name: str, versions: Iterable[int]) -> dict[str, Any]:
    """``{"name", "versions", "platform", "inputs", "outputs"}``; every version serves the
    contract's tensors."""
    return {
        "name": name,
        "versions": [v2.version_string(version) for version in versions],
        "platform": v2.PLATFORM,
        "inputs": [tensor.as_dict() for tensor in v2.INPUTS],
        "outputs": [tensor.as_dict() for tensor in v2.OUTPUTS],
    }
