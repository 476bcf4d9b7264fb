"""Locust users that send real MNIST test digits over REST and gRPC and check every answer.

* :class:`RestDigitsUser` is a ``FastHttpUser`` POSTing TF Serving's ``:predict`` row format.
* :class:`GrpcDigitsUser` is a plain ``User`` whose gRPC channel carries
  :class:`LocustInterceptor`, which fires Locust's ``request`` event for every call, as in Locust's
  own gRPC example, so both protocols land in the same statistics.
* :class:`V2RestDigitsUser` POSTs the Open Inference Protocol's ``/v2/models/M/infer`` with the
  binary tensor extension (as ``tritonclient`` does), :class:`V2JsonRestDigitsUser` the same with
  JSON tensors, and :class:`V2GrpcDigitsUser` calls V2's gRPC ``ModelInfer`` with
  ``raw_input_contents``: the same server, the same data plane, four wire paths side by side.

``--model-name`` may name several models (comma-separated): each user then spreads its requests
over them round-robin, one :class:`DigitPool` per model, and every request event carries its
model in ``context`` so the statistics are kept per model too.

A protocol error (HTTP/gRPC error status, an answer not shaped like TF Serving's) is a Locust
failure; a well-formed answer with the wrong digit is a success for Locust and is counted in
:mod:`loadtest.locust_bench.stats` as live accuracy instead. Users are closed-loop (no wait): the number
of users is the number of requests in flight.

Requests are encoded once per process and path (``DigitPool``, before the test starts, for the
paths of the run's user classes) so the load generator spends its CPU on sending, not on
encoding, and the server is what gets measured. A request carries one digit,
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
from client import v2_grpc_client, v2_rest_client  # noqa: E402
from client.api import ModelSpec, Prediction  # noqa: E402
from client.grpc_client import GrpcClient, predict_request  # noqa: E402
from client.grpc_client import parse_predict_response as parse_grpc_answer  # noqa: E402
from client.rest_client import model_path, predict_body  # noqa: E402
from client.rest_client import parse_predict_response as parse_rest_answer  # noqa: E402
from client.v2_grpc_client import V2GrpcClient  # noqa: E402
from client.v2_grpc_client import parse_infer_response as parse_v2_grpc_answer  # noqa: E402
from client.v2_rest_client import parse_infer_response as parse_v2_rest_answer  # noqa: E402
from contract import v2  # noqa: E402
from contract.errors import DigitsError, ProtocolError  # noqa: E402
from contract.mnist import load_split, to_model_input  # noqa: E402
from loadtest.checks import model_names  # noqa: E402
from loadtest.locust_bench.stats import LiveStats  # noqa: E402
from loadtest.paths import GRPC, PATHS, REST, V2_GRPC, V2_JSON, V2_REST  # noqa: E402

log = logging.getLogger(__name__)

PATH_BY_NAME = {path.stats_name: name for name, path in PATHS.items()}  # stats row -> path
REST_NAME, GRPC_NAME = PATHS[REST].stats_name, PATHS[GRPC].stats_name
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
        self.spec = spec
        self.rest_path = model_path(spec) + ":predict"
        self.v2_path = v2.infer_path(spec.name)
        # Sample positions carried by each request: one each, or B consecutive ones.
        self.positions: list[np.ndarray] = [
            np.arange(k, k + images_per_request) % count for k in range(0, count, images_per_request)
        ]
        self._pixels = pixels
        self._encoded: dict[str, list[Any]] = {}
        self._walk = itertools.count()

    def encoded(self, path: str) -> list[Any]:
        """The requests of one wire path (one per entry of ``positions``), encoded on first use:
        JSON bodies (REST), ``(body, headers)`` (V2 REST), protobuf messages (gRPC)."""
        if path not in self._encoded:
            encode = _ENCODERS[path]
            requests, encoded = [], 0
            for positions in self.positions:
                requests.append(encode(self._pixels[positions], self.spec))
                encoded += len(positions)
                if encoded >= 50:
                    # Let Locust's heartbeat greenlet run: on a busy machine a worker that is
                    # silent for 3 s is declared missing and the master stops the test.
                    gevent.sleep(0)
                    encoded = 0
            self._encoded[path] = requests
            log.info(
                "encoded %d MNIST test digits for %s, %d per request",
                len(self),
                path,
                self.images_per_request,
            )
        return self._encoded[path]

    @property
    def rest_bodies(self) -> list[bytes]:
        return self.encoded(REST)

    @property
    def grpc_requests(self) -> list[Any]:
        return self.encoded(GRPC)

    @classmethod
    def get(cls, environment: Environment, model: str | None = None) -> DigitPool:
        """The process's pool for ``model`` (default: the first model of ``--model-name``)."""
        opts = options(environment)
        spec = ModelSpec(name=model or model_names(opts.model_name)[0])
        key = (opts.mnist_dir, int(opts.mnist_sample), spec, int(opts.images_per_request))
        if key not in cls._cache:
            cls._cache[key] = cls(opts.mnist_dir, int(opts.mnist_sample), spec, int(opts.images_per_request))
        return cls._cache[key]

    @classmethod
    def for_models(cls, environment: Environment) -> list[DigitPool]:
        """One pool per model of ``--model-name``, in its order."""
        return [cls.get(environment, model) for model in model_names(options(environment).model_name)]

    def __len__(self) -> int:
        return len(self.labels)

    def next_request(self) -> int:
        """The next request to send, cycling through the sample in its fixed order."""
        return next(self._walk) % len(self.positions)


