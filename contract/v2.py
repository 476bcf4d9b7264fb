"""The Open Inference Protocol ("V2": KServe, Triton, MLServer) as digits speaks it.

Constants and pure helpers shared by the server's V2 adapters (REST and gRPC) and the clients:
the datatype table (V2 names <-> numpy dtypes), the binary tensor data extension's header and
parameter names, the REST paths, the gRPC method paths, the server metadata, the tensor
metadata of our model and its configuration as Triton's model configuration extension describes
it, all derived from the model contract in :mod:`contract`. No JSON or protobuf encoding here: the
adapters do that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as _metadata
from typing import Any

import numpy as np

import contract
from contract.errors import InvalidArgument, NotFound

# --- Datatypes ---------------------------------------------------------------------------------
# V2 datatype name -> numpy dtype (little-endian on the wire). BYTES is variable-length (each
# element a 4-byte length then its bytes); numpy holds it as object arrays, as tritonclient does.
BYTES = "BYTES"
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    BYTES: np.dtype(np.object_),
}
DATATYPES = tuple(NUMPY_DTYPES)
_DATATYPE_BY_NUMPY = {dtype: name for name, dtype in NUMPY_DTYPES.items()}
_DATATYPE_BY_NUMPY[np.dtype(np.bytes_)] = BYTES


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name (``"FP32"`` -> float32); unknown names are refused."""
    try:
        return NUMPY_DTYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidArgument(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(dtype: np.dtype | type | str) -> str:
    """The V2 datatype name of a numpy dtype (float32 -> ``"FP32"``)."""
    key = np.dtype(dtype)
    if key.kind == "S":
        return BYTES
    try:
        return _DATATYPE_BY_NUMPY[key.newbyteorder("=")]
    except KeyError:
        raise InvalidArgument(f"numpy dtype {key} has no V2 datatype") from None


# The typed field of gRPC's ``InferTensorContents`` each datatype travels in (FP16 and BYTES have
# none: FP16 goes raw, BYTES is not served).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


# --- The binary tensor data extension ------------------------------------------------------------
# The request (or response) body is a JSON header of this many bytes, then the raw tensors.
HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

PARAM_BINARY_DATA_SIZE = "binary_data_size"  # an input's (or output's) bytes after the header
PARAM_BINARY_DATA = "binary_data"  # a requested output: answer it in binary (true) or JSON
PARAM_BINARY_DATA_OUTPUT = "binary_data_output"  # request-level default for every output
PARAM_CLASSIFICATION = "classification"  # Triton's classification extension (not implemented)
PARAM_TIMEOUT = "timeout"  # a request's server-side timeout, in microseconds (Triton's); 0: none
# Parameters of an extension digits does not implement: refused, never silently ignored.
SHARED_MEMORY_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def header_length_value(text: str) -> int | None:
    """The byte count an ``Inference-Header-Content-Length`` header says: its ASCII digits (with
    surrounding blanks); None for anything else (a sign, ``_``, other digits), on both sides."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


# --- Parameters both codecs read (as plain values: JSON's, or a protobuf InferParameter's) --------
def refuse_unsupported(where: str, parameters: Mapping[str, Any]) -> None:
    """InvalidArgument for the parameters of an extension we do not implement (shared memory,
    classification) on a request, an input or an output: the same words on REST and gRPC."""
    if any(key in parameters for key in SHARED_MEMORY_PARAMS):
        raise InvalidArgument(f"{where}: the shared-memory extension is not supported here")
    if PARAM_CLASSIFICATION in parameters:
        raise InvalidArgument(f"{where}: the classification extension is not supported here")


def request_timeout(parameters: Mapping[str, Any]) -> float | None:
    """The request's ``timeout`` parameter in seconds; None when absent or 0 (no timeout)."""
    if PARAM_TIMEOUT not in parameters:
        return None
    micros = parameters[PARAM_TIMEOUT]
    if type(micros) is not int or micros < 0:
        raise InvalidArgument(
            f"parameter {PARAM_TIMEOUT!r} must be a non-negative integer (microseconds; 0: none), "
            f"got {micros!r}"
        )
    return micros / 1e6 if micros else None

# --- REST paths ------------------------------------------------------------------------------------
PREFIX = "/v2"
HEALTH_LIVE_PATH = f"{PREFIX}/health/live"
HEALTH_READY_PATH = f"{PREFIX}/health/ready"
MODELS_PREFIX = f"{PREFIX}/models"


def model_path(name: str, version: str | int | None = None) -> str:
    """``/v2/models/{name}[/versions/{version}]``: model metadata; the base of ready and infer."""
    path = f"{MODELS_PREFIX}/{name}"
    return path if version in (None, "") else f"{path}/versions/{version}"


def ready_path(name: str, version: str | int | None = None) -> str:
    return f"{model_path(name, version)}/ready"


def infer_path(name: str, version: str | int | None = None) -> str:
    return f"{model_path(name, version)}/infer"


def config_path(name: str, version: str | int | None = None) -> str:
    """Triton's model configuration extension: ``/v2/models/{name}[/versions/{v}]/config``."""
    return f"{model_path(name, version)}/config"


# Triton's model repository extension (one unnamed repository: the server's models).
REPOSITORY_PREFIX = f"{PREFIX}/repository"
REPOSITORY_INDEX_PATH = f"{REPOSITORY_PREFIX}/index"


def repository_load_path(name: str) -> str:
    """``POST /v2/repository/models/{name}/load``."""
    return f"{REPOSITORY_PREFIX}/models/{name}/load"


def repository_unload_path(name: str) -> str:
    """``POST /v2/repository/models/{name}/unload``."""
    return f"{REPOSITORY_PREFIX}/models/{name}/unload"


# The states a repository index row reports (Triton's words).
INDEX_READY = "READY"
INDEX_UNAVAILABLE = "UNAVAILABLE"
INDEX_LOADING = "LOADING"


# --- gRPC method paths (bound in code, like TF Serving's: our messages live in our package) ---------
GRPC_SERVICE = "inference.GRPCInferenceService"
SERVER_LIVE_RPC = f"/{GRPC_SERVICE}/ServerLive"
SERVER_READY_RPC = f"/{GRPC_SERVICE}/ServerReady"
MODEL_READY_RPC = f"/{GRPC_SERVICE}/ModelReady"
SERVER_METADATA_RPC = f"/{GRPC_SERVICE}/ServerMetadata"
MODEL_METADATA_RPC = f"/{GRPC_SERVICE}/ModelMetadata"
MODEL_INFER_RPC = f"/{GRPC_SERVICE}/ModelInfer"
MODEL_CONFIG_RPC = f"/{GRPC_SERVICE}/ModelConfig"  # Triton's model configuration extension
REPOSITORY_INDEX_RPC = f"/{GRPC_SERVICE}/RepositoryIndex"  # Triton's model repository extension
REPOSITORY_MODEL_LOAD_RPC = f"/{GRPC_SERVICE}/RepositoryModelLoad"
REPOSITORY_MODEL_UNLOAD_RPC = f"/{GRPC_SERVICE}/RepositoryModelUnload"

# Operation names both V2 adapters record (metrics' ``method`` label, access log): the protocol's
# own verbs, beside TF Serving's predict / metadata / status. Health probes are not recorded.
OP_INFER = "infer"
OP_MODEL_METADATA = "model_metadata"
OP_MODEL_READY = "model_ready"
OP_SERVER_METADATA = "server_metadata"
OP_MODEL_CONFIG = "model_config"
OP_REPOSITORY_INDEX = "repository_index"
OP_MODEL_LOAD = "model_load"
OP_MODEL_UNLOAD = "model_unload"

# --- Server metadata ---------------------------------------------------------------------------------
SERVER_NAME = "digits"
# Only what we implement, by the names Triton reports: the binary tensor data extension and the
# model configuration extension (GET .../config, gRPC ModelConfig; perf_analyzer asks for it).
BINARY_TENSOR_DATA = "binary_tensor_data"
MODEL_CONFIGURATION = "model_configuration"
MODEL_REPOSITORY = "model_repository"
EXTENSIONS = (BINARY_TENSOR_DATA, MODEL_CONFIGURATION, MODEL_REPOSITORY)
PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by ONNX Runtime
BACKEND = "onnxruntime"  # the backend Triton names beside that platform


def _package_version() -> str:
    try:
        return _metadata.version(SERVER_NAME)
    except _metadata.PackageNotFoundError:  # running from a tree that was never installed
        return "0+unknown"


SERVER_VERSION = _package_version()


@dataclass(frozen=True)
class ServerMetadata:
    name: str = SERVER_NAME
    version: str = SERVER_VERSION
    extensions: tuple[str, ...] = EXTENSIONS

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "extensions": list(self.extensions)}


