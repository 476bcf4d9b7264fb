"""Batching: merged runs give the same answers; overload is refused, never buffered."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, OUTPUT_PROBABILITIES
from contract.errors import DeadlineExceeded, ResourceExhausted
from serving.batching import Batcher
from serving.runtime import LoadedModel


@pytest.fixture
def model(tiny_repository: Path) -> LoadedModel:
    return LoadedModel(1, tiny_repository / "1")


def test_concurrent_requests_are_merged_with_identical_results(model: LoadedModel) -> None:
    sizes: list[int] = []
    batcher = Batcher(
        max_batch_size=32, batch_timeout_micros=20000, max_enqueued_batches=4, on_batch=sizes.append
    )
    images = np.random.default_rng(0).random((8, *INPUT_SHAPE), dtype=np.float32)
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        results[i] = batcher.run(model, images[i : i + 1], timeout=10)[OUTPUT_PROBABILITIES]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    expected = model.run(images)[OUTPUT_PROBABILITIES]
    for i in range(8):
        np.testing.assert_allclose(results[i][0], expected[i], rtol=1e-6)
    assert sum(sizes) == 8 and max(sizes) > 1  # at least one merged batch


def test_full_queue_is_refused_with_resource_exhausted(model: LoadedModel) -> None:
    gate = threading.Event()
    original = model.run

    def slow_run(images, outputs=None):
        gate.wait(5)
        return original(images)

    model.run = slow_run  # the batch thread blocks, so the queue fills up
    batcher = Batcher(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=1)
    one = np.zeros((1, *INPUT_SHAPE), np.float32)
    def wait_one() -> None:
        try:
            batcher.run(model, one, 10)
        except ResourceExhausted:  # the third may find the queue full too: the same refusal
            pass

    waiters = [threading.Thread(target=wait_one) for _ in range(3)]
    for w in waiters:
        w.start()
    deadline_hit = False
    refused = False
    for _ in range(50):
        try:
            batcher.run(model, np.zeros((2, *INPUT_SHAPE), np.float32), timeout=0.05)
        except ResourceExhausted:
            refused = True
            break
        except DeadlineExceeded:
            deadline_hit = True
    gate.set()
    for w in waiters:
        w.join()
    batcher.close()
    assert refused, f"queue never refused (deadline_hit={deadline_hit})"
