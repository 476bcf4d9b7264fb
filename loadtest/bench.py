"""``python -m client bench``: Locust headless over REST and gRPC at several concurrency levels.

For each protocol and each number of users it runs ``client/locustfile.py`` for a bounded time
(as a master with ``--workers`` worker processes, or as one local process with ``--workers 0``),
keeps Locust's own CSV and HTML beside the report, and writes:

  report.csv / report.md   requests/s, p50/p90/p99/max latency, failures, live accuracy,
                           load-generator CPU (and server CPU per request with --server-pid)
  latency.png              latency percentiles and throughput against concurrency

Latency percentiles come from :mod:`client.locust_stats` (1 % buckets) because Locust rounds
times below 100 ms to whole milliseconds. The load generator's CPU is measured inside the Locust
processes over the test window, so the report says how much of the 2 cores it took.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import contract
from client.api import ModelSpec, connect
from client.grpc_client import PROTOCOL as GRPC
from client.locust_stats import read_live_stats  # plain JSON helpers: no Locust import
from client.rest_client import PROTOCOL as REST
from contract.errors import Unavailable

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASS = {REST: "RestDigitsUser", GRPC: "GrpcDigitsUser"}
START_GRACE_S = 60  # Locust's start-up and shutdown beyond the run time, before we give up


@dataclass
class LevelResult:
    """One protocol at one concurrency level."""

    protocol: str
    users: int
    duration_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    answers: int
    wrong_digits: int
    live_accuracy: float
    generator_cpu_cores: float  # CPU seconds of all Locust processes / test seconds
    generator_cpu_us_per_request: float
    generator_processes: int
    server_cpu_us_per_request: float  # NaN without --server-pid
    load_average: float  # the machine's 1-minute load at the end: others' work shows here
    locust_exit_code: int


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rest", metavar="URL", help=f"REST base URL, e.g. http://HOST:{contract.REST_PORT}")
    parser.add_argument("--grpc", metavar="HOST:PORT", help=f"gRPC target, e.g. HOST:{contract.GRPC_PORT}")
    parser.add_argument("--model-name", default=contract.MODEL_NAME)
    parser.add_argument(
        "--users",
        default="1,4,16",
        help="concurrency levels: comma-separated numbers of closed-loop users (default 1,4,16)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per protocol and level (default 10)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Locust worker processes (0: one local process, no master); default 1",
    )
    parser.add_argument("--mnist-dir", help=f"MNIST IDX directory (default ${contract.MNIST_DIR_ENV})")
    parser.add_argument("--out", default="reports/bench", help="report directory")
    parser.add_argument(
        "--server-pid",
        type=int,
        help="the server's main pid: report its CPU per request (it and its child processes)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--users must be comma-separated integers, got {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"--users needs positive numbers, got {text!r}")
    return sorted(set(levels))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of the server process and its children so far (NaN when unknown)."""
    if pid is None:
        return math.nan
    import psutil  # Locust depends on it

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return math.nan


def _locust_command(
    args: argparse.Namespace, protocol: str, users: int, prefix: Path, live_file: Path
) -> list[str]:
    host = args.rest if args.rest else f"http://{args.grpc}"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{args.duration:g}s",
        "--stop-timeout",
        "5",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--loglevel",
        "INFO",  # the log is a file; Locust says there when a worker goes missing
        "--model-name",
        args.model_name,
        "--request-timeout",
        f"{args.timeout:g}",
        "--live-stats-file",
        str(live_file),
    ]
    if args.grpc:
        command += ["--grpc-target", args.grpc]
    if args.mnist_dir:
        command += ["--mnist-dir", str(args.mnist_dir)]
    return command


