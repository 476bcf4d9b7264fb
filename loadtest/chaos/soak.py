"""``python -m loadtest chaos``: a fault-injection soak of our server, with a verdict.

It copies the model repository aside, starts our server over it (short repository polls,
several workers), asks the model's reference answers, then for ``--minutes`` runs steady
traffic on all five wire paths (``loadtest.chaos.traffic``) while the seeded injector
(``loadtest.chaos.faults``) kills, stops and resumes workers, publishes good, corrupt and
slowly-copied versions and sends abusive requests. A sampler reads the server's resident memory
and open file descriptors (its whole process tree) every second.

The verdict (``loadtest.chaos.report``): no wrong answer; no failed request but those in flight
at a worker's kill; no abusive request answered with a 5xx; resident memory at the end within
``RSS_RATIO`` of its level after warm-up; open file descriptors flat. Exit 0 when it holds, 6
(failures, as the benchmark) when it does not.
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import threading
import time
from pathlib import Path

import psutil

from contract import MODEL_NAME, model_versions, version_path
from contract.mnist import load_split, to_model_input
from loadtest.chaos.faults import Injector
from loadtest.chaos.record import WARMUP_S, Sample, SoakRecord
from loadtest.chaos.report import verdict, write_report
from loadtest.chaos.traffic import Traffic, reference_answers
from loadtest.checks import add_common_arguments
from loadtest.server import StartedServer, start_server

IMAGES = 200  # distinct MNIST test images the traffic cycles through
COOLDOWN_S = 3.0  # traffic after the last fault
# The server under the soak: quick repository polls, load retries quick enough to matter within
# minutes, a small request limit so oversized requests are cheap, half-sent requests cut
# after two seconds, no access log.
SERVER_ARGS = (
    "--file_system_poll_wait_seconds 1 --max_request_bytes 1048576 --access_log false "
    "--rest_api_header_timeout_in_ms 2000 --rest_api_body_timeout_in_ms 2000"
)


def tree_usage(pid: int) -> tuple[int, int, int]:
    """(resident bytes, open file descriptors, processes) of a process and its descendants."""
    rss = fds = count = 0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for proc in processes:
        try:
            rss += proc.memory_info().rss
            fds += proc.num_fds()
            count += 1
        except psutil.Error:  # ended in between (a killed worker)
            continue
    return rss, fds, count


class Sampler:
    """Samples ``tree_usage`` of the server once a second, on a thread."""

    def __init__(self, pid: int, epoch: float) -> None:
        self.pid, self.epoch = pid, epoch
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(Sample(time.monotonic() - self.epoch, *tree_usage(self.pid)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-base-path", required=True, help="the model repository to copy and serve")
    parser.add_argument("--minutes", type=float, default=1.0, help="how long faults are injected (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the injector's random seed (default 0)")
    parser.add_argument(
        "--fault-interval", type=float, default=4.0, help="mean seconds between faults (default 4)"
    )
    parser.add_argument("--workers", type=int, default=2, help="server worker processes per protocol")
    parser.add_argument("--server-args", default="", metavar="FLAGS", help="more flags for the server")
    add_common_arguments(parser, parser, "reports/chaos")


def _copy_repository(source: Path, out: Path) -> Path:
    """The newest version of ``source`` alone, copied to ``out/<model>`` (the soak adds to it)."""
    versions = model_versions(source)
    if not versions:
        raise ValueError(f"no version directory under {source}")
    repository = out / MODEL_NAME
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(version_path(source, versions[-1]), version_path(repository, versions[-1]))
    return repository


def soak(server: StartedServer, repository: Path, images, args: argparse.Namespace) -> SoakRecord:
    """Traffic, faults and samples for ``args.minutes``: what happened."""
    reference = reference_answers(server, images, args.timeout)
    epoch = time.monotonic()
    injector = Injector(server, repository, random.Random(args.seed), (args.fault_interval, 1048576))
    traffic = Traffic(server, reference, epoch, args.timeout)
    with Sampler(server.pid, epoch) as sampler:
        traffic.start()
        time.sleep(WARMUP_S)
        injector.start(epoch)
        _progress(epoch, args.minutes * 60, traffic)
        injector.shutdown()
        time.sleep(COOLDOWN_S)
        traffic.stop()
    return SoakRecord(args.minutes, args.seed, list(traffic.outcomes), list(injector.events), sampler.samples)


def _progress(epoch: float, seconds: float, traffic: Traffic) -> None:
    """Wait out the fault phase, printing one progress line every ten seconds."""
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        time.sleep(min(10.0, left))
        done = time.monotonic() - start
        failed = sum(o.error is not None for o in traffic.outcomes)
        requests = len(traffic.outcomes)
        print(f"chaos: {done:4.0f}/{seconds:.0f} s, {requests} requests, {failed} failed", flush=True)


def run_chaos(args: argparse.Namespace) -> int:
    """The soak end to end; the exit status of its verdict."""
    images = to_model_input(load_split("t10k", args.mnist_dir)[0][:IMAGES])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repository = _copy_repository(Path(args.model_base_path), out / "repository")
    server_args = f"{SERVER_ARGS} --num_workers {args.workers} {args.server_args}"
    server = start_server(repository, MODEL_NAME, out / "server.log", shlex.join(shlex.split(server_args)))
    try:
        record = soak(server, repository, images, args)
    finally:
        server.stop()
    record.server_log = str(out / "server.log")
    summary = verdict(record)
    write_report(record, summary, out)
    print(f"chaos: {'PASSED' if summary['passed'] else 'FAILED'}; report in {out}/chaos.md", flush=True)
    return 0 if summary["passed"] else 6