SERVER_METADATA = ServerMetadata()


# --- Tensor metadata of our model ------------------------------------------------------------------
BATCH_DIM = -1  # V2 writes a variable dimension as -1


@dataclass(frozen=True)
class TensorMetadata:
    """A model input or output as V2 describes it: name, datatype, shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _metadata_of(name: str, dtype: str, shape: tuple[int | None, ...]) -> TensorMetadata:
    return TensorMetadata(
        name=name,
        datatype=datatype_of(dtype),
        shape=tuple(BATCH_DIM if dim is None else dim for dim in shape),
    )


INPUTS: tuple[TensorMetadata, ...] = tuple(
    _metadata_of(name, dtype, shape) for name, (dtype, shape) in contract.INPUT_SPEC.items()
)
OUTPUTS: tuple[TensorMetadata, ...] = tuple(
    _metadata_of(name, dtype, shape) for name, (dtype, shape) in contract.OUTPUT_SPEC.items()
)
INPUT = INPUTS[0]  # the one input, ``image`` FP32 [-1, 28, 28, 1]
INPUTS_BY_NAME: dict[str, TensorMetadata] = {tensor.name: tensor for tensor in INPUTS}
OUTPUTS_BY_NAME: dict[str, TensorMetadata] = {tensor.name: tensor for tensor in OUTPUTS}


def input_dtype(name: str, datatype: Any) -> np.dtype:
    """The numpy dtype of an input's V2 datatype. BYTES is not taken; the model's own inputs
    must come in the model's datatype (Triton does not convert, nor do we)."""
    expected = INPUTS_BY_NAME.get(name)
    if datatype == BYTES:
        raise InvalidArgument(
            f"input {name!r} has datatype BYTES, which this server does not take: send "
            f"{(expected or INPUT).datatype} numbers"
        )
    dtype = numpy_dtype(datatype)
    if expected is not None and datatype != expected.datatype:
        raise InvalidArgument(f"input {name!r} has datatype {datatype}; this model takes {expected.datatype}")
    return dtype


