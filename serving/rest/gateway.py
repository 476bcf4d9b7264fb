"""The REST workers' front door: granian's RSGI interface in front of the WSGI (Flask) app.

Why not granian's WSGI interface: it hands a request to a Python thread as soon as its headers
have arrived, and that thread then blocks reading the body with no deadline at all, so a client
that sent half a body held one of the worker's threads for as long as it kept the socket open,
and a few such clients starved every other request (tests/integration/test_slow_clients.py;
figures in docs/serving.md).

Here the body is awaited on the worker's event loop, where a waiting request holds no thread,
under a deadline (``--rest_api_body_timeout_in_ms``): past it the client gets a 408 and the
connection is closed. Only a request whose whole body has arrived reaches the app, with the body
in memory. A declared body larger than ``--max_request_bytes`` is not read at all: the app
answers 413 from the declared length and the connection is closed. Headers are bounded by
granian (``--rest_api_header_timeout_in_ms``) and open connections per worker by its
backpressure (``--rest_api_max_connections``); see ``serving.process.workers``.

The common predict and infer requests (``serving.rest.fast_path``: a POST with a declared length
to a plain predict or infer path) skip WSGI altogether: once their body is in, the fast path's
``serve`` answers them from the body and the few headers it needs, the same bytes the WSGI app
would give, without building a WSGI environ, a ``start_response`` or Flask's ``__call__``.

Threads: with ``--rest_api_num_threads`` 1 (the default) the app runs on the loop's thread, one
request at a time, as granian's single WSGI thread did, without a hand-off; with more, on a pool
of that many threads (what a batching worker needs to have several requests in flight).
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from granian.rsgi import ProtocolClosed, ProtocolError

from contract import v2
from serving.rest.fast_path import fast_path_of
from serving.settings import Settings

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Response = tuple[int, list[tuple[str, str]], bytes]
_CLOSE = ("connection", "close")
DRAIN_BODY_S = 1.0  # on SIGTERM, what a request still sending its body has left
_LOG_EVERY_S = 10.0  # at most one line per window about timed-out bodies (a flood stays quiet)
_HEADER_LENGTH = v2.HEADER_CONTENT_LENGTH.lower()  # V2's binary-extension header


def _split_address(address: str) -> tuple[str, str]:
    """``"127.0.0.1:8501"`` or ``"[::1]:8501"`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def _joined(headers: Any, name: str) -> str | None:
    """A header's values as a WSGI environ holds them (joined by commas), None if absent."""
    values = headers.get_all(name)
    return ",".join(values) if values else None


class RSGIGateway:
    """An RSGI application (granian calls ``__rsgi__``) serving one WSGI app."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        body_timeout_seconds: float = Settings.rest_api_body_timeout_in_ms / 1000,
        max_body_bytes: int = Settings.max_request_bytes,
        threads: int = Settings.rest_api_num_threads,
    ) -> None:
        self.app = app
        self.fast = fast_path_of(app)  # the predict and infer routes, served without WSGI
        self.body_timeout_seconds = body_timeout_seconds
        self.max_body_bytes = max_body_bytes
        self._pool = ThreadPoolExecutor(threads, "rest-app") if threads > 1 else None
        self._base = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        # In-flight body reads: id(protocol) -> (started, cancel); past the deadline, expired.
        self._reading: dict[int, tuple[float, Callable[[], Any]]] = {}
        self._expired: dict[int, bool] = {}
        self._sweep_every = min(0.25, body_timeout_seconds / 4)
        self._draining_since: float | None = None
        self._408 = orjson.dumps(
            {"error": f"request body not received within {body_timeout_seconds:g} s"}
        )
        self.timed_out = 0  # bodies that missed the deadline (for tests and the log line)
        self._logged_at, self._logged_count = 0.0, 0

    # --- granian's RSGI hooks -------------------------------------------------------------------
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)
        # granian drains on SIGTERM until every request has its answer; a body still missing
        # DRAIN_BODY_S after it is cut then, not at its deadline (which may pass the grace period).
        # granian installed its handler on this loop just before this hook: chain ours before it.
        granian_handler = getattr(loop, "_signal_handlers", {}).get(signal.SIGTERM)
        if granian_handler is not None:

            def on_sigterm() -> None:
                self._draining_since = time.monotonic()
                granian_handler._run()

            loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        headers = scope.headers
        try:
            body, whole = await self._read_body(scope, protocol, headers)
        except (ProtocolClosed, ProtocolError):
            self._expired.pop(id(protocol), None)
            # The client left before sending its whole body. Answer anyway (it goes nowhere):
            # granian holds the connection until the request has a response.
            protocol.response_empty(400, [_CLOSE])
            return
        except asyncio.CancelledError:
            if not self._expired.pop(id(protocol), False):
                raise  # cancelled by someone else (shutdown): not a slow client
            self._body_timed_out(scope)
            protocol.response_bytes(408, [("content-type", "application/json"), _CLOSE], self._408)
            return
        call, args = self._handler(scope, headers, body, whole)
        if self._pool is None:
            status, response_headers, payload = call(*args)
        else:
            status, response_headers, payload = await asyncio.get_running_loop().run_in_executor(
                self._pool, call, *args
            )
        if not whole:  # the body was refused part-read: the connection cannot be reused
            response_headers.append(_CLOSE)
        protocol.response_bytes(status, response_headers, payload)

    def _handler(
        self, scope: Any, headers: Any, body: bytes, whole: bool
    ) -> tuple[Callable[..., Response], tuple[Any, ...]]:
        """What answers the request, and its arguments: the fast path for a whole body it
        serves (one ``Content-Length``, all of it received), else the WSGI app."""
        if self.fast is not None and whole and scope.method == "POST":
            lengths = headers.get_all("content-length")
            route = self.fast.route(
                scope.method,
                scope.path,
                lengths[0] if len(lengths) == 1 else None,
                chunked="transfer-encoding" in headers,
                encoded="content-encoding" in headers,
            )
            if route is not None and len(body) == int(lengths[0]):
                return self.fast.serve, (route, body, scope.path, _joined(headers, _HEADER_LENGTH))
        return self._call, (self._environ(scope, headers, body),)

    # --- the body, under the deadline -----------------------------------------------------------
    async def _read_body(self, scope: Any, protocol: Any, headers: Any) -> tuple[bytes, bool]:
        """(body, whole): a body larger than allowed is left unread, or read just past the limit
        when its length is not declared (either way the app answers 413)."""
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_body_bytes:
                return b"", False
            if declared == "0":
                return b"", True
            # granian collects the body off the loop; the sweeper cancels it at the deadline.
            future = protocol()
            self._reading[id(protocol)] = (time.monotonic(), future.cancel)
            try:
                return await future, True
            finally:
                self._reading.pop(id(protocol), None)
        if "transfer-encoding" not in headers and scope.http_version != "2":
            return b"", True  # HTTP/1 without a length or chunking has no body
        task = asyncio.ensure_future(self._read_chunks(protocol))
        self._reading[id(protocol)] = (time.monotonic(), task.cancel)
        try:
            return await task
        finally:
            self._reading.pop(id(protocol), None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the body reads past the deadline (one timer for all, not one per request)."""
        now = time.monotonic()
        oldest = now - self.body_timeout_seconds
        if self._draining_since is not None and now - self._draining_since >= DRAIN_BODY_S:
            oldest = now
        for key, (started, cancel) in list(self._reading.items()):
            if started <= oldest:
                del self._reading[key]
                if cancel():  # False: it completed meanwhile, and the request goes on
                    self._expired[key] = True
        self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)

    async def _read_chunks(self, protocol: Any) -> tuple[bytes, bool]:
        chunks, size = [], 0
        async for chunk in protocol:
            if not chunk:  # the end (granian also ends a broken stream so: the app then sees
                break  # a truncated body and answers 400 to a client that has left)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:  # enough for the app's limit to refuse it
                return b"".join(chunks), False
        return b"".join(chunks), True

    def _body_timed_out(self, scope: Any) -> None:
        self.timed_out += 1
        self._logged_count += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            logger.warning(
                "%d request(s) did not send their body in time (deadline %g s; %g s once "
                "draining): 408, connection closed; last from %s",
                self._logged_count,
                self.body_timeout_seconds,
                DRAIN_BODY_S,
                _split_address(scope.client)[0],
            )
            self._logged_at, self._logged_count = now, 0

    # --- WSGI -----------------------------------------------------------------------------------
    def _environ(self, scope: Any, headers: Any, body: bytes) -> dict[str, Any]:
        environ = self._base.copy()
        path = scope.path  # percent-decoded text; WSGI wants its UTF-8 bytes as latin-1
        server_name, server_port = _split_address(scope.server)
        environ["REQUEST_METHOD"] = scope.method
        environ["PATH_INFO"] = path if path.isascii() else path.encode().decode("latin-1")
        environ["QUERY_STRING"] = scope.query_string
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server_name, server_port
        environ["REMOTE_ADDR"] = _split_address(scope.client)[0]
        environ["SERVER_PROTOCOL"] = "HTTP/" + scope.http_version
        environ["wsgi.url_scheme"] = scope.scheme
        environ["wsgi.input"] = io.BytesIO(body)
        for key, value in headers.items():
            if key == "content-type":
                environ["CONTENT_TYPE"] = value
            elif key == "content-length":
                environ["CONTENT_LENGTH"] = value
            else:
                name = "HTTP_" + key.upper().replace("-", "_")
                if name in environ:
                    value = environ[name] + ("; " if name == "HTTP_COOKIE" else ",") + value
                environ[name] = value
        if environ.pop("HTTP_TRANSFER_ENCODING", None) is not None:
            # Read whole (or just past the limit): present it with its length, as a buffering
            # proxy does, so the app's size limit applies (werkzeug ignores it on chunked input).
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def _call(self, environ: dict[str, Any]) -> Response:
        started: list[Any] = []

        def start_response(status: str, headers: list, exc_info: Any = None) -> None:
            started[:] = (status, headers)

        result = self.app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status[:3]), list(headers), payload
