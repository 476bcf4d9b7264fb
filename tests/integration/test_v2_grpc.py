"""The real server process speaks the Open Inference Protocol over gRPC to the official client.

``tritonclient.grpc`` (PyPI, NVIDIA's) against ``python -m serving`` (the session
``running_server``, the model exported by training), on real MNIST test images: health,
metadata, readiness, Triton's model configuration (``ModelConfig``), inference with
``raw_input_contents`` (tritonclient's way) and with typed ``contents`` (a ``ModelInferRequest``
built with tritonclient's own messages, sent through its own stub), output selection, bad
requests; the answers are bit-identical to those of TF Serving's ``Predict`` on the same port.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from contract import (
    INPUT_NAME,
    INPUT_SHAPE,
    MAX_BATCH_SIZE,
    MODEL_NAME,
    OUTPUT_DIGIT,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PREDICT_RPC,
    model_versions,
    v2,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.proto import digits_tfserving_pb2 as pb

pytestmark = pytest.mark.slow
TIMEOUT_S = 30  # every call is bounded: a hung server fails the test instead of hanging it


@pytest.fixture(scope="module")
def client(running_server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(running_server.grpc_target) as official:
        yield official


@pytest.fixture(scope="module")
def images(mnist_test) -> np.ndarray:
    """The first 64 MNIST test images, already the contract's float32 [64, 28, 28, 1] in [0, 1]."""
    return np.ascontiguousarray(mnist_test[0][:64], dtype=np.float32)


def _input(images: np.ndarray, datatype: str | None = None) -> triton.InferInput:
    image = triton.InferInput(INPUT_NAME, list(images.shape), datatype or v2.datatype_of(images.dtype))
    return image.set_data_from_numpy(images)


def _tfserving_predict(target: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """TF Serving's gRPC Predict on the same server (typed float_val / int64_val answers)."""
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
    with grpc.insecure_channel(target) as channel:
        response = channel.unary_unary(
            PREDICT_RPC,
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )(request, timeout=TIMEOUT_S)
    return {key: make_ndarray(tensor) for key, tensor in response.outputs.items()}


def test_health_readiness_and_metadata(client, running_server) -> None:
    versions = [str(v) for v in model_versions(running_server.model_base_path)]
    assert client.is_server_live(client_timeout=TIMEOUT_S)
    assert client.is_server_ready(client_timeout=TIMEOUT_S)
    assert client.is_model_ready(MODEL_NAME, client_timeout=TIMEOUT_S)
    assert client.is_model_ready(MODEL_NAME, versions[-1], client_timeout=TIMEOUT_S)
    assert not client.is_model_ready("mnist", client_timeout=TIMEOUT_S)  # not an error: Triton's answer
    assert not client.is_model_ready(MODEL_NAME, "999", client_timeout=TIMEOUT_S)
    server = client.get_server_metadata(client_timeout=TIMEOUT_S)
    assert (server.name, server.version, list(server.extensions)) == (
        v2.SERVER_NAME, v2.SERVER_VERSION, list(v2.EXTENSIONS))
    meta = client.get_model_metadata(MODEL_NAME, client_timeout=TIMEOUT_S)
    assert (meta.name, list(meta.versions), meta.platform) == (MODEL_NAME, versions, v2.PLATFORM)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (INPUT_NAME, "FP32", [-1, *INPUT_SHAPE])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        (t.name, t.datatype, list(t.shape)) for t in v2.OUTPUTS]