def _run_level(args: argparse.Namespace, protocol: str, users: int, out: Path) -> LevelResult:
    name = f"{protocol.lower()}-u{users}"
    prefix = out / "locust" / name
    prefix.parent.mkdir(parents=True, exist_ok=True)
    live_file = out / "locust" / f"{name}-live.json"
    live_file.unlink(missing_ok=True)
    command = _locust_command(args, protocol, users, prefix, live_file)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    processes: list[subprocess.Popen] = []
    log_path = prefix.with_suffix(".log")
    server_before = server_cpu_seconds(args.server_pid)
    with open(log_path, "w") as log_file:
        if args.workers > 0:
            port = _free_port()
            master = command + [
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(args.workers),
                "--expect-workers-max-wait",
                "30",
                USER_CLASS[protocol],
            ]
            processes.append(_spawn(master, env, log_file))
            worker = [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                "--loglevel",
                "INFO",
            ]
            if args.mnist_dir:  # so the worker encodes its digits before the test starts
                worker += ["--mnist-dir", str(args.mnist_dir)]
            processes += [_spawn(worker, env, log_file) for _ in range(args.workers)]
        else:
            processes.append(_spawn(command + [USER_CLASS[protocol]], env, log_file))
        codes = _wait_all(processes, deadline=time.monotonic() + args.duration + START_GRACE_S)
    server_after = server_cpu_seconds(args.server_pid)
    master_code = codes[0]
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.is_file() or not live_file.is_file():
        tail = log_path.read_text()[-1500:]
        raise RuntimeError(
            f"Locust run {name} wrote no statistics (exit {master_code}); its log {log_path}:\n{tail}"
        )
    return _result(
        protocol,
        users,
        args.duration,
        stats_file,
        live_file,
        server_after - server_before,
        master_code,
    )


def _spawn(command: list[str], env: dict[str, str], log_file) -> subprocess.Popen:  # noqa: ANN001
    log.debug("running %s", " ".join(command))
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
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


