"""Tensor codecs: numpy arrays <-> TensorProto (gRPC) and <-> TF Serving JSON (REST).

Used by the server and the clients alike, so both ends agree on dtypes and layouts. Decoding
accepts ``tensor_content`` and the typed fields (``float_val`` ...) as TF Serving does; encoding
writes typed fields by default, as TF Serving answers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from contract.errors import InvalidArgument
from contract.proto import digits_tfserving_pb2 as pb

_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    pb.DT_FLOAT: np.dtype(np.float32),
    pb.DT_DOUBLE: np.dtype(np.float64),
    pb.DT_HALF: np.dtype(np.float16),
    pb.DT_INT64: np.dtype(np.int64),
    pb.DT_INT32: np.dtype(np.int32),
    pb.DT_INT16: np.dtype(np.int16),
    pb.DT_INT8: np.dtype(np.int8),
    pb.DT_UINT8: np.dtype(np.uint8),
    pb.DT_BOOL: np.dtype(np.bool_),
}
_DTYPE_BY_NUMPY = {v: k for k, v in _NUMPY_BY_DTYPE.items()}
# tensor_content is little-endian whatever the machine (tensor.proto).
_LITTLE_ENDIAN = {k: v.newbyteorder("<") for k, v in _NUMPY_BY_DTYPE.items()}
# The typed field each dtype travels in when tensor_content is empty (tensor.proto's comments).
_TYPED_FIELD: dict[int, str] = {
    pb.DT_FLOAT: "float_val",
    pb.DT_DOUBLE: "double_val",
    pb.DT_HALF: "half_val",
    pb.DT_INT64: "int64_val",
    pb.DT_INT32: "int_val",
    pb.DT_INT16: "int_val",
    pb.DT_INT8: "int_val",
    pb.DT_UINT8: "int_val",
    pb.DT_BOOL: "bool_val",
}


class TensorCodecError(InvalidArgument):
    """A tensor that cannot be decoded; the message says why (the sender's mistake)."""


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` etc. for a DataType value (for messages and metadata)."""
    try:
        return pb.DataType.Name(dtype)
    except ValueError:
        return f"DataType({dtype})"


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype of a DataType; TensorCodecError for types we do not handle."""
    try:
        return _NUMPY_BY_DTYPE[dtype]
    except KeyError:
        raise TensorCodecError(f"unsupported tensor dtype {dtype_name(dtype)}") from None


def data_type(dtype: np.dtype | type | str) -> int:
    """The DataType value of a numpy dtype."""
    try:
        return _DTYPE_BY_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise TensorCodecError(f"unsupported numpy dtype {np.dtype(dtype)}") from None


def make_tensor_proto(
    array: Any, dtype: np.dtype | type | str | None = None, *, use_tensor_content: bool = False
) -> pb.TensorProto:
    """Encode an array; typed fields by default (as TF Serving answers), raw bytes on request."""
    arr = np.asarray(array, dtype=dtype)
    proto = pb.TensorProto(dtype=data_type(arr.dtype))
    proto.tensor_shape.dim.extend(pb.TensorShapeProto.Dim(size=int(s)) for s in arr.shape)
    if use_tensor_content:
        proto.tensor_content = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        return proto
    flat = arr.ravel()
    if arr.dtype == np.float16:
        flat = flat.view(np.uint16)
    getattr(proto, _TYPED_FIELD[proto.dtype]).extend(flat.tolist())
    return proto


def make_ndarray(proto: pb.TensorProto, *, copy: bool = True) -> np.ndarray:
    """Decode a TensorProto from ``tensor_content`` or its typed field, checking the element count.

    ``copy=False``: an array decoded from ``tensor_content`` may be a read-only view of the
    message's bytes (no copy: for a large batch the copy's fresh pages cost more than the rest of
    the decoding). The server reads its inputs only; the default returns a writable array.
    """
    dtype = numpy_dtype(proto.dtype)
    tensor_shape = proto.tensor_shape
    if tensor_shape.unknown_rank:
        raise TensorCodecError("tensor shape has unknown rank; give its dimensions")
    shape = tuple([d.size for d in tensor_shape.dim])
    if shape and min(shape) < 0:
        raise TensorCodecError(f"tensor shape {list(shape)} has a negative dimension")
    count = math.prod(shape)  # exact (numpy's int64 product could wrap round for absurd shapes)
    content = proto.tensor_content
    if content:
        if len(content) != count * dtype.itemsize:
            raise TensorCodecError(
                f"tensor_content holds {len(content)} bytes; shape {list(shape)} of "
                f"{dtype_name(proto.dtype)} needs {count * dtype.itemsize}"
            )
        array = np.frombuffer(content, dtype=_LITTLE_ENDIAN[proto.dtype]).astype(dtype, copy=copy)
        return array.reshape(shape)
    values = getattr(proto, _TYPED_FIELD[proto.dtype])
    if proto.dtype == pb.DT_HALF:
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.asarray(values, dtype=dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 1 and count > 0:  # TF Serving broadcasts a single typed value
        return np.full(shape, flat[0], dtype=dtype)
    raise TensorCodecError(
        f"tensor holds {flat.size} values in {_TYPED_FIELD[proto.dtype]}; shape {list(shape)} "
        f"needs {count}"
    )
