"""The serving benchmark: Locust headless over REST and gRPC at several concurrency levels.

The paths (``--protocols``, :mod:`loadtest.paths`): TF Serving's REST and gRPC APIs (``rest``,
``grpc``) and the Open Inference Protocol's REST with binary or JSON tensors and gRPC
(``v2-rest``, ``v2-json``, ``v2-grpc``), on the same two ports. For each path and each number of
users it runs ``loadtest/locust_bench/locustfile.py`` for a bounded time
(as a master with ``--workers`` worker processes, or as one local process with ``--workers 0``),
keeps Locust's own CSV, HTML and log beside the report, and writes (:mod:`loadtest.locust_bench.report`):

  report.csv / report.md   requests/s (and images/s), p50/p90/p99/max latency, failures, live
                           accuracy, load-generator CPU, server CPU per request (and per image)
  latency.png              latency percentiles and throughput against concurrency

The server is either one already running (``--rest`` / ``--grpc``; ``--server-pid`` for its CPU)
or ours, started over a model repository (``--model-base-path``) or a models config file
(``--model-config-file``) on free loopback ports, measured and stopped at the end.
``--model-name`` may name several models (``lenet5,lenet5-ensemble``): the users spread their
requests over them round-robin, and the report adds each model's share. Latency percentiles come
from :mod:`loadtest.locust_bench.stats` (1 % buckets) because Locust rounds times below 100 ms
to whole milliseconds. The load generator's CPU is measured inside the Locust processes over the
test window, so the report says how much of the machine's cores it took from the server. A level
that answered no request stops the run (:class:`loadtest.checks.NoRequests`, exit 6): its row
would be NaN, and so would every next one.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import contract
from client.api import ModelSpec, connect
from client.cli import EXIT_OK, EXIT_UNHEALTHY
from contract.errors import Unavailable
from loadtest.checks import NoRequests, add_common_arguments, model_names
from loadtest.locust_bench.report import LevelResult, ModelShare, write_report
from loadtest.locust_bench.stats import read_live_stats  # plain JSON helpers: no Locust import
from loadtest.paths import PATHS, parse_paths
from loadtest.server import StartedServer, cpu_seconds, free_port, start_server

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASS = {name: path.user_class for name, path in PATHS.items()}
START_GRACE_S = 60  # Locust's start-up and shutdown beyond the run time, before we give up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("the server (a running one, or ours started here)")
    server.add_argument("--rest", metavar="URL", help=f"REST base URL, e.g. http://HOST:{contract.REST_PORT}")
    server.add_argument("--grpc", metavar="HOST:PORT", help=f"gRPC target, e.g. HOST:{contract.GRPC_PORT}")
    server.add_argument(
        "--server-pid",
        type=int,
        help="a running server's main pid: report its CPU per request (it and its child processes)",
    )
    server.add_argument(
        "--model-base-path",
        metavar="DIR",
        help="start `python -m serving` over this model repository on free loopback ports, "
        "measure its CPU, stop it at the end (instead of --rest/--grpc)",
    )
    server.add_argument(
        "--model-config-file",
        metavar="FILE",
        help="start `python -m serving` over the models of this file (TF Serving's ModelServerConfig "
        "text format) instead of --model-base-path",
    )
    server.add_argument(
        "--server-args",
        default="",
        metavar="FLAGS",
        help='extra flags for the server started here, e.g. "--access_log false --num_workers 2"',
    )
    server.add_argument(
        "--model-name",
        default=contract.MODEL_NAME,
        metavar="NAMES",
        help="the model, or comma-separated models the users spread their requests over "
        "round-robin, e.g. lenet5,lenet5-ensemble (default %(default)s)",
    )
    load = parser.add_argument_group("the load")
    load.add_argument(
        "--protocols",
        help="comma-separated paths: rest, grpc (TF Serving's APIs), v2-rest, v2-json, v2-grpc "
        "(the V2 protocol: binary or JSON tensors, gRPC); measured in that order; default: rest "
        "and/or grpc, each one the server was given for",
    )
    load.add_argument(
        "--users",
        default="1,4,16",
        help="concurrency levels: comma-separated numbers of closed-loop users (default 1,4,16)",
    )
    load.add_argument(
        "--duration", type=float, default=10.0, help="seconds per protocol and level (default 10)"
    )
    load.add_argument(
        "--images-per-request",
        type=int,
        default=1,
        metavar="N",
        help=f"MNIST digits per predict request (default 1; up to {contract.MAX_BATCH_SIZE})",
    )
    load.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Locust worker processes (0: one local process, no master); default 1",
    )
    add_common_arguments(load, parser, "reports/bench")


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--users must be comma-separated integers, got {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"--users needs positive numbers, got {text!r}")
    return sorted(set(levels))


def parse_protocols(text: str) -> list[str]:
    """``"grpc,rest"`` -> ``["REST", "gRPC"]`` (always in :data:`loadtest.paths.PATHS` order)."""
    return parse_paths(text)


def check_arguments(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The protocols and levels to run; ValueError for a command line that cannot work."""
    levels = parse_levels(args.users)
    protocols = parse_protocols(args.protocols or "rest,grpc")
    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    if not 1 <= args.images_per_request <= contract.MAX_BATCH_SIZE:
        raise ValueError(f"--images-per-request must be 1..{contract.MAX_BATCH_SIZE}")
    names = model_names(args.model_name)
    if args.model_base_path or args.model_config_file:
        _check_started_server(args, names)
        return protocols, levels
    if args.server_args:
        raise ValueError("--server-args is for the server started with --model-base-path")
    if not (args.rest or args.grpc):
        raise ValueError("give --rest URL and/or --grpc HOST:PORT, or --model-base-path DIR")
    where = {name: _address(args, name) for name in protocols}
    missing = [p for p in protocols if not where[p]]
    if args.protocols and missing:
        raise ValueError(f"--protocols asks for {', '.join(missing)} but no address was given for it")
    return [p for p in protocols if where[p]], levels


