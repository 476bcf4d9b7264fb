"""The Open Inference Protocol (V2) routes of the REST app, over a real data plane (tiny model).

Through Flask's test client with and without the fast path, and at the WSGI level: the fast
path's V2 infer answers are compared with the Flask route's byte for byte (status line, header
list, body, metric sample and access-log line), as tests/serving/test_rest_fast.py does for
TF Serving's predict.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder, run_wsgi_app

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES, v2
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.observability.logs import ACCESS_LOGGER
from serving.rest.app import create_app
from serving.rest.fast_path import FastPredict

MAX_BYTES = 8 << 20  # room for 1025 images in JSON
INFER = v2.infer_path(MODEL_NAME)
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
IMAGES = np.random.default_rng(5).random((3, *INPUT_SHAPE), dtype=np.float32)
HEADER = v2.HEADER_CONTENT_LENGTH


def _json_request(images: np.ndarray, **extra) -> bytes:
    tensor = {"name": INPUT_NAME, "shape": list(images.shape), "datatype": "FP32",
              "data": images.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def _binary_request(images: np.ndarray, **extra) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": INPUT_NAME, "shape": list(images.shape), "datatype": "FP32",
              "parameters": {"binary_data_size": images.nbytes}}
    header = json.dumps({"inputs": [tensor], **extra}).encode()
    return header + images.tobytes(), {HEADER: str(len(header))}


ONE = _json_request(IMAGES[:1])
BINARY, BINARY_HEADERS = _binary_request(IMAGES, parameters={"binary_data_output": True})


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


@pytest.fixture
def empty_dataplane(tmp_path: Path) -> DataPlane:
    """A model whose repository holds no version yet."""
    repository = ModelRepository(MODEL_NAME, tmp_path / MODEL_NAME, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


@pytest.fixture(params=[True, False], ids=["fast", "flask"])
def client(dataplane: DataPlane, request: pytest.FixtureRequest) -> FlaskClient:
    app = create_app(dataplane, max_request_bytes=MAX_BYTES, access_log=False, fast_predict=request.param)
    return app.test_client()


def test_health_server_and_model_metadata(client: FlaskClient) -> None:
    assert client.get(v2.HEALTH_LIVE_PATH).get_json() == {"live": True}
    assert client.get(v2.HEALTH_READY_PATH).get_json() == {"ready": True}
    assert client.get(v2.PREFIX).get_json() == v2.SERVER_METADATA.as_dict()
    expected = {
        "name": MODEL_NAME, "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [{"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [-1, 10]},
                    {"name": OUTPUT_DIGIT, "datatype": "INT64", "shape": [-1]}],
    }
    assert client.get(v2.model_path(MODEL_NAME)).get_json() == expected
    assert client.get(v2.model_path(MODEL_NAME, 1)).get_json() == expected
    assert client.get(v2.ready_path(MODEL_NAME)).get_json() == {"name": MODEL_NAME, "ready": True}
    assert client.get(v2.ready_path(MODEL_NAME, 1)).status_code == 200


# Triton's JSON of the configuration (protobuf JSON, proto field names, defaults printed, int64s
# as numbers), written out in full: what perf_analyzer and tritonclient read.
CONFIG = {
    "name": MODEL_NAME, "platform": "onnxruntime_onnx", "backend": "onnxruntime", "max_batch_size": 1024,
    "input": [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "format": "FORMAT_NHWC", "dims": [28, 28, 1],
               "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False}],
    "output": [
        {"name": OUTPUT_PROBABILITIES, "data_type": "TYPE_FP32", "dims": [10], "label_filename": "",
         "is_shape_tensor": False},
        {"name": OUTPUT_DIGIT, "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []},
         "label_filename": "", "is_shape_tensor": False},
    ],
}


def test_model_configuration(client: FlaskClient) -> None:
    for path in (v2.config_path(MODEL_NAME), v2.config_path(MODEL_NAME, 1)):
        response = client.get(path)
        assert (response.status_code, response.mimetype) == (200, "application/json")
        assert response.get_json() == CONFIG


def test_the_configured_batch_limit_is_the_data_planes(tiny_repository: Path) -> None:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    client = create_app(DataPlane(repository, max_batch=8), access_log=False).test_client()
    assert client.get(v2.config_path(MODEL_NAME)).get_json()["max_batch_size"] == 8
    too_many = client.post(INFER, data=_json_request(np.zeros((9, *INPUT_SHAPE), np.float32)))
    assert too_many.status_code == 400 and "8" in too_many.get_json()["error"]


def test_json_and_binary_answers_equal_tf_servings(client: FlaskClient, dataplane: DataPlane) -> None:
    tf = client.post(PREDICT, json={"inputs": IMAGES.tolist()}).get_json()["outputs"]
    expected = np.asarray(tf[OUTPUT_PROBABILITIES], np.float32)
    served = dataplane.models.get(MODEL_NAME).repository.get()
    np.testing.assert_array_equal(expected, served.run(IMAGES)[OUTPUT_PROBABILITIES])

    response = client.post(INFER, data=_json_request(IMAGES, id="x"))
    assert response.status_code == 200 and response.mimetype == v2.JSON_CONTENT_TYPE
    answer = response.get_json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (MODEL_NAME, "1", "x")
    probabilities, digits = answer["outputs"]
    assert np.asarray(probabilities["data"], np.float32).tobytes() == expected.tobytes()
    assert (probabilities["shape"], digits["data"]) == ([3, 10], tf[OUTPUT_DIGIT])

    response = client.post(INFER, data=BINARY, headers=BINARY_HEADERS)
    assert response.status_code == 200 and response.mimetype == v2.BINARY_CONTENT_TYPE
    length = int(response.headers[HEADER])
    header = json.loads(response.data[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [120, 24]
    assert response.data[length:length + 120] == expected.tobytes()
    assert np.frombuffer(response.data[length + 120:], "<i8").tolist() == tf[OUTPUT_DIGIT]


def test_output_selection_and_gzip_bodies(client: FlaskClient) -> None:
    body = _json_request(IMAGES[:1], outputs=[{"name": OUTPUT_DIGIT}])
    answer = client.post(INFER, data=body).get_json()
    assert [o["name"] for o in answer["outputs"]] == [OUTPUT_DIGIT]
    zipped = client.post(INFER, data=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert zipped.get_json() == answer


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"),
    [
        ("POST", INFER, b"{not json", {}, 400, "not valid JSON"),
        ("POST", INFER, _json_request(np.zeros((1, 5), np.float32)), {}, 400, "shape [1, 5]"),
        ("POST", INFER, _json_request(np.zeros((0, 28, 28, 1), np.float32)), {}, 400, "holds no images"),
        ("POST", INFER, ONE.replace(b'"FP32"', b'"FP64"'), {}, 400, "datatype FP64; this model takes FP32"),
        ("POST", INFER, ONE.replace(b'"FP32"', b'"BYTES"'), {}, 400, "BYTES"),
        ("POST", INFER, BINARY[:-4], BINARY_HEADERS, 400, "runs past the end"),
        ("POST", INFER, BINARY, {HEADER: "99999"}, 400, "past the end of the"),
        ("POST", v2.infer_path("other"), ONE, {}, 404, "'other' is not served"),
        ("POST", v2.infer_path(MODEL_NAME, 7), ONE, {}, 404, "version 7 is not served"),
        ("POST", v2.infer_path(MODEL_NAME, "x"), ONE, {}, 404, "no version 'x'"),
        ("GET", v2.model_path(MODEL_NAME, 7), None, {}, 404, "version 7"),
        # "¹" is a digit to str.isdigit, not to int(): found by fuzzing
        ("GET", v2.model_path(MODEL_NAME, "\u00b9"), None, {}, 404, "versions are integers"),
        ("GET", f"/v1/models/{MODEL_NAME}/versions/\u00b9", None, {}, 400, "non-negative integer"),
        ("GET", v2.ready_path(MODEL_NAME, 7), None, {}, 404, "version 7"),
        ("GET", v2.ready_path("other"), None, {}, 404, "'other'"),
        ("GET", f"{v2.MODELS_PREFIX}/{MODEL_NAME}/bogus", None, {}, 404, "no such route"),
        ("GET", v2.config_path("other"), None, {}, 404, "'other' is not served"),
        ("GET", v2.config_path(MODEL_NAME, 7), None, {}, 404, "version 7 is not served"),
        ("GET", v2.config_path(MODEL_NAME, "latest"), None, {}, 404, "no version 'latest'"),
        ("POST", v2.config_path(MODEL_NAME), b"{}", {}, 405, "use GET"),
        ("GET", f"{v2.config_path(MODEL_NAME)}/x", None, {}, 404, "no such route"),
        ("GET", INFER, None, {}, 405, "use POST"),
        ("POST", v2.model_path(MODEL_NAME), b"{}", {}, 405, "use GET"),
        ("POST", INFER, b"x" * (MAX_BYTES + 1), {}, 413, "larger"),
        ("POST", INFER, gzip.compress(b" " * (MAX_BYTES + 1)), {"Content-Encoding": "gzip"}, 413, "inflates"),
        ("POST", INFER, ONE, {"Content-Encoding": "br"}, 400, "'br' is not supported"),
    ],
)
def test_errors_have_the_error_shape(
    client: FlaskClient, method: str, path: str, body, headers: dict, status: int, fragment: str
) -> None:
    response = client.open(path, method=method, data=body, headers=headers)
    assert response.status_code == status, response.data
    assert fragment in response.get_json()["error"]


@pytest.mark.parametrize(
    "images",
    [
        np.full((1, 28, 28, 1), 255, np.float32),  # raw bytes, not scaled
        np.full((1, 28, 28, 1), -0.5, np.float32),
        np.zeros((1, 5), np.float32),
        np.zeros((1025, 784), np.float32),
    ],
    ids=["255", "negative", "shape", "too-many"],
)
def test_the_same_bad_input_gets_the_same_answer_as_tf_serving(client: FlaskClient, images) -> None:
    tf = client.post(PREDICT, data=json.dumps({"inputs": images.tolist()}))
    by_json = client.post(INFER, data=_json_request(images))
    body, headers = _binary_request(images)
    by_binary = client.post(INFER, data=body, headers=headers)
    assert tf.status_code == by_json.status_code == by_binary.status_code == 400
    assert tf.get_json() == by_json.get_json() == by_binary.get_json()


def test_without_an_available_version(empty_dataplane: DataPlane) -> None:
    client = create_app(empty_dataplane, access_log=False).test_client()
    tf = client.post(PREDICT, data=json.dumps({"instances": IMAGES[:1].tolist()}))
    assert tf.status_code == 503
    for response in (client.post(INFER, data=ONE), client.get(v2.model_path(MODEL_NAME)),
                     client.get(v2.ready_path(MODEL_NAME)), client.get(v2.config_path(MODEL_NAME))):
        assert (response.status_code, response.get_json()) == (503, tf.get_json())
    assert client.get(v2.HEALTH_READY_PATH).status_code == 503
    assert client.get(v2.HEALTH_LIVE_PATH).status_code == 200
    assert client.get(v2.PREFIX).status_code == 200


def test_draining_turns_server_and_model_readiness_off(client: FlaskClient, dataplane: DataPlane) -> None:
    """As over gRPC (test_grpc_v2.py): a draining server's models are not ready either."""
    assert client.get(v2.ready_path(MODEL_NAME)).status_code == 200
    dataplane.start_draining()
    assert client.get(v2.HEALTH_READY_PATH).status_code == 503
    response = client.get(v2.ready_path(MODEL_NAME))
    assert response.status_code == 503 and "shutting down" in response.get_json()["error"]
    assert not dataplane.model_ready(MODEL_NAME) and not dataplane.model_ready(MODEL_NAME, 7)
    assert client.get(v2.model_path(MODEL_NAME)).status_code == 200  # metadata still answers


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "flask"])
@pytest.mark.parametrize(
    ("parameters", "expected"), [({}, 5.0), ({"timeout": 0}, 5.0), ({"timeout": 250_000}, 0.25),
                                 ({"timeout": 9_000_000}, 5.0)],
)
def test_the_timeout_parameter_bounds_the_call_as_over_grpc(
    dataplane: DataPlane, fast: bool, parameters: dict, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data plane gets the server's timeout or the request's (microseconds), the shorter."""
    seen, predict = [], dataplane.predict
    monkeypatch.setattr(
        dataplane, "predict", lambda *a, **kw: seen.append(kw["timeout"]) or predict(*a, **kw)
    )
    app = create_app(dataplane, max_request_bytes=MAX_BYTES, timeout_seconds=5.0, access_log=False,
                     fast_predict=fast)
    response = app.test_client().post(INFER, data=_json_request(IMAGES[:1], parameters=parameters))
    assert response.status_code == 200 and seen == [expected]


@pytest.mark.parametrize("key", [*v2.SHARED_MEMORY_PARAMS, v2.PARAM_CLASSIFICATION])
def test_unimplemented_extensions_are_a_400_not_ignored(client: FlaskClient, key: str) -> None:
    body = _json_request(IMAGES[:1], outputs=[{"name": OUTPUT_DIGIT, "parameters": {key: 1}}])
    response = client.post(INFER, data=body)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"output {OUTPUT_DIGIT!r}: the ")


# --- observation, and the fast path against Flask ------------------------------------------------
def _counts() -> dict[tuple, float]:
    samples = {}
    for family in REGISTRY.collect():
        if family.name == "serving_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("api") == "rest":
                    samples[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _send(app: Flask, method: str, path: str, body: bytes | None, headers: dict, caplog):
    """What the WSGI server would write, the counters that moved and the access-log lines."""
    environ = EnvironBuilder(path=path, method=method, data=body, headers=headers).get_environ()
    before = _counts()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
        payload = b"".join(app_iter)
    moved = {k: v - before.get(k, 0.0) for k, v in _counts().items() if v != before.get(k, 0.0)}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    for line in lines:
        line.pop("ms")
    return status, list(response_headers.items()), payload, moved, lines


CORPUS: list[tuple[str, bytes, dict]] = [
    (INFER, ONE, {}),
    (INFER, _json_request(IMAGES, id="abc", outputs=[{"name": OUTPUT_PROBABILITIES}]), {}),
    (INFER, json.dumps({"inputs": [{"name": INPUT_NAME, "shape": [1, 28, 28], "datatype": "FP32",
                                    "data": IMAGES[:1].reshape(1, 28, 28).tolist()}]}).encode(), {}),
    (INFER, BINARY, BINARY_HEADERS),
    (INFER, _binary_request(IMAGES, outputs=[{"name": OUTPUT_DIGIT, "parameters": {"binary_data": True}},
                                             {"name": OUTPUT_PROBABILITIES}])[0],
     _binary_request(IMAGES, outputs=[{"name": OUTPUT_DIGIT, "parameters": {"binary_data": True}},
                                      {"name": OUTPUT_PROBABILITIES}])[1]),
    (v2.infer_path(MODEL_NAME, 1), BINARY, BINARY_HEADERS),
    (INFER, b"", {}),
    (INFER, b"{not json", {}),
    (INFER, BINARY, {HEADER: "x"}),
    (INFER, BINARY[:-1], BINARY_HEADERS),
    (INFER, _json_request(np.full((1, 784), 2.0, np.float32)), {}),
    (INFER, _json_request(IMAGES[:1], outputs=[{"name": "nope"}]), {}),
    (v2.infer_path("other"), ONE, {}),
    (v2.infer_path(MODEL_NAME, 7), ONE, {}),
    (v2.infer_path(MODEL_NAME, "x"), ONE, {}),  # Flask's
    (INFER, gzip.compress(ONE), {"Content-Encoding": "gzip"}),  # Flask's
    (f"{INFER}/", ONE, {}),  # Flask's
    (INFER, b"x" * (MAX_BYTES + 1), {}),  # Flask's 413
]


@pytest.mark.parametrize(("path", "body", "headers"), CORPUS, ids=range(len(CORPUS)))
def test_fast_infer_answers_exactly_as_flask(
    dataplane: DataPlane, path: str, body: bytes, headers: dict, caplog: pytest.LogCaptureFixture
) -> None:
    fast = create_app(dataplane, max_request_bytes=MAX_BYTES, fast_predict=True)
    flask = create_app(dataplane, max_request_bytes=MAX_BYTES, fast_predict=False)
    by_flask = _send(flask, "POST", path, body, headers, caplog)
    assert _send(fast, "POST", path, body, headers, caplog) == by_flask
    status, _, _, moved, lines = by_flask
    assert len(lines) == 1 and sum(moved.values()) == 1
    keys = ["api", "protocol", "model", "version", "method", "path", "status"]
    assert lines[0]["protocol"] == "v2" and list(lines[0]) == keys
    (labels,) = moved
    operation = "unknown" if path.endswith("/") else v2.OP_INFER  # no such route: no operation
    assert dict(labels)["protocol"] == "v2" and dict(labels)["method"] == operation
    if status.startswith("200"):
        assert (dict(labels)["model"], dict(labels)["version"]) == (MODEL_NAME, "1")
        assert (lines[0]["model"], lines[0]["version"]) == (MODEL_NAME, "1")


@pytest.mark.parametrize(
    ("method", "path", "operation", "code", "served"),
    [
        ("GET", v2.PREFIX, v2.OP_SERVER_METADATA, "OK", ("", "")),  # names no model
        ("GET", v2.model_path(MODEL_NAME), v2.OP_MODEL_METADATA, "OK", (MODEL_NAME, "")),  # every version
        ("GET", v2.ready_path(MODEL_NAME, 7), v2.OP_MODEL_READY, "NOT_FOUND", (MODEL_NAME, "")),
        ("GET", v2.ready_path(MODEL_NAME), v2.OP_MODEL_READY, "OK", (MODEL_NAME, "1")),
        ("GET", v2.config_path(MODEL_NAME), v2.OP_MODEL_CONFIG, "OK", (MODEL_NAME, "1")),
        ("GET", v2.config_path("other"), v2.OP_MODEL_CONFIG, "NOT_FOUND", ("", "")),
        ("GET", INFER, v2.OP_INFER, "UNIMPLEMENTED", ("", "")),
    ],
)
def test_other_v2_requests_are_observed_once_and_probes_never(
    dataplane: DataPlane, method: str, path: str, operation: str, code: str, served: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(dataplane, max_request_bytes=MAX_BYTES)
    _, _, _, moved, lines = _send(app, method, path, None, {}, caplog)
    assert [dict(labels) for labels in moved] == [
        {"api": "rest", "protocol": "v2", "method": operation, "code": code,
         "model": served[0], "version": served[1]}]
    assert [(line["protocol"], line["path"]) for line in lines] == [("v2", path)]
    for probe in (v2.HEALTH_LIVE_PATH, v2.HEALTH_READY_PATH):
        assert _send(app, "GET", probe, None, {}, caplog)[3:] == ({}, [])


def test_the_common_infer_requests_do_take_the_fast_path(dataplane: DataPlane) -> None:
    app = create_app(dataplane, max_request_bytes=MAX_BYTES)
    assert isinstance(app.wsgi_app, FastPredict)
    flask_calls = []
    inner = app.wsgi_app.app
    app.wsgi_app.app = lambda environ, start: (
        flask_calls.append(environ["PATH_INFO"]) or inner(environ, start)
    )
    client = app.test_client()
    assert client.post(INFER, data=BINARY, headers=BINARY_HEADERS).status_code == 200
    assert client.post(v2.infer_path(MODEL_NAME, 1), data=ONE).status_code == 200
    assert client.post(INFER, data=b"{}").status_code == 400
    assert not flask_calls
    assert client.get(v2.model_path(MODEL_NAME)).status_code == 200
    assert flask_calls == [v2.model_path(MODEL_NAME)]
