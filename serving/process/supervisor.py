"""The supervisor: checks the ports, starts the worker processes, restarts dead ones with a
backoff (and gives up on one that keeps crashing), drains on SIGTERM.

Process tree (``--num_workers`` N, default the CPU count):
  supervisor ─┬─ gRPC worker x N  (each binds --port with SO_REUSEPORT)
              └─ granian master ── REST worker x N  (granian shares --rest_api_port)
Python runs one core per process, so both protocols get one process per core (threads inside one
process are slower: docs/serving.md). A gRPC worker that dies is started again here;
granian replaces a dead REST worker (and the supervisor restarts granian itself if it dies).
Metrics from all processes meet in one ``PROMETHEUS_MULTIPROC_DIR`` owned by the supervisor,
and the desired models in one ``SERVING_STATE_DIR`` (``serving.core.control``): the supervisor
writes the first generation before any worker starts and re-reads ``--model_config_file``
(``serving.process.model_config``).

Start-up: both ports must be free on ``--host`` (a plain bind, without the SO_REUSEPORT the
workers use, which would let a second server silently share them); else exit status 1 at once.

Restarts: a child that exits unasked is started again after a backoff that doubles with each
crash within ``--worker_restart_window_seconds`` (from ``_FIRST_BACKOFF_S`` up to
``_MAX_BACKOFF_S``); one that crashes more than ``--max_worker_restarts`` times within the window
stops the whole server with exit status 1, so an orchestrator sees the failure. Crashes older
than the window are forgotten: a worker that served for a while and then died is restarted.

SIGTERM (or SIGINT): every child gets ``DRAIN_SIGNAL`` (readiness answers 503 / NOT_SERVING,
requests are still served) for ``--shutdown_drain_seconds``, then SIGTERM (listeners close,
in-flight requests finish); the supervisor kills what is left at the end of
``--shutdown_grace_period_seconds`` (counted from the signal). A second signal ends the drain
window at once.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import multiprocess

from contract.errors import InvalidArgument
from serving.core.control import ModelStore
from serving.process.model_config import ConfigFileWatcher, initial_models
from serving.process.workers import DRAIN_SIGNAL, drain_seconds
from serving.settings import MULTIPROC_ENV, SETTINGS_ENV, STATE_DIR_ENV, Settings

logger = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_PORT_TAKEN = 1  # a port is not free on --host: nothing was started
EXIT_WORKER_CRASHING = 1  # a worker crashed more than --max_worker_restarts times in the window
EXIT_BAD_CONFIG = 2  # --model_config_file cannot be read or parsed: nothing was started
_TICK_S = 0.25  # how often dead children are looked for
_FIRST_BACKOFF_S = 0.25  # the wait before the first restart; it doubles with each recent crash
_MAX_BACKOFF_S = 8.0


def _prepare_child() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies (no orphaned workers), and
    ignore ``DRAIN_SIGNAL`` until the worker installs its handler (it survives exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)


def _bind_error(host: str, port: int) -> str | None:
    """Why ``port`` cannot be listened on at ``host`` now; None when it is free.

    No SO_REUSEPORT: a listener of another server on the port (which the workers' SO_REUSEPORT
    would join) makes the bind fail. SO_REUSEADDR, as the servers themselves bind: connections
    left in TIME_WAIT by a server stopped a moment ago do not count, only listeners do.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot be bound: the host does not resolve ({exc})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "is already in use (another server on it?)"
                return f"cannot be bound: {exc.strerror or exc}"
    return None


def _exit_text(code: int) -> str:
    """``Popen.returncode`` in words."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:  # a signal without a name (real-time ones)
        return f"killed by signal {-code}"


class _Child:
    """One child process the supervisor keeps running."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.role = role
        self.env = env
        self.process: subprocess.Popen | None = None
        self.crashes: collections.deque[float] = collections.deque()  # within the window
        self.restart_at: float | None = None  # dead, to be started again at this time

    def start(self) -> None:
        # Own process group: granian's workers are signalled (drain, kill) with their master.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.process.workers", self.role],
            env=self.env,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )
        logger.info("started %s worker pid %d", self.role, self.process.pid)

    def signal_group(self, signum: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL)

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def recent_crashes(self, now: float, window: float) -> int:
        """Record a crash now; how many there were within ``window`` (<= 0: ever), this one too."""
        self.crashes.append(now)
        while window > 0 and self.crashes[0] <= now - window:
            self.crashes.popleft()
        return len(self.crashes)


