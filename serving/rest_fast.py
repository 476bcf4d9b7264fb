"""The REST predict hot path: a plain WSGI callable in front of the Flask app (``FastPredict``).

Building Flask's request context, routing and response objects cost about as much CPU as the
whole predict (measured: 257 µs per predict through Flask against 138 µs for a bare WSGI callable
doing the same work). ``FastPredict`` wraps the app's ``wsgi_app`` (Flask's middleware hook) and
serves ``POST /v1/models/{name}[/versions/{n}|/labels/{l}]:predict`` itself when the request is
the common, unambiguous kind: a plain ASCII path, a ``Content-Length`` within
``--max_request_bytes``, no ``Transfer-Encoding``. Everything else (other routes and methods, 405,
413, odd paths, chunked bodies, a body cut short) goes to Flask untouched, so it is answered
exactly as before.

What it serves it answers byte for byte as the Flask route does: the same decoding
(``serving.tfserving_json``), data-plane call, encoding and error bodies (``json_body`` and
``error_body``, which the Flask app uses too), the same status lines and headers (werkzeug's
status text; ``Content-Type: application/json`` then ``Content-Length``), the same
``RequestObserver`` (metric sample and access-log line), and an unexpected exception logged on
the ``serving.rest`` logger and answered 500 ``internal error: <type>``. tests/serving/test_rest.py
sends one corpus through both paths and compares the answers.

The Open Inference Protocol's ``POST /v2/models/{name}[/versions/{n}]/infer`` takes the same
path under the same conditions (and no ``Content-Encoding``: compressed bodies go to Flask), with
the V2 codec (``serving.v2_json``) and its own observer (protocol ``v2``); :func:`v2_infer` is
the one implementation both paths call. tests/serving/test_rest_v2.py compares them the same way.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import orjson
from werkzeug.wrappers import Response as WerkzeugResponse

from contract import REST_MODELS_PREFIX, v2
from contract.errors import Code, ServingError
from serving.dataplane import DataPlane
from serving.observe import RequestObserver
from serving.tfserving_json import decode_predict_body, encode_predict
from serving.v2_json import decode_infer_request, encode_infer_response

# The Flask app's logger: an unexpected error is logged the same way on either path.
logger = logging.getLogger("serving.rest")

JSON = "application/json"
_NAME = r"[A-Za-z0-9._~!$&'()*+,;=@-]+"  # ASCII, no "/", ":" or "%": decoded identically by both
_FAST_PATH = re.compile(
    re.escape(REST_MODELS_PREFIX)
    + rf"/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>{_NAME}))?:predict"
)
_FAST_V2_INFER = re.compile(
    re.escape(v2.MODELS_PREFIX) + rf"/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+))?/infer"
)
_LENGTH = re.compile(r"[0-9]+")
_HEADER_LENGTH_ENVIRON = "HTTP_" + v2.HEADER_CONTENT_LENGTH.upper().replace("-", "_")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def json_body(value: Any) -> bytes:
    """A JSON answer's bytes (numpy arrays serialised natively)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """TF Serving's error body ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


def v2_infer(
    dataplane: DataPlane,
    name: str,
    version: int | None,
    body: bytes,
    header_length: str | None,
    timeout: float | None,
) -> tuple[bytes, int | None]:
    """One V2 infer: (answer body, its JSON header's length when some output is binary), within
    ``timeout`` (the server's) or the request's ``timeout`` parameter, whichever is shorter."""
    request = decode_infer_request(body, header_length)
    limits = [limit for limit in (timeout, request.timeout) if limit is not None]
    served, outputs = dataplane.predict(
        name, request.inputs, version=version, output_filter=request.output_names,
        timeout=min(limits, default=None),
    )
    return encode_infer_response(request, name, served, outputs)


def v2_headers(payload: bytes, header_length: int | None) -> list[tuple[str, str]]:
    """The headers of an infer answer, in the order the Flask route's ``Response`` lists them."""
    if header_length is None:
        return [("Content-Type", JSON), ("Content-Length", str(len(payload)))]
    return [
        (v2.HEADER_CONTENT_LENGTH, str(header_length)),
        ("Content-Type", v2.BINARY_CONTENT_TYPE),
        ("Content-Length", str(len(payload))),
    ]


