"""The soak's verdict and report: chaos.json, chaos.md and chaos.png (latency, memory,
descriptors over time, with the faults marked).

A failed request counts as "in flight at a kill" when a worker was SIGKILLed while it ran or in
the second before it started (a kept-alive connection to the killed worker fails on its next
use); every other failure is unexplained and fails the soak.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.chaos.record import Sample, SoakRecord  # noqa: E402
from loadtest.chaos.traffic import Outcome  # noqa: E402

RSS_RATIO = 1.2  # resident memory at the end over its level after warm-up, at most
FD_SLACK = 10  # open descriptors at the end over their level after warm-up, at most this many more
KILL_BEFORE_S = 1.0  # a kill this long before a request started still explains its failure
KILL_AFTER_S = 0.25  # ... and this long after it ended (the answer's last bytes)
WINDOW_S = 5.0  # latency percentiles per window
FAULT_COLOURS = {
    "kill": "red", "stop": "purple", "publish": "green", "corrupt": "orange",
    "slow_copy": "blue", "half_sent": "grey", "oversized": "brown", "malformed": "black",
}


def at_a_kill(outcome: Outcome, kills: list[float]) -> bool:
    return any(outcome.started - KILL_BEFORE_S <= k <= outcome.ended + KILL_AFTER_S for k in kills)


def _level(samples: list[Sample], attribute: str, first: bool) -> float:
    """The median of the first (after warm-up) or last tenth of the samples."""
    values = [getattr(s, attribute) for s in samples]
    part = max(1, len(values) // 10)
    return float(statistics.median(values[:part] if first else values[-part:]))


def _failures(record: SoakRecord) -> tuple[Counter, int]:
    """Failures by cause, and how many of them no kill explains."""
    kills = [e.at for e in record.events if e.kind == "kill"]
    causes: Counter = Counter()
    unexplained = 0
    for outcome in record.outcomes:
        if outcome.error is None:
            continue
        if at_a_kill(outcome, kills):
            causes["in flight at a kill"] += 1
        else:
            causes[outcome.error] += 1
            unexplained += 1
    return causes, unexplained


def _resources(record: SoakRecord) -> dict[str, float]:
    steady = [s for s in record.samples if s.at >= record.warmup_s] or record.samples
    if not steady:
        return {"rss_start_mb": 0.0, "rss_end_mb": 0.0, "rss_ratio": 0.0, "fds_start": 0, "fds_end": 0}
    rss_start, rss_end = _level(steady, "rss_bytes", True), _level(steady, "rss_bytes", False)
    return {
        "rss_start_mb": rss_start / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_ratio": rss_end / rss_start if rss_start else 0.0,
        "fds_start": _level(steady, "fds", True),
        "fds_end": _level(steady, "fds", False),
    }


def verdict(record: SoakRecord) -> dict[str, Any]:
    """The soak's figures and whether they pass."""
    answered = [o for o in record.outcomes if o.error is None]
    causes, unexplained = _failures(record)
    abuse_5xx = sum(a.startswith("5") for e in record.events for a in e.answers)
    resources = _resources(record)
    latencies = sorted(o.ended - o.started for o in answered) or [float("nan")]
    checks = {
        "answered at all": len(answered) > 0,
        "no wrong answer": sum(o.wrong for o in answered) == 0,
        "failures only at kills": unexplained == 0,
        "no abuse answered 5xx": abuse_5xx == 0,
        f"memory within {RSS_RATIO}x": 0 < resources["rss_ratio"] <= RSS_RATIO,
        "descriptors flat": resources["fds_end"] <= resources["fds_start"] + FD_SLACK,
    }
    return {
        "requests": len(record.outcomes),
        "by_path": dict(Counter(o.path for o in record.outcomes)),
        "wrong": sum(o.wrong for o in answered),
        "failed": sum(causes.values()),
        "failures_by_cause": dict(causes),
        "faults": dict(Counter(e.kind for e in record.events)),
        "abuse_answers": dict(Counter(a for e in record.events for a in e.answers)),
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        **resources,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _markdown(record: SoakRecord, summary: dict[str, Any]) -> str:
    rows = [
        f"# Chaos soak: {'PASSED' if summary['passed'] else 'FAILED'}",
        "",
        f"{record.minutes:g} min of faults, seed {record.seed}; {summary['requests']} requests on five "
        f"paths ({', '.join(f'{k} {v}' for k, v in summary['by_path'].items())}).",
        "",
        "| check | holds |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in summary["checks"].items()],
        "",
        f"- wrong answers: {summary['wrong']}",
        f"- failed requests: {summary['failed']} "
        f"({', '.join(f'{k}: {v}' for k, v in summary['failures_by_cause'].items()) or 'none'})",
        f"- faults: {', '.join(f'{k} {v}' for k, v in sorted(summary['faults'].items()))}",
        f"- abusive requests' answers: {', '.join(f'{k} x{v}' for k, v in summary['abuse_answers'].items())}",
        f"- latency of answered requests: p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms",
        f"- server RSS (all processes): {summary['rss_start_mb']:.0f} MB after warm-up, "
        f"{summary['rss_end_mb']:.0f} MB at the end ({summary['rss_ratio']:.2f}x)",
        f"- open file descriptors: {summary['fds_start']:.0f} after warm-up, "
        f"{summary['fds_end']:.0f} at the end",
        "",
        "![latency, memory and descriptors over time](chaos.png)",
        "",
    ]
    return "\n".join(rows)


def _windows(outcomes: list[Outcome]) -> tuple[list[float], list[float], list[float]]:
    """(window starts, p50 ms, p99 ms) of answered requests per ``WINDOW_S``."""
    by_window: dict[int, list[float]] = {}
    for o in outcomes:
        if o.error is None:
            by_window.setdefault(int(o.started // WINDOW_S), []).append(1e3 * (o.ended - o.started))
    starts, p50, p99 = [], [], []
    for window, values in sorted(by_window.items()):
        values.sort()
        starts.append(window * WINDOW_S)
        p50.append(values[len(values) // 2])
        p99.append(values[min(len(values) - 1, int(len(values) * 0.99))])
    return starts, p50, p99


def _plot(record: SoakRecord, path: Path) -> None:
    figure, (latency, memory, descriptors) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    starts, p50, p99 = _windows(record.outcomes)
    lines = latency.plot(starts, p50, label="p50") + latency.plot(starts, p99, label="p99")
    latency.set_ylabel(f"ms (per {WINDOW_S:g} s)")
    latency.set_yscale("log")
    times = [s.at for s in record.samples]
    memory.plot(times, [s.rss_bytes / 2**20 for s in record.samples])
    memory.set_ylabel("server RSS, MB")
    descriptors.plot(times, [s.fds for s in record.samples])
    descriptors.set_ylabel("open fds")
    descriptors.set_xlabel("seconds")
    for axis in (latency, memory, descriptors):
        for event in record.events:
            axis.axvline(event.at, color=FAULT_COLOURS.get(event.kind, "grey"), alpha=0.3, linewidth=1)
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in FAULT_COLOURS.items()]
    latency.legend(handles=lines + handles, ncol=5, fontsize=7)
    latency.set_title("Chaos soak: steady traffic on five paths under injected faults")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(record: SoakRecord, summary: dict[str, Any], out: Path) -> None:
    """chaos.json (figures, faults, samples), chaos.md (the verdict) and chaos.png."""
    document = {
        "summary": summary,
        "events": [asdict(e) for e in record.events],
        "samples": [asdict(s) for s in record.samples],
        "failures": [asdict(o) for o in record.outcomes if o.error is not None],
    }
    (out / "chaos.json").write_text(json.dumps(document, indent=1))
    (out / "chaos.md").write_text(_markdown(record, summary))
    _plot(record, out / "chaos.png")
