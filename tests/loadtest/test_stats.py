"""Live statistics Locust does not keep: fine latency percentiles and live accuracy, merged across workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from loadtest.locust_bench.stats import LatencyHistogram, LiveStats, read_live_stats


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


def test_per_model_shares_merge_across_workers_beside_the_totals() -> None:
    workers = [LiveStats(), LiveStats()]
    for k, worker in enumerate(workers):
        worker.latency("gRPC", 2.0, model="lenet5")
        worker.latency("gRPC", 4.0, model="lenet5-ensemble")
        worker.answer("gRPC", index=k, label=3, digit=3, model="lenet5")
        worker.answer("gRPC", index=k, label=3, digit=5, model="lenet5-ensemble")
        worker.latency("gRPC", 8.0)  # a request that named no model counts in the totals only
    master = LiveStats()
    for worker in workers:
        master.merge(worker.take())
    summary = master.summary()["gRPC"]
    assert (summary["requests"], summary["answers"], summary["wrong"]) == (6, 4, 2)
    models = summary["models"]
    assert sorted(models) == ["lenet5", "lenet5-ensemble"]
    assert (models["lenet5"]["requests"], models["lenet5"]["accuracy"]) == (2, 1.0)
    assert (models["lenet5-ensemble"]["wrong"], models["lenet5-ensemble"]["accuracy"]) == (2, 0.0)
    assert not workers[0].models, "take() starts the next report from zero"
