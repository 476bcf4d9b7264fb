"""Worker processes: what runs inside each REST and gRPC worker.

Usage (started by ``serving.process.supervisor``, with the settings in ``SERVING_SETTINGS_JSON``):
  python -m serving.process.workers grpc   one gRPC worker (binds --port with SO_REUSEPORT)
  python -m serving.process.workers rest   granian's master, which forks --num_workers REST workers
                                   (RSGI: the Flask app behind ``serving.rest.gateway``; or
                                   granian's WSGI with ``--rest_api_interface wsgi``)

Each worker owns its models (each model's repository with its own poller and ONNX Runtime
sessions with one intra-op thread), so no model is shared between processes and any one may die
and be replaced. Which models they serve, they read from the supervisor's ``SERVING_STATE_DIR``
(``serving.core.control``): every worker follows it, and a runtime change answers once all have.
A worker accepts connections only once its repository's first scan is done (the gRPC server
starts after it; granian binds a REST worker's listener after its app factory returns), so a
new or respawned worker serves a version from its first request whenever one can load.
Slow clients (REST): headers within ``--rest_api_header_timeout_in_ms`` (granian closes the
connection), bodies within ``--rest_api_body_timeout_in_ms`` (the gateway answers 408; not in
WSGI mode), at most ``--rest_api_max_connections`` open connections per worker (granian's
backpressure: beyond it new connections wait in the kernel's accept queue).
After start-up every worker calls ``gc.freeze()``: the long-lived objects (Flask, protobuf
descriptors, the model) leave the collector's generations, which keeps full collections
triggered by nested JSON payloads short (long ones show as p99 spikes).

Imports: the heavy libraries are imported by the role that uses them, inside its function, and
nowhere else: granian's master forks the REST workers and must not load ONNX Runtime, grpcio or
the Prometheus metrics before it does, and a gRPC worker never needs Flask or granian. None of
these breaks a cycle (only the supervisor imports this module, for ``DRAIN_SIGNAL``).

Shutdown: ``DRAIN_SIGNAL`` (from the supervisor, to every process) turns the worker's readiness
off (REST ``/readyz``, ``/v2/health/ready`` and V2 model ready answer 503; gRPC health goes
NOT_SERVING) while it keeps serving; SIGTERM then stops it: listeners close, requests in flight
finish (gRPC here; REST in granian, which its master tells to stop).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from contract.types import AVAILABLE, ModelEntry
from serving.observability.logs import configure_logging
from serving.process.placement import pin_worker
from serving.settings import STATE_DIR_ENV, Settings

if TYPE_CHECKING:
    from flask import Flask

    from serving.core.dataplane import DataPlane
    from serving.rest.gateway import RSGIGateway

logger = logging.getLogger(__name__)
DRAIN_SIGNAL = signal.SIGUSR1  # the supervisor's "readiness off, keep serving"


def drain_seconds(settings: Settings) -> float:
    """How long the server keeps serving after SIGTERM with readiness off (within the grace)."""
    return min(max(0.0, settings.shutdown_drain_seconds), settings.shutdown_grace_period_seconds)


def _drain_on_signal(dataplane: DataPlane, role: str) -> None:
    """``DRAIN_SIGNAL`` turns this worker's readiness off; it keeps serving until SIGTERM."""

    def handler(signum: int, frame: object) -> None:
        dataplane.start_draining()
        logger.info("%s worker draining: readiness off, still serving until stopped", role)

    signal.signal(DRAIN_SIGNAL, handler)


def _served_versions_reporter(model: str, worker: str) -> Callable[[int, bool], None]:
    """The repository's ``on_loaded``: this worker's gauges and one log line each time it starts
    or stops serving a version (after the swap), so workers serving different versions show."""
    # Per role, not a cycle: the Prometheus metrics load in a worker, never in granian's master.
    from serving.observability import metrics

    def report(version: int, serving: bool) -> None:
        metrics.version_loaded(model, version, serving)
        metrics.worker_served_version(model, version, worker, serving)
        change = "now serves" if serving else "no longer serves"
        logger.info("worker %s %s %s version %d", worker, change, model, version)

    return report


