"""Fast decoding of the predict body's pixel array (the REST hot path).

Decoding ``{"instances": [[[[0.1], ...]]]}`` with a JSON parser builds one list per image row and
per pixel, and numpy then walks them again: most of a REST request's cost
(docs/serving.md). For the body shapes clients send (row or columnar, images
as [N,28,28,1], [N,28,28] or [N,784]) this module instead:
  1. checks the bracket-and-comma skeleton of the array (the text with the numbers deleted)
     against the skeleton of the expected rectangular shape, byte for byte (C-speed);
  2. parses the numbers alone as one flat JSON array with orjson (strict JSON number grammar)
     and makes one float64 numpy array, exactly the values a JSON parser gives.

Anything else (objects per instance, whitespace between brackets, other shapes, strings, ragged
or malformed arrays) returns ``None`` and the caller takes the general JSON path, which decides
validity and words the error. So this is only a shortcut, never a second grammar.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import orjson

from contract import IMAGE_SIZE, INPUT_SHAPE, MAX_BATCH_SIZE, PIXELS

# Inner dimensions of one image by array rank (batch dimension first), and their product.
_INNER = {4: INPUT_SHAPE, 3: (IMAGE_SIZE, IMAGE_SIZE), 2: (PIXELS,)}
_PER_IMAGE = {rank: math.prod(inner) for rank, inner in _INNER.items()}
_NUMBER_BYTES = b"0123456789.eE+- \t\r\n"
_STRING = rb'"[^"\\]*"'
_PREFIX = re.compile(
    rb'^\s*\{\s*(?:"signature_name"\s*:\s*(?P<sig1>' + _STRING + rb")\s*,\s*)?"
    rb'"(?P<key>instances|inputs)"\s*:\s*(?P<named>\{\s*"image"\s*:\s*)?$'
)
_SUFFIX = re.compile(
    rb'\s*(?P<named>\}\s*)?(?:,\s*"signature_name"\s*:\s*(?P<sig2>' + _STRING + rb")\s*)?\}\s*$"
)


@lru_cache(maxsize=64)
def _skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of a JSON array of ``shape`` (numbers deleted)."""
    if len(shape) == 1:
        return b"[" + b"," * (shape[0] - 1) + b"]"
    inner = _skeleton(shape[1:])
    return b"[" + b",".join([inner] * shape[0]) + b"]"


def parse_array(text: bytes) -> np.ndarray | None:
    """An image batch array as float64 with its shape, or None if not one we recognise."""
    rank = len(text) - len(text.lstrip(b"["))
    inner = _INNER.get(rank)
    if inner is None:
        return None
    numbers = text.translate(None, b"[]")
    count = numbers.count(b",") + 1
    batch, rest = divmod(count, _PER_IMAGE[rank])
    if rest or not 0 < batch <= MAX_BATCH_SIZE:
        return None
    shape = (batch, *inner)
    if text.translate(None, _NUMBER_BYTES) != _skeleton(shape):
        return None
    try:
        flat = orjson.loads(b"[" + numbers + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(flat) != count:
        return None
    try:  # the skeleton and orjson leave numbers only: what np.array(flat, float64) makes
        values = np.fromiter(flat, np.float64, count)
    except (TypeError, ValueError, OverflowError):
        return None
    return values.reshape(shape)


def parse_predict_body(body: bytes) -> tuple[str, bool, np.ndarray] | None:
    """``(signature_name, row_format, pixels)`` for the common bodies, else None."""
    start = body.find(b"[")
    if start < 0:
        return None
    prefix = _PREFIX.match(body, 0, start)
    if prefix is None:
        return None
    end = body.rfind(b"]") + 1
    suffix = _SUFFIX.match(body, end)
    if suffix is None or bool(prefix["named"]) != bool(suffix["named"]):
        return None
    if prefix["named"] and prefix["key"] != b"inputs":
        return None  # {"instances": {...}} is not a row body: the general path says so
    if prefix["sig1"] and suffix["sig2"]:
        return None  # a duplicated key: the general path decides
    array = parse_array(body[start:end])
    if array is None:
        return None
    signature = prefix["sig1"] or suffix["sig2"] or b'""'
    try:
        name = signature[1:-1].decode()
    except UnicodeDecodeError:
        return None
    return name, prefix["key"] == b"instances", array
