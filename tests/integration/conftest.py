"""Real server processes for integration tests, on 127.0.0.1 with free ports.

Fixtures:
- ``running_server`` (session): ``python -m serving`` over a copy of the ``model_base_path``
  repository (exported by the training package; fixture from tests/conftest.py). Yields a
  ``RunningServer`` with ``rest_url`` ("http://127.0.0.1:PORT"), ``grpc_target``
  ("127.0.0.1:PORT"), ``model_base_path``; stopped with SIGTERM at the end. Shared with the
  client's integration tests: keep this interface stable.
- ``server_factory`` (function): starts extra servers with their own flags / repositories for
  tests that add, corrupt or kill things; each is stopped at the end of its test.

``start_server`` starts one over a repository or a model config file; ``BackgroundLoad`` is
client threads predicting until a block ends, counting every failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from contract import MODEL_NAME, READINESS_PATH, model_versions, version_path
from loadtest.server import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0  # two cores, a training grid in the background: generous but bounded
STOP_TIMEOUT_S = 40.0


@dataclass
class RunningServer:
    """A ``python -m serving`` process tree and where to reach it."""

    rest_url: str
    grpc_target: str
    model_base_path: Path
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def descendants(self) -> list[int]:
        """Pids of every process under the supervisor (workers, granian's master and workers)."""
        try:
            return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.rest_url + READINESS_PATH, timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if self.is_ready() and _grpc_ready(self.grpc_target):
                return
            time.sleep(0.2)
        raise TimeoutError(f"server not ready within {timeout:.0f}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait (bounded), SIGKILL the whole tree if it hangs; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in self.descendants():
                    _kill(pid)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _grpc_ready(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def copy_repository(source: Path, destination: Path, versions: list[int] | None = None) -> Path:
    """A private model repository holding copies of ``source``'s versions (default: all)."""
    destination.mkdir(parents=True, exist_ok=True)
    for version in versions if versions is not None else model_versions(source):
        shutil.copytree(version_path(source, version), version_path(destination, version))
    return destination


def start_server(
    model_base_path: Path | None,
    log_path: Path,
    *extra_args: str,
    wait: bool = True,
    model_config_file: Path | None = None,
) -> RunningServer:
    """Start ``python -m serving`` on free loopback ports and (by default) wait until ready: over
    one repository, or over the models of ``model_config_file`` (then ``model_base_path`` None)."""
    grpc_port, rest_port = free_port(), free_port()
    if model_config_file is not None:
        models = ["--model_config_file", str(model_config_file)]
    else:
        models = ["--model_name", MODEL_NAME, "--model_base_path", str(model_base_path)]
    args = [
        sys.executable,
        "-m",
        "serving",
        *models,
        "--host",
        "127.0.0.1",
        "--port",
        str(grpc_port),
        "--rest_api_port",
        str(rest_port),
        "--file_system_poll_wait_seconds",
        "0.5",
        *extra_args,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    log_file = open(log_path, "wb")  # noqa: SIM115 - the child writes it for its whole life
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    server = RunningServer(
        rest_url=f"http://127.0.0.1:{rest_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        model_base_path=model_base_path or Path(model_config_file).parent,
        process=process,
        log_path=log_path,
        args=args,
    )
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(timeout=10)
            raise
    return server


class BackgroundLoad:
    """Client threads, one per named client, each sending :meth:`request` again and again until
    the block ends (or ``deadline_s``): every exception a request raises is a recorded failure."""

    def __init__(self, clients: dict[str, Callable[[], Any]], deadline_s: float = 120.0) -> None:
        self.stop = threading.Event()
        self.failures: list[tuple[str, str]] = []
        self.count = 0
        self.deadline_s = deadline_s
        self.threads = [threading.Thread(target=self._loop, args=(name, make), daemon=True)
                        for name, make in clients.items()]

    def request(self, name: str, client: Any) -> None:
        raise NotImplementedError

    def _loop(self, name: str, make_client: Callable[[], Any]) -> None:
        deadline = time.monotonic() + self.deadline_s
        with make_client() as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.request(name, client)
                except Exception as exc:  # every failure counts, whatever its type
                    self.failures.append((name, repr(exc)))
                self.count += 1

    def __enter__(self) -> BackgroundLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture(scope="session")
def running_server(
    model_base_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real server for the whole session (read-only use: do not add versions to it)."""
    workdir = tmp_path_factory.mktemp("running_server")
    repository = copy_repository(Path(model_base_path), workdir / MODEL_NAME)
    server = start_server(repository, workdir / "server.log")
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``server_factory(repository, *flags, wait=True)`` -> a server stopped after the test."""
    started: list[RunningServer] = []

    def factory(repository: Path, *extra_args: str, wait: bool = True) -> RunningServer:
        server = start_server(repository, tmp_path / f"server-{len(started)}.log", *extra_args, wait=wait)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
