"""Steady traffic on the five wire paths, every answer checked against the model's own answers.

One thread per path (TF Serving REST and gRPC, V2 REST binary and JSON, V2 gRPC) sends one MNIST
test image per request, round robin, through the client library, and records each request's
outcome: its start and end, and either the answer's correctness or the error that ended it. The
reference answers are the server's own, asked once before any fault (all versions a soak
publishes hold the same model): a different digit, or probabilities further than ``TOLERANCE``
from the reference, is a wrong answer. After an error a thread connects afresh, as a client
that retries would.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from client.api import ModelSpec, connect
from client.base import DigitsClient, Prediction
from contract import MODEL_NAME
from contract.errors import DigitsError
from loadtest.paths import PATHS, WirePath
from loadtest.server import StartedServer

TOLERANCE = 1e-5  # float32 probabilities: every path carries them exactly; versions are copies


@dataclass(frozen=True)
class Outcome:
    """One request: when it ran (seconds since the soak began), on which path, how it ended."""

    path: str
    started: float
    ended: float
    error: str | None = None  # the error's kind and code; None: answered
    wrong: bool = False  # answered, but not the model's answer


@dataclass(frozen=True)
class Reference:
    """The images the traffic sends and the model's answers to them."""

    images: np.ndarray  # float32 [K, 28, 28, 1]
    digits: np.ndarray  # [K]
    probabilities: np.ndarray  # [K, 10]

    def is_right(self, index: int, answer: Prediction) -> bool:
        return bool(
            answer.digits[0] == self.digits[index]
            and np.abs(answer.probabilities[0] - self.probabilities[index]).max() <= TOLERANCE
        )


def client_for(path: WirePath, server: StartedServer, timeout: float) -> DigitsClient:
    """The client library's client of one wire path."""
    spec = ModelSpec(name=MODEL_NAME)
    if path.transport == "grpc":
        return connect(grpc=server.grpc_target, protocol=path.protocol, spec=spec, timeout=timeout)
    return connect(
        rest=server.rest_url, protocol=path.protocol, spec=spec, timeout=timeout, rest_format=path.rest_format
    )


def reference_answers(server: StartedServer, images: np.ndarray, timeout: float) -> Reference:
    """The model's answers to ``images``, asked once over TF Serving's gRPC API."""
    with client_for(PATHS["gRPC"], server, timeout) as client:
        answer = client.predict(images)
    return Reference(images, answer.digits, answer.probabilities)


def error_kind(exc: BaseException) -> str:
    """``ServingError:UNAVAILABLE``-like: the error's class and, where it has one, its code."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}:{code}" if isinstance(code, str) else type(exc).__name__


class Traffic:
    """The five paths' threads; ``outcomes`` grows while they run (appends are atomic)."""

    def __init__(self, server: StartedServer, reference: Reference, epoch: float, timeout: float) -> None:
        self.server = server
        self.reference = reference
        self.epoch = epoch
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(path,), name=f"traffic-{path.key}", daemon=True)
            for path in PATHS.values()
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _loop(self, path: WirePath) -> None:
        client, index = None, 0
        while not self._stop.is_set():
            index = (index + 1) % len(self.reference.images)
            if client is None:
                client = client_for(path, self.server, self.timeout)
            outcome = self._one(client, path, index)
            self.outcomes.append(outcome)
            if outcome.error is not None:
                client.close()
                client = None
        if client is not None:
            client.close()

    def _one(self, client: DigitsClient, path: WirePath, index: int) -> Outcome:
        started = time.monotonic() - self.epoch
        try:
            answer = client.predict(self.reference.images[index : index + 1])
        except (DigitsError, OSError) as exc:
            return Outcome(path.name, started, time.monotonic() - self.epoch, error=error_kind(exc))
        wrong = not self.reference.is_right(index, answer)
        return Outcome(path.name, started, time.monotonic() - self.epoch, wrong=wrong)