def _check_started_server(args: argparse.Namespace, names: list[str]) -> None:
    """The options of a server started here: a repository of one model, or a models file."""
    if args.rest or args.grpc or args.server_pid:
        raise ValueError("give --model-base-path, or a running server's --rest/--grpc, not both")
    if args.model_base_path and args.model_config_file:
        raise ValueError("give --model-base-path or --model-config-file, not both")
    if args.model_base_path and len(names) > 1:
        raise ValueError("--model-base-path serves one model: name several with --model-config-file")


def _address(args: argparse.Namespace, path: str) -> str | None:
    """The REST URL or gRPC target a path is sent to."""
    return args.rest if PATHS[path].transport == "rest" else args.grpc


def _locust_command(args: argparse.Namespace, users: int, prefix: Path, live_file: Path) -> list[str]:
    host = args.rest if args.rest else f"http://{args.grpc}"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{args.duration:g}s",
        "--stop-timeout", "5", "--host", host,
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary",
        "--loglevel", "INFO",  # the log is a file; Locust says there when a worker goes missing
        "--model-name", args.model_name, "--request-timeout", f"{args.timeout:g}",
        "--images-per-request", str(args.images_per_request),
        "--live-stats-file", str(live_file),
    ]  # fmt: skip
    if args.grpc:
        command += ["--grpc-target", args.grpc]
    if args.mnist_dir:
        command += ["--mnist-dir", str(args.mnist_dir)]
    return command


def _worker_command(args: argparse.Namespace, port: int) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
        "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "INFO",
        "--images-per-request", str(args.images_per_request),
    ]  # fmt: skip
    if args.mnist_dir:  # so the worker encodes its digits before the test starts
        command += ["--mnist-dir", str(args.mnist_dir)]
    return command


def run_level(args: argparse.Namespace, protocol: str, users: int, out: Path) -> LevelResult:
    """One protocol at one level: Locust runs, the server's CPU is read around it."""
    name = f"{PATHS[protocol].key}-u{users}"
    prefix = _locust_prefix(out, protocol, users)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    live_file = out / "locust" / f"{name}-live.json"
    live_file.unlink(missing_ok=True)
    command = _locust_command(args, users, prefix, live_file)
    processes: list[subprocess.Popen] = []
    log_path = prefix.with_suffix(".log")
    server_before = cpu_seconds(args.server_pid)
    with open(log_path, "w") as log_file:
        if args.workers > 0:
            port = free_port()
            master = command + [
                "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                "--expect-workers", str(args.workers), "--expect-workers-max-wait", "30",
                USER_CLASS[protocol],
            ]  # fmt: skip
            processes.append(_spawn(master, log_file))
            worker = _worker_command(args, port) + [USER_CLASS[protocol]]  # encodes only its path
            processes += [_spawn(worker, log_file) for _ in range(args.workers)]
        else:
            processes.append(_spawn(command + [USER_CLASS[protocol]], log_file))
        codes = _wait_all(processes, deadline=time.monotonic() + args.duration + START_GRACE_S)
    server_cpu_s = cpu_seconds(args.server_pid) - server_before
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.is_file() or not live_file.is_file():
        tail = log_path.read_text()[-1500:]
        raise RuntimeError(
            f"Locust run {name} wrote no statistics (exit {codes[0]}); its log {log_path}:\n{tail}"
        )
    return level_result(
        protocol, users, args.images_per_request, args.duration, stats_file, live_file, server_cpu_s, codes[0]
    )


