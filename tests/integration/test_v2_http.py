"""The Open Inference Protocol (V2) over REST, against the real server, with the official client.

``tritonclient.http`` (NVIDIA's, as KServe and Triton users call servers): health, server and
model metadata, readiness, Triton's model configuration extension, inference with binary tensors
(its default) and with JSON, output selection, and each kind of bad request answered with its
status and a message that says why.
The probabilities equal the TF Serving REST API's for the same MNIST test images, bit for bit.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from contract import (
    INPUT_NAME,
    MAX_BATCH_SIZE,
    MODEL_NAME,
    NUM_CLASSES,
    OUTPUT_DIGIT,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    REST_MODELS_PREFIX,
    model_versions,
    v2,
)

IMAGES = 8  # the first MNIST test images


@pytest.fixture(scope="module")
def client(running_server):
    url = running_server.rest_url.removeprefix("http://")
    with triton.InferenceServerClient(url, connection_timeout=10, network_timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def images(mnist_test) -> np.ndarray:
    return np.ascontiguousarray(mnist_test[0][:IMAGES], dtype=np.float32)


@pytest.fixture(scope="module")
def tf_serving_answer(running_server, images) -> dict[str, np.ndarray]:
    """What TF Serving's REST API answers for the same images (columnar request)."""
    body = json.dumps({"inputs": {INPUT_NAME: images.tolist()}}).encode()
    url = f"{running_server.rest_url}{REST_MODELS_PREFIX}/{MODEL_NAME}:predict"
    status, answer = _http("POST", url, body)
    assert status == 200, answer
    outputs = answer["outputs"]
    return {
        OUTPUT_PROBABILITIES: np.asarray(outputs[OUTPUT_PROBABILITIES], np.float32),
        OUTPUT_DIGIT: np.asarray(outputs[OUTPUT_DIGIT], np.int64),
    }


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _image_input(images: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def test_health_and_metadata(client, running_server) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "digits", "version": v2.SERVER_VERSION,
        "extensions": ["binary_tensor_data", "model_configuration", "model_repository"]}
    served = str(model_versions(running_server.model_base_path)[-1])
    metadata = client.get_model_metadata(MODEL_NAME)
    assert metadata == {
        "name": MODEL_NAME,
        "versions": [served],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [
            {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
            {"name": OUTPUT_DIGIT, "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert client.get_model_metadata(MODEL_NAME, served)["versions"] == [served]
    assert client.is_model_ready(MODEL_NAME) and client.is_model_ready(MODEL_NAME, served)
    assert not client.is_model_ready(MODEL_NAME, "999")
    assert not client.is_model_ready("nope")


def test_model_configuration(client, running_server) -> None:
    """Triton's model configuration extension, as perf_analyzer reads it before any load: the
    same configuration for the default and the served version, that of gRPC's ModelConfig."""
    served = str(model_versions(running_server.model_base_path)[-1])
    config = client.get_model_config(MODEL_NAME)
    assert config == client.get_model_config(MODEL_NAME, served)
    assert (config["name"], config["platform"], config["backend"], config["max_batch_size"]) == (
        MODEL_NAME, "onnxruntime_onnx", "onnxruntime", MAX_BATCH_SIZE)
    assert [(t["name"], t["data_type"], t["format"], t["dims"]) for t in config["input"]] == [
        (INPUT_NAME, "TYPE_FP32", "FORMAT_NHWC", [28, 28, 1])]
    assert [(t["name"], t["data_type"], t["dims"], t.get("reshape")) for t in config["output"]] == [
        (OUTPUT_PROBABILITIES, "TYPE_FP32", [NUM_CLASSES], None),
        (OUTPUT_DIGIT, "TYPE_INT64", [1], {"shape": []}),
    ]
    with triton_grpc.InferenceServerClient(running_server.grpc_target) as grpc_client:
        by_grpc = grpc_client.get_model_config(MODEL_NAME, client_timeout=30).config
    assert json_format.ParseDict(config, model_config_pb2.ModelConfig()) == by_grpc


@pytest.mark.parametrize(
    ("model", "version", "fragment"),
    [("nope", "", "'nope' is not served"), (MODEL_NAME, "999", "version 999 is not served"),
     (MODEL_NAME, "latest", "no version 'latest'")],
)
def test_model_configuration_of_what_is_not_served(client, model, version, fragment) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config(model, version)
    assert info.value.status() == "404" and fragment in info.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_inference_equals_tf_serving_bit_for_bit(client, images, tf_serving_answer, binary) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUT_NAMES]
    result = client.infer(MODEL_NAME, [_image_input(images, binary)], outputs=outputs, request_id="r-1")
    answer = result.get_response()
    assert (answer["model_name"], answer["id"]) == (MODEL_NAME, "r-1")
    probabilities = result.as_numpy(OUTPUT_PROBABILITIES)
    assert probabilities.shape == (IMAGES, NUM_CLASSES)
    assert probabilities.astype(np.float32).tobytes() == tf_serving_answer[OUTPUT_PROBABILITIES].tobytes()
    assert result.as_numpy(OUTPUT_DIGIT).tolist() == tf_serving_answer[OUTPUT_DIGIT].tolist()
    # Binary outputs carry their sizes and no "data"; JSON outputs the reverse.
    for output in answer["outputs"]:
        assert ("data" in output) != binary
        assert ("parameters" in output) == binary


def test_default_request_and_output_selection(client, images, tf_serving_answer) -> None:
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    result = client.infer(MODEL_NAME, [_image_input(images, True)])
    assert [o["name"] for o in result.get_response()["outputs"]] == list(OUTPUT_NAMES)
    assert "id" not in result.get_response()
    expected = tf_serving_answer[OUTPUT_PROBABILITIES].tobytes()
    assert result.as_numpy(OUTPUT_PROBABILITIES).tobytes() == expected
    # One output, in JSON, from a JSON input: only it comes back.
    result = client.infer(
        MODEL_NAME, [_image_input(images[:2], False)],
        outputs=[triton.InferRequestedOutput(OUTPUT_DIGIT, binary_data=False)],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == [OUTPUT_DIGIT]
    assert result.as_numpy(OUTPUT_PROBABILITIES) is None
    assert result.as_numpy(OUTPUT_DIGIT).tolist() == tf_serving_answer[OUTPUT_DIGIT][:2].tolist()


def _refused(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bad_requests_get_the_right_status_and_reason(client, images, binary) -> None:
    wrong_shape = triton.InferInput(INPUT_NAME, [1, 5], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 5), np.float32), binary_data=binary)
    wrong_dtype = triton.InferInput(INPUT_NAME, [1, 28, 28, 1], "INT64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.int64), binary_data=binary)
    raw_pixels = _image_input(images[:1] * 255, binary)
    cases = [
        (lambda: client.infer(MODEL_NAME, [wrong_shape]), "400", "shape [1, 5]"),
        (lambda: client.infer(MODEL_NAME, [wrong_dtype]), "400", "datatype INT64; this model takes FP32"),
        (lambda: client.infer(MODEL_NAME, [raw_pixels]), "400", "pixel values must lie in [0, 1]"),
        (lambda: client.infer("nope", [_image_input(images[:1], binary)]), "404", "'nope' is not served"),
        (lambda: client.infer(MODEL_NAME, [_image_input(images[:1], binary)], model_version="999"),
         "404", "version 999 is not served"),
        (lambda: client.infer(MODEL_NAME, [_image_input(images[:1], binary)], model_version="x"),
         "404", "no version 'x'"),
        (lambda: client.infer(MODEL_NAME, [_image_input(images[:1], binary)],
                              outputs=[triton.InferRequestedOutput("logits")]),
         "400", "unknown output 'logits'"),
    ]
    for call, status, fragment in cases:
        error = _refused(call)
        assert (error.status(), fragment in error.message()) == (status, True), (error.message(), fragment)
    assert client.is_server_ready()


def test_bad_json_and_broken_binary_bodies(running_server, images, client) -> None:
    url = f"{running_server.rest_url}{v2.infer_path(MODEL_NAME)}"
    status, answer = _http("POST", url, b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in answer["error"]
    header = json.dumps({"inputs": [{"name": INPUT_NAME, "shape": [1, 28, 28, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 3136}}]}).encode()
    pixels = images[:1].tobytes()
    for length, body, fragment in [
        (len(header) + 9999, header + pixels, "past the end"),
        (len(header), header + pixels[:-4], "runs past the end of the binary data"),
        (len(header), header + pixels + b"\0" * 4, "add up to 3136"),
    ]:
        status, answer = _http("POST", url, body, {v2.HEADER_CONTENT_LENGTH: str(length)})
        assert status == 400 and fragment in answer["error"], answer
    assert client.is_server_ready()
