"""Prometheus metrics, aware of the several worker processes.

Served at ``/monitoring/prometheus/metrics`` (TF Serving's path) and ``/metrics``. When the
supervisor runs workers it sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
``prometheus_client``; each process then writes its samples to files there and the REST worker
answering a scrape aggregates them all (gRPC workers included). Without that variable (tests,
one in-process server) the default registry is used. prometheus_client decides between the two
when this module creates its metrics, so a process must have the variable set before importing
it (the supervisor, which only owns the directory, never imports this module).

Metrics:
- ``serving_requests_total{api,protocol,method,code,model,version}``: requests by API
  (rest/grpc), protocol (``tfserving``: TF Serving's API; ``v2``: the Open Inference Protocol),
  method, gRPC code, and the model and version that served it (``request_addressed``)
- ``serving_request_latency_seconds{api,protocol,method,model,version}``: server-side latency
- ``serving_model_batch_size``: images per ONNX Runtime run
- ``serving_model_version_available{model,version}``: 1 while a version serves (max over workers)
- ``serving_model_load_failures_total{model,version}``: failed load attempts, counted per worker
  process (retries included)
- ``serving_worker_served_version{model,version,worker}``: 1 while that worker process serves the
  version, 0 once it dropped it; ``worker`` is ``<role>-<pid>`` (``grpc-4242``, ``rest-4250``), so
  workers serving different versions (a split fleet) show, and a dead worker's series go with it
- model quality, per model and version (``QualityRecorder``; statistics and buckets from
  ``contract.quality``): ``serving_predictions_total{model,version,digit}`` (images answered, by
  predicted digit), ``serving_prediction_confidence{model,version}`` (each image's top-1
  probability), ``serving_input_ink_fraction``, ``serving_input_mean_intensity``,
  ``serving_input_center_offset_pixels`` (each image's, or each sampled image's, statistics)
- ``serving_model_baseline{model,version,statistic,moment}``: the version's model-card baseline
  while it serves (``set_baseline``)

The (model, version) of the request in flight: the data plane records it
(``request_addressed``) in a context variable, and the observer takes it once per request
(``take_request_labels``), so the adapters never pass it along. Each thread (gRPC's pool, a
REST worker's) and each asyncio task has its own value; taking it resets it, so a request that
fails before reaching the data plane never inherits the previous request's labels.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
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

from contract import NUM_CLASSES, PIXELS
from contract.quality import BUCKETS, CONFIDENCE_BUCKETS, STATISTICS, confidence, input_statistics
from serving.settings import MULTIPROC_ENV

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "serving_requests",
    "Requests by API, protocol, method, gRPC status code, and the model and version that served them",
    ["api", "protocol", "method", "code", "model", "version"],
)
LATENCY = Histogram(
    "serving_request_latency_seconds",
    "Server-side request latency",
    ["api", "protocol", "method", "model", "version"],
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

PREDICTIONS = Counter(
    "serving_predictions", "Images answered, by predicted digit", ["model", "version", "digit"]
)
CONFIDENCE = Histogram(
    "serving_prediction_confidence",
    "Top-1 probability of each answered image",
    ["model", "version"],
    buckets=CONFIDENCE_BUCKETS,
)
INPUT_STATISTICS = {
    name: Histogram(
        f"serving_input_{name}",
        f"{name.replace('_', ' ').capitalize()} of each (sampled) input image (contract.quality)",
        ["model", "version"],
        buckets=BUCKETS[name],
    )
    for name in STATISTICS
}
BASELINE = Gauge(
    "serving_model_baseline",
    "The model card's baseline of a served version: input statistics (mean, std) on its training "
    "data, the share of low-confidence answers on its validation data",
    ["model", "version", "statistic", "moment"],
    # Every worker serving a version sets the same values (one card); "max" over the live
    # workers keeps them while any still serves it (one that dropped it has set 0), and a dead
    # worker's series go with it. All baseline values are >= 0.
    multiprocess_mode="livemax",
)

# The request in flight's (model, version) labels: set by the data plane, taken by the observer.
_NO_LABELS = ("", "")
_REQUEST_LABELS: ContextVar[tuple[str, str]] = ContextVar("serving_request_labels", default=_NO_LABELS)

# The labelled children per label set, looked up once: ``labels()`` costs more than the
# increment itself on the hot path. (Children live as long as their metric; only the baseline's
# are ever removed.)
_REQUEST_CHILDREN: dict[tuple[str, ...], tuple[Any, Any]] = {}


def request_addressed(model: str, version: int | None = None) -> None:
    """Record the model (and once chosen, the version) serving the request in flight."""
    _REQUEST_LABELS.set((model, "" if version is None else str(version)))


def take_request_labels() -> tuple[str, str]:
    """The (model, version) recorded for the request that just finished (``("", "")`` if none),
    and forget them for the next request of this thread or task."""
    labels = _REQUEST_LABELS.get()
    if labels is not _NO_LABELS:
        _REQUEST_LABELS.set(_NO_LABELS)
    return labels


def observe_request(
    api: str, protocol: str, method: str, code: str, model: str, version: str, seconds: float
) -> None:
    """Count one finished request and its latency."""
    key = (api, protocol, method, code, model, version)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        children = (REQUESTS.labels(*key), LATENCY.labels(api, protocol, method, model, version))
        _REQUEST_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def _observe_many(child: Any, values: np.ndarray, edges: Sequence[float]) -> None:
    """``child.observe(v)`` for each of ``values``, in one write per bucket: prometheus_client
    keeps a histogram child as one value per bucket (not cumulative; ``le`` semantics) and one
    for the sum (tests/serving/test_quality_metrics.py checks both ways give the same samples)."""
    if not len(values):
        return
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    child._sum.inc(float(values.sum(dtype=np.float64)))
    for bucket, count in zip(child._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)


class _Pending:
    """Answers waiting for a flush, as bytes and ints: copies, so that no request's arrays stay
    alive until the flush (kept alive, their memory would no longer be reused while still in the
    caches, which costs the request path more than these copies)."""

    __slots__ = ("count", "digits", "images", "probabilities")

    def __init__(self) -> None:
        self.count = 0  # images answered
        self.probabilities: list[bytes] = []  # float32 rows of NUM_CLASSES
        self.digits: list[int] = []
        self.images: list[bytes] = []  # float32 rows of PIXELS: the sampled images


class QualityRecorder:
    """The model-quality metrics of one model version, for one data plane.

    The request path only copies what was answered (``answered``: the probabilities, the
    digits, and every ``sample_every``-th image); ``flush`` computes the statistics of all of it
    at once (``contract.quality``, vectorised) and writes them in one write per bucket. A thread
    of each worker flushes every ``FLUSH_SECONDS`` (``start_flushing``), or sooner once
    ``FLUSH_IMAGES`` images wait; a scrape this process answers flushes first. (In several
    processes each metric write is a locked write to a memory-mapped file: per image and metric
    on the request path, these writes and the numpy calls per image would cost the server
    several times what this costs.) A scrape therefore sees a worker's answers up to
    ``FLUSH_SECONDS`` late; a worker killed outright loses them.
    """

    def __init__(self, model: str, version: int, sample_every: int = 1) -> None:
        self.labels = (model, str(version))
        self.sample_every = max(1, sample_every)
        self._lock = threading.Lock()  # the pending answers and the sample's position
        self._pending = _Pending()
        self._images_seen = 0  # images answered so far: where the 1-in-K sample stands
        self._flush_lock = threading.Lock()  # one flush at a time
        self._digits: dict[int, Any] = {}  # labelled children, made once
        self._confidence = CONFIDENCE.labels(*self.labels)
        self._inputs = {name: INPUT_STATISTICS[name].labels(*self.labels) for name in STATISTICS}
        _RECORDERS.add(self)

    def answered(self, images: np.ndarray, probabilities: np.ndarray, digits: np.ndarray) -> None:
        """Record one answer: its float32 images ([N, 28, 28, 1]), probabilities and digits."""
        count, every = len(digits), self.sample_every
        probability_bytes, digit_list = probabilities.tobytes(), digits.tolist()
        with self._lock:
            pending = self._pending
            pending.probabilities.append(probability_bytes)
            pending.digits += digit_list
            first = -self._images_seen % every  # the first of these images in the sample
            self._images_seen += count
            if first < count:
                pending.images.append(images[first::every].tobytes())
            pending.count += count
            waiting = pending.count
        if waiting >= FLUSH_IMAGES > waiting - count:
            _wake_flusher(self)
        elif waiting >= 4 * FLUSH_IMAGES:  # the flusher is far behind: bound the memory
            self.flush()

    def flush(self) -> None:
        """Compute and write what was answered since the last flush."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, _Pending()
            if not pending.count:
                return
            try:
                self._write(pending)
            except Exception:  # metrics never fail a request (a flush may run in one)
                logger.exception("model-quality metrics of %s version %s lost", *self.labels)

    def _write(self, pending: _Pending) -> None:
        for digit, count in collections.Counter(pending.digits).items():
            self._digit(digit).inc(count)
        probabilities = np.frombuffer(b"".join(pending.probabilities), np.float32)
        top = confidence(probabilities.reshape(-1, NUM_CLASSES))
        _observe_many(self._confidence, top, CONFIDENCE_BUCKETS)
        if pending.images:
            images = np.frombuffer(b"".join(pending.images), np.float32).reshape(-1, PIXELS)
            for name, values in input_statistics(images).items():
                _observe_many(self._inputs[name], values, BUCKETS[name])

    def _digit(self, digit: int) -> Any:
        child = self._digits.get(digit)
        if child is None:
            child = self._digits[digit] = PREDICTIONS.labels(*self.labels, str(digit))
        return child