def test_model_configuration(client, running_server) -> None:
    """Triton's ModelConfig, read into tritonclient's own message, as perf_analyzer reads it."""
    served = str(model_versions(running_server.model_base_path)[-1])
    config = client.get_model_config(MODEL_NAME, client_timeout=TIMEOUT_S).config
    assert config == client.get_model_config(MODEL_NAME, served, client_timeout=TIMEOUT_S).config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        MODEL_NAME, v2.PLATFORM, v2.BACKEND, MAX_BATCH_SIZE)
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        (INPUT_NAME, "TYPE_FP32", list(INPUT_SHAPE))]
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        (OUTPUT_PROBABILITIES, "TYPE_FP32", [10]), (OUTPUT_DIGIT, "TYPE_INT64", [1])]
    assert config.output[1].HasField("reshape") and not config.output[1].reshape.shape
    for model, version in [("mnist", ""), (MODEL_NAME, "999"), (MODEL_NAME, "latest")]:
        with pytest.raises(InferenceServerException) as info:
            client.get_model_config(model, version, client_timeout=TIMEOUT_S)
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_raw_inference_is_bit_identical_to_tfserving_predict(
    client, running_server, images, mnist_test
) -> None:
    result = client.infer(MODEL_NAME, [_input(images)], request_id="mnist-64", client_timeout=TIMEOUT_S)
    response = result.get_response()
    assert (response.model_name, response.id) == (MODEL_NAME, "mnist-64")
    latest = model_versions(running_server.model_base_path)[-1]
    assert response.model_version == str(latest)
    reference = _tfserving_predict(running_server.grpc_target, images)
    for name in OUTPUT_NAMES:
        answer = result.as_numpy(name)
        assert answer.dtype == reference[name].dtype and answer.shape == reference[name].shape
        assert answer.tobytes() == reference[name].tobytes()  # bit-identical probabilities
    accuracy = float(np.mean(result.as_numpy(OUTPUT_DIGIT) == mnist_test[1][:64]))
    assert accuracy >= 0.9  # a real model on real digits, not zeros that happen to agree


def test_typed_contents_through_tritonclients_own_stub(client, running_server, images) -> None:
    """A ModelInferRequest built by hand with tritonclient's messages, values in fp32_contents."""
    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME, id="typed")
    tensor = request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=images.shape)
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    request.outputs.add(name=OUTPUT_PROBABILITIES)
    with grpc.insecure_channel(running_server.grpc_target) as channel:
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=TIMEOUT_S)
    assert typed.id == "typed" and [o.name for o in typed.outputs] == [OUTPUT_PROBABILITIES]
    wanted = [triton.InferRequestedOutput(OUTPUT_PROBABILITIES)]
    raw = client.infer(MODEL_NAME, [_input(images)], outputs=wanted, client_timeout=TIMEOUT_S)
    assert triton.InferResult(typed).as_numpy(OUTPUT_PROBABILITIES).tobytes() == (
        raw.as_numpy(OUTPUT_PROBABILITIES).tobytes())


def test_output_selection(client, images) -> None:
    result = client.infer(MODEL_NAME, [_input(images[:3])], client_timeout=TIMEOUT_S,
                          outputs=[triton.InferRequestedOutput(OUTPUT_DIGIT)])
    assert [o.name for o in result.get_response().outputs] == [OUTPUT_DIGIT]
    assert result.as_numpy(OUTPUT_DIGIT).shape == (3,) and result.as_numpy(OUTPUT_PROBABILITIES) is None


@pytest.mark.parametrize(
    ("make_input", "model", "version", "status", "message"),
    [
        (lambda x: _input(x[:2].reshape(2, 14, 56)), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT",
         "input 'image' has shape [2, 14, 56]"),
        (lambda x: _input(x[:2].astype(np.float64)), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT",
         "input 'image' has datatype FP64; this model takes FP32"),
        (lambda x: _input(x[:2] * 255), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT", "[0, 1]"),
        (lambda x: _input(x[:2]), "mnist", "", "StatusCode.NOT_FOUND", "model 'mnist' is not served here"),
        (lambda x: _input(x[:2]), MODEL_NAME, "999", "StatusCode.NOT_FOUND", "version 999 is not served"),
    ],
    ids=["shape", "dtype", "range", "unknown_model", "unknown_version"],
)
def test_bad_requests_get_the_right_code_and_the_server_keeps_serving(
    client, images, make_input, model, version, status, message
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [make_input(images)], model_version=version, client_timeout=TIMEOUT_S)
    assert info.value.status() == status
    assert message in info.value.message()
    still = client.infer(MODEL_NAME, [_input(images[:1])], client_timeout=TIMEOUT_S)
    assert still.as_numpy(OUTPUT_DIGIT).shape == (1,)


def test_the_same_bad_input_is_refused_alike_by_both_grpc_apis(client, running_server, images) -> None:
    bad = images[:2] * 255  # bytes instead of [0, 1] pixels: the data plane's range check
    with pytest.raises(InferenceServerException) as v2_error:
        client.infer(MODEL_NAME, [_input(bad)], client_timeout=TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as tf_error:
        _tfserving_predict(running_server.grpc_target, bad)
    assert v2_error.value.status() == str(tf_error.value.code()) == "StatusCode.INVALID_ARGUMENT"
    assert v2_error.value.message() == tf_error.value.details()
