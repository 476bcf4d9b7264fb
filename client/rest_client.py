"""REST client: TensorFlow Serving's REST API (``/v1/models/...``) over HTTP/1.1 with requests.

Speaks only what TF Serving documents (``g3doc/api_rest.md``): ``:predict`` in row
(``instances``/``predictions``) or columnar (``inputs``/``outputs``) format, model status and
``/metadata``, errors as ``{"error": "..."}`` with TF Serving's HTTP codes. So it works unchanged
against ``tensorflow/serving``. Owns the request bodies and the answers' decoding; the HTTP call
itself (one kept-alive :class:`requests.Session`, errors typed) is :mod:`client.http_transport`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import requests

import contract
from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction, as_batch, checked_prediction
from client.http_transport import http_call, json_answer, normalise_base_url
from contract.errors import ProtocolError
from contract.types import ModelMetadata, Signature, TensorSpec, VersionStatus

log = logging.getLogger(__name__)

PROTOCOL = "REST"
ROW_FORMAT = "row"  # {"instances": [...]} -> {"predictions": [{...}, ...]}
COLUMNAR_FORMAT = "columnar"  # {"inputs": {...}} -> {"outputs": {...}}


def model_path(spec: ModelSpec) -> str:
    """``/v1/models/NAME[/versions/V|/labels/L]`` for a model spec."""
    path = f"{contract.REST_MODELS_PREFIX}/{spec.name}"
    if spec.version is not None:
        path += f"/versions/{spec.version}"
    elif spec.label is not None:
        path += f"/labels/{spec.label}"
    return path


def predict_body(images: np.ndarray, spec: ModelSpec, *, request_format: str = ROW_FORMAT) -> bytes:
    """The JSON body of a ``:predict`` request for a float32 [N, 28, 28, 1] batch."""
    batch = as_batch(images)
    if request_format == ROW_FORMAT:
        # One input, so each instance is the bare tensor, not {"image": ...} (TF Serving accepts
        # both; the bare form is shorter and what its docs show for single-input signatures).
        payload: dict[str, Any] = {"instances": batch.tolist()}
    elif request_format == COLUMNAR_FORMAT:
        payload = {"inputs": {contract.INPUT_NAME: batch.tolist()}}
    else:
        raise ValueError(f"request format must be {ROW_FORMAT!r} or {COLUMNAR_FORMAT!r}")
    if spec.signature_name:
        payload["signature_name"] = spec.signature_name
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_predict_response(body: Any, expected: int | None = None) -> Prediction:
    """A :class:`Prediction` from TF Serving's row or columnar answer; ProtocolError otherwise."""
    try:
        if isinstance(body, dict) and "predictions" in body:
            rows = body["predictions"]
            probabilities = np.asarray([row[contract.OUTPUT_PROBABILITIES] for row in rows], dtype=np.float32)
            digits = np.asarray([row[contract.OUTPUT_DIGIT] for row in rows], dtype=np.int64)
        elif isinstance(body, dict) and "outputs" in body:
            outputs = body["outputs"]
            probabilities = np.asarray(outputs[contract.OUTPUT_PROBABILITIES], dtype=np.float32)
            digits = np.asarray(outputs[contract.OUTPUT_DIGIT], dtype=np.int64)
        else:
            raise ProtocolError("answer has neither 'predictions' nor 'outputs'", protocol=PROTOCOL)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(
            f"answer is not TF Serving's predict shape: {type(exc).__name__}: {exc}",
            protocol=PROTOCOL,
        ) from None
    return checked_prediction(probabilities, digits, expected, None, PROTOCOL)


def parse_status(body: Any) -> list[VersionStatus]:
    """TF Serving's ``{"model_version_status": [...]}`` (int64 versions arrive as strings)."""
    try:
        return [
            VersionStatus(
                version=int(entry["version"]),
                state=str(entry["state"]),
                error_code=str(entry.get("status", {}).get("error_code", "OK")),
                error_message=str(entry.get("status", {}).get("error_message", "")),
            )
            for entry in body["model_version_status"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"status answer is not TF Serving's shape: {exc}", protocol=PROTOCOL) from None


def _tensor_spec(info: dict[str, Any]) -> TensorSpec:
    shape_info = info.get("tensor_shape", {})
    if shape_info.get("unknown_rank"):
        shape = None
    else:
        # proto3 JSON writes int64 as strings; -1 means "any size"
        sizes = [int(dim.get("size", -1)) for dim in shape_info.get("dim", [])]
        shape = tuple(None if s < 0 else s for s in sizes)
    return TensorSpec(name=str(info.get("name", "")), dtype=str(info.get("dtype", "")), shape=shape)


def parse_metadata(body: Any) -> ModelMetadata:
    """TF Serving's metadata JSON: ``metadata.signature_def.signature_def.{key}``."""
    try:
        model_spec = body["model_spec"]
        version = model_spec.get("version")
        sig_map = body["metadata"][contract.METADATA_FIELD_SIGNATURE_DEF]["signature_def"]
        signatures = {
            key: Signature(
                inputs={k: _tensor_spec(v) for k, v in sig.get("inputs", {}).items()},
                outputs={k: _tensor_spec(v) for k, v in sig.get("outputs", {}).items()},
                method_name=str(sig.get("method_name", "")),
            )
            for key, sig in sig_map.items()
        }
        return ModelMetadata(
            name=str(model_spec.get("name", "")),
            version=None if version in (None, "") else int(version),
            signatures=signatures,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"metadata answer is not TF Serving's shape: {exc}", protocol=PROTOCOL) from None


class RestClient(DigitsClient):
    """:class:`client.api.DigitsClient` over TF Serving's REST API.

    >>> with RestClient("http://127.0.0.1:8501") as c:   # doctest: +SKIP
    ...     c.predict(images).digits
    """

    protocol = PROTOCOL

    def __init__(
        self,
        base_url: str,
        spec: ModelSpec | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        request_format: str = ROW_FORMAT,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(spec, timeout=timeout)
        if request_format not in (ROW_FORMAT, COLUMNAR_FORMAT):
            raise ValueError(f"request format must be {ROW_FORMAT!r} or {COLUMNAR_FORMAT!r}")
        self.base_url = normalise_base_url(base_url)
        self.request_format = request_format
        self._session = session or requests.Session()

    # -- the API --------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        batch = as_batch(images)
        body = predict_body(batch, self.spec, request_format=self.request_format)
        answer = self._call("POST", model_path(self.spec) + ":predict", body)
        return parse_predict_response(answer, expected=batch.shape[0])

    def status(self) -> list[VersionStatus]:
        return parse_status(self._call("GET", model_path(self.spec)))

    def metadata(self) -> ModelMetadata:
        return parse_metadata(self._call("GET", model_path(self.spec) + "/metadata"))

    def close(self) -> None:
        self._session.close()

    # -- transport ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else None
        url = self.base_url + path
        response = http_call(self._session, method, url, body, headers, self.timeout, PROTOCOL)
        return json_answer(response, PROTOCOL)