def _v2_rest(tensor_format: str) -> Callable[[np.ndarray, ModelSpec], tuple[bytes, dict[str, str]]]:
    def encode(batch: np.ndarray, spec: ModelSpec) -> tuple[bytes, dict[str, str]]:
        _, body, headers = v2_rest_client.infer_request(batch, spec, tensor_format=tensor_format)
        return body, headers

    return encode


_ENCODERS: dict[str, Callable[[np.ndarray, ModelSpec], Any]] = {
    REST: predict_body,
    GRPC: predict_request,
    V2_REST: _v2_rest(v2_rest_client.BINARY),
    V2_JSON: _v2_rest(v2_rest_client.JSON),
    V2_GRPC: v2_grpc_client.infer_request,
}


class _DigitsUserMixin:
    """Takes the next request: of the next model (round-robin over ``--model-name``'s models),
    from the process's walk through that model's pool.

    One walk per process and model, not one per user: whatever the run's length, the digits sent
    to a model are the first N of the same fixed sample, so live accuracy is reproducible rather
    than depending on which window of the sample each user happened to start at.
    """

    environment: Environment
    protocol = ""

    pools: list[DigitPool] | None = None
    pool: DigitPool | None = None  # the pool of the request being sent
    _turn = 0

    def _next(self) -> int:
        if self.pools is None:  # looked up once per user, not on every send
            self.pools = DigitPool.for_models(self.environment)
        self.pool = self.pools[self._turn % len(self.pools)]
        self._turn += 1
        return self.pool.next_request()

    @property
    def model(self) -> str | None:
        """The model of the request being sent."""
        return None if self.pool is None else self.pool.spec.name

    def _count(self, request: int, digits: np.ndarray) -> None:
        stats = live_stats(self.environment)
        for position, digit in zip(self.pool.positions[request], digits.tolist(), strict=True):
            stats.answer(
                self.protocol,
                index=int(self.pool.indices[position]),
                label=self.pool.labels[position],
                digit=int(digit),
                model=self.model,
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
            data=self.pool.encoded(REST)[request],
            headers={"Content-Type": "application/json"},
            name=REST_NAME,
            catch_response=True,
            context={"model": self.model},
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
    (a malformed answer is a protocol error even when the status was OK). ``context`` gives the
    event's context (the model the call addressed).
    """

    def __init__(
        self,
        environment: Environment,
        check: Callable[[str, Any], None] | None = None,
        context: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.environment = environment
        self.check = check
        self.context = context

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
            context=self.context() if self.context is not None else {},
        )
        return call


class _GrpcDigitsUser(_DigitsUserMixin, User):
    """A gRPC user: one channel carrying :class:`LocustInterceptor`, one task sending the pool's
    prepared requests of its path. Subclasses say which client, RPC and decoder.

    The target is ``--grpc-target`` or, without it, the ``--host``'s name with the gRPC port.
    """

    abstract = True  # not a user Locust runs; and no @task here, so subclasses never inherit one
    wait_time = constant(0)
    client_class: type[GrpcClient] | type[V2GrpcClient] = GrpcClient
    answer_rpc = ""  # the method whose answers are decoded and checked

    def on_start(self) -> None:
        opts = options(self.environment)
        self.grpc_client = self.client_class(  # its requests name their model: built by DigitPool
            grpc_target(opts.grpc_target, self.host),
            ModelSpec(name=model_names(opts.model_name)[0]),
            timeout=float(opts.request_timeout),
            interceptors=[LocustInterceptor(self.environment, self._check_answer, self._context)],
        )
        self._answer: Prediction | None = None

    def _context(self) -> dict[str, Any]:
        return {"model": self.model}

    def _check_answer(self, method: str, response: Any) -> None:
        """Decode the answer once, inside the timed call: a malformed one is a Locust failure."""
        if method == self.answer_rpc:  # ProtocolError if malformed
            self._answer = self._decode(response, self.pool.images_per_request)

    def _decode(self, response: Any, expected: int) -> Prediction:
        raise NotImplementedError

    def _send(self, request: Any) -> None:
        raise NotImplementedError

    def on_stop(self) -> None:
        self.grpc_client.close()

    def _predict(self) -> None:
        request = self._next()
        self._answer = None
        try:
            self._send(self.pool.encoded(self.protocol)[request])
        except DigitsError:
            return  # already reported to Locust as a failure by the interceptor
        if self._answer is not None:
            self._count(request, self._answer.digits)


class GrpcDigitsUser(_GrpcDigitsUser):
    """Calls TF Serving's gRPC ``Predict`` with MNIST test digits (one per request by default)."""

    protocol = GRPC
    client_class = GrpcClient
    answer_rpc = contract.PREDICT_RPC

    def _decode(self, response: Any, expected: int) -> Prediction:
        return parse_grpc_answer(response, expected=expected)

    def _send(self, request: Any) -> None:
        self.grpc_client.send_predict(request)

    @task
    def predict(self) -> None:
        self._predict()


class V2RestDigitsUser(_DigitsUserMixin, FastHttpUser):
    """POSTs MNIST test digits to the V2 protocol's ``/v2/models/M/infer`` with binary tensors
    (the ``Inference-Header-Content-Length`` extension, as ``tritonclient`` sends them)."""

    protocol = V2_REST
    stats_name = PATHS[V2_REST].stats_name
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        request = self._next()
        body, headers = self.pool.encoded(self.protocol)[request]
        with self.client.post(
            self.pool.v2_path,
            data=body,
            headers=headers,
            name=self.stats_name,
            catch_response=True,
            context={"model": self.model},
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {_error_text(response)}")
                return
            try:
                answer = parse_v2_rest_answer(
                    response.content or b"",
                    response.headers.get(v2.HEADER_CONTENT_LENGTH),
                    expected=self.pool.images_per_request,
                )
            except ProtocolError as exc:
                response.failure(f"malformed answer: {exc}")
                return
        self._count(request, answer.digits)


class V2JsonRestDigitsUser(V2RestDigitsUser):
    """:class:`V2RestDigitsUser` with JSON tensors (``"data"`` lists) both ways."""

    protocol = V2_JSON
    stats_name = PATHS[V2_JSON].stats_name


class V2GrpcDigitsUser(_GrpcDigitsUser):
    """Calls the V2 protocol's gRPC ``ModelInfer`` with ``raw_input_contents`` (the same target
    as :class:`GrpcDigitsUser`: V2 and TF Serving's gRPC share the port)."""

    protocol = V2_GRPC
    client_class = V2GrpcClient
    answer_rpc = v2.MODEL_INFER_RPC

    def _decode(self, response: Any, expected: int) -> Prediction:
        return parse_v2_grpc_answer(response, expected=expected)

    def _send(self, request: Any) -> None:
        self.grpc_client.send_infer(request)

    @task
    def predict(self) -> None:
        self._predict()


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
