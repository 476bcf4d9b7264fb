"""The REST hot path: a plain WSGI callable in front of the Flask app (``FastPredict``).

Building Flask's request context, routing and response objects costs about as much CPU as a
whole predict of this model, so ``FastPredict`` wraps the app's ``wsgi_app`` (Flask's middleware
hook) and serves the predict and infer routes (``serving.rest.routes.posted_route``) itself when
the request is the common, unambiguous kind: a plain ASCII path, a ``Content-Length`` within
``--max_request_bytes``, no ``Transfer-Encoding`` (and for V2 no ``Content-Encoding``).
Everything else (other routes and methods, 405, 413, odd paths, chunked or compressed bodies, a
body cut short) goes to Flask untouched.

It answers what it serves with the blueprints' own handlers (``tfserving_routes.predict``,
``v2_routes.infer``), the one error translation (``serving.rest.errors``) and the same
observation, so the bytes, status lines (werkzeug's words), headers, metric sample and
access-log line are those Flask would give: tests/serving/test_rest_fast.py and test_rest_v2.py
send one corpus through both paths and compare.

The RSGI gateway (``serving.rest.gateway``) asks ``route`` and calls ``serve`` itself, with the
body it already holds, so those requests never become a WSGI environ at all
(tests/serving/test_rsgi_fast.py sends both corpora through the gateway with and without it).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from werkzeug.wrappers import Response as WerkzeugResponse

from contract import v2
from contract.errors import Code
from serving.core.dataplane import DataPlane
from serving.observability.observer import RequestObserver
from serving.rest import tfserving_routes, v2_routes
from serving.rest.errors import json_headers, translate
from serving.rest.routes import TFSERVING, V2, ModelRoute, posted_route

_LENGTH = re.compile(r"[0-9]+")
_HEADER_LENGTH_ENVIRON = "HTTP_" + v2.HEADER_CONTENT_LENGTH.upper().replace("-", "_")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


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
    """WSGI middleware: serves the common predict and infer requests, hands the rest to ``app``."""

    def __init__(
        self,
        app: WSGIApp,
        dataplane: DataPlane,
        *,
        max_request_bytes: int,
        timeout_seconds: float | None,
        access_log: bool,
    ) -> None:
        self.app = app
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes
        self.timeout_seconds = timeout_seconds
        self.observers = {
            TFSERVING: RequestObserver("rest", access_log),
            V2: RequestObserver("rest", access_log, protocol="v2"),
        }

    def route(
        self, method: str, path: str, length: str | None, *, chunked: bool, encoded: bool
    ) -> ModelRoute | None:
        """The predict or infer route this path answers; None to leave the request to Flask.

        ``length`` is the declared ``Content-Length`` (None: none), ``chunked`` whether the body
        comes with a ``Transfer-Encoding``, ``encoded`` whether it has a ``Content-Encoding``.
        """
        if (
            method != "POST"
            or chunked
            or length is None
            or not _LENGTH.fullmatch(length)
            or int(length) > self.max_request_bytes
        ):
            return None
        route = posted_route(path)
        if route is None or (route.protocol == V2 and encoded):
            return None
        return route

    def _route(self, environ: dict) -> ModelRoute | None:
        if environ.get("SCRIPT_NAME"):
            return None
        return self.route(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("CONTENT_LENGTH"),
            chunked="HTTP_TRANSFER_ENCODING" in environ,
            encoded="HTTP_CONTENT_ENCODING" in environ,
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        route = self._route(environ)
        if route is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        size = int(environ["CONTENT_LENGTH"])
        body = _read(environ["wsgi.input"], size)
        if len(body) != size:  # the client sent less: werkzeug words that error, as always
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        status, headers, payload = self.serve(
            route, body, environ["PATH_INFO"], environ.get(_HEADER_LENGTH_ENVIRON), started
        )
        start_response(status_line(status), headers)
        return [payload]

    def serve(
        self,
        route: ModelRoute,
        body: bytes,
        path: str,
        header_length: str | None = None,
        started: float | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, payload) answering the whole ``body`` POSTed to ``route``, observed
        once. ``header_length``: V2's binary-extension header, as sent; ``started``: when the
        request arrived (``time.perf_counter()``; default now)."""
        if started is None:
            started = time.perf_counter()
        try:
            payload, headers = self._answer(route, body, header_length)
            code, status = Code.OK, 200
        except Exception as exc:
            code, status, payload = translate(exc, "POST", path, self.max_request_bytes)
            headers = json_headers(payload)
        self.observers[route.protocol].finished(
            route.operation, code, time.perf_counter() - started, method="POST", path=path, status=status
        )
        return status, headers, payload

    def _answer(
        self, route: ModelRoute, body: bytes, header_length: str | None
    ) -> tuple[bytes, list[tuple[str, str]]]:
        if route.protocol == TFSERVING:
            payload = tfserving_routes.predict(self.dataplane, route, body, self.timeout_seconds)
            return payload, json_headers(payload)
        headers = (None, header_length)
        return v2_routes.infer(
            self.dataplane, route, body, headers, (self.max_request_bytes, self.timeout_seconds)
        )


def fast_path_of(app: Any) -> FastPredict | None:
    """The fast path installed in front of a Flask app by ``create_app``, if any."""
    fast = getattr(app, "wsgi_app", None)
    return fast if isinstance(fast, FastPredict) else None
