"""gRPC adapter: a real in-process grpcio server on 127.0.0.1 over the tiny model."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from contract import (
    GET_MODEL_METADATA_RPC,
    GET_MODEL_STATUS_RPC,
    INPUT_NAME,
    INPUT_SHAPE,
    METADATA_FIELD_SIGNATURE_DEF,
    MODEL_NAME,
    OUTPUT_DIGIT,
    OUTPUT_PROBABILITIES,
    PREDICT_RPC,
    SIGNATURE_DEF_MAP_TYPE_URL,
)
from contract.codecs import make_ndarray, make_tensor_proto
from contract.proto import digits_tfserving_pb2 as pb
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.grpc.server import build_server, set_health
from serving.observability.logs import ACCESS_LOGGER


@pytest.fixture
def dataplane(tiny_repository: Path) -> DataPlane:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    return DataPlane(repository)


@pytest.fixture(params=[False], ids=["quiet"])
def channel(dataplane: DataPlane, request: pytest.FixtureRequest) -> Iterator[grpc.Channel]:
    server, health, port = build_server(
        dataplane, "127.0.0.1:0", access_log=request.param, max_message_bytes=1 << 20
    )
    server.start()
    set_health(health, True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)


def _call(channel: grpc.Channel, path: str, request, response_type, timeout: float = 10):
    return channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )(request, timeout=timeout)


def _predict_request(images: np.ndarray, **spec) -> pb.PredictRequest:
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME, **spec))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images, use_tensor_content=True))
    return request


def test_predict_tensor_content_and_typed_fields_agree(channel: grpc.Channel) -> None:
    images = np.random.default_rng(0).random((4, *INPUT_SHAPE), dtype=np.float32)
    raw = _call(channel, PREDICT_RPC, _predict_request(images), pb.PredictResponse)
    typed_request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    typed_request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images.astype(np.float64)))
    typed = _call(channel, PREDICT_RPC, typed_request, pb.PredictResponse)
    for response in (raw, typed):
        assert response.model_spec.version.value == 1
        assert make_ndarray(response.outputs[OUTPUT_PROBABILITIES]).shape == (4, 10)
    np.testing.assert_array_equal(
        make_ndarray(raw.outputs[OUTPUT_DIGIT]), make_ndarray(typed.outputs[OUTPUT_DIGIT])
    )
    filtered = _predict_request(images)
    filtered.output_filter.append(OUTPUT_DIGIT)
    assert set(_call(channel, PREDICT_RPC, filtered, pb.PredictResponse).outputs) == {OUTPUT_DIGIT}


def test_metadata_status_and_health(channel: grpc.Channel) -> None:
    request = pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.metadata_field.append(METADATA_FIELD_SIGNATURE_DEF)
    meta = _call(channel, GET_MODEL_METADATA_RPC, request, pb.GetModelMetadataResponse)
    any_ = meta.metadata[METADATA_FIELD_SIGNATURE_DEF]
    assert any_.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    signatures = pb.SignatureDefMap.FromString(any_.value)
    assert INPUT_NAME in signatures.signature_def["serving_default"].inputs
    status = _call(
        channel,
        GET_MODEL_STATUS_RPC,
        pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)),
        pb.GetModelStatusResponse,
    )
    assert status.model_version_status[0].state == pb.ModelVersionStatus.AVAILABLE
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("request_factory", "code"),
    [
        (lambda: _predict_request(np.zeros((1, 5), np.float32)), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda: _predict_request(np.full((1, *INPUT_SHAPE), 2.0, np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda: pb.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda: _predict_request(np.zeros((1, *INPUT_SHAPE), np.float32), version={"value": 9}),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: _predict_request(np.zeros((1, *INPUT_SHAPE), np.float32), signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ],
)
def test_bad_requests_get_precise_codes(channel: grpc.Channel, request_factory, code) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, PREDICT_RPC, request_factory(), pb.PredictResponse)
    assert info.value.code() == code and info.value.details()


def test_oversized_message_is_refused(channel: grpc.Channel) -> None:
    big = _predict_request(np.zeros((512, *INPUT_SHAPE), np.float32))  # 1.6 MB > 1 MiB limit
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, PREDICT_RPC, big, pb.PredictResponse)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _count(method: str, code: str, served: tuple[str, str] = ("", "")) -> float:
    """``serving_requests_total`` of gRPC TF Serving calls; ``served``: (model, version)."""
    labels = {"api": "grpc", "protocol": "tfserving", "method": method, "code": code,
              "model": served[0], "version": served[1]}
    return REGISTRY.get_sample_value("serving_requests_total", labels) or 0.0


@pytest.mark.parametrize("channel", [True], ids=["access_log"], indirect=True)
def test_each_call_is_observed_once_with_its_code(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    named = (MODEL_NAME, "")  # status covers every version; version 9 is not served
    ok, not_found = _count("status", "OK", named), _count("predict", "NOT_FOUND", named)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        _call(
            channel,
            GET_MODEL_STATUS_RPC,
            pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=MODEL_NAME)),
            pb.GetModelStatusResponse,
        )
        with pytest.raises(grpc.RpcError):
            request = _predict_request(np.zeros((1, *INPUT_SHAPE), np.float32), version={"value": 9})
            _call(channel, PREDICT_RPC, request, pb.PredictResponse)
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert (_count("status", "OK", named), _count("predict", "NOT_FOUND", named)) == (ok + 1, not_found + 1)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    keys = ["api", "protocol", "model", "version", "method", "code", "ms"]
    assert [list(line) for line in lines] == [keys] * 2  # no health
    assert [(x["api"], x["model"], x["version"], x["method"], x["code"]) for x in lines] == [
        ("grpc", MODEL_NAME, "", "status", "OK"),
        ("grpc", MODEL_NAME, "", "predict", "NOT_FOUND"),
    ]


def test_an_unexpected_error_is_internal_never_unknown(
    channel: grpc.Channel, dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dataplane, "metadata", broken)
    request = pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.metadata_field.append(METADATA_FIELD_SIGNATURE_DEF)
    before = _count("metadata", "INTERNAL")
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, GET_MODEL_METADATA_RPC, request, pb.GetModelMetadataResponse)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error: RuntimeError"
    assert _count("metadata", "INTERNAL") == before + 1
