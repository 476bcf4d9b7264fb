"""The RSGI gateway serves predict and infer without WSGI, answering exactly as the WSGI app does.

Both protocols' fast-path corpora (tests/serving/test_rest_fast.py, test_rest_v2.py) go through
the gateway twice: in front of the app with the fast path (the common requests then never build
a WSGI environ) and in front of the app without it (every request through Flask). Status,
headers, bytes, the request counters that moved and the access-log lines must be the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from contract import MODEL_NAME, v2
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.observability.logs import ACCESS_LOGGER
from serving.rest.app import create_app
from serving.rest.gateway import RSGIGateway
from tests.serving import test_rest_fast, test_rest_v2
from tests.serving.test_rsgi_gateway import Protocol, Scope, _serve

# WSGI environ keys of the TF Serving corpus -> the request headers granian would hand over.
_HEADER_OF = {
    "CONTENT_TYPE": "content-type",
    "CONTENT_LENGTH": "content-length",
    "HTTP_TRANSFER_ENCODING": "transfer-encoding",
}


def _request(path: str, body: bytes | None, headers: dict[str, str]) -> tuple[Scope, Protocol]:
    """The RSGI scope and protocol of one corpus request (a GET when ``body`` is None)."""
    method, _, path = path.rpartition(" ") if path.startswith("GET ") else ("POST", "", path)
    path, _, query = path.partition("?")
    pairs = {k.lower(): v for k, v in headers.items()}
    if body is not None:
        pairs.setdefault("content-length", str(len(body)))
    pairs.setdefault("content-type", "application/json")
    if "transfer-encoding" in pairs:
        pairs.pop("content-length")
        return Scope(method, path, list(pairs.items()), query), Protocol(None, chunks=[body or b"", b""])
    return Scope(method, path, list(pairs.items()), query), Protocol(body or b"")


def _counts() -> dict[tuple, float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in REGISTRY.collect()
        if family.name == "serving_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("api") == "rest"
    }


def _send(gateway: RSGIGateway, scope: Scope, protocol: Protocol, caplog: pytest.LogCaptureFixture):
    before = _counts()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        status, headers, payload = asyncio.run(_serve(gateway, scope, protocol))
    moved = {k: v - before.get(k, 0.0) for k, v in _counts().items() if v != before.get(k, 0.0)}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    for line in lines:
        line.pop("ms")
    return status, headers, payload, moved, lines


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


def _gateways(dataplane: DataPlane, limit: int) -> tuple[RSGIGateway, RSGIGateway, list[str]]:
    """The gateway with the fast path, the gateway without (both with the body limit ``limit``),
    and the paths the former's WSGI app was called for."""
    fast = RSGIGateway(create_app(dataplane, max_request_bytes=limit), max_body_bytes=limit)
    flask = RSGIGateway(
        create_app(dataplane, max_request_bytes=limit, fast_predict=False), max_body_bytes=limit
    )
    assert fast.fast is not None and flask.fast is None
    wsgi_calls: list[str] = []
    call = fast._call
    fast._call = lambda environ: wsgi_calls.append(environ["PATH_INFO"]) or call(environ)  # type: ignore[method-assign]
    return fast, flask, wsgi_calls


# (path, body, headers, body limit): each corpus with the limit its own test serves it under
CORPUS = [(*request, test_rest_fast.MAX_BYTES) for request in test_rest_fast.CORPUS] + [
    (*request, test_rest_v2.MAX_BYTES) for request in test_rest_v2.CORPUS
]


@pytest.mark.parametrize(("path", "body", "headers", "limit"), CORPUS, ids=range(len(CORPUS)))
def test_the_gateway_answers_as_flask_does(
    dataplane: DataPlane,
    path: str,
    body: bytes | None,
    headers: dict,
    limit: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {_HEADER_OF.get(k, k): v for k, v in headers.items() if not k.startswith("wsgi.")}
    fast, flask, _ = _gateways(dataplane, limit)
    by_flask = _send(flask, *_request(path, body, headers), caplog)
    by_fast = _send(fast, *_request(path, body, headers), caplog)
    assert by_fast == by_flask
    assert len(by_fast[4]) <= 1 and sum(by_fast[3].values()) == len(by_fast[4])


def test_the_common_requests_skip_wsgi(dataplane: DataPlane, caplog: pytest.LogCaptureFixture) -> None:
    fast, _, wsgi_calls = _gateways(dataplane, test_rest_v2.MAX_BYTES)
    predict, infer = f"/v1/models/{MODEL_NAME}:predict", v2.infer_path(MODEL_NAME)
    binary, binary_headers = test_rest_v2.BINARY, test_rest_v2.BINARY_HEADERS
    answers = [
        _send(fast, *_request(predict, test_rest_fast.ONE, {}), caplog)[0],
        _send(fast, *_request(predict, b"{}", {}), caplog)[0],
        _send(fast, *_request(infer, test_rest_v2.ONE, {}), caplog)[0],
        _send(fast, *_request(infer, binary, binary_headers), caplog)[0],
    ]
    assert answers == [200, 400, 200, 200] and not wsgi_calls
    # Left to the WSGI app: other routes, a body cut short, chunked or compressed bodies.
    _send(fast, *_request(f"GET /v1/models/{MODEL_NAME}", None, {}), caplog)
    scope, _ = _request(predict, test_rest_fast.ONE, {})
    _send(fast, scope, Protocol(test_rest_fast.ONE[:100]), caplog)
    _send(fast, *_request(predict, test_rest_fast.ONE, {"transfer-encoding": "chunked"}), caplog)
    _send(fast, *_request(infer, test_rest_v2.ONE, {"content-encoding": "gzip"}), caplog)
    assert wsgi_calls == [f"/v1/models/{MODEL_NAME}", predict, predict, infer]
