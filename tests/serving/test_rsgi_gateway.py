"""The RSGI gateway in process: WSGI environ, body deadline (408), unread oversized bodies, threads.

granian's RSGI objects are stood in for by small fakes: a scope, and a protocol whose body
future is an asyncio future (granian's is future-like: awaitable, cancellable) that resolves
when the test says so, or never (a slow client).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from flask import Flask, request
from granian.rsgi import ProtocolClosed

from serving.rest.gateway import DRAIN_BODY_S, RSGIGateway


class Headers:
    """granian's RSGIHeaders: lower-case names, ``get`` gives the first, ``items`` every pair."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.pairs if k == key), default)

    def get_all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)

    def __contains__(self, key: str) -> bool:
        return any(k == key for k, _ in self.pairs)


class Scope:
    proto, http_version, scheme = "http", "1.1", "http"

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], query: str = "") -> None:
        self.method, self.path, self.query_string = method, path, query
        self.headers = Headers(headers)
        self.server, self.client = "[::1]:8501", "10.1.2.3:40000"


class Protocol:
    """Body: bytes (arrives at once), None (never arrives), or an exception (client gone)."""

    def __init__(self, body: bytes | None | Exception = b"", chunks: list[bytes] | None = None) -> None:
        self.body, self.chunks = body, chunks
        self.response: tuple[int, list, bytes] | None = None
        self.called = False

    def __call__(self) -> asyncio.Future:
        self.called = True
        future = asyncio.get_running_loop().create_future()
        if isinstance(self.body, Exception):
            future.set_exception(self.body)
        elif self.body is not None:
            future.set_result(self.body)
        return future

    def __aiter__(self) -> Protocol:
        return self

    async def __anext__(self) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.chunks is None:
            raise StopAsyncIteration
        await asyncio.sleep(3600)  # a slow chunked client: the rest never comes
        raise AssertionError("unreachable")

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.response = (status, headers, body)

    def response_empty(self, status: int, headers: list) -> None:
        self.response = (status, headers, b"")


def _echo(environ: dict, start_response) -> list[bytes]:
    """A WSGI app answering with what it saw."""
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    seen["body"] = environ["wsgi.input"].read().decode()
    seen["thread"] = threading.current_thread().name
    start_response("200 OK", [("content-type", "text/plain")])
    return [repr(seen).encode()]


async def _serve(gateway: RSGIGateway, scope: Scope, protocol: Protocol) -> tuple[int, list, bytes]:
    loop = asyncio.get_running_loop()
    gateway.__rsgi_init__(loop)
    try:
        await gateway.__rsgi__(scope, protocol)
    finally:
        gateway.__rsgi_del__(loop)
    assert protocol.response is not None
    return protocol.response


def _run(gateway: RSGIGateway, scope: Scope, protocol: Protocol) -> tuple[int, list, bytes]:
    return asyncio.run(_serve(gateway, scope, protocol))


def test_the_app_sees_a_wsgi_environ_with_the_whole_body() -> None:
    scope = Scope(
        "POST",
        "/v1/models/lenet5/é:predict",
        [("content-type", "application/json"), ("content-length", "7"), ("x-a", "1"), ("x-a", "2")],
        query="q=1",
    )
    status, headers, payload = _run(RSGIGateway(_echo), scope, Protocol(b'{"a":1}'))
    seen = eval(payload)  # noqa: S307 - our own repr of str values
    assert status == 200 and ("connection", "close") not in headers
    assert seen["body"] == '{"a":1}' and seen["CONTENT_LENGTH"] == "7"
    assert seen["CONTENT_TYPE"] == "application/json" and seen["HTTP_X_A"] == "1,2"
    assert seen["PATH_INFO"] == "/v1/models/lenet5/é:predict".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "q=1" and seen["REQUEST_METHOD"] == "POST"
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"], seen["REMOTE_ADDR"]) == ("::1", "8501", "10.1.2.3")
    assert seen["thread"] == threading.main_thread().name  # one thread: the app runs on the loop


def test_a_get_without_a_body_never_waits_for_one() -> None:
    protocol = Protocol(None)  # would never arrive
    status, _, _ = _run(RSGIGateway(_echo), Scope("GET", "/healthz", []), protocol)
    assert status == 200 and not protocol.called


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_that_does_not_arrive_gets_408_and_a_closed_connection(chunked: bool) -> None:
    called = []
    gateway = RSGIGateway(lambda e, s: called.append(1) or [], body_timeout_seconds=0.2)
    headers = [("transfer-encoding", "chunked")] if chunked else [("content-length", "100000")]
    protocol = Protocol(None, chunks=[b"{"] if chunked else None)
    started = time.monotonic()
    status, headers_out, payload = _run(gateway, Scope("POST", "/p", headers), protocol)
    assert status == 408 and ("connection", "close") in headers_out and b"0.2 s" in payload
    assert 0.2 <= time.monotonic() - started < 1.5
    assert not called and gateway.timed_out == 1


def test_draining_cuts_a_missing_body_after_a_second_not_at_its_deadline() -> None:
    gateway = RSGIGateway(_echo, body_timeout_seconds=60)
    gateway._draining_since = time.monotonic() - DRAIN_BODY_S  # as on SIGTERM, a second ago
    started = time.monotonic()
    status, _, _ = _run(gateway, Scope("POST", "/p", [("content-length", "10")]), Protocol(None))
    assert status == 408 and time.monotonic() - started < 2


def test_a_client_that_leaves_mid_body_is_answered_and_forgotten() -> None:
    gateway = RSGIGateway(_echo)
    protocol = Protocol(ProtocolClosed("gone"))
    status, headers, _ = _run(gateway, Scope("POST", "/p", [("content-length", "10")]), protocol)
    assert status == 400 and ("connection", "close") in headers and not gateway._reading


def _flask_upload(limit: int) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limit

    @app.post("/up")
    def up() -> str:
        return str(len(request.get_data()))

    return app


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_not_read_and_the_app_answers_413(chunked: bool) -> None:
    gateway = RSGIGateway(_flask_upload(100), max_body_bytes=100)
    if chunked:
        scope = Scope("POST", "/up", [("transfer-encoding", "chunked")])
        protocol = Protocol(None, chunks=[b"x" * 60, b"x" * 60, b""])
    else:
        scope = Scope("POST", "/up", [("content-length", "101")])
        protocol = Protocol(None)
    status, headers, _ = _run(gateway, scope, protocol)
    assert status == 413 and ("connection", "close") in headers
    assert not protocol.called  # never asked for a declared body it would refuse


def test_chunked_body_within_the_limit_reaches_the_app() -> None:
    gateway = RSGIGateway(_flask_upload(100), max_body_bytes=100)
    protocol = Protocol(None, chunks=[b"x" * 40, b"x" * 40, b""])
    status, _, payload = _run(gateway, Scope("POST", "/up", [("transfer-encoding", "chunked")]), protocol)
    assert (status, payload) == (200, b"80")


def test_more_threads_run_the_app_on_a_pool() -> None:
    scope = Scope("POST", "/p", [("content-length", "2")])
    _, _, payload = _run(RSGIGateway(_echo, threads=2), scope, Protocol(b"{}"))
    assert eval(payload)["thread"].startswith("rest-app")  # noqa: S307
