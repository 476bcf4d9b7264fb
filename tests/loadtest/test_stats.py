"""Live statistics (accuracy, fine latency) and the benchmark report files, without a server."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from client.bench import LevelResult, parse_levels, write_report
from client.locust_stats import LatencyHistogram, LiveStats, read_live_stats


def test_histogram_percentiles_within_one_percent() -> None:
    rng = np.random.default_rng(5)
    samples = rng.lognormal(mean=0.3, sigma=0.6, size=20_000)  # ms, a latency-like spread
    hist = LatencyHistogram()
    for ms in samples:
        hist.add(float(ms))
    for q in (50, 90, 99, 99.9):
        exact = float(np.percentile(samples, q, method="inverted_cdf"))
        assert hist.percentile(q) == pytest.approx(exact, rel=0.01)
    assert hist.percentile(100) == pytest.approx(samples.max())
    assert hist.mean() == pytest.approx(samples.mean())
    assert math.isnan(LatencyHistogram().percentile(50))


def test_worker_reports_merge_to_the_same_totals(tmp_path: Path) -> None:
    """What workers send with take() adds up on the master to what one process would count."""
    rng = np.random.default_rng(9)
    single, master = LiveStats(), LiveStats()
    workers = [LiveStats(), LiveStats()]
    for k in range(3000):
        protocol = "REST" if k % 3 else "gRPC"
        label = int(rng.integers(10))
        digit = label if rng.random() < 0.97 else (label + 1) % 10
        ms = float(rng.exponential(2.0))
        for stats in (single, workers[k % 2]):
            stats.answer(protocol, index=k, label=label, digit=digit)
            stats.latency(protocol, ms)
        if k % 500 == 499:  # periodic reports, as Locust sends them every few seconds
            for worker in workers:
                master.merge(json.loads(json.dumps(worker.take())))
    workers[0].add_generator_cpu(1.5)
    workers[1].add_generator_cpu(0.5)
    for worker in workers:
        master.merge(worker.take())
        assert worker.take()["protocols"] == {}
    expected, merged = single.summary(), master.summary()
    for protocol in ("REST", "gRPC"):
        for key in ("answers", "correct", "wrong", "requests"):
            assert merged[protocol][key] == expected[protocol][key]
        assert merged[protocol]["latency_ms"] == pytest.approx(expected[protocol]["latency_ms"])
        assert 0.95 < merged[protocol]["accuracy"] < 0.99
    assert master.generator_cpu_s == pytest.approx(2.0) and master.generator_processes == 2

    path = tmp_path / "live.json"
    master.write(path)
    written = read_live_stats(path)
    assert written["summary"]["gRPC"]["wrong"] == expected["gRPC"]["wrong"]
    assert written["generator"]["processes"] == 2


def test_levels_are_checked() -> None:
    assert parse_levels("16,1,4,4") == [1, 4, 16]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_levels(bad)


def test_report_files(tmp_path: Path) -> None:
    results = [
        LevelResult(
            protocol=protocol,
            users=users,
            duration_s=5,
            requests=1000 * users,
            failures=0,
            rps=200.0 * users,
            p50_ms=1.0 + users / 10,
            p90_ms=2.0 + users / 10,
            p99_ms=4.0 + users / 10,
            max_ms=9.0 + users,
            answers=1000 * users,
            wrong_digits=12 * users,
            live_accuracy=0.988,
            generator_cpu_cores=0.3,
            generator_cpu_us_per_request=300.0,
            generator_processes=2,
            server_cpu_us_per_request=math.nan,
            load_average=1.5,
            locust_exit_code=0,
        )
        for protocol in ("REST", "gRPC")
        for users in (1, 4)
    ]
    csv_path, md_path, png_path = write_report(results, tmp_path, "Benchmark: test")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["protocol"], int(r["users"])) for r in rows] == [
        ("REST", 1),
        ("REST", 4),
        ("gRPC", 1),
        ("gRPC", 4),
    ]
    markdown = md_path.read_text()
    assert "| gRPC | 4 | 4000 | 0 | 800 | 1.40 | 2.40 | 4.40 |" in markdown
    assert "—" in markdown  # no server pid: no server CPU figure, said so rather than 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
