"""The fault injector: seeded, random faults against a running server and its model repository.

Every few seconds (a seeded random interval around ``--fault-interval``) it does one of these,
each once per round, the rounds in seeded random orders:

- ``kill``        SIGKILL one worker (a gRPC worker, or one of granian's REST workers)
- ``stop``        SIGSTOP one worker, then SIGCONT it a moment later
- ``publish``     a new version, copied aside and renamed in (an atomic export)
- ``corrupt``     a new version whose ``model.onnx`` is garbage, renamed in
- ``slow_copy``   a new version written slowly in place (``kubectl cp``, rsync)
- ``half_sent``   a few REST requests whose headers or bodies stop halfway, held open
- ``oversized``   a REST body and a gRPC message over ``--max_request_bytes`` (413 / RESOURCE_EXHAUSTED)
- ``malformed``   REST bodies that are no JSON and gRPC bytes that are no message (400 / an error)

Each fault is an ``Event`` (when, what, to whom); abusive requests also record what the server
answered, and an abuse answered with a 5xx is a finding of the soak.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from contract import ONNX_FILENAME, PREDICT_RPC, REST_MODELS_PREFIX, model_versions, version_path
from loadtest.server import StartedServer

log = logging.getLogger(__name__)

FAULTS = ("kill", "stop", "publish", "corrupt", "slow_copy", "half_sent", "oversized", "malformed")
WORKER_MODULE = b"serving.process.workers"
SLOW_COPY_S = 2.0  # how long a slow in-place copy takes to write model.onnx
STOP_S = 1.0  # how long a stopped worker stays stopped
HOLD_S = 2.0  # how long half-sent requests are held open


@dataclass
class Event:
    """One fault: seconds since the soak began, its kind, its target, what came back."""

    at: float
    kind: str
    detail: str = ""
    answers: list[str] = field(default_factory=list)  # abusive requests: the answers' statuses


def workers(server: StartedServer) -> list[int]:
    """The pids of the server's workers: gRPC workers and granian's REST workers (not its master)."""
    found = []
    for proc in psutil.Process(server.pid).children(recursive=True):
        try:
            cmdline = [part.encode() for part in proc.cmdline()]
            parent = proc.ppid()
        except psutil.Error:
            continue
        if WORKER_MODULE not in cmdline:
            continue
        if b"grpc" in cmdline or parent != server.pid:  # a REST worker is the master's child
            found.append(proc.pid)
    return found


def _request(path: str, length: int, close: bool = False) -> bytes:
    """A POST's head announcing a ``length``-byte body."""
    extra = "Connection: close\r\n" if close else ""
    return f"POST {path} HTTP/1.1\r\nHost: chaos\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


def _http_status(raw: bytes) -> str:
    """The status code of a raw HTTP answer ("closed" when the server sent nothing)."""
    parts = raw.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and raw.startswith(b"HTTP/") else "closed"


