"""Batching: requests that meet while a batch runs are merged into the next one, each caller gets
its own rows; an idle batcher never waits; overload is refused, never buffered; deadlines hold.

The model is the tiny real ONNX model, wrapped so a test can hold a batch "running" (a gate) and
see every run; nothing asserts absolute speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from contract import INPUT_NAME, INPUT_SHAPE, MODEL_NAME, OUTPUT_PROBABILITIES, PREDICT_RPC
from contract.codecs import make_ndarray, make_tensor_proto
from contract.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from contract.proto import digits_tfserving_pb2 as pb
from serving.core.batching import Batcher
from serving.core.dataplane import DataPlane
from serving.core.repository import ModelRepository
from serving.core.runtime import LoadedModel
from serving.grpc.server import build_server
from serving.rest.app import create_app

WAIT_S = 10  # bound on every wait: a broken batcher fails the test, never hangs it


class GatedModel:
    """A real model whose runs are recorded and, while ``hold`` is set, wait for ``release``."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.version = model.version
        self.runs: list[np.ndarray] = []
        self.running = threading.Event()
        self.release = threading.Event()
        self.hold = False

    def run(self, images: np.ndarray, outputs=None) -> dict[str, np.ndarray]:
        self.runs.append(images.copy())
        if self.hold:
            self.running.set()
            assert self.release.wait(WAIT_S), "test never released the gate"
        return self.model.run(images)


@pytest.fixture
def model(tiny_repository: Path) -> LoadedModel:
    return LoadedModel(1, tiny_repository / "1")


@pytest.fixture
def gated(model: LoadedModel) -> Iterator[GatedModel]:
    gated = GatedModel(model)
    yield gated
    gated.release.set()


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Run ``fn`` in a thread; the dict gets its ``result`` or ``error``."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def _hold_first_batch(batcher: Batcher, gated: GatedModel) -> tuple[threading.Thread, dict]:
    """One request now running on a held model: whatever comes next must queue."""
    gated.hold = True
    first = _in_thread(lambda: batcher.run(gated, _images(1, seed=99), None))
    assert gated.running.wait(WAIT_S)
    return first


def test_requests_arriving_while_a_batch_runs_join_the_next_one(
    gated: GatedModel, model: LoadedModel
) -> None:
    sizes: list[int] = []
    batcher = Batcher(max_batch_size=32, max_enqueued_batches=4, on_batch=sizes.append)
    first = _hold_first_batch(batcher, gated)
    counts = [1, 3, 1, 2, 5, 1, 4]  # requests of several images are merged and split back
    images = [_images(n, seed=i) for i, n in enumerate(counts)]
    waiting = [_in_thread(lambda x=x: batcher.run(gated, x, WAIT_S)) for x in images]
    _until(lambda: batcher.queued_images == sum(counts))
    gated.release.set()
    for thread, _ in [first, *waiting]:
        thread.join(WAIT_S)
    assert sizes == [1, sum(counts)]  # 8 requests, 2 model runs
    for x, (_, outcome) in zip(images, waiting, strict=True):
        assert "error" not in outcome, outcome
        got = outcome["result"][OUTPUT_PROBABILITIES]
        np.testing.assert_allclose(got, model.run(x)[OUTPUT_PROBABILITIES], rtol=1e-6, atol=1e-7)


def test_concurrent_threads_get_their_own_rows_in_fewer_runs(model: LoadedModel) -> None:
    sizes: list[int] = []
    batcher = Batcher(max_batch_size=16, max_enqueued_batches=64, on_batch=sizes.append)
    requests = [_images(1 + i % 3, seed=i) for i in range(240)]
    expected = [model.run(x)[OUTPUT_PROBABILITIES] for x in requests]
    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: batcher.run(model, x, WAIT_S), requests))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got[OUTPUT_PROBABILITIES], want, rtol=1e-6, atol=1e-7)
    assert sum(sizes) == sum(len(x) for x in requests)
    assert max(sizes) <= 16


def test_a_lone_request_on_an_idle_batcher_runs_at_once(model: LoadedModel) -> None:
    batcher = Batcher(max_batch_size=64, batch_timeout_micros=2_000_000, max_enqueued_batches=1)
    for _ in range(3):
        started = time.perf_counter()
        batcher.run(model, _images(1), timeout=None)
        assert time.perf_counter() - started < 1.0  # the 2 s timeout is never waited out


@pytest.mark.parametrize("timeout", [None, 1e10, float("inf")], ids=["none", "grpc", "inf"])
def test_queued_requests_without_a_deadline_work(gated: GatedModel, timeout) -> None:
    batcher = Batcher(max_batch_size=8, max_enqueued_batches=2)
    first = _hold_first_batch(batcher, gated)
    second = _in_thread(lambda: batcher.run(gated, _images(2), timeout))
    _until(lambda: batcher.queued_images == 2)
    gated.release.set()
    for thread, outcome in (first, second):
        thread.join(WAIT_S)
        assert outcome["result"][OUTPUT_PROBABILITIES].shape[0] in (1, 2), outcome


def test_a_full_queue_refuses_at_once_and_recovers(gated: GatedModel) -> None:
    batcher = Batcher(max_batch_size=2, max_enqueued_batches=1)  # room for 2 queued images
    first = _hold_first_batch(batcher, gated)
    queued = [_in_thread(lambda: batcher.run(gated, _images(1), WAIT_S)) for _ in range(2)]
    _until(lambda: batcher.queued_images == 2)
    with pytest.raises(ResourceExhausted, match="queue full"):
        batcher.run(gated, _images(1), WAIT_S)
    gated.release.set()
    for thread, outcome in [first, *queued]:
        thread.join(WAIT_S)
        assert "result" in outcome, outcome
    gated.hold = False
    assert batcher.run(gated, _images(1), WAIT_S)[OUTPUT_PROBABILITIES].shape == (1, 10)