def parse_version(name: str, version: str | None) -> int | None:
    """The version a V2 version string addresses: None or "" the default (None), "2" version 2.

    V2 carries versions as strings; ours are integer directories, so any other string names a
    version that is not there: NOT_FOUND, on REST and gRPC alike.
    """
    if not version:
        return None
    if version.isascii() and version.isdigit():
        return int(version)
    raise NotFound(f"model {name!r} has no version {version!r} (versions are integers)")


def version_string(version: int) -> str:
    """V2 carries versions as strings; ours are the repository's integer directories."""
    return str(version)


# --- The model configuration (Triton's model configuration extension) ---------------------------
# Triton's ModelConfig (model_config.proto) as far as digits fills it: name, platform, backend,
# max_batch_size and the tensors. With max_batch_size > 0 a tensor's ``dims`` leave out the batch
# dimension, and Triton wants at least one dim: an output of one value per image (``digit``,
# [-1] in V2) is ``dims: [1]`` with an empty ``reshape``, as Triton's own configurations write it.
INPUT_FORMAT = "FORMAT_NHWC"  # Triton's ModelInput.Format of the image: height, width, channels


@dataclass(frozen=True)
class TensorConfig:
    """A model input or output as Triton's configuration describes it."""

    name: str
    data_type: str  # Triton's DataType name, "TYPE_FP32"
    dims: tuple[int, ...]  # without the batch dimension
    reshape: tuple[int, ...] | None = None  # the shape the model sees, when it is not ``dims``


def config_data_type(datatype: str) -> str:
    """Triton's configuration name of a V2 datatype: ``"FP32"`` -> ``"TYPE_FP32"`` (BYTES is
    ``TYPE_STRING``)."""
    numpy_dtype(datatype)  # refuses unknown names
    return "TYPE_STRING" if datatype == BYTES else f"TYPE_{datatype}"


def _config_of(tensor: TensorMetadata) -> TensorConfig:
    if tensor.shape[:1] != (BATCH_DIM,):
        raise ValueError(f"{tensor.name}: the first dimension must be the batch's")
    dims = tensor.shape[1:]
    data_type = config_data_type(tensor.datatype)
    if dims:
        return TensorConfig(tensor.name, data_type, dims)
    return TensorConfig(tensor.name, data_type, (1,), reshape=())


CONFIG_INPUTS: tuple[TensorConfig, ...] = tuple(_config_of(tensor) for tensor in INPUTS)
CONFIG_OUTPUTS: tuple[TensorConfig, ...] = tuple(_config_of(tensor) for tensor in OUTPUTS)