class Injector:
    """Injects ``FAULTS`` at random (``rng``) into ``server`` over ``repository`` (its base path)."""

    def __init__(
        self, server: StartedServer, repository: Path, rng: random.Random, limits: tuple[float, int]
    ) -> None:
        self.server = server
        self.repository = repository
        self.rng = rng
        self.interval, self.max_request_bytes = limits
        self.events: list[Event] = []
        self.epoch = time.monotonic()
        self.template = version_path(repository, max(model_versions(repository)))
        self.actions: dict[str, Callable[[], Event]] = {
            "kill": self.kill_worker,
            "stop": self.stop_worker,
            "publish": self.publish,
            "corrupt": self.corrupt,
            "slow_copy": self.slow_copy,
            "half_sent": self.half_sent,
            "oversized": self.oversized,
            "malformed": self.malformed,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fault-injector", daemon=True)

    def start(self, epoch: float) -> None:
        self.epoch = epoch
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _now(self) -> float:
        return time.monotonic() - self.epoch

    def _kinds(self) -> Iterator[str]:
        """Every fault once per round, each round in a new seeded order: a short soak still
        makes every kind of fault."""
        while True:
            order = list(FAULTS)
            self.rng.shuffle(order)
            yield from order

    def _loop(self) -> None:
        kinds = self._kinds()
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            kind = next(kinds)
            try:
                event = self.actions[kind]()
            except Exception as exc:  # a fault that could not be made is logged, never fatal
                log.warning("fault %s failed: %s", kind, exc)
                event = Event(self._now(), kind, f"not made: {exc}")
            self.events.append(event)

    # --- processes ---------------------------------------------------------------------------
    def kill_worker(self) -> Event:
        pid = self.rng.choice(workers(self.server))
        at = self._now()
        os.kill(pid, signal.SIGKILL)
        return Event(at, "kill", f"worker {pid}")

    def stop_worker(self) -> Event:
        pid = self.rng.choice(workers(self.server))
        at = self._now()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STOP_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        return Event(at, "stop", f"worker {pid} for {STOP_S:g} s")

    # --- the model repository ----------------------------------------------------------------
    def _next_version(self) -> int:
        return max(model_versions(self.repository)) + 1

    def _staged(self, version: int, onnx: bytes | None) -> Path:
        """A copy of the template version outside the repository, ``model.onnx`` replaced if
        ``onnx`` is given; renamed in by the caller (one atomic step)."""
        staging = self.repository.parent / f".staging-{version}"
        shutil.copytree(self.template, staging)
        if onnx is not None:
            (staging / ONNX_FILENAME).write_bytes(onnx)
        return staging

    def publish(self) -> Event:
        version = self._next_version()
        staging = self._staged(version, None)
        at = self._now()
        staging.rename(version_path(self.repository, version))
        return Event(at, "publish", f"version {version}")

    def corrupt(self) -> Event:
        version = self._next_version()
        staging = self._staged(version, self.rng.randbytes(4096))
        at = self._now()
        staging.rename(version_path(self.repository, version))
        return Event(at, "corrupt", f"version {version}")

    def slow_copy(self) -> Event:
        version = self._next_version()
        target = version_path(self.repository, version)
        at = self._now()
        target.mkdir()
        for item in self.template.iterdir():
            if item.name != ONNX_FILENAME:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)
        data = (self.template / ONNX_FILENAME).read_bytes()
        chunks = 20
        with open(target / ONNX_FILENAME, "wb") as out:
            for start in range(0, len(data), -(-len(data) // chunks)):
                out.write(data[start : start + -(-len(data) // chunks)])
                out.flush()
                time.sleep(SLOW_COPY_S / chunks)
        return Event(at, "slow_copy", f"version {version} over {SLOW_COPY_S:g} s")

    # --- abusive clients ---------------------------------------------------------------------
    def _rest_address(self) -> tuple[str, int]:
        host, port = self.server.rest_url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def _raw(self, payload: bytes, hold: float = 0.0) -> str:
        """Send raw bytes to the REST port, wait ``hold`` seconds, then read the answer's status."""
        with socket.create_connection(self._rest_address(), timeout=10) as sock:
            sock.sendall(payload)
            time.sleep(hold)
            try:
                return _http_status(sock.recv(256))
            except OSError:
                return "closed"

    def half_sent(self) -> Event:
        heads = _request(f"{REST_MODELS_PREFIX}/lenet5:predict", 5000)
        payloads = [heads + b'{"instances": [[', heads[: len(heads) // 2]] * 2
        at = self._now()
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda p=p: results.append(self._raw(p, HOLD_S)), daemon=True)
            for p in payloads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HOLD_S + 15)
        return Event(at, "half_sent", f"{len(payloads)} requests held {HOLD_S:g} s", sorted(results))

    def oversized(self) -> Event:
        size = self.max_request_bytes + 1
        at = self._now()
        answers = [self._raw(_request(f"{REST_MODELS_PREFIX}/lenet5:predict", size) + b"{")]
        answers.append(self._grpc_raw(b"\n" + b"x" * size))
        return Event(at, "oversized", f"{size} bytes", answers)

    def malformed(self) -> Event:
        at = self._now()
        answers = []
        for path in (f"{REST_MODELS_PREFIX}/lenet5:predict", "/v2/models/lenet5/infer"):
            body = b"{not json"
            answers.append(self._raw(_request(path, len(body), close=True) + body))
        answers.append(self._grpc_raw(b"\xff\xff\xff"))
        return Event(at, "malformed", "bad JSON over REST, bad bytes over gRPC", answers)

    def _grpc_raw(self, request: bytes) -> str:
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            call = channel.unary_unary(PREDICT_RPC, request_serializer=None, response_deserializer=None)
            try:
                call(request, timeout=10)
            except grpc.RpcError as error:
                return f"grpc {error.code().name}"
        return "grpc OK"