FLUSH_SECONDS = 1.0
FLUSH_IMAGES = 2048  # images waiting that wake the flusher before its second is up
_RECORDERS: weakref.WeakSet[QualityRecorder] = weakref.WeakSet()  # those of live data planes
_WAKE = threading.Event()
_flushing_pid: int | None = None  # the process whose thread flushes (a forked child has none)


def flush_quality() -> None:
    """Compute and write every recorder's queued answers."""
    for recorder in list(_RECORDERS):
        recorder.flush()


def _wake_flusher(recorder: QualityRecorder) -> None:
    """Wake this process's flusher, or without one (a server in a test) flush right here."""
    if _flushing_pid == os.getpid():
        _WAKE.set()
    else:
        recorder.flush()


def start_flushing(interval: float = FLUSH_SECONDS) -> None:
    """Flush every ``interval`` seconds (sooner when woken) from a daemon thread of this
    process, and at its exit (a worker calls it once, in its own process)."""
    global _flushing_pid

    def flush_forever() -> None:
        while True:
            _WAKE.wait(interval)
            _WAKE.clear()
            flush_quality()

    if _flushing_pid == os.getpid():
        return
    _flushing_pid = os.getpid()
    threading.Thread(target=flush_forever, name="quality-metrics", daemon=True).start()
    atexit.register(flush_quality)


_BASELINE_SERIES: dict[tuple[str, str], list[tuple[str, str]]] = {}


def set_baseline(model: str, version: int, values: Mapping[tuple[str, str], float] | None) -> None:
    """The baseline series of one version, ``{(statistic, moment): value}``, while it serves;
    ``None`` once it no longer does: its series are removed (one process) or set to 0 (several
    processes, where prometheus_client cannot remove a series; see ``BASELINE``)."""
    key = (model, str(version))
    if values is not None:
        for (statistic, moment), value in values.items():
            BASELINE.labels(*key, statistic, moment).set(value)
        _BASELINE_SERIES[key] = list(values)
        return
    for statistic, moment in _BASELINE_SERIES.pop(key, ()):
        if os.environ.get(MULTIPROC_ENV):
            BASELINE.labels(*key, statistic, moment).set(0)
        else:
            BASELINE.remove(*key, statistic, moment)


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
    flush_quality()  # this process's own tallies; the other workers flush on their own
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