@cache
def status_line(status: int) -> str:
    """The WSGI status line werkzeug writes for ``status`` (e.g. ``429 TOO MANY REQUESTS``)."""
    return WerkzeugResponse(status=status).status


def _read(stream: Any, size: int) -> bytes:
    """``size`` bytes of the body, fewer only if the stream ends first (as werkzeug reads it)."""
    body = stream.read(size) if size else b""
    if len(body) == size or not body:
        return body
    chunks = [body]
    while size > (got := sum(map(len, chunks))):
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class FastPredict:
    """WSGI middleware: serves the common predict (and V2 infer) requests, hands the rest to
    ``app``."""

    def __init__(
        self,
        app: WSGIApp,
        dataplane: DataPlane,
        observer: RequestObserver,
        *,
        max_request_bytes: int,
        timeout_seconds: float | None,
        v2_observer: RequestObserver | None = None,
    ) -> None:
        self.app = app
        self.dataplane = dataplane
        self.observer = observer
        self.v2_observer = v2_observer or RequestObserver(observer.api, observer.access_log, protocol="v2")
        self.max_request_bytes = max_request_bytes
        self.timeout_seconds = timeout_seconds

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        match = _FAST_PATH.fullmatch(path)
        infer = None if match is not None else _FAST_V2_INFER.fullmatch(path)
        length = environ.get("CONTENT_LENGTH", "")
        if (
            (match is None and (infer is None or "HTTP_CONTENT_ENCODING" in environ))
            or environ.get("SCRIPT_NAME")
            or "HTTP_TRANSFER_ENCODING" in environ
            or not _LENGTH.fullmatch(length)
            or int(length) > self.max_request_bytes
        ):
            return self.app(environ, start_response)
        started = time.perf_counter()
        size = int(length)
        body = _read(environ["wsgi.input"], size)
        if len(body) != size:  # the client sent less: werkzeug words that error, as always
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        if match is not None:
            code, status, payload = self._predict(match, body, path)
            headers = [("Content-Type", JSON), ("Content-Length", str(len(payload)))]
            observer, operation = self.observer, "predict"
        else:
            header_length = environ.get(_HEADER_LENGTH_ENVIRON)
            code, status, payload, headers = self._infer(infer, body, header_length, path)
            observer, operation = self.v2_observer, v2.OP_INFER
        observer.finished(
            operation, code, time.perf_counter() - started, method="POST", path=path, status=status
        )
        start_response(status_line(status), headers)
        return [payload]

    def _infer(
        self, match: re.Match, body: bytes, header_length: str | None, path: str
    ) -> tuple[str, int, bytes, list[tuple[str, str]]]:
        """(gRPC code, HTTP status, body, headers) of one V2 infer, as the Flask route answers."""
        version = match["version"]
        try:
            payload, json_length = v2_infer(
                self.dataplane,
                match["name"],
                None if version is None else int(version),
                body,
                header_length,
                self.timeout_seconds,
            )
            return Code.OK, 200, payload, v2_headers(payload, json_length)
        except ServingError as exc:
            payload, code, status = error_body(exc.message), exc.code, exc.http_status
        except Exception as exc:  # a bug: what the Flask app's handler answers
            logger.exception("unhandled error in %s %s", "POST", path)
            payload, code, status = error_body(f"internal error: {type(exc).__name__}"), Code.INTERNAL, 500
        return code, status, payload, v2_headers(payload, None)

    def _predict(self, match: re.Match, body: bytes, path: str) -> tuple[str, int, bytes]:
        """(gRPC code, HTTP status, body) of one predict, exactly as the Flask route answers."""
        version = match["version"]
        try:
            signature_name, row, inputs = decode_predict_body(body)
            _, outputs = self.dataplane.predict(
                match["name"],
                inputs,
                version=None if version is None else int(version),
                label=match["label"],
                signature_name=signature_name,
                timeout=self.timeout_seconds,
            )
            return Code.OK, 200, json_body(encode_predict(row, outputs))
        except ServingError as exc:
            return exc.code, exc.http_status, error_body(exc.message)
        except Exception as exc:  # a bug: what the Flask app's handler answers
            logger.exception("unhandled error in %s %s", "POST", path)
            return Code.INTERNAL, 500, error_body(f"internal error: {type(exc).__name__}")
