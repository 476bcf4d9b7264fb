"""The fault-injection soak: its verdict on made-up records, and a real one-minute soak.

The one-minute soak runs ``python -m loadtest chaos`` against our server over the shipped model:
every kind of fault is injected (each once per round), and the soak must pass: no wrong answer,
failures only in flight at a kill, abuse answered 4xx, memory and descriptors flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.chaos.faults import FAULTS, Event
from loadtest.chaos.record import Sample, SoakRecord
from loadtest.chaos.report import verdict
from loadtest.chaos.traffic import Outcome

ROOT = Path(__file__).resolve().parents[2]


def _record(outcomes=(), events=(), rss=(100, 100), fds=(50, 50)) -> SoakRecord:
    samples = [Sample(10.0 + i, r * 2**20, f, 5) for i, (r, f) in enumerate(zip(rss, fds, strict=True))]
    answered = [Outcome("REST", 6.0 + i / 10, 6.0 + i / 10 + 0.001) for i in range(20)]
    return SoakRecord(1.0, 0, [*answered, *outcomes], list(events), samples)


def test_a_quiet_soak_passes() -> None:
    assert verdict(_record())["passed"]


def test_a_failure_in_flight_at_a_kill_is_explained() -> None:
    kill = Event(20.0, "kill", "worker 1")
    failed = Outcome("gRPC", 19.99, 20.01, error="ServingError:UNAVAILABLE")
    summary = verdict(_record([failed], [kill]))
    assert summary["failures_by_cause"] == {"in flight at a kill": 1}
    assert summary["passed"]


def test_a_failure_no_kill_explains_fails_the_soak() -> None:
    kill = Event(20.0, "kill", "worker 1")
    failed = Outcome("gRPC", 30.0, 30.01, error="ServingError:UNAVAILABLE")
    summary = verdict(_record([failed], [kill]))
    assert summary["failures_by_cause"] == {"ServingError:UNAVAILABLE": 1}
    assert not summary["checks"]["failures only at kills"] and not summary["passed"]


def test_a_wrong_answer_fails_the_soak() -> None:
    summary = verdict(_record([Outcome("V2 REST", 7.0, 7.001, wrong=True)]))
    assert summary["wrong"] == 1 and not summary["passed"]


def test_abuse_answered_with_a_5xx_fails_the_soak() -> None:
    abuse = Event(12.0, "malformed", "bad JSON", ["400", "500"])
    assert not verdict(_record(events=[abuse]))["checks"]["no abuse answered 5xx"]


def test_growing_memory_or_descriptors_fail_the_soak() -> None:
    rss = verdict(_record(rss=[100] * 10 + [130] * 10, fds=[50] * 20))
    fds = verdict(_record(rss=[100] * 20, fds=[50] * 10 + [80] * 10))
    assert not rss["checks"]["memory within 1.2x"] and rss["checks"]["descriptors flat"]
    assert not fds["checks"]["descriptors flat"] and fds["checks"]["memory within 1.2x"]


@pytest.mark.slow
def test_a_one_minute_soak_passes(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    command = [
        sys.executable, "-m", "loadtest", "chaos", "--model-base-path", str(ROOT / "pretrained" / "lenet5"),
        "--minutes", "1", "--seed", "7", "--fault-interval", "3", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "chaos.json").read_text())
    summary = report["summary"]
    assert set(summary["faults"]) == set(FAULTS)  # every kind of fault was made
    assert summary["wrong"] == 0 and summary["requests"] > 1000
    assert all(count > 100 for count in summary["by_path"].values()) and len(summary["by_path"]) == 5
    assert (out / "chaos.png").stat().st_size > 10_000 and "PASSED" in (out / "chaos.md").read_text()
    assert not [e for e in report["events"] if e["detail"].startswith("not made")]