def build_dataplane(settings: Settings, role: str) -> DataPlane:
    """The served models (each its repository, loaded and polling, and its optional batcher),
    following the desired models of ``SERVING_STATE_DIR``, and the data plane over them."""
    # Per role, not a cycle: ONNX Runtime and the Prometheus metrics load in a worker, never in
    # granian's forking master.
    from serving.core.batching import Batcher
    from serving.core.control import ModelControl, ModelStore
    from serving.core.dataplane import DataPlane
    from serving.core.models import ServedModels
    from serving.core.repository import ModelRepository
    from serving.observability import metrics

    worker = f"{role}-{os.getpid()}"

    def make_repository(entry: ModelEntry) -> ModelRepository:
        return ModelRepository(
            entry.name,
            entry.base_path,
            policy=entry.policy,
            labels=dict(entry.labels),
            poll_wait_seconds=settings.file_system_poll_wait_seconds,
            warm_up=settings.enable_model_warmup,
            intra_op_threads=settings.tensorflow_intra_op_parallelism,
            max_load_retries=settings.max_num_load_retries,
            load_retry_interval_seconds=settings.load_retry_interval_micros / 1e6,
            on_loaded=_served_versions_reporter(entry.name, worker),
            on_load_failed=lambda v: metrics.load_failed(entry.name, v),
        )

    def make_batcher() -> Batcher | None:
        if not settings.enable_batching:
            return None
        return Batcher(
            settings.max_batch_size,
            settings.batch_timeout_micros,
            settings.max_enqueued_batches,
            on_batch=metrics.BATCH_SIZE.observe,
        )

    models = ServedModels(make_repository, make_batcher)
    control = ModelControl(ModelStore(os.environ[STATE_DIR_ENV]), models, worker,
                           mode=settings.model_control_mode)
    control.start()  # the current models, loaded, before this worker serves
    metrics.start_flushing()  # this worker's model-quality tallies, every second
    return DataPlane(models, quality_sample_every=settings.quality_sample_every, control=control,
                     strict_readiness=settings.strict_readiness)


def _place(settings: Settings, role: str) -> None:
    """With ``--cpu_affinity``, pin this worker process to its CPU (``serving.process.placement``)."""
    if settings.cpu_affinity:
        pin_worker(os.environ[STATE_DIR_ENV], role)


def _served(dataplane: DataPlane) -> str:
    """``lenet5 [1], lenet5-ensemble [1]``: each model and its AVAILABLE versions (for the log)."""
    return ", ".join(
        f"{model.name} {[s.version for s in model.repository.statuses() if s.state == AVAILABLE]}"
        for model in dataplane.models.values()
    ) or "no model"


def _freeze_heap() -> None:
    """Move everything alive after start-up out of the collector's generations."""
    gc.collect()
    gc.freeze()


def rest_app() -> RSGIGateway | Flask:
    """Granian's factory, in one REST worker process: the Flask app behind the RSGI gateway
    (or bare, for granian's WSGI interface: ``--rest_api_interface wsgi``).

    It returns only once the repository's first scan is done, so a worker (a respawned one too)
    starts accepting with a version loaded whenever any version on disk can load.
    """
    # Per role, not a cycle: Flask is a REST worker's alone.
    from serving.rest.app import create_app
    from serving.rest.gateway import RSGIGateway

    settings = Settings.from_worker_env()
    configure_logging(settings.log_level)
    _place(settings, "rest")
    dataplane = build_dataplane(settings, "rest")
    app = create_app(
        dataplane,
        max_request_bytes=settings.max_request_bytes,
        timeout_seconds=settings.rest_api_timeout_in_ms / 1000,
        access_log=settings.access_log,
    )
    if settings.rest_api_interface == "rsgi":
        app = RSGIGateway(
            app,
            body_timeout_seconds=settings.rest_api_body_timeout_in_ms / 1000,
            max_body_bytes=settings.max_request_bytes,
            threads=settings.rest_api_num_threads,
        )
    _drain_on_signal(dataplane, "REST")
    _freeze_heap()
    logger.info("REST worker ready on %s:%d (serving %s)", settings.host, settings.rest_api_port,
                _served(dataplane))
    return app


