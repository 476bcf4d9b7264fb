"""The predict fast path answers exactly as the Flask route: one corpus through both, compared.

Each request goes through ``create_app(fast_predict=True)`` and ``create_app(fast_predict=False)``
at the WSGI level (werkzeug's ``run_wsgi_app``: the status line, the header list and the body
bytes the server would write), and the metric sample and access-log line it leaves are compared
too (all but the milliseconds).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder, run_wsgi_app

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, SIGNATURE_NAME
from contract.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.observability.logs import ACCESS_LOGGER
from serving.rest.app import create_app
from serving.rest.fast_path import FastPredict, status_line

MAX_BYTES = 1 << 20
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
IMAGES = np.random.default_rng(3).random((3, *INPUT_SHAPE), dtype=np.float32)
ONE = json.dumps({"instances": IMAGES[:1].tolist()}).encode()

# (path, body, extra environ): POSTs unless the path starts with "GET "
CORPUS: list[tuple[str, bytes | None, dict]] = [
    (PREDICT, ONE, {}),
    (PREDICT, json.dumps({"instances": IMAGES.tolist()}).encode(), {}),
    (PREDICT, json.dumps({"inputs": IMAGES.reshape(3, 784).tolist()}).encode(), {}),
    (PREDICT, json.dumps({"inputs": {INPUT_NAME: IMAGES.reshape(3, 28, 28).tolist()}}).encode(), {}),
    (PREDICT, json.dumps({"instances": [{INPUT_NAME: i.tolist()} for i in IMAGES]}).encode(), {}),
    (
        PREDICT,
        json.dumps({"signature_name": SIGNATURE_NAME, "instances": IMAGES[:1].tolist()}, indent=2).encode(),
        {},
    ),
    (f"/v1/models/{MODEL_NAME}/versions/1:predict", ONE, {}),
    (f"{PREDICT}?debug=1", ONE, {}),
    (PREDICT, ONE, {"CONTENT_TYPE": "application/x-www-form-urlencoded"}),  # curl -d's default
    # malformed bodies, wrong shapes, out-of-range pixels, too many images, bad signature
    (PREDICT, b"", {}),
    (PREDICT, b"{not json", {}),
    (PREDICT, b"null", {}),
    (PREDICT, b"[1, 2]", {}),
    (PREDICT, b"{}", {}),
    (PREDICT, b'{"instances": []}', {}),
    (PREDICT, b'{"instances": [[0.5, 0.5]]}', {}),
    (PREDICT, b'{"instances": [[0.1], [0.2, 0.3]]}', {}),
    (PREDICT, b'{"instances": [["a"]]}', {}),
    (PREDICT, b'{"instances": [], "inputs": []}', {}),
    (PREDICT, b'{"instances": [[0.1]], "extra": 1}', {}),
    (PREDICT, b'{"instances": [[0.1]], "signature_name": 5}', {}),
    (PREDICT, b'{"inputs": {"pixels": [[0.1]]}}', {}),
    (PREDICT, json.dumps({"instances": (np.ones((1, 28, 28)) * 255).tolist()}).encode(), {}),
    (PREDICT, json.dumps({"instances": [[-0.5] * 784]}).encode(), {}),
    (PREDICT, b'{"instances": [[' + b",".join([b"1e999"] * 784) + b"]]}", {}),
    (PREDICT, json.dumps({"inputs": [[0.5] * 784] * 1025}).encode(), {}),
    (PREDICT, json.dumps({"instances": IMAGES[:1].tolist(), "signature_name": "nope"}).encode(), {}),
    (PREDICT, '{"instances": [[0.5]], "signature_name": "é"}'.encode(), {}),
    (PREDICT, b"\xff\xfe", {}),
    # unknown model, version, label; paths the fast path leaves to Flask
    ("/v1/models/other:predict", ONE, {}),
    (f"/v1/models/{MODEL_NAME}/versions/7:predict", ONE, {}),
    (f"/v1/models/{MODEL_NAME}/labels/stable:predict", ONE, {}),
    (f"/v1/models/{MODEL_NAME}/versions/x:predict", ONE, {}),
    (f"/v1/models/{MODEL_NAME}/versions/01:predict", ONE, {}),
    ("/v1/models/lénet5:predict", ONE, {}),
    (f"/v1/models/{MODEL_NAME}%3Apredict", ONE, {}),
    (f"/v1/models//{MODEL_NAME}:predict", ONE, {}),
    (f"{PREDICT}/", ONE, {}),
    (f"/v1/models/{MODEL_NAME}:explain", b"{}", {}),
    (f"/v1/models/{MODEL_NAME}/metadata", b"{}", {}),
    (f"GET {PREDICT}", None, {}),
    (f"GET /v1/models/{MODEL_NAME}", None, {}),
    # body limits and transfer: 413, a body cut short, no or odd Content-Length, chunked
    (PREDICT, b"x" * (MAX_BYTES + 1), {}),
    (PREDICT, b"x" * 10, {"CONTENT_LENGTH": str(MAX_BYTES + 1)}),
    (PREDICT, ONE[:100], {"CONTENT_LENGTH": str(len(ONE))}),
    (PREDICT, ONE, {"CONTENT_LENGTH": ""}),
    (PREDICT, ONE, {"CONTENT_LENGTH": "+12"}),
    (PREDICT, ONE, {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}),
]


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


def _counts() -> dict[tuple, float]:
    samples = {}
    for family in REGISTRY.collect():
        if family.name == "serving_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("api") == "rest":
                    samples[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _send(app: Flask, path: str, body: bytes | None, extra: dict, caplog: pytest.LogCaptureFixture):
    """What the WSGI server would write, the counters that moved and the access-log lines."""
    method, _, path = path.rpartition(" ") if path.startswith("GET ") else ("POST", "", path)
    environ = EnvironBuilder(path=path, method=method, data=body).get_environ()
    environ.update(extra)
    before = _counts()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
        payload = b"".join(app_iter)
    moved = {k: v - before.get(k, 0.0) for k, v in _counts().items() if v != before.get(k, 0.0)}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    for line in lines:
        line.pop("ms")
    return status, list(headers.items()), payload, moved, lines


@pytest.mark.parametrize(("path", "body", "extra"), CORPUS, ids=range(len(CORPUS)))
def test_fast_path_answers_exactly_as_flask(
    dataplane: DataPlane, path: str, body: bytes | None, extra: dict, caplog: pytest.LogCaptureFixture
) -> None:
    fast = create_app(dataplane, max_request_bytes=MAX_BYTES, fast_predict=True)
    flask = create_app(dataplane, max_request_bytes=MAX_BYTES, fast_predict=False)
    by_flask = _send(flask, path, body, extra, caplog)
    by_fast = _send(fast, path, body, extra, caplog)
    assert by_fast == by_flask
    status, headers, payload, moved, lines = by_fast
    if not status.startswith("308"):  # werkzeug merges "//" with a redirect, on both paths
        assert json.loads(payload), payload
    assert len(lines) <= 1 and sum(moved.values()) == len(lines)


@pytest.mark.parametrize(
    "error",
    [
        ResourceExhausted("the batch queue is full"),
        DeadlineExceeded("deadline exceeded while queued"),
        Unavailable("no version available"),
        RuntimeError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_data_plane_errors_are_answered_alike(
    dataplane: DataPlane, error: Exception, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(dataplane, "predict", failing)
    with caplog.at_level(logging.ERROR, logger="serving.rest"):
        flask = _send(create_app(dataplane, fast_predict=False), PREDICT, ONE, {}, caplog)
        flask_errors = [r.getMessage() for r in caplog.records if r.name == "serving.rest"]
        fast = _send(create_app(dataplane, fast_predict=True), PREDICT, ONE, {}, caplog)
        fast_errors = [r.getMessage() for r in caplog.records if r.name == "serving.rest"]
    assert fast == flask
    assert fast_errors == flask_errors  # the unexpected one logged once, in the same words


def test_the_common_requests_do_take_the_fast_path(dataplane: DataPlane) -> None:
    app = create_app(dataplane, max_request_bytes=MAX_BYTES)
    assert isinstance(app.wsgi_app, FastPredict)
    flask_calls = []
    inner = app.wsgi_app.app
    app.wsgi_app.app = lambda environ, start: (
        flask_calls.append(environ["PATH_INFO"]) or inner(environ, start)
    )
    client = app.test_client()
    assert client.post(PREDICT, data=ONE).status_code == 200
    assert client.post(f"/v1/models/{MODEL_NAME}/versions/1:predict", data=b"{}").status_code == 400
    assert not flask_calls
    assert client.get(f"/v1/models/{MODEL_NAME}").status_code == 200
    assert client.post(f"/v1/models/{MODEL_NAME}/versions/x:predict", data=ONE).status_code == 400
    assert flask_calls == [f"/v1/models/{MODEL_NAME}", f"/v1/models/{MODEL_NAME}/versions/x:predict"]


def test_status_lines_are_werkzeugs() -> None:
    assert status_line(200) == "200 OK"
    assert status_line(429) == "429 TOO MANY REQUESTS"
    assert status_line(504) == "504 GATEWAY TIMEOUT"
