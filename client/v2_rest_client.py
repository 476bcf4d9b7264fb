"""V2 REST client: the Open Inference Protocol's HTTP/REST API (``/v2/...``) with requests.

Speaks what KServe's V2 protocol and Triton document, so it works against Triton, KServe and
MLServer as well as ours: ``POST /v2/models/{name}[/versions/{v}]/infer``, model metadata
(``GET /v2/models/{name}[/versions/{v}]``), model readiness (``.../ready``), server readiness and
metadata, errors as ``{"error": "..."}`` with the HTTP status (rebuilt into
:mod:`contract.errors`' family by :mod:`client.http_transport`, shared with the TF Serving REST
client).

Tensors travel with the **binary tensor data extension** by default, as ``tritonclient`` sends
them: the JSON header (its length in the ``Inference-Header-Content-Length`` header), then the
pixels as raw little-endian float32, the outputs asked back in binary the same way, so no float
is printed or parsed at either end;
``tensor_format="json"`` sends and receives plain JSON tensors (``"data"``) instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests

from client.base import DEFAULT_TIMEOUT_S, DigitsClient, ModelSpec, Prediction, as_batch
from client.http_transport import http_call, json_answer, normalise_base_url
from client.v2_base import (
    check_spec,
    model_metadata,
    prediction_from_tensors,
    tensor_spec,
    version_status,
    version_text,
)
from contract import OUTPUT_NAMES, v2
from contract.errors import DigitsError, ProtocolError
from contract.types import ModelMetadata, VersionStatus

log = logging.getLogger(__name__)

PROTOCOL = "V2 REST"
BINARY = "binary"  # the binary tensor data extension (tritonclient's default)
JSON = "json"  # tensors as JSON "data" lists
TENSOR_FORMATS = (BINARY, JSON)
_LITTLE_ENDIAN_FP32 = np.dtype("<f4")
_NOT_READY = (400, 503)  # readiness answers that mean "not ready" rather than an error


def infer_request(
    images: np.ndarray,
    spec: ModelSpec,
    *,
    tensor_format: str = BINARY,
    outputs: Sequence[str] = OUTPUT_NAMES,
    request_id: str = "",
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of an infer request for a float32 [N, 28, 28, 1] batch."""
    if tensor_format not in TENSOR_FORMATS:
        raise ValueError(f"tensor format must be {BINARY!r} or {JSON!r}, got {tensor_format!r}")
    batch = as_batch(images)
    binary = tensor_format == BINARY
    tensor: dict[str, Any] = {
        "name": v2.INPUT.name,
        "shape": list(batch.shape),
        "datatype": v2.INPUT.datatype,
    }
    raw = b""
    if binary:
        raw = batch.astype(_LITTLE_ENDIAN_FP32, copy=False).tobytes()
        tensor["parameters"] = {v2.PARAM_BINARY_DATA_SIZE: len(raw)}
    else:
        tensor["data"] = batch.ravel().tolist()  # float32 -> the shortest exact decimal
    document: dict[str, Any] = {"inputs": [tensor]}
    if request_id:
        document["id"] = request_id
    if outputs:
        document["outputs"] = [
            {"name": name, "parameters": {v2.PARAM_BINARY_DATA: binary}} for name in outputs
        ]
    header = json.dumps(document, separators=(",", ":")).encode()
    path = v2.infer_path(spec.name, version_text(spec))
    if not binary:
        return path, header, {"Content-Type": v2.JSON_CONTENT_TYPE}
    headers = {"Content-Type": v2.BINARY_CONTENT_TYPE, v2.HEADER_CONTENT_LENGTH: str(len(header))}
    return path, header + raw, headers


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tail) of an answer; the whole body is JSON without the header. The
    tail is a view of ``body``: the tensors are not copied before numpy reads them. The header
    must be digits, as the server requires of requests (``contract.v2.header_length_value``)."""
    if header_length is None:
        return body, memoryview(b"")
    size = v2.header_length_value(header_length)
    if size is None or size > len(body):
        raise ProtocolError(
            f"{v2.HEADER_CONTENT_LENGTH}: {header_length!r} does not fit a {len(body)}-byte body",
            protocol=PROTOCOL,
        )
    return body[:size], memoryview(body)[size:]


def _output_tensor(output: dict[str, Any], tail: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One output tensor and the offset after its bytes in the binary tail."""
    name = output.get("name")
    try:
        dtype = v2.numpy_dtype(output["datatype"])
    except DigitsError as exc:
        raise ProtocolError(f"output {name!r}: {exc}", protocol=PROTOCOL) from None
    if dtype.kind == "O":
        raise ProtocolError(f"output {name!r} is BYTES; this client reads numbers", protocol=PROTOCOL)
    shape = [int(size) for size in output["shape"]]
    size = (output.get("parameters") or {}).get(v2.PARAM_BINARY_DATA_SIZE)
    if size is None:
        return np.asarray(output["data"], dtype=dtype).reshape(shape), offset
    end = offset + int(size)
    if end > len(tail):
        raise ProtocolError(
            f"output {name!r} claims {size} binary bytes; only {len(tail) - offset} left", protocol=PROTOCOL
        )
    return np.frombuffer(tail[offset:end], dtype=dtype.newbyteorder("<")).reshape(shape), end