class Supervisor:
    """Runs the server's processes until a signal asks it to stop or a worker keeps crashing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._hurry = threading.Event()  # a second signal: no drain window
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="serving-metrics-"))
        self._state_dir = Path(tempfile.mkdtemp(prefix="serving-state-"))
        self.store = ModelStore(self._state_dir)
        self._config_watcher: ConfigFileWatcher | None = None
        env = dict(os.environ)
        env[SETTINGS_ENV] = settings.to_json()
        env[MULTIPROC_ENV] = str(self._metrics_dir)
        env[STATE_DIR_ENV] = str(self._state_dir)
        self.children = [_Child("grpc", env) for _ in range(settings.num_workers)]
        if settings.rest_api_port:
            self.children.append(_Child("rest", env))

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop.is_set():
            self._hurry.set()
            return
        logger.info("received signal %d, draining", signum)
        self._stop.set()

    def run(self) -> int:
        """The exit status: 0 after a signal, ``EXIT_PORT_TAKEN``, ``EXIT_BAD_CONFIG``,
        ``EXIT_WORKER_CRASHING``."""
        try:
            taken = self._taken_port()
            if taken is not None:
                logger.error("cannot start: %s; nothing started", taken)
                return EXIT_PORT_TAKEN
            try:
                models, source = initial_models(self.settings)
            except InvalidArgument as exc:
                logger.error("cannot start: %s; nothing started", exc.message)
                return EXIT_BAD_CONFIG
            self.store.initialize(models, source)
            self._config_watcher = ConfigFileWatcher(self.settings, self.store)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            for child in self.children:
                child.start()
            failure = self._serve()
            if failure is not None:
                logger.error("%s: stopping the server (exit status %d)", failure, EXIT_WORKER_CRASHING)
            self._drain()
            return 0 if failure is None else EXIT_WORKER_CRASHING
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            shutil.rmtree(self._state_dir, ignore_errors=True)

    def _taken_port(self) -> str | None:
        ports = [("gRPC", "--port", self.settings.port)]
        if self.settings.rest_api_port:
            ports.append(("REST", "--rest_api_port", self.settings.rest_api_port))
        for api, flag, port in ports:
            error = _bind_error(self.settings.host, port)
            if error is not None:
                return f"{api} port {port} ({flag}) on {self.settings.host} {error}"
        return None

    def _serve(self) -> str | None:
        """Until a signal (None) or a worker that keeps crashing (why the server must stop)."""
        while not self._stop.wait(_TICK_S):
            failure = self._replace_dead()
            if failure is not None:
                return failure
            self._forget_dead_metrics()
            if self._config_watcher is not None:
                self._config_watcher.poll()
        return None

    def _replace_dead(self) -> str | None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self._stop.is_set():
                    child.restart_at = None
                    child.start()
                continue
            code = child.poll()
            if code is not None and not self._stop.is_set():
                failure = self._crashed(child, code, now)
                if failure is not None:
                    return failure
        return None

    def _crashed(self, child: _Child, code: int, now: float) -> str | None:
        """Schedule the restart of a child that exited unasked; why to stop if it keeps crashing."""
        assert child.process is not None
        child.kill_group()  # a dead granian master may leave workers holding the port
        self._forget(child.process.pid)
        limit, window = self.settings.max_worker_restarts, self.settings.worker_restart_window_seconds
        crashes = child.recent_crashes(now, window)
        within = f"within {window:g} s" if window > 0 else "in all"
        if 0 <= limit < crashes:
            return (
                f"{child.role} worker crashed {crashes} times {within} (last pid "
                f"{child.process.pid}, {_exit_text(code)}), more than --max_worker_restarts "
                f"{limit} allows"
            )
        delay = min(_FIRST_BACKOFF_S * 2 ** (crashes - 1), _MAX_BACKOFF_S)
        child.restart_at = now + delay
        logger.error(
            "%s worker pid %d exited (%s), crash %d %s; starting a new one in %g s",
            child.role,
            child.process.pid,
            _exit_text(code),
            crashes,
            within,
            delay,
        )
        return None

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

    def _live(self) -> list[_Child]:
        return [c for c in self.children if c.process is not None and c.poll() is None]

    def _drain(self) -> None:
        """Drain window (readiness off, still serving), SIGTERM, kill at the grace period's end."""
        deadline = time.monotonic() + self.settings.shutdown_grace_period_seconds
        window = drain_seconds(self.settings)
        for child in self._live():
            child.signal_group(DRAIN_SIGNAL)  # granian's workers too: the whole group
        if window > 0 and self._live():
            logger.info("readiness off; still serving for %g s (--shutdown_drain_seconds)", window)
            end = time.monotonic() + window
            while self._live() and time.monotonic() < end and not self._hurry.wait(_TICK_S):
                pass
        for child in self._live():
            child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "%s worker pid %d did not stop within the grace period; killing",
                    child.role,
                    child.process.pid,
                )
                child.kill_group()
                child.process.wait()
        logger.info("all workers stopped")
