"""Short real Locust runs against the real server on loopback; their statistics read back.

Bounded: a few seconds of load per run (``--run-time``), two or three users, and the processes
are ended if they overrun. Locust runs with the installed ``loadtest`` package: no PYTHONPATH.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import EXIT_OK
from loadtest.locust_bench.stats import read_live_stats

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _aggregated(stats_csv: Path) -> dict[str, str]:
    with open(stats_csv, newline="") as f:
        return next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")


def test_bench_runs_master_and_workers_over_both_protocols(
    running_server, mnist_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest",
            "--rest", running_server.rest_url, "--grpc", running_server.grpc_target,
            "--users", "3", "--duration", "3", "--workers", "2",
            "--mnist-dir", str(mnist_dir), "--out", str(out),
            "--server-pid", str(running_server.pid),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stdout[-3000:] + result.stderr[-3000:]

    with open(out / "report.csv", newline="") as f:
        rows = {row["protocol"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"REST", "gRPC"}
    for protocol, row in rows.items():
        assert int(row["requests"]) > 50, row
        assert int(row["failures"]) == 0, row
        assert float(row["live_accuracy"]) > 0.95, row
        assert int(row["answers"]) + 10 >= int(row["requests"]) > 0  # every answer was checked
        assert 0 < float(row["p50_ms"]) <= float(row["p99_ms"]) <= float(row["max_ms"])
        assert int(row["generator_processes"]) == 3  # master + 2 workers reported their CPU
        assert float(row["generator_cpu_cores"]) > 0
        assert float(row["server_cpu_us_per_request"]) > 0
        # Locust's own outputs are kept beside the report and agree with it
        name = f"{protocol.lower()}-u3"
        locust_row = _aggregated(out / "locust" / f"{name}_stats.csv")
        # Locust rewrites its CSV once a second: it may miss the last second, never add to it
        assert 0 < int(locust_row["Request Count"]) <= int(row["requests"])
        assert (out / "locust" / f"{name}.html").stat().st_size > 1000
        live = read_live_stats(out / "locust" / f"{name}-live.json")["summary"][protocol]
        assert live["answers"] == int(row["answers"])
    report = (out / "report.md").read_text()
    assert "| REST | 3 |" in report and "| gRPC | 3 |" in report
    assert (out / "latency.png").stat().st_size > 10_000


def test_locustfile_runs_alone_with_every_user(running_server, mnist_dir: Path, tmp_path: Path) -> None:
    """The plain ``locust -f loadtest/locust_bench/locustfile.py`` form, one local process, the five user
    classes (TF Serving REST and gRPC, V2 REST binary and JSON, V2 gRPC) side by side."""
    live_file = tmp_path / "live.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", "loadtest/locust_bench/locustfile.py", "--headless",
            "-u", "5", "-r", "5", "-t", "3s", "--stop-timeout", "5",
            "--host", running_server.rest_url, "--grpc-target", running_server.grpc_target,
            "--mnist-dir", str(mnist_dir), "--mnist-sample", "200",
            "--csv", str(tmp_path / "run"), "--live-stats-file", str(live_file),
            "--only-summary", "--loglevel", "WARNING",
            "RestDigitsUser", "GrpcDigitsUser",
            "V2RestDigitsUser", "V2JsonRestDigitsUser", "V2GrpcDigitsUser",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    for row in (("POST", ":predict"), ("gRPC", "Predict"), ("POST", "infer"), ("POST", "infer (json)"),
                ("gRPC", "ModelInfer")):  # fmt: skip
        assert int(rows[row]["Request Count"]) > 20, row
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0, rows[("", "Aggregated")]
    summary = read_live_stats(live_file)["summary"]
    for protocol in ("REST", "gRPC", "V2 REST", "V2 REST JSON", "V2 gRPC"):
        assert summary[protocol]["answers"] > 20, protocol  # every answer's digit was checked
        assert summary[protocol]["accuracy"] > 0.95, protocol
        assert summary[protocol]["latency_ms"]["p50"] > 0, protocol


def test_bench_starts_its_own_server_and_sends_batches(
    model_base_path: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    """``--model-base-path``: our server is started, measured without a pid given, and stopped;
    ``--images-per-request``: every digit of every batched answer is checked."""
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest", "--model-base-path", str(model_base_path),
            "--server-args", "--num_workers 1 --access_log false",
            "--users", "2", "--duration", "3", "--workers", "0", "--images-per-request", "8",
            "--mnist-dir", str(mnist_dir), "--out", str(out),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopping the server (exit status 0)" in result.stdout, result.stdout[-3000:]
    with open(out / "report.csv", newline="") as f:
        rows = {row["protocol"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"REST", "gRPC"}
    for row in rows.values():
        requests = int(row["requests"])
        assert requests > 10 and int(row["failures"]) == 0, row
        assert int(row["images_per_request"]) == 8
        # 8 digits checked per answer (answers still in flight at the stop may land on either side)
        assert abs(int(row["answers"]) - 8 * requests) <= 8 * 10, row
        assert float(row["images_per_s"]) == pytest.approx(8 * float(row["rps"]))
        assert float(row["live_accuracy"]) > 0.95, row
        assert float(row["server_cpu_us_per_request"]) > 0  # measured by default: we know its pid
        assert float(row["server_cpu_us_per_image"]) == pytest.approx(
            float(row["server_cpu_us_per_request"]) / 8
        )
    report = (out / "report.md").read_text()
    assert "8 MNIST test digits per request" in report and "| images/req |" in report
    assert "lenet5" in (out / "server.log").read_text()