def parse_infer_response(body: bytes, header_length: str | None, expected: int | None = None) -> Prediction:
    """A :class:`Prediction` from an infer answer, JSON or binary tensors; ProtocolError otherwise."""
    header, tail = split_body(body, header_length)
    try:
        document = json.loads(header)
        tensors, offset = {}, 0
        for output in document["outputs"]:
            tensors[str(output["name"])], offset = _output_tensor(output, tail, offset)
        version = document.get("model_version")
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(
            f"answer is not a V2 infer response: {type(exc).__name__}: {exc}", protocol=PROTOCOL
        ) from None
    if offset != len(tail):
        raise ProtocolError(f"{len(tail) - offset} binary bytes after the last output", protocol=PROTOCOL)
    return prediction_from_tensors(tensors, expected, version, PROTOCOL)


def parse_model_metadata(body: Any, spec: ModelSpec) -> ModelMetadata:
    """``{"name", "versions", "platform", "inputs", "outputs"}`` -> :class:`ModelMetadata`."""
    try:
        return model_metadata(
            spec,
            name=str(body["name"]),
            versions=list(body.get("versions") or []),
            platform=str(body.get("platform", "")),
            inputs=[tensor_spec(t["name"], t["datatype"], t["shape"]) for t in body["inputs"]],
            outputs=[tensor_spec(t["name"], t["datatype"], t["shape"]) for t in body["outputs"]],
            protocol=PROTOCOL,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"metadata answer is not V2's shape: {exc}", protocol=PROTOCOL) from None


def parse_server_metadata(body: Any) -> v2.ServerMetadata:
    try:
        return v2.ServerMetadata(
            name=str(body["name"]), version=str(body["version"]), extensions=tuple(body.get("extensions", ()))
        )
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"server metadata is not V2's shape: {exc}", protocol=PROTOCOL) from None


class V2RestClient(DigitsClient):
    """:class:`client.api.DigitsClient` over the Open Inference Protocol's REST API.

    >>> with V2RestClient("http://127.0.0.1:8501") as c:   # doctest: +SKIP
    ...     c.predict(images).digits
    """

    protocol = PROTOCOL

    def __init__(
        self,
        base_url: str,
        spec: ModelSpec | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tensor_format: str = BINARY,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(check_spec(spec or ModelSpec()), timeout=timeout)
        if tensor_format not in TENSOR_FORMATS:
            raise ValueError(f"tensor format must be {BINARY!r} or {JSON!r}, got {tensor_format!r}")
        self.base_url = normalise_base_url(base_url)
        self.tensor_format = tensor_format
        self._session = session or requests.Session()

    # -- the API --------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        batch = as_batch(images)
        path, body, headers = infer_request(batch, self.spec, tensor_format=self.tensor_format)
        response = self._send("POST", path, body, headers)
        header_length = response.headers.get(v2.HEADER_CONTENT_LENGTH)
        return parse_infer_response(response.content, header_length, expected=batch.shape[0])

    def metadata(self) -> ModelMetadata:
        path = v2.model_path(self.spec.name, version_text(self.spec))
        return parse_model_metadata(self._json("GET", path), self.spec)

    def status(self) -> list[VersionStatus]:
        if self.spec.version is not None:
            versions = [self.spec.version]
        else:
            versions = sorted(v for v in _listed_versions(self._json("GET", v2.model_path(self.spec.name))))
        return [version_status(version, self._model_ready(str(version))) for version in versions]

    def ready(self) -> bool:
        return self._model_ready(version_text(self.spec))

    def server_ready(self) -> bool:
        """``GET /v2/health/ready``: the server can take inference requests."""
        return self._ready(v2.HEALTH_READY_PATH)

    def server_live(self) -> bool:
        return self._ready(v2.HEALTH_LIVE_PATH)

    def server_metadata(self) -> v2.ServerMetadata:
        return parse_server_metadata(self._json("GET", v2.PREFIX))

    def close(self) -> None:
        self._session.close()

    # -- transport ------------------------------------------------------------------------------
    def _model_ready(self, version: str) -> bool:
        return self._ready(v2.ready_path(self.spec.name, version))

    def _ready(self, path: str) -> bool:
        """200 is ready (its JSON ``"ready"`` field, when there is one, has the last word); 400 and
        503 are "not ready" (what V2 servers answer then). An unknown model or version stays a
        NotFound, no connection an Unavailable: neither is an answer."""
        response = self._send("GET", path, accept=_NOT_READY)
        if response.status_code in _NOT_READY:
            return False
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        ready = body.get("ready") if isinstance(body, dict) else None
        return True if ready is None else bool(ready)

    def _json(self, method: str, path: str) -> Any:
        return json_answer(self._send(method, path), PROTOCOL)

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> requests.Response:
        url = self.base_url + path
        return http_call(self._session, method, url, body, headers, self.timeout, PROTOCOL, accept=accept)


def _listed_versions(body: Any) -> list[int]:
    try:
        return [int(text) for text in body.get("versions") or []]
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(
            f"metadata answer lists versions that are not integers: {exc}", protocol=PROTOCOL
        ) from None
