"""A new version written slowly in place under load: every worker serves it, no request fails.

``kubectl cp`` and ``rsync --inplace`` write ``model.onnx`` in its final version directory, so
the workers' scans see it half written and fail to load it, scan after scan. Once the file
settles, every worker (each polls and loads on its own) must serve the new version within two
poll periods: seen in the per-worker gauge ``serving_worker_served_version`` and in the
versions the answers carry, over REST and gRPC, through the project's ``client`` package.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from client.api import connect
from contract import INPUT_SHAPE, METRICS_PATH, MODEL_NAME, ONNX_FILENAME, model_versions, version_path
from tests.integration.conftest import BackgroundLoad, copy_repository

POLL_S = 1.0  # --file_system_poll_wait_seconds
NUM_WORKERS = 2  # per protocol: 2 gRPC and 2 REST workers
WRITE_S = 2.5  # how long the slow writer takes over model.onnx
CHUNKS = 12
LOAD_DEADLINE_S = 120.0  # no load thread outlives this, whatever happens
WAIT_S = 60.0


class Load(BackgroundLoad):
    """Client threads predicting over TF Serving REST, V2 REST and TF Serving gRPC until stopped.

    Records every failure and, for the APIs that report it, the version of each answer."""

    def __init__(self, server) -> None:
        super().__init__({
            "rest": lambda: connect(rest=server.rest_url),
            "rest-v2": lambda: connect(rest=server.rest_url, protocol="v2"),
            "grpc": lambda: connect(grpc=server.grpc_target),
        }, LOAD_DEADLINE_S)
        self.answers: list[tuple[float, float, int]] = []  # (sent, answered, version): monotonic
        self.images = np.random.default_rng(5).random((1, *INPUT_SHAPE), dtype=np.float32)

    def request(self, name: str, client) -> None:
        sent = time.monotonic()
        prediction = client.predict(self.images)
        if prediction.model_version is not None:
            self.answers.append((sent, time.monotonic(), prediction.model_version))


def served_by_worker(rest_url: str) -> dict[str, set[int]]:
    """worker -> the versions it serves now, from the per-worker gauge."""
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=10) as response:
        text = response.read().decode()
    served: dict[str, set[int]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        if family.name != "serving_worker_served_version":
            continue
        for sample in family.samples:
            if sample.labels["model"] == MODEL_NAME and sample.value == 1:
                served[sample.labels["worker"]].add(int(sample.labels["version"]))
    return dict(served)


def wait_until_every_worker_serves(rest_url: str, version: int) -> float:
    """Poll the metrics until all workers serve ``version`` alone; returns when (monotonic)."""
    deadline = time.monotonic() + WAIT_S
    served: dict[str, set[int]] = {}
    while time.monotonic() < deadline:
        served = served_by_worker(rest_url)
        if len(served) == 2 * NUM_WORKERS and all(v == {version} for v in served.values()):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"workers never all served version {version} alone: {served}")


def write_slowly_in_place(path: Path, data: bytes) -> float:
    """Write ``data`` to ``path`` in chunks over ``WRITE_S``, as rsync --inplace would; returns
    when the file settled (monotonic)."""
    path.parent.mkdir()
    step = -(-len(data) // CHUNKS)
    with open(path, "wb") as file:
        for start in range(0, len(data), step):
            if start:
                time.sleep(WRITE_S / CHUNKS)
            file.write(data[start : start + step])
            file.flush()
            os.fsync(file.fileno())
    return time.monotonic()


def test_version_written_slowly_in_place_reaches_every_worker_under_load(
    model_base_path: Path, tmp_path: Path, server_factory
) -> None:
    old = model_versions(model_base_path)[-1]
    new = old + 1
    repository = copy_repository(model_base_path, tmp_path / "repo" / MODEL_NAME, [old])
    data = (version_path(model_base_path, old) / ONNX_FILENAME).read_bytes()
    server = server_factory(
        repository,
        "--num_workers", str(NUM_WORKERS),
        "--file_system_poll_wait_seconds", str(POLL_S),
        "--max_num_load_retries", "3",
        "--load_retry_interval_micros", "200000",
        "--access_log", "false",
    )  # fmt: skip
    wait_until_every_worker_serves(server.rest_url, old)
    with Load(server) as load:
        time.sleep(1.0)
        settled = write_slowly_in_place(version_path(repository, new) / ONNX_FILENAME, data)
        everywhere = wait_until_every_worker_serves(server.rest_url, new)
        time.sleep(max(everywhere, settled + 2 * POLL_S) + 1.0 - time.monotonic())
    assert load.failures == [], load.failures[:5]
    assert load.count > 50
    assert everywhere - settled <= 2 * POLL_S, f"{everywhere - settled:.2f} s after the file settled"
    # The half-written file never answered; two poll periods after it settled only the new one did.
    assert {v for _, answered, v in load.answers if answered < settled} == {old}
    assert {v for sent, _, v in load.answers if sent > settled + 2 * POLL_S} == {new}
    # Each worker said in its log that it took the new version.
    lines = [line for line in server.log().splitlines() if f"now serves {MODEL_NAME} version {new}" in line]
    assert len(lines) == 2 * NUM_WORKERS, lines