def test_a_deadline_that_expires_in_the_queue_is_exceeded_and_never_run(gated: GatedModel) -> None:
    batcher = Batcher(max_batch_size=8, max_enqueued_batches=2)
    first = _hold_first_batch(batcher, gated)
    doomed = _images(3, seed=7)
    later = _in_thread(lambda: batcher.run(gated, _images(2, seed=8), WAIT_S))
    with pytest.raises(DeadlineExceeded):
        batcher.run(gated, doomed, timeout=0.05)
    assert batcher.queued_images == 2  # it left the queue; the other request is still there
    gated.release.set()
    for thread, outcome in (first, later):
        thread.join(WAIT_S)
        assert "result" in outcome, outcome
    assert [len(x) for x in gated.runs] == [1, 2]
    assert not any(np.array_equal(run[: len(doomed)], doomed) for run in gated.runs)


def test_versions_are_never_mixed_and_big_requests_run_alone(
    gated: GatedModel, tiny_repository: Path
) -> None:
    other = GatedModel(LoadedModel(2, tiny_repository / "1"))
    batcher = Batcher(max_batch_size=4, max_enqueued_batches=4)
    first = _hold_first_batch(batcher, gated)
    plan = [(other, 1), (gated, 1), (other, 2), (gated, 6), (gated, 2)]
    waiting = []
    for target, count in plan:  # one at a time, so the queue order is the plan's
        waiting.append(_in_thread(lambda t=target, n=count: batcher.run(t, _images(n), WAIT_S)))
        _until(lambda: batcher.queued_images == sum(n for _, n in plan[: len(waiting)]))
    gated.release.set()
    for thread, outcome in [first, *waiting]:
        thread.join(WAIT_S)
        assert "result" in outcome, outcome
    for (_, count), (_, outcome) in zip(plan, waiting, strict=True):
        assert outcome["result"][OUTPUT_PROBABILITIES].shape == (count, 10)
    assert [len(x) for x in other.runs] == [3]  # both of its requests, in one run
    assert sorted(len(x) for x in gated.runs) == [1, 3, 6]  # 6 > max_batch_size: alone


def test_a_failed_run_fails_its_batch_only(gated: GatedModel) -> None:
    batcher = Batcher(max_batch_size=8, max_enqueued_batches=2)
    with pytest.raises(Exception, match="Got invalid dimensions|INVALID_ARGUMENT"):
        batcher.run(gated, np.zeros((1, 3), np.float32), WAIT_S)  # ORT refuses the shape
    assert batcher.run(gated, _images(1), WAIT_S)[OUTPUT_PROBABILITIES].shape == (1, 10)
    batcher.close()
    with pytest.raises(Unavailable):
        batcher.run(gated, _images(1), WAIT_S)


# --- through the adapters: no deadline over gRPC, 429 over REST, RESOURCE_EXHAUSTED over gRPC ---
@pytest.fixture
def batched(tiny_repository: Path) -> Iterator[tuple[DataPlane, GatedModel]]:
    repository = ModelRepository(MODEL_NAME, tiny_repository, poll_wait_seconds=0)
    repository.start()
    gated = GatedModel(repository.get(None, None))
    repository.get = lambda version=None, label=None: gated  # every request meets the gate
    yield DataPlane(repository, Batcher(max_batch_size=2, max_enqueued_batches=1)), gated
    gated.release.set()
    repository.stop()


def _grpc_predict(channel: grpc.Channel, count: int, timeout: float | None):
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(_images(count), use_tensor_content=True))
    call = channel.unary_unary(
        PREDICT_RPC,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.PredictResponse.FromString,
    )
    return call(request, timeout=timeout)  # None: no deadline, as most clients send


def test_grpc_without_deadlines_is_batched_and_a_full_queue_is_resource_exhausted(batched) -> None:
    dataplane, gated = batched
    server, _, port = build_server(dataplane, "127.0.0.1:0", max_threads=8, access_log=False)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            gated.hold = True
            first = _in_thread(lambda: _grpc_predict(channel, 1, None))
            assert gated.running.wait(WAIT_S)
            queued = [_in_thread(lambda: _grpc_predict(channel, 1, None)) for _ in range(2)]
            _until(lambda: dataplane.models.get(MODEL_NAME).batcher.queued_images == 2)
            with pytest.raises(grpc.RpcError) as refused:
                _grpc_predict(channel, 1, None)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            gated.release.set()
            for thread, outcome in [first, *queued]:
                thread.join(WAIT_S)
                assert "result" in outcome, outcome
                probabilities = make_ndarray(outcome["result"].outputs[OUTPUT_PROBABILITIES])
                assert probabilities.shape == (1, 10)
            assert [len(x) for x in gated.runs] == [1, 2]
    finally:
        server.stop(0)


def test_rest_full_queue_is_429(batched) -> None:
    dataplane, gated = batched
    app = create_app(dataplane, access_log=False)
    body = {"instances": _images(1).tolist()}
    path = f"/v1/models/{MODEL_NAME}:predict"
    gated.hold = True
    first = _in_thread(lambda: app.test_client().post(path, json=body))
    assert gated.running.wait(WAIT_S)
    queued = [_in_thread(lambda: app.test_client().post(path, json=body)) for _ in range(2)]
    _until(lambda: dataplane.models.get(MODEL_NAME).batcher.queued_images == 2)
    refused = app.test_client().post(path, json=body)
    assert refused.status_code == 429 and "queue full" in refused.get_json()["error"]
    gated.release.set()
    for thread, outcome in [first, *queued]:
        thread.join(WAIT_S)
        assert outcome["result"].status_code == 200, outcome