def _locust_prefix(out: Path, protocol: str, users: int) -> Path:
    """Where one level's Locust files go: ``PREFIX_stats.csv``, ``PREFIX.html``, ``PREFIX.log``."""
    return out / "locust" / f"{PATHS[protocol].key}-u{users}"


def _spawn(command: list[str], log_file) -> subprocess.Popen:  # noqa: ANN001
    log.debug("running %s", " ".join(command))
    return subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # so a stuck run can be ended with its whole group
    )


def _wait_all(processes: list[subprocess.Popen], deadline: float) -> list[int]:
    """Exit codes of all processes; past the deadline they are ended (SIGTERM, then SIGKILL)."""
    codes = []
    for proc in processes:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            log.warning("Locust process %d overran; ending it", proc.pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            codes.append(proc.returncode if proc.returncode is not None else -9)
    return codes


def level_result(
    protocol: str,
    users: int,
    images_per_request: int,
    duration: float,
    stats_file: Path,
    live_file: Path,
    server_cpu_s: float,
    exit_code: int,
) -> LevelResult:
    """One row of the report from Locust's stats CSV and our live-statistics JSON."""
    with open(stats_file, newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows.get("Aggregated")
    if total is None:
        raise RuntimeError(f"{stats_file} has no Aggregated row")
    live = read_live_stats(live_file)
    models = model_shares(protocol, users, live["summary"].get(protocol, {}))
    # Locust's final totals, as the locustfile recorded them at quit; its CSV can be a second old.
    final = live.get("locust") or {}
    requests = int(final.get("requests", total["Request Count"]))
    summary = live["summary"].get(protocol, {})
    latency = summary.get("latency_ms", {})
    generator = live.get("generator", {})
    generator_cpu_s = float(generator.get("cpu_s", math.nan))

    def number(value: object) -> float:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    def per_request(value: float) -> float:
        return value / requests * 1e6 if requests else math.nan

    rps = float(final.get("rps", total["Requests/s"]))
    return LevelResult(
        protocol=protocol,
        users=users,
        images_per_request=images_per_request,
        duration_s=duration,
        requests=requests,
        failures=int(final.get("failures", total["Failure Count"])),
        rps=rps,
        images_per_s=rps * images_per_request,
        p50_ms=number(latency.get("p50")),
        p90_ms=number(latency.get("p90")),
        p99_ms=number(latency.get("p99")),
        max_ms=number(latency.get("max")),
        answers=int(summary.get("answers", 0)),
        wrong_digits=int(summary.get("wrong", 0)),
        live_accuracy=number(summary.get("accuracy")),
        generator_cpu_cores=generator_cpu_s / duration,
        generator_cpu_us_per_request=per_request(generator_cpu_s),
        generator_processes=int(generator.get("processes", 0)),
        server_cpu_us_per_request=per_request(server_cpu_s),
        server_cpu_us_per_image=per_request(server_cpu_s) / images_per_request,
        load_average=os.getloadavg()[0],
        locust_exit_code=exit_code,
        models=models,
    )


def model_shares(protocol: str, users: int, summary: dict) -> list[ModelShare]:
    """Each model's share of one level, from its live statistics (one row per model addressed)."""
    shares = []
    for model, share in summary.get("models", {}).items():
        latency = share.get("latency_ms", {})
        shares.append(
            ModelShare(
                protocol=protocol,
                users=users,
                model=model,
                requests=int(share.get("requests", 0)),
                answers=int(share.get("answers", 0)),
                wrong_digits=int(share.get("wrong", 0)),
                live_accuracy=math.nan if share.get("accuracy") is None else float(share["accuracy"]),
                p50_ms=math.nan if latency.get("p50") is None else float(latency["p50"]),
                p99_ms=math.nan if latency.get("p99") is None else float(latency["p99"]),
            )
        )
    return shares


def check_server(args: argparse.Namespace, protocols: list[str]) -> None:
    """Fail fast, in one line, when a server is absent or a model named is not AVAILABLE."""
    for name in model_names(args.model_name):
        for protocol in protocols:
            path, where = PATHS[protocol], _address(args, protocol)
            spec = ModelSpec(name=name)
            with connect(
                spec=spec, protocol=path.protocol, timeout=args.timeout, **{path.transport: where}
            ) as client:
                ready = client.ready()
            if not ready:
                raise Unavailable(f"model {name} has no AVAILABLE version at {where}", protocol=protocol)


def run_bench(args: argparse.Namespace) -> int:
    """The benchmark; exit code 0 when every level ran with zero failures."""
    protocols, levels = check_arguments(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server: StartedServer | None = None
    served = args.model_base_path or args.model_config_file
    if served:
        print(f"bench: starting the server over {served} ...", flush=True)
        server = start_server(
            args.model_base_path,
            model_names(args.model_name),
            out / "server.log",
            args.server_args,
            model_config_file=args.model_config_file,
        )
        args.rest, args.grpc, args.server_pid = server.rest_url, server.grpc_target, server.pid
    try:
        check_server(args, protocols)
        results = _run_levels(args, protocols, levels, out)
    finally:
        if server is not None:
            print(f"bench: stopping the server (exit status {server.stop()})", flush=True)
    batch = args.images_per_request
    generator = f"{args.workers} Locust worker process(es) + master" if args.workers else "one Locust process"
    which = f"our server started over {served}" if server else "the server"
    models = model_names(args.model_name)
    spread = f"; requests spread round-robin over {', '.join(models)}" if len(models) > 1 else ""
    cpu = "server CPU = its process tree's user+sys time" if args.server_pid else "server CPU not measured"
    header = (
        f"Benchmark: {', '.join(protocols)} at {', '.join(map(str, levels))} closed-loop users, "
        f"{args.duration:g} s each, {generator}, {os.cpu_count()} CPU cores shared with {which}; "
        f"{batch} MNIST test digit{'s' if batch > 1 else ''} per request{spread}; {cpu}."
    )
    csv_path, md_path, png_path = write_report(results, out, header)
    print(md_path.read_text())
    print(f"report: {md_path}  {csv_path}\nplot:   {png_path}\nLocust: {out / 'locust'}/")
    failed = sum(r.failures for r in results)
    # Locust exits 1 for failed requests, and also for exceptions in a user's task (a bug in the
    # load test, invisible in the request statistics): the latter must not pass silently.
    crashed = [f"{r.protocol} u={r.users}" for r in results if r.locust_exit_code != 0 and not r.failures]
    if failed or crashed:
        problems = [f"{failed} failed requests"] if failed else []
        problems += [f"Locust errors at {', '.join(crashed)} (see its Locust log)"] if crashed else []
        print(f"error: the benchmark saw {'; '.join(problems)}", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_OK


def _run_levels(
    args: argparse.Namespace, protocols: list[str], levels: list[int], out: Path
) -> list[LevelResult]:
    results: list[LevelResult] = []
    for protocol in protocols:
        for users in levels:
            print(f"bench: {protocol} with {users} users for {args.duration:g} s ...", flush=True)
            result = run_level(args, protocol, users, out)
            if result.requests == 0:
                log_path = _locust_prefix(out, protocol, users).with_suffix(".log")
                raise NoRequests(f"{protocol} u={users}", args.duration, _why_nothing(log_path), log_path)
            results.append(result)
            print(
                f"bench: {protocol} u={users}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, failures {result.failures}, live accuracy "
                f"{result.live_accuracy:.4f}, Locust CPU {result.generator_cpu_cores:.2f} cores, "
                f"server CPU {result.server_cpu_us_per_request:.0f} µs/req",
                flush=True,
            )
    return results


def _why_nothing(log_path: Path) -> str:
    """The likely cause of a level without requests, with the last error its Locust log shows."""
    cause = (
        "the Locust users never sent a request: they could not start (MNIST digits they could not "
        "load, a worker that never reached the master)"
    )
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return cause
    errors = [line.strip() for line in lines if "Error" in line or "Exception" in line]
    return f"{cause}; the log's last error: {errors[-1][:300]}" if errors else cause
