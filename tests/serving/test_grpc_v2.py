"""The V2 gRPC adapter: a real in-process grpcio server on 127.0.0.1 over the tiny model, spoken to
by the official ``tritonclient.grpc`` and by our own messages, beside TF Serving's API."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from client.api import ModelSpec, V2GrpcClient
from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_DIGIT, OUTPUT_PROBABILITIES, PREDICT_RPC, v2
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import NotFound
from contract.proto import digits_tfserving_pb2 as tfpb
from contract.proto import digits_v2_pb2 as pb
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.grpc.server import build_server, set_health
from serving.observability.logs import ACCESS_LOGGER

IMAGES = np.random.default_rng(5).random((3, *INPUT_SHAPE), dtype=np.float32)


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


@pytest.fixture(params=[False], ids=["quiet"])
def target(dataplane: DataPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    server, health, port = build_server(
        dataplane, "127.0.0.1:0", access_log=request.param, max_message_bytes=1 << 20
    )
    server.start()
    set_health(health, True)
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def client(target: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(target) as official:
        yield official


@pytest.fixture
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as ch:
        yield ch


def _call(channel: grpc.Channel, path: str, request, response_type, timeout: float = 10):
    return channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )(request, timeout=timeout)


def _infer(client: triton.InferenceServerClient, images: np.ndarray = IMAGES, **kwargs):
    image = triton.InferInput(INPUT_NAME, list(images.shape), v2.datatype_of(images.dtype))
    image.set_data_from_numpy(images)
    return client.infer(MODEL_NAME, [image], **kwargs)


def _tfserving_predict(channel: grpc.Channel, images: np.ndarray) -> dict[str, np.ndarray]:
    request = tfpb.PredictRequest(model_spec=tfpb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
    response = _call(channel, PREDICT_RPC, request, tfpb.PredictResponse)
    return {key: make_ndarray(tensor) for key, tensor in response.outputs.items()}


# --- the official client -------------------------------------------------------------------------
def test_health_and_metadata_with_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME) and client.is_model_ready(MODEL_NAME, "1")
    # Unknown models and versions are "not ready", not errors: what Triton answers.
    assert not client.is_model_ready("mnist") and not client.is_model_ready(MODEL_NAME, "9")
    assert not client.is_model_ready(MODEL_NAME, "stable")  # V2 versions are integers here
    server = client.get_server_metadata(as_json=True)
    assert server == {"name": v2.SERVER_NAME, "version": v2.SERVER_VERSION,
                      "extensions": list(v2.EXTENSIONS)}
    meta = client.get_model_metadata(MODEL_NAME, as_json=True)
    assert meta == {
        "name": MODEL_NAME,
        "versions": ["1"],
        "platform": v2.PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": ["-1", "28", "28", "1"]}],
        "outputs": [
            {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": ["-1", "10"]},
            {"name": OUTPUT_DIGIT, "datatype": "INT64", "shape": ["-1"]},
        ],
    }
    assert client.get_model_metadata(MODEL_NAME, "1").versions == ["1"]


def test_infer_with_raw_contents_equals_tfserving_predict(
    client: triton.InferenceServerClient, channel: grpc.Channel
) -> None:
    result = _infer(client, request_id="42")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL_NAME, "1", "42")
    reference = _tfserving_predict(channel, IMAGES)
    for name in (OUTPUT_PROBABILITIES, OUTPUT_DIGIT):
        assert result.as_numpy(name).tobytes() == reference[name].tobytes()  # bit-identical
        assert result.as_numpy(name).dtype == reference[name].dtype


def test_output_selection(client: triton.InferenceServerClient) -> None:
    result = _infer(client, outputs=[triton.InferRequestedOutput(OUTPUT_DIGIT)])
    assert [output.name for output in result.get_response().outputs] == [OUTPUT_DIGIT]
    assert result.as_numpy(OUTPUT_DIGIT).shape == (3,) and result.as_numpy(OUTPUT_PROBABILITIES) is None


@pytest.mark.parametrize(
    ("images", "model", "version", "status", "message"),
    [
        (np.zeros((1, 5), np.float32), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT", "has shape [1, 5]"),
        (np.zeros((1, *INPUT_SHAPE)), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT",
         "datatype FP64; this model takes FP32"),
        (np.full((1, *INPUT_SHAPE), 2.0, np.float32), MODEL_NAME, "", "StatusCode.INVALID_ARGUMENT",
         "[0, 1]"),
        (IMAGES, "mnist", "", "StatusCode.NOT_FOUND", "model 'mnist' is not served here"),
        (IMAGES, MODEL_NAME, "9", "StatusCode.NOT_FOUND", "version 9 is not served"),
        (IMAGES, MODEL_NAME, "canary", "StatusCode.NOT_FOUND", "no version 'canary' (versions are integers)"),
    ],
    ids=["shape", "dtype", "range", "model", "version", "not_a_version"],
)
def test_bad_requests_get_precise_codes(
    client: triton.InferenceServerClient, images, model, version, status, message
) -> None:
    image = triton.InferInput(INPUT_NAME, list(images.shape), v2.datatype_of(images.dtype))
    image.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [image], model_version=version)
    assert info.value.status() == status
    assert message in info.value.message()


def test_the_same_bad_input_gets_the_same_code_as_tfserving(channel: grpc.Channel) -> None:
    bright = np.full((1, *INPUT_SHAPE), 2.0, np.float32)
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=bright.shape)
    request.raw_input_contents.append(bright.tobytes())
    with pytest.raises(grpc.RpcError) as v2_error:
        _call(channel, v2.MODEL_INFER_RPC, request, pb.ModelInferResponse)
    with pytest.raises(grpc.RpcError) as tf_error:
        _tfserving_predict(channel, bright)
    assert v2_error.value.code() == tf_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert v2_error.value.details() == tf_error.value.details()


def test_metadata_of_unknown_models_and_versions(client: triton.InferenceServerClient) -> None:
    for model, version in [("mnist", ""), (MODEL_NAME, "9"), (MODEL_NAME, "latest")]:
        for call in (client.get_model_metadata, client.get_model_config):
            with pytest.raises(InferenceServerException) as info:
                call(model, version)
            assert info.value.status() == "StatusCode.NOT_FOUND"


def test_model_configuration_with_tritonclient(client: triton.InferenceServerClient) -> None:
    """Read by tritonclient's own ModelConfig message: every field digits sets, nothing else."""
    config = client.get_model_config(MODEL_NAME).config
    assert config == client.get_model_config(MODEL_NAME, "1").config
    expected = mc.ModelConfig(name=MODEL_NAME, platform="onnxruntime_onnx", backend="onnxruntime",
                              max_batch_size=1024)
    expected.input.add(name=INPUT_NAME, data_type=mc.TYPE_FP32, format=mc.ModelInput.FORMAT_NHWC,
                       dims=[28, 28, 1])
    expected.output.add(name=OUTPUT_PROBABILITIES, data_type=mc.TYPE_FP32, dims=[10])
    digit = expected.output.add(name=OUTPUT_DIGIT, data_type=mc.TYPE_INT64, dims=[1])
    digit.reshape.SetInParent()  # one value per image: dims [1] seen by the model as []
    assert config == expected and config.output[1].HasField("reshape")


