"""The supervisor: starts the worker processes, replaces dead ones, drains on SIGTERM.

Process tree (``--num_workers`` N, default the CPU count):
  supervisor ─┬─ gRPC worker x N  (each binds --port with SO_REUSEPORT)
              └─ granian master ── REST worker x N  (granian shares --rest_api_port)
Python runs one core per process, so both protocols get one process per core (threads inside one
process are slower: docs/serving.md). A gRPC worker that dies is started again here;
granian replaces a dead REST worker (and the supervisor restarts granian itself if it dies).
Metrics from all processes meet in one ``PROMETHEUS_MULTIPROC_DIR`` owned by the supervisor.

SIGTERM (or SIGINT): every child gets SIGTERM, stops taking new requests, finishes those in
flight; the supervisor waits up to ``--shutdown_grace_period_seconds`` and kills what is left.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import multiprocess

from serving.settings import MULTIPROC_ENV, SETTINGS_ENV, Settings

logger = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies (no orphaned workers)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Child:
    """One child process the supervisor keeps running."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.role = role
        self.env = env
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        # Own process group: granian's workers are killed with their master if it must be.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.process.workers", self.role],
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        logger.info("started %s worker pid %d", self.role, self.process.pid)

    def kill_group(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()


class Supervisor:
    """Runs the server's processes until a signal asks it to stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="serving-metrics-"))
        env = dict(os.environ)
        env[SETTINGS_ENV] = settings.to_json()
        env[MULTIPROC_ENV] = str(self._metrics_dir)
        self.children = [_Child("grpc", env) for _ in range(settings.num_workers)]
        if settings.rest_api_port:
            self.children.append(_Child("rest", env))

    def _on_signal(self, signum: int, frame: object) -> None:
        logger.info("received signal %d, draining", signum)
        self._stop.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for child in self.children:
                child.start()
            while not self._stop.wait(0.25):
                self._replace_dead()
                self._forget_dead_metrics()
            return self._drain()
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _replace_dead(self) -> None:
        for child in self.children:
            code = child.poll()
            if code is None or self._stop.is_set():
                continue
            logger.error(
                "%s worker pid %d exited with %s; starting a new one",
                child.role,
                child.process.pid,
                code,
            )
            child.kill_group()  # a dead granian master may leave workers holding the port
            self._forget(child.process.pid)
            child.restarts += 1
            child.start()

    def _forget(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters stay, as Prometheus expects)."""
        multiprocess.mark_process_dead(pid, str(self._metrics_dir))

    def _forget_dead_metrics(self) -> None:
        # granian replaces REST workers without telling us: drop live gauges of any gone pid.
        for path in self._metrics_dir.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if not Path(f"/proc/{pid}").exists():
                self._forget(pid)
                path.unlink(missing_ok=True)

    def _drain(self) -> int:
        for child in self.children:
            if child.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_period_seconds
        for child in self.children:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                logger.error(
                    "%s worker pid %d did not stop within the grace period; killing",
                    child.role,
                    child.process.pid,
                )
                child.kill_group()
                child.process.wait()
        logger.info("all workers stopped")
        return 0
