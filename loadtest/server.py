"""The server under test: its CPU time, and our own ``python -m serving`` when the benchmark starts one.

Server CPU per request is the user+system time of the server's main process and every process
under it (workers, granian's processes), read before and after a test window: it does not depend
on how fast the load generator is, which on a shared machine matters.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # a Locust dependency

import contract
from client.api import ModelSpec, connect
from contract.errors import ServingError, Unavailable

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0  # loading and warming a model on two busy cores
SETTLE_S = 2.0  # after the first ready answer, so that every worker is up (one may answer first)
STOP_TIMEOUT_S = 40.0


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of a process and all its descendants so far; NaN when unknown."""
    if pid is None:
        return math.nan
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return math.nan
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:  # a process that ended in between took its time with it
            continue
        total += times.user + times.system
    return total


def pinned_to(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning a child process (and every thread it starts) to ``cpu``; None
    when ``cpu`` is None (not pinned)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StartedServer:
    """A ``python -m serving`` process tree on loopback, started by the benchmark."""

    process: subprocess.Popen
    rest_url: str
    grpc_target: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> int:
        """SIGTERM (the server drains and exits), SIGKILL if it overruns; the exit status."""
        return stop_process(self.process, STOP_TIMEOUT_S, "server")


def stop_process(process: subprocess.Popen, timeout: float, what: str) -> int:
    """SIGTERM ``process``, then SIGKILL it and its children if it outlives ``timeout``; its exit
    status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s %d did not stop within %.0f s; killing it", what, process.pid, timeout)
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
    return process.returncode


def start_server(
    model_base_path: str | Path | None,
    model_name: str | Sequence[str],
    log_path: Path,
    extra_args: str = "",
    *,
    source: Path | None = None,
    model_config_file: str | Path | None = None,
) -> StartedServer:
    """Start our server on free loopback ports; return once every model named serves.

    The models: one, ``model_name`` over the repository ``model_base_path``; or, with
    ``model_config_file`` (TF Serving's ModelServerConfig text format), those the file lists,
    ``model_name`` then naming the ones to wait for (a name or a list of names).
    ``source``: run the server code of another source tree (e.g. a baseline revision exported
    by the perf benchmark) instead of the installed one: it goes first on ``PYTHONPATH`` and is
    the working directory, so ``python -m serving`` and its workers import from it.
    """
    names = [model_name] if isinstance(model_name, str) else list(model_name)
    if not names:
        raise ValueError("name at least one model to wait for")
    grpc_port, rest_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "serving", *_model_flags(model_base_path, names, model_config_file),
        "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        *shlex.split(extra_args),
    ]  # fmt: skip
    env = None
    if source is not None:
        source = Path(source).resolve()
        path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTHONPATH=path)
    log.info("starting %s%s", " ".join(command), f" from {source}" if source else "")
    with open(log_path, "wb") as log_file:  # the child keeps its own handle
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=source,
            env=env,
        )
    server = StartedServer(process, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", log_path)
    try:
        _wait_ready(server, names)
    except BaseException:
        server.stop()
        raise
    return server


def _model_flags(
    model_base_path: str | Path | None, names: list[str], model_config_file: str | Path | None
) -> list[str]:
    """The server's model flags: the config file, or one model's name and repository."""
    if model_config_file is not None:
        return ["--model_config_file", str(Path(model_config_file).resolve())]
    if model_base_path is None or len(names) != 1:
        raise ValueError("one model name and its base path, or a model config file")
    return ["--model_name", names[0], "--model_base_path", str(Path(model_base_path).resolve())]


def _wait_ready(server: StartedServer, model_names: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with status {server.process.returncode}; its log "
                f"{server.log_path}:\n{server.log_tail()}"
            )
        if _rest_ready(server.rest_url) and all(_grpc_available(server.grpc_target, m) for m in model_names):
            time.sleep(SETTLE_S)
            return
        time.sleep(0.3)
    raise Unavailable(
        f"the server started here was not ready with {', '.join(model_names)} within "
        f"{READY_TIMEOUT_S:.0f} s; its log {server.log_path}:\n{server.log_tail()}"
    )


def _rest_ready(rest_url: str) -> bool:
    try:
        with urllib.request.urlopen(rest_url + contract.READINESS_PATH, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _grpc_available(target: str, model_name: str) -> bool:
    try:
        with connect(grpc=target, spec=ModelSpec(name=model_name), timeout=2) as client:
            return any(v.available for v in client.status())
    except ServingError:
        return False
