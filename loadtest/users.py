"""Locust users that send real MNIST test digits over REST and gRPC and check every answer.

* :class:`RestDigitsUser` is a ``FastHttpUser`` POSTing TF Serving's ``:predict`` row format.
* :class:`GrpcDigitsUser` is a plain ``User`` whose gRPC channel carries
  :class:`LocustInterceptor`, which fires Locust's ``request`` event for every call, as in Locust's
  own gRPC example, so both protocols land in the same statistics.

A protocol error (HTTP/gRPC error status, an answer not shaped like TF Serving's) is a Locust
failure; a well-formed answer with the wrong digit is a success for Locust and is counted in
:mod:`loadtest.stats` as live accuracy instead. Users are closed-loop (no wait): the number
of users is the number of requests in flight.

Requests are encoded once per process (``DigitPool``) so the load generator spends its CPU on
sending, not on JSON encoding, and the server is what gets measured. A request carries one digit,
or ``--images-per-request`` digits (a batch: every digit of the answer is checked).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

# grpcio blocks the OS thread unless it cooperates with gevent, which Locust runs on; this must
# happen before any channel exists in the process.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import gevent  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from locust import User, constant, task  # noqa: E402
from locust.contrib.fasthttp import FastHttpUser  # noqa: E402
from locust.env import Environment  # noqa: E402

import contract  # noqa: E402
from client import grpc_client, rest_client  # noqa: E402
from client.api import ModelSpec, Prediction  # noqa: E402
from client.grpc_client import GrpcClient, predict_request  # noqa: E402
from client.grpc_client import parse_predict_response as parse_grpc_answer  # noqa: E402
from client.rest_client import model_path, predict_body  # noqa: E402
from client.rest_client import parse_predict_response as parse_rest_answer  # noqa: E402
from contract.errors import DigitsError, ProtocolError  # noqa: E402
from contract.mnist import load_split, to_model_input  # noqa: E402
from loadtest.stats import LiveStats  # noqa: E402

log = logging.getLogger(__name__)

REST = rest_client.PROTOCOL
GRPC = grpc_client.PROTOCOL
REST_NAME = ":predict"  # Locust stats row names
GRPC_NAME = "Predict"
DEFAULT_SAMPLE = 1000  # test digits per process; enough for accuracy to within about 0.5 %
_SAMPLE_SEED = 20240501  # the same sample in every worker


def options(environment: Environment) -> Any:
    """Our custom command-line options (see the locustfile), with defaults when run bare."""
    parsed = environment.parsed_options
    return parsed if parsed is not None else _Defaults()


class _Defaults:
    mnist_dir = None
    mnist_sample = DEFAULT_SAMPLE
    model_name = contract.MODEL_NAME
    grpc_target = ""
    request_timeout = 10.0
    live_stats_file = ""
    images_per_request = 1


def live_stats(environment: Environment) -> LiveStats:
    """The process's :class:`LiveStats`, attached to the Locust environment."""
    stats = getattr(environment, "digits_live", None)
    if stats is None:
        stats = LiveStats()
        environment.digits_live = stats  # type: ignore[attr-defined]
    return stats


class DigitPool:
    """A fixed random sample of MNIST test digits with their requests encoded once.

    With ``images_per_request`` B > 1, request k carries the sample's digits k*B ... k*B+B-1
    (wrapping around at the end), so cycling through the requests walks through the sample.
    """

    _cache: dict[tuple[Any, ...], DigitPool] = {}

    def __init__(
        self, mnist_dir: str | None, sample: int, spec: ModelSpec, images_per_request: int = 1
    ) -> None:
        if not 1 <= images_per_request <= contract.MAX_BATCH_SIZE:
            raise ValueError(
                f"images per request must be 1..{contract.MAX_BATCH_SIZE}, got {images_per_request}"
            )
        images, labels = load_split("t10k", mnist_dir)
        rng = np.random.default_rng(_SAMPLE_SEED)
        count = min(max(sample, 1), len(images))
        self.indices = rng.choice(len(images), size=count, replace=False)
        pixels = to_model_input(images[self.indices])
        self.labels = labels[self.indices].astype(int).tolist()
        self.images_per_request = images_per_request
        self.rest_path = model_path(spec) + ":predict"
        # Sample positions carried by each request: one each, or B consecutive ones.
        self.positions: list[np.ndarray] = [
            np.arange(k, k + images_per_request) % count for k in range(0, count, images_per_request)
        ]
        self.rest_bodies: list[bytes] = []
        self.grpc_requests = []
        encoded = 0
        for positions in self.positions:
            batch = pixels[positions]
            self.rest_bodies.append(predict_body(batch, spec))
            self.grpc_requests.append(predict_request(batch, spec))
            encoded += len(positions)
            if encoded >= 50:
                # Let Locust's heartbeat greenlet run: on a busy machine a worker that is silent
                # for 3 s is declared missing and the master stops the test.
                gevent.sleep(0)
                encoded = 0
        self._walk = itertools.count()
        log.info(
            "encoded %d MNIST test digits for REST and gRPC, %d per request",
            count,
            images_per_request,
        )

    @classmethod
    def get(cls, environment: Environment) -> DigitPool:
        opts = options(environment)
        spec = ModelSpec(name=opts.model_name)
        key = (opts.mnist_dir, int(opts.mnist_sample), spec, int(opts.images_per_request))
        if key not in cls._cache:
            cls._cache[key] = cls(opts.mnist_dir, int(opts.mnist_sample), spec, int(opts.images_per_request))
        return cls._cache[key]

    def __len__(self) -> int:
        return len(self.labels)

    def next_request(self) -> int:
        """The next request to send, cycling through the sample in its fixed order."""
        return next(self._walk) % len(self.positions)