def _exit_if_forked(master_pid: int, granian_handler: Any) -> Any:
    """A SIGTERM/SIGINT handler for granian's master that a worker still starting obeys too.

    granian forks its workers with the master's Python signal handlers; a worker replaces them
    only once its app is loaded. A SIGTERM that reached a worker still loading its model went to
    the master's handler, did nothing, and the worker then served until killed at the end of the
    grace period. In a forked worker this handler exits at once (it has served nothing yet).
    """

    def handler(signum: int, frame: object) -> None:
        if os.getpid() == master_pid:
            granian_handler(signum, frame)
        else:
            os.write(2, f"REST worker {os.getpid()} stopped while starting\n".encode())
            os._exit(0)

    return handler


def run_rest_master(settings: Settings) -> None:
    """granian's process manager for the REST workers (it respawns a worker that dies)."""
    # Per role, not a cycle: only the REST master runs granian.
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    rsgi = settings.rest_api_interface == "rsgi"  # bodies awaited without a thread
    server = Server(
        "serving.process.workers:rest_app",  # by name: this module runs as __main__ here
        address=settings.host,
        port=settings.rest_api_port,
        interface=Interfaces.RSGI if rsgi else Interfaces.WSGI,
        factory=True,
        workers=settings.num_workers,
        blocking_threads=1 if rsgi else settings.rest_api_num_threads,  # RSGI: the gateway's
        websockets=False,
        backpressure=settings.rest_api_max_connections,  # open connections per worker
        http1_settings=HTTP1Settings(header_read_timeout=settings.rest_api_header_timeout_in_ms),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        # granian hears SIGTERM only after the drain window: the rest of the grace period.
        workers_kill_timeout=max(1, int(settings.shutdown_grace_period_seconds - drain_seconds(settings))),
        log_access=False,  # our own access log skips probes and is JSON
        log_level=settings.log_level.lower(),
    )

    @server.on_startup  # after granian installs its signal handlers, before it forks workers
    def _workers_starting_obey_sigterm() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_if_forked(os.getpid(), signal.getsignal(signum)))

    server.serve()


def run_grpc_worker(settings: Settings) -> None:
    """One gRPC worker: serve until SIGTERM, then drain within the grace period."""
    # Per role, not a cycle: grpcio is a gRPC worker's alone.
    from serving.grpc.server import build_server, set_health

    _place(settings, "grpc")  # before any thread starts: they all inherit the CPU
    dataplane = build_dataplane(settings, "grpc")
    server, health_servicer, _ = build_server(
        dataplane,
        f"{settings.host}:{settings.port}",
        max_threads=settings.grpc_max_threads,
        max_message_bytes=settings.max_request_bytes,
        access_log=settings.access_log,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _drain_on_signal(dataplane, "gRPC")  # health follows: NOT_SERVING below, still serving
    server.start()
    _freeze_heap()
    logger.info("gRPC worker ready on %s:%d", settings.host, settings.port)
    serving = None
    # Health follows readiness (a version AVAILABLE); checked often enough for probes.
    while not stop.wait(0.2):
        if dataplane.ready != serving:
            serving = dataplane.ready
            set_health(health_servicer, serving)
    dataplane.start_draining()
    set_health(health_servicer, False)
    # New RPCs are refused at once; in-flight ones get the rest of the grace period to finish.
    remaining = settings.shutdown_grace_period_seconds - drain_seconds(settings)
    server.stop(max(0.0, remaining - 0.5)).wait()
    if dataplane.control is not None:
        dataplane.control.stop()
    dataplane.models.stop()
    logger.info("gRPC worker drained and stopped")


ROLES = {"grpc": run_grpc_worker, "rest": run_rest_master}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: python -m serving.process.workers {{{'|'.join(ROLES)}}}", file=sys.stderr)
        return 2
    settings = Settings.from_worker_env()
    configure_logging(settings.log_level)
    # The supervisor turns Ctrl-C into SIGTERM for every worker; ignore the terminal's SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ROLES[argv[0]](settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
