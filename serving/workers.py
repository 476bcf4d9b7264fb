"""Worker processes: what runs inside each REST and gRPC worker.

Usage (started by ``serving.supervisor``, with the settings in ``SERVING_SETTINGS_JSON``):
  python -m serving.workers grpc   one gRPC worker (binds --port with SO_REUSEPORT)
  python -m serving.workers rest   granian's master, which forks --num_workers WSGI workers

Each worker owns its model repository (its own poller and ONNX Runtime session with one
intra-op thread), so no state is shared between processes and any one may die and be replaced.
After start-up every worker calls ``gc.freeze()``: the long-lived objects (Flask, protobuf
descriptors, the model) leave the collector's generations, which keeps full collections
triggered by nested JSON payloads short (they caused 60-80 ms p99 spikes in a peer server).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading

from serving.settings import Settings

SETTINGS_ENV = "SERVING_SETTINGS_JSON"
logger = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (structured logs); access lines are already JSON."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "serving.access":
            return message
        entry = {
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            "message": message,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def build_dataplane(
    settings: Settings,
):  # -> DataPlane (imported lazily: keeps the supervisor light)
    """Repository (loaded and polling), optional batcher and the data plane over them."""
    from serving import metrics
    from serving.batching import Batcher
    from serving.dataplane import DataPlane
    from serving.repository import ModelRepository

    repository = ModelRepository(
        settings.model_name,
        settings.model_base_path,
        policy=settings.model_version_policy,
        labels=settings.version_label_map,
        poll_wait_seconds=settings.file_system_poll_wait_seconds,
        warm_up=settings.enable_model_warmup,
        intra_op_threads=settings.tensorflow_intra_op_parallelism,
        on_loaded=lambda v, loaded: metrics.version_loaded(settings.model_name, v, loaded),
        on_load_failed=lambda v: metrics.load_failed(settings.model_name, v),
    )
    batcher = None
    if settings.enable_batching:
        batcher = Batcher(
            settings.max_batch_size,
            settings.batch_timeout_micros,
            settings.max_enqueued_batches,
            on_batch=metrics.BATCH_SIZE.observe,
        )
    dataplane = DataPlane(repository, batcher)
    repository.start()
    return dataplane


def settings_from_env() -> Settings:
    return Settings.from_json(os.environ[SETTINGS_ENV])


def rest_app():
    """Granian's WSGI factory: the Flask app of one REST worker process."""
    from serving.rest import create_app

    settings = settings_from_env()
    configure_logging(settings.log_level)
    dataplane = build_dataplane(settings)
    app = create_app(
        dataplane,
        max_request_bytes=settings.max_request_bytes,
        timeout_seconds=settings.rest_api_timeout_in_ms / 1000,
        access_log=settings.access_log,
    )
    gc.collect()
    gc.freeze()
    logger.info("REST worker ready on %s:%d", settings.host, settings.rest_api_port)
    return app


def run_rest_master(settings: Settings) -> None:
    """granian's process manager for the REST workers (it respawns a worker that dies)."""
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        "serving.workers:rest_app",
        address=settings.host,
        port=settings.rest_api_port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=settings.num_workers,
        blocking_threads=settings.rest_api_num_threads,
        backpressure=max(64, settings.rest_api_num_threads * 64),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=max(1, int(settings.shutdown_grace_period_seconds)),
        log_access=False,  # our own access log skips probes and is JSON
        log_level=settings.log_level.lower(),
    ).serve()


def run_grpc_worker(settings: Settings) -> None:
    """One gRPC worker: serve until SIGTERM, then drain within the grace period."""
    from serving.grpc_server import build_server, set_health

    dataplane = build_dataplane(settings)
    server, health_servicer, _ = build_server(
        dataplane,
        f"{settings.host}:{settings.port}",
        max_threads=settings.grpc_max_threads,
        max_message_bytes=settings.max_request_bytes,
        access_log=settings.access_log,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    gc.collect()
    gc.freeze()
    logger.info("gRPC worker ready on %s:%d", settings.host, settings.port)
    serving = None
    # Health follows readiness (a version AVAILABLE); checked often enough for probes.
    while not stop.wait(0.2):
        if dataplane.ready != serving:
            serving = dataplane.ready
            set_health(health_servicer, serving)
    dataplane.start_draining()
    set_health(health_servicer, False)
    # New RPCs are refused at once; in-flight ones get the grace period to finish.
    server.stop(max(0.0, settings.shutdown_grace_period_seconds - 0.5)).wait()
    dataplane.repository.stop()
    if dataplane.batcher is not None:
        dataplane.batcher.close()
    logger.info("gRPC worker drained and stopped")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"grpc", "rest"}:
        print("usage: python -m serving.workers {grpc|rest}", file=sys.stderr)
        return 2
    settings = settings_from_env()
    configure_logging(settings.log_level)
    # The supervisor turns Ctrl-C into SIGTERM for every worker; ignore the terminal's SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv[0] == "grpc":
        run_grpc_worker(settings)
    else:
        run_rest_master(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
