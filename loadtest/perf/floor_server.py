"""The transport floors: empty handlers on our server's stacks, answering prepared bytes.

Usage (``python -m loadtest perf`` starts these itself, one process each, on free loopback ports):
  python -m loadtest.perf.floor_server rsgi --port 18501 --routes work/floor-routes.json
  python -m loadtest.perf.floor_server wsgi --port 18502 --routes work/floor-routes.json --threads 1
  python -m loadtest.perf.floor_server grpc --port 18500 --routes work/floor-routes.json --threads 4

Each reads the whole request and answers the bytes our server answered to it (captured at the
start of the run, with the same content type), and does nothing else: what is left of a request's
server CPU is what the stack itself costs. The stacks are ours: granian with one worker on its RSGI
interface (the default REST front door) or its WSGI interface (``--rest_api_interface wsgi``),
and grpcio in one process with a thread pool and options like ``serving.grpc.server``'s, its
handler generic and on raw bytes (grpcio neither parses nor serializes).

A route is a request path (a REST path, or a gRPC method) and a request length: the batch sizes of
one path share the path, and their bodies differ in length. A request that matches no route
gets 404 (REST) or NOT_FOUND (gRPC).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

KINDS = ("rsgi", "wsgi", "grpc")
ROUTES_ENV = "LOADTEST_FLOOR_ROUTES"  # granian's worker finds its routes file here


def _server_defaults() -> Any:
    """The server's flag defaults (``serving.settings.Settings``); imported when a floor starts,
    never when the harness imports this module: ``python -m loadtest`` and Locust's processes
    never load the server."""
    from serving.settings import Settings

    return Settings


@dataclass(frozen=True)
class Reply:
    """What our server answered to one request: a floor server answers the same."""

    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # besides the content type (V2 binary's header length)

    def response_headers(self) -> list[tuple[str, str]]:
        return [("content-type", self.content_type), *self.headers]


Routes = dict[tuple[str, int], Reply]  # (request path, request length) -> the answer


def write_routes(path: Path, routes: Routes) -> None:
    """The routes as JSON (the bodies in base64), for a floor server to read."""
    rows = [
        {
            "path": where,
            "request_length": length,
            "content_type": reply.content_type,
            "headers": [list(h) for h in reply.headers],
            "body": base64.b64encode(reply.body).decode(),
        }
        for (where, length), reply in routes.items()
    ]
    path.write_text(json.dumps(rows, indent=1))


def read_routes(path: str | Path) -> Routes:
    return {
        (row["path"], row["request_length"]): Reply(
            row["content_type"], base64.b64decode(row["body"]), tuple(tuple(h) for h in row["headers"])
        )
        for row in json.loads(Path(path).read_text())
    }


# --- REST: granian, one worker -----------------------------------------------------------------
class RsgiFloor:
    """An RSGI application: await the body on the loop, answer the route's bytes."""

    def __init__(self, routes: Routes) -> None:
        self._answers = {key: (reply.response_headers(), reply.body) for key, reply in routes.items()}

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        body = await protocol()
        answer = self._answers.get((scope.path, len(body)))
        if answer is None:
            protocol.response_empty(404, [])
            return
        protocol.response_bytes(200, *answer)


class WsgiFloor:
    """A WSGI application: read the body, answer the route's bytes."""

    def __init__(self, routes: Routes) -> None:
        self._answers = {key: (reply.response_headers(), reply.body) for key, reply in routes.items()}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        answer = self._answers.get((environ["PATH_INFO"], len(body)))
        if answer is None:
            start_response("404 Not Found", [("content-length", "0")])
            return [b""]
        headers, payload = answer
        start_response("200 OK", headers)
        return [payload]


def rsgi_app() -> RsgiFloor:
    """granian's factory in the worker process: the routes named by the environment."""
    return RsgiFloor(read_routes(os.environ[ROUTES_ENV]))


def wsgi_app() -> WsgiFloor:
    return WsgiFloor(read_routes(os.environ[ROUTES_ENV]))


def serve_granian(kind: str, port: int, routes_file: Path, threads: int) -> None:
    """granian's master and one worker, configured as ``serving.process.workers`` runs ours."""
    from granian.constants import Interfaces  # the serve extra's; a gRPC floor does without
    from granian.http import HTTP1Settings
    from granian.server import Server

    os.environ[ROUTES_ENV] = str(routes_file.resolve())
    rsgi = kind == "rsgi"
    server = Server(
        f"loadtest.perf.floor_server:{'rsgi_app' if rsgi else 'wsgi_app'}",  # by name: this runs as __main__
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.WSGI,
        factory=True,
        workers=1,
        blocking_threads=1 if rsgi else threads,
        websockets=False,
        backpressure=_server_defaults().rest_api_max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=_server_defaults().rest_api_header_timeout_in_ms),
        log_access=False,
        log_level="warning",
    )
    server.serve()


# --- gRPC: grpcio, one process -----------------------------------------------------------------
class RawBytesHandler(grpc.GenericRpcHandler):
    """Unary methods on raw bytes: no (de)serializer, the route's answer returned as it is."""

    def __init__(self, routes: Routes) -> None:
        by_method: dict[str, dict[int, bytes]] = {}
        for (method, length), reply in routes.items():
            by_method.setdefault(method, {})[length] = reply.body
        self._handlers = {
            method: grpc.unary_unary_rpc_method_handler(_answer_by_length(answers))
            for method, answers in by_method.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _answer_by_length(answers: dict[int, bytes]) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        reply = answers.get(len(request))
        if reply is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no floor route for a {len(request)}-byte request")
        return reply

    return answer


def build_grpc(port: int, routes: Routes, threads: int) -> grpc.Server:
    """A started grpcio server on 127.0.0.1:``port`` (pool and options as ``serving.grpc.server``)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        handlers=[RawBytesHandler(routes)],
        options=[
            ("grpc.so_reuseport", 0),  # one process here: the port is its alone
            ("grpc.max_receive_message_length", _server_defaults().max_request_bytes),
            ("grpc.max_send_message_length", _server_defaults().max_request_bytes),
        ],
        maximum_concurrent_rpcs=threads * 32,
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    server.start()
    return server


def serve_grpc(port: int, routes_file: Path, threads: int) -> None:
    server = build_grpc(port, read_routes(routes_file), threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.perf.floor_server", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--routes", type=Path, required=True, help="the routes' JSON (write_routes)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="WSGI: granian's blocking threads (default --rest_api_num_threads's); gRPC: the pool's "
        "workers (default --grpc_max_threads's)",
    )
    args = parser.parse_args(argv)
    if args.kind == "grpc":
        serve_grpc(args.port, args.routes, args.threads or _server_defaults().grpc_max_threads)
    else:
        threads = args.threads or _server_defaults().rest_api_num_threads
        serve_granian(args.kind, args.port, args.routes, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
