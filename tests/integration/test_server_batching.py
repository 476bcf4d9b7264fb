"""Batching in the real server (``--enable_batching``, one worker per protocol, the shipped model):
gRPC calls without a deadline work, concurrent callers each get their own digits over both
protocols, and a tiny queue refuses overload over gRPC with RESOURCE_EXHAUSTED, never buffering.
(429 over REST with a held model: tests/serving/test_batching.py.)"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

import contract
from contract import INPUT_NAME, MAX_BATCH_SIZE, MODEL_NAME, OUTPUT_DIGIT, PREDICT_RPC
from contract.codecs import make_ndarray, make_tensor_proto
from contract.mnist import load_split, to_model_input
from contract.proto import digits_tfserving_pb2 as pb
from serving.core.runtime import LoadedModel
from tests.integration.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = ROOT / "pretrained" / MODEL_NAME
BATCHING = ("--enable_batching", "--num_workers", "1", "--access_log", "false")


@pytest.fixture(scope="module")
def images(mnist_dir: Path) -> np.ndarray:
    return to_model_input(load_split("t10k", str(mnist_dir))[0][:MAX_BATCH_SIZE])


@pytest.fixture(scope="module")
def expected(images: np.ndarray) -> np.ndarray:
    """The digits ONNX Runtime gives for the shipped model, unbatched, in this process."""
    model = LoadedModel(1, contract.version_path(PRETRAINED, 1))
    return np.concatenate([model.run(images[i : i + 1])[OUTPUT_DIGIT] for i in range(64)])


def _grpc_digits(channel: grpc.Channel, batch: np.ndarray) -> np.ndarray:
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(batch, use_tensor_content=True))
    call = channel.unary_unary(
        PREDICT_RPC,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.PredictResponse.FromString,
    )
    return make_ndarray(call(request).outputs[OUTPUT_DIGIT])  # no deadline, as most clients


def _rest_digits(server: RunningServer, batch: np.ndarray) -> np.ndarray:
    request = urllib.request.Request(
        f"{server.rest_url}/v1/models/{MODEL_NAME}:predict",
        data=json.dumps({"instances": batch.tolist()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return np.array([row[OUTPUT_DIGIT] for row in json.load(response)["predictions"]])


def test_concurrent_callers_without_deadlines_get_their_own_digits(
    server_factory, images: np.ndarray, expected: np.ndarray
) -> None:
    server = server_factory(
        PRETRAINED, *BATCHING, "--grpc_max_threads", "8", "--rest_api_num_threads", "4"
    )
    # Requests of 1 to 3 images from 8 threads at once; every caller checks its own rows.
    slices = [slice(i, i + 1 + i % 3) for i in range(0, 60, 2)] * 4
    with grpc.insecure_channel(server.grpc_target) as channel:
        assert _grpc_digits(channel, images[:1]).tolist() == expected[:1].tolist()
        with futures.ThreadPoolExecutor(8) as pool:
            by_grpc = list(pool.map(lambda s: _grpc_digits(channel, images[s]), slices))
            by_rest = list(pool.map(lambda s: _rest_digits(server, images[s]), slices[:40]))
    for s, digits in zip(slices, by_grpc, strict=True):
        assert digits.tolist() == expected[s].tolist()
    for s, digits in zip(slices[:40], by_rest, strict=True):
        assert digits.tolist() == expected[s].tolist()


def test_a_tiny_queue_refuses_overload_with_resource_exhausted(
    server_factory, images: np.ndarray, expected: np.ndarray
) -> None:
    # Room for one queued request; each request a full batch of 1,024 images (tens of ms of
    # ONNX Runtime against ~1 ms to parse), so eight callers soon find the queue full.
    server = server_factory(
        PRETRAINED,
        *BATCHING,
        *("--grpc_max_threads", "8", "--max_batch_size", "1", "--max_enqueued_batches", "1"),
    )
    codes: list[grpc.StatusCode] = []

    def call(_: int) -> grpc.StatusCode:
        try:
            digits = _grpc_digits(channel, images)
        except grpc.RpcError as exc:
            return exc.code()
        assert digits[:64].tolist() == expected.tolist()
        return grpc.StatusCode.OK

    deadline = time.monotonic() + 60
    with grpc.insecure_channel(server.grpc_target) as channel:
        with futures.ThreadPoolExecutor(8) as pool:
            while grpc.StatusCode.RESOURCE_EXHAUSTED not in codes and time.monotonic() < deadline:
                codes += pool.map(call, range(16))
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
