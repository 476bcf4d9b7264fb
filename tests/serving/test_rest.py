"""REST adapter over a real data plane (tiny model), through Flask's test client."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from contract import (
    INPUT_NAME,
    INPUT_SHAPE,
    LIVENESS_PATH,
    METRICS_PATH,
    MODEL_NAME,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    READINESS_PATH,
    SIGNATURE_NAME,
)
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.observability.logs import ACCESS_LOGGER
from serving.rest.app import create_app

PREDICT = f"/v1/models/{MODEL_NAME}:predict"


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


@pytest.fixture(params=[True, False], ids=["fast", "flask"])
def client(dataplane: DataPlane, request: pytest.FixtureRequest) -> FlaskClient:
    """The app with and without the predict fast path: every test here holds for both."""
    app = create_app(dataplane, max_request_bytes=1 << 20, access_log=False, fast_predict=request.param)
    return app.test_client()


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, *INPUT_SHAPE), dtype=np.float32)


def test_row_and_columnar_formats_match_the_runtime(client: FlaskClient, dataplane: DataPlane) -> None:
    images = _images(3)
    expected = dataplane.models.get(MODEL_NAME).repository.get().run(images)
    row = client.post(PREDICT, json={"instances": images.tolist()}).get_json()
    assert [p[OUTPUT_DIGIT] for p in row["predictions"]] == expected[OUTPUT_DIGIT].tolist()
    np.testing.assert_array_equal(
        np.asarray([p[OUTPUT_PROBABILITIES] for p in row["predictions"]], np.float32),
        expected[OUTPUT_PROBABILITIES],
    )
    for body in (
        {"inputs": images.reshape(3, 784).tolist()},
        {"inputs": {INPUT_NAME: images.reshape(3, 28, 28).tolist()}, "signature_name": SIGNATURE_NAME},
        {"instances": [{INPUT_NAME: image.tolist()} for image in images]},
    ):
        response = client.post(PREDICT, json=body)
        assert response.status_code == 200, response.get_json()
        got = response.get_json()
        if "outputs" in got:
            np.testing.assert_array_equal(
                np.asarray(got["outputs"][OUTPUT_PROBABILITIES], np.float32), expected[OUTPUT_PROBABILITIES]
            )
        else:
            assert [p[OUTPUT_DIGIT] for p in got["predictions"]] == expected[OUTPUT_DIGIT].tolist()


def test_status_metadata_and_probes(client: FlaskClient) -> None:
    status = client.get(f"/v1/models/{MODEL_NAME}").get_json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    meta = client.get(f"/v1/models/{MODEL_NAME}/versions/1/metadata").get_json()
    assert meta["model_spec"]["version"] == "1"
    signature = meta["metadata"]["signature_def"]["signature_def"][SIGNATURE_NAME]
    assert signature["inputs"][INPUT_NAME]["dtype"] == "DT_FLOAT"
    assert set(signature["outputs"]) == {OUTPUT_PROBABILITIES, OUTPUT_DIGIT}
    assert client.get(LIVENESS_PATH).status_code == 200
    assert client.get(READINESS_PATH).status_code == 200
    assert b"serving_requests_total" in client.get(METRICS_PATH).data


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", PREDICT, b"{not json", 400, "not valid JSON"),
        ("POST", PREDICT, b'{"instances": [[0.5, 0.5]]}', 400, "shape"),
        ("POST", PREDICT, json.dumps({"instances": (np.ones((1, 28, 28)) * 255).tolist()}), 400, "255"),
        ("POST", PREDICT, b'{"instances": [], "inputs": []}', 400, "exactly one"),
        ("POST", "/v1/models/other:predict", json.dumps({"instances": _images(1).tolist()}), 404, "other"),
        (
            "POST",
            f"/v1/models/{MODEL_NAME}/versions/7:predict",
            json.dumps({"instances": _images(1).tolist()}),
            404,
            "version 7",
        ),
        ("POST", f"/v1/models/{MODEL_NAME}/versions/x:predict", b"{}", 400, "integer"),
        ("GET", f"/v1/models/{MODEL_NAME}/bogus/path", None, 400, "malformed"),
        ("GET", PREDICT, None, 405, "POST"),
        ("POST", PREDICT, b"x" * (2 << 20), 413, "larger"),
        ("GET", "/nowhere", None, 404, ""),
    ],
)
def test_errors_have_tf_serving_shape(
    client: FlaskClient, method: str, path: str, body, status: int, fragment: str
) -> None:
    response = client.open(path, method=method, data=body)
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


def test_readiness_turns_false_when_draining(client: FlaskClient, dataplane: DataPlane) -> None:
    dataplane.start_draining()
    assert client.get(READINESS_PATH).status_code == 503


def _count(method: str, code: str, served: tuple[str, str] = ("", "")) -> float:
    """``serving_requests_total`` of REST TF Serving requests; ``served``: (model, version)."""
    labels = {"api": "rest", "protocol": "tfserving", "method": method, "code": code,
              "model": served[0], "version": served[1]}
    return REGISTRY.get_sample_value("serving_requests_total", labels) or 0.0


SERVED = (MODEL_NAME, "1")  # the tiny repository's one version
NAMED = (MODEL_NAME, "")  # the model, before or without a version


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "operation", "code", "served"),
    [
        ("POST", PREDICT, json.dumps({"instances": _images(1).tolist()}), 200, "predict", "OK", SERVED),
        ("GET", f"/v1/models/{MODEL_NAME}", None, 200, "status", "OK", NAMED),  # every version's
        ("GET", f"/v1/models/{MODEL_NAME}/metadata", None, 200, "metadata", "OK", SERVED),
        (
            "POST",
            PREDICT,
            json.dumps({"instances": _images(1).tolist(), "signature_name": "nope"}),
            400,
            "predict",
            "FAILED_PRECONDITION",  # a 400 that keeps its own gRPC code
            SERVED,
        ),
        ("GET", f"/v1/models/{MODEL_NAME}/versions/7/metadata", None, 404, "metadata", "NOT_FOUND", NAMED),
        ("GET", "/v1/models/other/metadata", None, 404, "metadata", "NOT_FOUND", ("", "")),
        ("GET", "/v1/models/other", None, 404, "status", "NOT_FOUND", ("", "")),  # never a label
        ("GET", PREDICT, None, 405, "predict", "UNIMPLEMENTED", ("", "")),  # refused before the model
        ("GET", f"/v1/models/{MODEL_NAME}/a/b", None, 400, "unknown", "INVALID_ARGUMENT", ("", "")),
        ("POST", PREDICT, b"x" * (2 << 20), 413, "predict", "INVALID_ARGUMENT", ("", "")),
    ],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "flask"])
def test_each_model_request_is_observed_once_with_its_code(
    dataplane: DataPlane, method: str, path: str, body, status: int, operation: str, code: str,
    served: tuple[str, str], caplog: pytest.LogCaptureFixture, fast: bool,
) -> None:
    client = create_app(dataplane, max_request_bytes=1 << 20, fast_predict=fast).test_client()
    before = _count(operation, code, served)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        response = client.open(path, method=method, data=body)
        client.get(LIVENESS_PATH), client.get(READINESS_PATH), client.get(METRICS_PATH)
    assert response.status_code == status
    assert _count(operation, code, served) == before + 1
    # One access line, for the model request only (probes and scrapes are never logged).
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert list(line) == ["api", "protocol", "model", "version", "method", "path", "status", "ms"]
    assert (line["api"], line["method"], line["path"], line["status"]) == ("rest", method, path, status)
    assert (line["model"], line["version"]) == served


def test_an_unexpected_error_is_a_500_counted_as_internal(
    dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dataplane, "status", broken)
    client = create_app(dataplane, access_log=False).test_client()
    before = _count("status", "INTERNAL")  # the broken data plane never named the model
    response = client.get(f"/v1/models/{MODEL_NAME}")
    assert (response.status_code, response.get_json()) == (500, {"error": "internal error: RuntimeError"})
    assert _count("status", "INTERNAL") == before + 1
