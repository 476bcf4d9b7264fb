"""The Locust file: users on four wire paths sending MNIST test digits, plus live-accuracy statistics.

TF Serving's REST and gRPC APIs (``RestDigitsUser``, ``GrpcDigitsUser``) and the Open Inference
Protocol's REST, binary or JSON tensors, and gRPC (``V2RestDigitsUser``, ``V2JsonRestDigitsUser``,
``V2GrpcDigitsUser``), on the same ports; pick them by class name on the command line.

Run it alone, or as master + workers (what the Kubernetes manifests run), from the repo root
(the project is installed, so this file imports ``loadtest`` and ``client`` like any module):

  locust -f loadtest/locust_bench/locustfile.py --headless -u 8 -r 8 -t 30s \
      --host http://127.0.0.1:8501 --grpc-target 127.0.0.1:8500 --mnist-dir data/mnist \
      --live-stats-file reports/live.json RestDigitsUser GrpcDigitsUser

  # the same, spreading the requests over two models of the server
  locust -f loadtest/locust_bench/locustfile.py ... --model-name lenet5,lenet5-ensemble RestDigitsUser

  locust -f loadtest/locust_bench/locustfile.py --master --expect-workers 2 --headless ...   # + the same args
  locust -f loadtest/locust_bench/locustfile.py --worker --master-host MASTER                # x2

Workers receive the custom options below from the master. ``python -m loadtest`` (the benchmark,
:mod:`loadtest.locust_bench.bench`) drives this file at several concurrency levels and writes the report.
"""

from __future__ import annotations

import logging
import resource

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

import contract
from contract.mnist import DataError
from loadtest.locust_bench.stats import REPORT_KEY
from loadtest.locust_bench.users import (
    DEFAULT_SAMPLE,
    GRPC,
    PATH_BY_NAME,
    REST,
    DigitPool,
    GrpcDigitsUser,
    RestDigitsUser,
    V2GrpcDigitsUser,
    V2JsonRestDigitsUser,
    V2RestDigitsUser,
    live_stats,
)

__all__ = ["GrpcDigitsUser", "RestDigitsUser", "V2GrpcDigitsUser", "V2JsonRestDigitsUser", "V2RestDigitsUser"]

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:  # noqa: ANN001  (Locust's configargparse parser)
    group = parser.add_argument_group("digits")
    group.add_argument(
        "--grpc-target",
        default="",
        env_var="LOCUST_GRPC_TARGET",
        help=f"gRPC HOST:PORT for GrpcDigitsUser (default: --host's name, port {contract.GRPC_PORT})",
    )
    group.add_argument(
        "--mnist-dir",
        default=None,
        env_var=contract.MNIST_DIR_ENV,
        help=f"directory of the MNIST IDX files (default {contract.DEFAULT_MNIST_DIR})",
    )
    group.add_argument(
        "--mnist-sample",
        type=int,
        default=DEFAULT_SAMPLE,
        env_var="LOCUST_MNIST_SAMPLE",
        help="how many MNIST test digits each process cycles through",
    )
    group.add_argument(
        "--images-per-request",
        type=int,
        default=1,
        env_var="LOCUST_IMAGES_PER_REQUEST",
        help=f"digits per predict request (1..{contract.MAX_BATCH_SIZE}; default 1)",
    )
    group.add_argument(
        "--model-name",
        default=contract.MODEL_NAME,
        env_var="LOCUST_MODEL_NAME",
        help="the model, or comma-separated models: each user sends to them in turn (round-robin)",
    )
    group.add_argument("--request-timeout", type=float, default=10.0, help="gRPC deadline per call, seconds")
    group.add_argument(
        "--live-stats-file",
        default="",
        env_var="LOCUST_LIVE_STATS_FILE",
        help="write live accuracy and fine latency percentiles (JSON) here at the end",
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _encode_for_run(environment: Environment) -> None:
    """The digit pool, with the requests of the run's user classes encoded (only those: a run of
    one path does not pay for encoding the others)."""
    for pool in DigitPool.for_models(environment):
        for user_class in environment.user_classes:
            pool.encoded(user_class.protocol)


class DigitsPlugin:
    """What this load test adds to one Locust process: the fine latency of every request, the
    workers' reports merged on the master, the digits encoded before a test, the generator's CPU
    over it and the live-stats file at the end. One object per process holds what the hooks share;
    each method is the listener of one Locust event."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.stats = live_stats(environment)
        self.cpu_at_start: float | None = None

    def attach(self) -> None:
        """Listen to the events this process's role sees (a worker reports, a master merges)."""
        events, runner = self.environment.events, self.environment.runner
        events.request.add_listener(self.on_request)
        if isinstance(runner, WorkerRunner):
            events.report_to_master.add_listener(self.on_report_to_master)
        if isinstance(runner, MasterRunner):
            events.worker_report.add_listener(self.on_worker_report)
        self.encode_early()
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quit.add_listener(self.on_quit)

    def encode_early(self) -> None:
        """Encode the digits now, before this process takes part in a test. A worker's own options
        may lack the MNIST directory the master will send; then they are loaded at test start."""
        environment = self.environment
        if isinstance(environment.runner, MasterRunner) or environment.parsed_options is None:
            return
        try:
            _encode_for_run(environment)
        except DataError as exc:
            log.info("MNIST digits not loaded yet (%s); will load at test start", exc)

    def on_request(
        self, request_type: str, name: str, response_time: float, context: dict | None = None, **_kw: object
    ) -> None:
        # The row name says the path; a request of another name counts by its transport. The
        # context names the model the request addressed (our users set it).
        path = PATH_BY_NAME.get(name) or (GRPC if request_type == GRPC else REST)
        self.stats.latency(path, response_time, model=(context or {}).get("model"))

    def on_report_to_master(self, client_id: str, data: dict) -> None:
        data[REPORT_KEY] = self.stats.take()

    def on_worker_report(self, client_id: str, data: dict) -> None:
        self.stats.merge(data.get(REPORT_KEY, {}))

    def on_test_start(self, environment: Environment, **_kw: object) -> None:
        # Encode the digits before users start, so the first requests are not delayed by it
        # (and the encoding is not counted as load-generation CPU).
        if not isinstance(environment.runner, MasterRunner):
            _encode_for_run(environment)  # done at init already, unless the digits were not there
        self.cpu_at_start = _cpu_seconds()

    def on_test_stop(self, environment: Environment, **_kw: object) -> None:
        if self.cpu_at_start is not None:
            self.stats.add_generator_cpu(_cpu_seconds() - self.cpu_at_start)
            self.cpu_at_start = None
        if isinstance(environment.runner, WorkerRunner):
            # Report now, before the worker tells the master it stopped: its next periodic report
            # can come after the master has written the totals and quit (then a worker's last
            # seconds and its CPU are missing). Locust has no public call for this.
            environment.runner._send_stats()

    def on_quit(self, exit_code: int, **_kw: object) -> None:
        environment = self.environment
        if isinstance(environment.runner, WorkerRunner):
            return
        for protocol, summary in self.stats.summary().items():
            log.info(
                "%s: %d answers, %d wrong digits, live accuracy %.4f",
                protocol,
                summary["answers"],
                summary["wrong"],
                summary["accuracy"],
            )
        path = getattr(environment.parsed_options, "live_stats_file", "")
        if path:
            total = environment.runner.stats.total
            final = {"requests": total.num_requests, "failures": total.num_failures, "rps": total.total_rps}
            self.stats.write(path, locust_totals=final)


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: object) -> None:
    DigitsPlugin(environment).attach()
