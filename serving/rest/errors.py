"""The REST adapter's one error translation: an exception -> (gRPC code, HTTP status, body).

Both the Flask app (``serving.rest.flask_hooks``) and the fast path call :func:`translate`, so an
error is answered in the same words on either: a ``ServingError`` with the HTTP status derived
from its gRPC code, werkzeug's HTTP errors (404, 405, 413) as they are, anything else a logged
500. Bodies are TF Serving's ``{"error": "..."}``, which V2 shares.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from werkzeug.exceptions import HTTPException

from contract.errors import Code, ServingError, code_for_http

# One logger for unexpected errors on either path.
logger = logging.getLogger("serving.rest")

JSON = "application/json"


def json_body(value: Any) -> bytes:
    """A JSON answer's bytes (numpy arrays serialised natively)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """TF Serving's error body ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


def json_headers(payload: bytes) -> list[tuple[str, str]]:
    """The headers of a JSON answer, in the order Flask's ``Response`` lists them."""
    return [("Content-Type", JSON), ("Content-Length", str(len(payload)))]


def translate(exc: BaseException, method: str, path: str, max_request_bytes: int) -> tuple[str, int, bytes]:
    """(gRPC code, HTTP status, body) answering ``exc``, raised serving ``method path``."""
    if isinstance(exc, ServingError):
        return exc.code, exc.http_status, error_body(exc.message)
    if isinstance(exc, HTTPException):  # routing and body-size errors
        status = exc.code or 500
        if status == 413:
            message = f"request body larger than {max_request_bytes} bytes"
        else:
            message = exc.description or exc.name
        return code_for_http(status), status, error_body(message)
    logger.error("unhandled error in %s %s", method, path, exc_info=exc)
    return Code.INTERNAL, 500, error_body(f"internal error: {type(exc).__name__}")