class _DigitsUserMixin:
    """Takes the next request of the process's walk through the pool.

    One walk per process, not one per user: whatever the run's length, the digits sent are the
    first N of the same fixed sample, so live accuracy is reproducible rather than depending on
    which window of the sample each user happened to start at.
    """

    environment: Environment
    protocol = ""

    pool: DigitPool | None = None

    def _next(self) -> int:
        if self.pool is None:  # looked up once per user: the lookup costs more than a send
            self.pool = DigitPool.get(self.environment)
        return self.pool.next_request()

    def _count(self, request: int, digits: np.ndarray) -> None:
        stats = live_stats(self.environment)
        for position, digit in zip(self.pool.positions[request], digits.tolist(), strict=True):
            stats.answer(
                self.protocol,
                index=int(self.pool.indices[position]),
                label=self.pool.labels[position],
                digit=int(digit),
            )


class RestDigitsUser(_DigitsUserMixin, FastHttpUser):
    """POSTs MNIST test digits (one per request by default) to TF Serving's REST ``:predict``."""

    protocol = REST
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        request = self._next()
        with self.client.post(
            self.pool.rest_path,
            data=self.pool.rest_bodies[request],
            headers={"Content-Type": "application/json"},
            name=REST_NAME,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {_error_text(response)}")
                return
            try:
                answer = parse_rest_answer(
                    json.loads(response.content or b"null"), expected=self.pool.images_per_request
                )
            except (ValueError, ProtocolError) as exc:
                response.failure(f"malformed answer: {exc}")
                return
        self._count(request, answer.digits)


def _error_text(response: Any) -> str:
    try:
        return str(json.loads(response.content)["error"])[:200]
    except (ValueError, KeyError, TypeError):
        return (response.text or "")[:200]


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Fires Locust's ``request`` event for every unary call on the channel.

    ``check`` validates a successful answer; if it raises, the call is reported as a failure
    (a malformed answer is a protocol error even when the status was OK).
    """

    def __init__(self, environment: Environment, check: Callable[[str, Any], None] | None = None) -> None:
        self.environment = environment
        self.check = check

    def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
        start = time.perf_counter()
        exception: BaseException | None = None
        response_length = 0
        call = continuation(client_call_details, request)
        try:
            response = call.result()
            response_length = response.ByteSize()
            if self.check is not None:
                self.check(client_call_details.method, response)
        except grpc.RpcError as exc:
            exception = exc
        except DigitsError as exc:
            exception = exc
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        method = client_call_details.method
        self.environment.events.request.fire(
            request_type=GRPC,
            name=method.rsplit("/", 1)[-1] if isinstance(method, str) else str(method),
            response_time=elapsed_ms,
            response_length=response_length,
            exception=exception,
            context={},
        )
        return call


class GrpcDigitsUser(_DigitsUserMixin, User):
    """Calls TF Serving's gRPC ``Predict`` with MNIST test digits (one per request by default).

    The target is ``--grpc-target`` or, without it, the ``--host``'s name with the gRPC port.
    """

    protocol = GRPC
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = options(self.environment)
        self.grpc_client = GrpcClient(
            grpc_target(opts.grpc_target, self.host),
            ModelSpec(name=opts.model_name),
            timeout=float(opts.request_timeout),
            interceptors=[LocustInterceptor(self.environment, self._check_answer)],
        )
        self._answer: Prediction | None = None

    def _check_answer(self, method: str, response: Any) -> None:
        """Decode the answer once, inside the timed call: a malformed one is a Locust failure."""
        if method == contract.PREDICT_RPC:  # ProtocolError if malformed
            self._answer = parse_grpc_answer(response, expected=self.pool.images_per_request)

    def on_stop(self) -> None:
        self.grpc_client.close()

    @task
    def predict(self) -> None:
        request = self._next()
        self._answer = None
        try:
            self.grpc_client.send_predict(self.pool.grpc_requests[request])
        except DigitsError:
            return  # already reported to Locust as a failure by the interceptor
        if self._answer is not None:
            self._count(request, self._answer.digits)


def grpc_target(explicit: str, host: str | None) -> str:
    """``--grpc-target``, else the host part of ``--host`` with the contract's gRPC port."""
    if explicit:
        return explicit.removeprefix("grpc://")
    if not host:
        raise ValueError("give --grpc-target HOST:PORT (or --host) for the gRPC user")
    name = host.split("://", 1)[-1].split("/", 1)[0]
    if name.startswith("["):  # IPv6 literal [::1]:8501
        name = name[: name.index("]") + 1]
    else:
        name = name.rsplit(":", 1)[0]
    return f"{name}:{contract.GRPC_PORT}"
