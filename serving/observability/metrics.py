"""Prometheus metrics, aware of the several worker processes.

Served at ``/monitoring/prometheus/metrics`` (TF Serving's path) and ``/metrics``. When the
supervisor runs workers it sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
``prometheus_client``; each process then writes its samples to files there and the REST worker
answering a scrape aggregates them all (gRPC workers included). Without that variable (tests,
one in-process server) the default registry is used. prometheus_client decides between the two
when this module creates its metrics, so a process must have the variable set before importing
it (the supervisor, which only owns the directory, never imports this module).

Metrics:
- ``serving_requests_total{api,protocol,method,code}``: requests by API (rest/grpc), protocol
  (``tfserving``: TF Serving's API; ``v2``: the Open Inference Protocol), method and gRPC code
- ``serving_request_latency_seconds{api,protocol,method}``: server-side latency histogram
- ``serving_model_batch_size``: images per ONNX Runtime run
- ``serving_model_version_available{model,version}``: 1 while a version serves (max over workers)
- ``serving_model_load_failures_total{model,version}``: failed load attempts, counted per worker
  process (retries included)
- ``serving_worker_served_version{model,version,worker}``: 1 while that worker process serves the
  version, 0 once it dropped it; ``worker`` is ``<role>-<pid>`` (``grpc-4242``, ``rest-4250``), so
  workers serving different versions (a split fleet) show, and a dead worker's series go with it
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from serving.settings import MULTIPROC_ENV

REQUESTS = Counter(
    "serving_requests",
    "Requests by API, protocol, method and gRPC status code",
    ["api", "protocol", "method", "code"],
)
LATENCY = Histogram(
    "serving_request_latency_seconds",
    "Server-side request latency",
    ["api", "protocol", "method"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
BATCH_SIZE = Histogram(
    "serving_model_batch_size",
    "Images per model run",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
VERSION_AVAILABLE = Gauge(
    "serving_model_version_available",
    "1 while the model version is loaded and serving",
    ["model", "version"],
    multiprocess_mode="livemax",
)
LOAD_FAILURES = Counter(
    "serving_model_load_failures", "Failed attempts at loading a model version", ["model", "version"]
)
WORKER_SERVED_VERSION = Gauge(
    "serving_worker_served_version",
    "1 while this worker process serves the model version, 0 once it dropped it",
    ["model", "version", "worker"],
    # Each series is written by one process only (its pid is in ``worker``), so "max" keeps every
    # worker's own value; a live mode, so the supervisor drops a dead worker's series.
    multiprocess_mode="livemax",
)


# The labelled children per (api, protocol, method, code), looked up once: ``labels()`` costs more than
# the increment itself on the hot path. (Children live as long as their metric; nothing here
# removes labels.)
_REQUEST_CHILDREN: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def observe_request(api: str, protocol: str, method: str, code: str, seconds: float) -> None:
    """Count one finished request and its latency."""
    key = (api, protocol, method, code)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        children = (REQUESTS.labels(*key), LATENCY.labels(api, protocol, method))
        _REQUEST_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def version_loaded(model: str, version: int, loaded: bool) -> None:
    """Set the availability gauge of one version (1 while it serves)."""
    VERSION_AVAILABLE.labels(model, str(version)).set(1 if loaded else 0)


def worker_served_version(model: str, version: int, worker: str, serving: bool) -> None:
    """Set this worker's gauge of one version (1 while it serves the version)."""
    WORKER_SERVED_VERSION.labels(model, str(version), worker).set(1 if serving else 0)


def load_failed(model: str, version: int) -> None:
    """Count one failed attempt at loading a version."""
    LOAD_FAILURES.labels(model, str(version)).inc()


def render() -> tuple[bytes, str]:
    """The exposition text of every process of this server, and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