def test_a_config_request_without_a_model_name_is_invalid(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, v2.MODEL_CONFIG_RPC, pb.ModelConfigRequest(), pb.ModelConfigResponse)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- our own messages: typed contents, missing names, draining, observation -----------------------
def test_typed_contents_answer_like_raw_contents(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name=MODEL_NAME, model_version="1", id="typed")
    tensor = request.inputs.add(name=INPUT_NAME, datatype="FP32", shape=IMAGES.shape)
    tensor.contents.fp32_contents.extend(IMAGES.ravel().tolist())
    typed = _call(channel, v2.MODEL_INFER_RPC, request, pb.ModelInferResponse)
    del tensor.contents.fp32_contents[:]
    tensor.ClearField("contents")
    request.raw_input_contents.append(IMAGES.tobytes())
    raw = _call(channel, v2.MODEL_INFER_RPC, request, pb.ModelInferResponse)
    assert typed == raw and typed.id == "typed"
    assert [(o.name, o.datatype, list(o.shape)) for o in typed.outputs] == [
        (OUTPUT_PROBABILITIES, "FP32", [3, 10]),
        (OUTPUT_DIGIT, "INT64", [3]),
    ]
    assert len(typed.raw_output_contents) == 2  # always raw, as Triton answers


def test_a_missing_model_name_is_invalid(channel: grpc.Channel) -> None:
    for path, request, response_type in [
        (v2.MODEL_READY_RPC, pb.ModelReadyRequest(), pb.ModelReadyResponse),
        (v2.MODEL_METADATA_RPC, pb.ModelMetadataRequest(), pb.ModelMetadataResponse),
        (v2.MODEL_INFER_RPC, pb.ModelInferRequest(), pb.ModelInferResponse),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            _call(channel, path, request, response_type)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "the model name is required"


def test_draining_server_is_live_but_neither_it_nor_its_models_are_ready(
    client: triton.InferenceServerClient, dataplane: DataPlane, channel: grpc.Channel
) -> None:
    """As over REST (test_rest_v2.py): a draining server's models are not ready either."""
    assert client.is_model_ready(MODEL_NAME)
    dataplane.start_draining()
    assert client.is_server_live()
    assert not client.is_server_ready() and not client.is_model_ready(MODEL_NAME)
    assert not dataplane.model_ready(MODEL_NAME)


def test_our_client_reads_a_model_with_no_version_loaded_as_not_ready(tmp_path: Path) -> None:
    """ModelReady says false and ModelMetadata UNAVAILABLE: not ready, as V2RestClient answers."""
    repository = ModelRepository(MODEL_NAME, tmp_path / MODEL_NAME, poll_wait_seconds=0)
    repository.start()
    server, _, port = build_server(DataPlane(repository), "127.0.0.1:0", access_log=False)
    server.start()
    try:
        with V2GrpcClient(f"127.0.0.1:{port}", timeout=5) as ours:
            assert ours.ready() is False and not ours.server_ready()
        with V2GrpcClient(f"127.0.0.1:{port}", ModelSpec(name="other"), timeout=5) as other:
            with pytest.raises(NotFound):
                other.ready()
    finally:
        server.stop(0)


def test_grpc_health_knows_the_v2_service(channel: grpc.Channel) -> None:
    request = health_pb2.HealthCheckRequest(service=v2.GRPC_SERVICE)
    reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _count(method: str, code: str, served: tuple[str, str] = ("", "")) -> float:
    """``serving_requests_total`` of gRPC V2 calls; ``served``: (model, version)."""
    labels = {"api": "grpc", "protocol": "v2", "method": method, "code": code,
              "model": served[0], "version": served[1]}
    return REGISTRY.get_sample_value("serving_requests_total", labels) or 0.0


@pytest.mark.parametrize("target", [True], ids=["access_log"], indirect=True)
def test_each_call_is_observed_once_with_protocol_v2(
    client: triton.InferenceServerClient, caplog: pytest.LogCaptureFixture
) -> None:
    def counts() -> tuple[float, ...]:
        probes = _count("server_live", "OK")
        served = (MODEL_NAME, "1")
        return (_count(v2.OP_INFER, "OK", served), _count(v2.OP_MODEL_METADATA, "NOT_FOUND"),
                _count(v2.OP_MODEL_CONFIG, "OK", served), probes)

    before = counts()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        _infer(client)
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("mnist")
        client.get_model_config(MODEL_NAME)
        client.is_server_live()  # a probe: neither counted nor logged
        client.is_server_ready()
    assert counts() == (before[0] + 1, before[1] + 1, before[2] + 1, before[3])
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(x["api"], x["protocol"], x["model"], x["version"], x["method"], x["code"]) for x in lines] == [
        ("grpc", "v2", MODEL_NAME, "1", "infer", "OK"),
        ("grpc", "v2", "", "", "model_metadata", "NOT_FOUND"),  # another model's name is no label
        ("grpc", "v2", MODEL_NAME, "1", "model_config", "OK"),
    ]


def test_an_unexpected_error_is_internal_never_unknown(
    client: triton.InferenceServerClient, dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dataplane, "predict", broken)
    with pytest.raises(InferenceServerException) as info:
        _infer(client)
    assert info.value.status() == "StatusCode.INTERNAL"
    assert info.value.message() == "internal error: RuntimeError"
