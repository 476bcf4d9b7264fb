"""TF Serving's REST JSON, both ways: predict bodies into arrays, results into JSON objects.

- Predict requests: row format ``{"instances": [...]}`` (images, or ``{"image": ...}`` objects)
  or columnar ``{"inputs": ...}`` (an array, or ``{"image": ...}``), optional
  ``"signature_name"``. The common shapes take the fast path of ``serving.protocols.tfserving.json_tensor``.
- Predict answers: ``{"predictions": [{"probabilities": [...], "digit": 7}, ...]}`` for the row
  format, ``{"outputs": {"probabilities": [[...]], "digit": [...]}}`` for the columnar one.
- Status and metadata: the proto3 JSON of the gRPC messages
  (``serving.protocols.tfserving.grpc_proto``), exactly as TF Serving's REST handler prints
  them (int64 as strings, enum names, empty fields present).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from contract import INPUT_NAME, METADATA_FIELD_SIGNATURE_DEF, OUTPUT_DIGIT, OUTPUT_PROBABILITIES
from contract.errors import InvalidArgument
from contract.types import ModelMetadata, VersionStatus
from serving.protocols.tfserving import grpc_proto as tfserving_proto
from serving.protocols.tfserving.json_tensor import parse_predict_body

_ROW_KEYS = {"instances", "signature_name"}
_COLUMNAR_KEYS = {"inputs", "signature_name"}


# --- predict -----------------------------------------------------------------------------------
def _array(value: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"{where} is not a rectangular array of numbers (ragged lists?)"
        ) from None


def decode_predict_body(data: bytes) -> tuple[str, bool, dict[str, np.ndarray]]:
    """``(signature_name, row_format, inputs)`` from a TF Serving predict body."""
    fast = parse_predict_body(data)
    if fast is not None:
        return fast[0], fast[1], {INPUT_NAME: fast[2]}
    body = _predict_object(data)
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise InvalidArgument('"signature_name" must be a string')
    if "instances" in body:
        return signature_name, True, {INPUT_NAME: _row_inputs(body["instances"])}
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        return signature_name, False, {k: _array(v, f'"inputs.{k}"') for k, v in inputs.items()}
    return signature_name, False, {INPUT_NAME: _array(inputs, '"inputs"')}


def _predict_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object with exactly one of "instances" and "inputs", no other keys."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument('request body must be a JSON object with "instances" or "inputs"')
    row = "instances" in body
    if row == ("inputs" in body):
        raise InvalidArgument(
            'request body must have exactly one of "instances" (row format) '
            'or "inputs" (columnar format)'
        )
    unknown = sorted(set(body) - (_ROW_KEYS if row else _COLUMNAR_KEYS))
    if unknown:
        raise InvalidArgument(f"unknown key(s) {unknown} in request body")
    return body


def _row_inputs(instances: Any) -> np.ndarray:
    """The images of the row format: a list of images, or of ``{"image": ...}`` objects."""
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument('"instances" must be a non-empty list of images')
    if isinstance(instances[0], dict):
        if not all(isinstance(i, dict) and set(i) == {INPUT_NAME} for i in instances):
            raise InvalidArgument(f'every instance object must hold exactly the key "{INPUT_NAME}"')
        instances = [i[INPUT_NAME] for i in instances]
    return _array(instances, '"instances"')


def encode_predict(row: bool, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """TF Serving's answer for a two-output signature: per-row objects or named columns.

    Arrays stay numpy: the caller serialises with ``orjson.OPT_SERIALIZE_NUMPY``.
    """
    if not row:
        return {"outputs": outputs}
    probabilities, digits = outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_DIGIT]
    return {
        "predictions": [
            {OUTPUT_PROBABILITIES: probabilities[i], OUTPUT_DIGIT: int(digits[i])}
            for i in range(len(digits))
        ]
    }


# --- status and metadata -----------------------------------------------------------------------
def _proto_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def encode_status(rows: Iterable[VersionStatus]) -> dict[str, Any]:
    """``{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {...}}]}``."""
    return _proto_json(tfserving_proto.status_response(rows))


def encode_metadata(metadata: ModelMetadata) -> dict[str, Any]:
    """``{"model_spec": {...}, "metadata": {"signature_def": <SignatureDefMap JSON>}}``.

    The signature map is printed as itself, not as the ``Any`` the gRPC answer packs it in.
    """
    return {
        "model_spec": _proto_json(tfserving_proto.model_spec(metadata)),
        "metadata": {
            METADATA_FIELD_SIGNATURE_DEF: _proto_json(
                tfserving_proto.signature_def_map(metadata.signatures)
            )
        },
    }