def _result(
    protocol: str,
    users: int,
    duration: float,
    stats_file: Path,
    live_file: Path,
    server_cpu_s: float,
    exit_code: int,
) -> LevelResult:
    with open(stats_file, newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows.get("Aggregated")
    if total is None:
        raise RuntimeError(f"{stats_file} has no Aggregated row")
    requests = int(total["Request Count"])
    live = read_live_stats(live_file)
    summary = live["summary"].get(protocol, {})
    latency = summary.get("latency_ms", {})
    generator = live.get("generator", {})

    generator_cpu_s = float(generator.get("cpu_s", math.nan))

    def number(value: object) -> float:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    return LevelResult(
        protocol=protocol,
        users=users,
        duration_s=duration,
        requests=requests,
        failures=int(total["Failure Count"]),
        rps=float(total["Requests/s"]),
        p50_ms=number(latency.get("p50")),
        p90_ms=number(latency.get("p90")),
        p99_ms=number(latency.get("p99")),
        max_ms=number(latency.get("max")),
        answers=int(summary.get("answers", 0)),
        wrong_digits=int(summary.get("wrong", 0)),
        live_accuracy=number(summary.get("accuracy")),
        generator_cpu_cores=generator_cpu_s / duration,
        generator_cpu_us_per_request=generator_cpu_s / requests * 1e6 if requests else math.nan,
        generator_processes=int(generator.get("processes", 0)),
        server_cpu_us_per_request=server_cpu_s / requests * 1e6 if requests else math.nan,
        load_average=os.getloadavg()[0],
        locust_exit_code=exit_code,
    )


# --- the report ----------------------------------------------------------------------------------
COLUMNS = [
    ("protocol", "protocol", "{}"),
    ("users", "users", "{}"),
    ("requests", "requests", "{}"),
    ("failures", "failures", "{}"),
    ("rps", "req/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p90_ms", "p90 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_ms", "max ms", "{:.1f}"),
    ("live_accuracy", "live accuracy", "{:.4f}"),
    ("wrong_digits", "wrong digits", "{}"),
    ("generator_cpu_cores", "Locust CPU (cores)", "{:.2f}"),
    ("generator_cpu_us_per_request", "Locust CPU µs/req", "{:.0f}"),
    ("server_cpu_us_per_request", "server CPU µs/req", "{:.0f}"),
    ("load_average", "load avg (1 min)", "{:.1f}"),
]


def _cell(fmt: str, value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return fmt.format(value)


def write_report(results: list[LevelResult], out: Path, header: str) -> tuple[Path, Path, Path]:
    """report.csv, report.md and latency.png in ``out``."""
    csv_path, md_path, png_path = out / "report.csv", out / "report.md", out / "latency.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(results[0])))
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    lines = [header, "", "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in results:
        lines.append("| " + " | ".join(_cell(fmt, getattr(r, key)) for key, _, fmt in COLUMNS) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    plot(results, png_path)
    return csv_path, md_path, png_path


def plot(results: list[LevelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed for a file
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {REST: "tab:blue", GRPC: "tab:orange"}
    for protocol in (REST, GRPC):
        rows = sorted((r for r in results if r.protocol == protocol), key=lambda r: r.users)
        if not rows:
            continue
        users = [r.users for r in rows]
        for key, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
            lat.plot(
                users,
                [getattr(r, key) for r in rows],
                style,
                marker="o",
                color=colours[protocol],
                label=f"{protocol} {key.split('_')[0]}",
            )
        thr.plot(users, [r.rps for r in rows], "-", marker="o", color=colours[protocol], label=protocol)
    levels = sorted({r.users for r in results})
    for axis in (lat, thr):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(n) for n in levels])
        axis.set_xlabel("concurrent users (closed loop)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    lat.set_yscale("log")
    lat.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    lat.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    lat.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    lat.set_ylabel("latency (ms)")
    lat.set_title("Latency percentiles vs concurrency")
    thr.set_ylim(bottom=0)
    thr.set_ylabel("requests / s")
    thr.set_title("Throughput vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _check_server(args: argparse.Namespace) -> None:
    """Fail fast, in one line, when a server is absent or its model is not AVAILABLE."""
    spec = ModelSpec(name=args.model_name)
    for kind, where in (("rest", args.rest), ("grpc", args.grpc)):
        if not where:
            continue
        with connect(spec=spec, timeout=args.timeout, **{kind: where}) as client:
            versions = client.status()
        if not any(v.available for v in versions):
            raise Unavailable(
                f"model {args.model_name} has no AVAILABLE version at {where}",
                protocol=kind,
            )


def run_bench(args: argparse.Namespace) -> int:
    """The ``bench`` command; exit code 0 when every level ran with zero failures."""
    from client.cli import EXIT_OK, EXIT_UNHEALTHY

    levels = parse_levels(args.users)
    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    _check_server(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocols = [p for p, where in ((REST, args.rest), (GRPC, args.grpc)) if where]
    results: list[LevelResult] = []
    for protocol in protocols:
        for users in levels:
            print(f"bench: {protocol} with {users} users for {args.duration:g} s ...", flush=True)
            result = _run_level(args, protocol, users, out)
            results.append(result)
            print(
                f"bench: {protocol} u={users}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, failures {result.failures}, live accuracy "
                f"{result.live_accuracy:.4f}, Locust CPU {result.generator_cpu_cores:.2f} cores",
                flush=True,
            )
    generator = f"{args.workers} Locust worker process(es) + master" if args.workers else "one Locust process"
    header = (
        f"Benchmark: {', '.join(protocols)} at {', '.join(map(str, levels))} closed-loop users, "
        f"{args.duration:g} s each, {generator}, {os.cpu_count()} CPU cores shared with the "
        f"server; one MNIST test digit per request."
    )
    csv_path, md_path, png_path = write_report(results, out, header)
    print(md_path.read_text())
    print(f"report: {md_path}  {csv_path}\nplot:   {png_path}\nLocust: {out / 'locust'}/")
    failed = sum(r.failures for r in results)
    empty = [f"{r.protocol} u={r.users}" for r in results if r.requests == 0]
    if failed or empty:
        problems = [f"{failed} failed requests"] if failed else []
        problems += [f"no requests at {', '.join(empty)} (see its Locust log)"] if empty else []
        print(f"error: the benchmark saw {'; '.join(problems)}", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_OK
