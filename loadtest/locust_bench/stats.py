"""Statistics Locust does not keep: live accuracy and fine-grained latency, across workers.

* Live accuracy: every answer's digit is checked against the MNIST label. A wrong digit is not
  a failed request (the protocol worked), so it is counted here, per protocol, not hidden.
* Latency: Locust rounds response times below 100 ms to whole milliseconds, too coarse for a
  small model's answers. Every request event is also put into a log-bucketed histogram
  (1 % wide buckets), which merges exactly across processes.
* Per model: when the users spread their requests over several models, each protocol's answers
  and latency are also kept per model (the model a request addressed rides in its event's
  ``context``), beside the protocol's totals.

In distributed mode each worker sends its counts since the last report with Locust's
``report_to_master`` event and the master merges them on ``worker_report``; the master (or a
local runner) writes the totals as JSON on ``quit``, after the workers' final reports.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_KEY = "digits_live"  # our entry in the worker -> master stats message
_STEP = math.log(1.01)  # bucket width: 1 % of the value
_MAX_WRONG_EXAMPLES = 20


def _bucket(ms: float) -> int:
    return int(math.floor(math.log(max(ms, 0.001) * 1000.0) / _STEP))  # microseconds, log scale


def _bucket_value(bucket: int) -> float:
    """The centre of a bucket, in milliseconds (within 0.5 % of every value in it)."""
    return math.exp((bucket + 0.5) * _STEP) / 1000.0


@dataclass
class LatencyHistogram:
    """Response times in ms, 1 %-wide log buckets; exact max; mergeable."""

    buckets: Counter = field(default_factory=Counter)
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.buckets[_bucket(ms)] += 1
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: dict[str, Any]) -> None:
        for key, n in other.get("buckets", {}).items():
            self.buckets[int(key)] += int(n)
        self.count += int(other.get("count", 0))
        self.total_ms += float(other.get("total_ms", 0.0))
        self.max_ms = max(self.max_ms, float(other.get("max_ms", 0.0)))

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q <= 100) in ms; NaN without samples."""
        if self.count == 0:
            return math.nan
        if q >= 100:
            return self.max_ms
        rank = math.ceil(self.count * q / 100.0)
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(_bucket_value(bucket), self.max_ms)
        return self.max_ms

    def mean(self) -> float:
        return self.total_ms / self.count if self.count else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total_ms": self.total_ms,
            "max_ms": self.max_ms,
        }


@dataclass
class ProtocolStats:
    """One protocol's answers (right/wrong digit) and latency."""

    correct: int = 0
    wrong: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    wrong_examples: list[dict[str, int]] = field(default_factory=list)

    @property
    def answers(self) -> int:
        return self.correct + self.wrong

    def accuracy(self) -> float:
        return self.correct / self.answers if self.answers else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct,
            "wrong": self.wrong,
            "latency": self.latency.to_dict(),
            "wrong_examples": self.wrong_examples,
        }

    def merge(self, other: dict[str, Any]) -> None:
        self.correct += int(other.get("correct", 0))
        self.wrong += int(other.get("wrong", 0))
        self.latency.merge(other.get("latency", {}))
        room = _MAX_WRONG_EXAMPLES - len(self.wrong_examples)
        self.wrong_examples.extend(other.get("wrong_examples", [])[: max(room, 0)])


class LiveStats:
    """Per-protocol (and per protocol and model) live accuracy and latency of one process (or, on
    the master, of all)."""

    def __init__(self) -> None:
        self.protocols: dict[str, ProtocolStats] = {}
        self.models: dict[str, dict[str, ProtocolStats]] = {}  # protocol -> model -> its share
        # CPU seconds the Locust processes (users and master) spent between test start and stop:
        # the load generator's own cost, reported beside the results it produced.
        self.generator_cpu_s = 0.0
        self.generator_processes = 0

    def _for(self, protocol: str, model: str | None = None) -> list[ProtocolStats]:
        """The protocol's totals, and its model's share when the model is known."""
        totals = self.protocols.setdefault(protocol, ProtocolStats())
        if model is None:
            return [totals]
        return [totals, self.models.setdefault(protocol, {}).setdefault(model, ProtocolStats())]

    def answer(self, protocol: str, *, index: int, label: int, digit: int, model: str | None = None) -> None:
        """Count one answer that came back well-formed; wrong digits are kept apart."""
        for stats in self._for(protocol, model):
            if digit == label:
                stats.correct += 1
                continue
            stats.wrong += 1
            if len(stats.wrong_examples) < _MAX_WRONG_EXAMPLES:
                stats.wrong_examples.append({"index": index, "label": label, "digit": digit})

    def latency(self, protocol: str, response_time_ms: float, model: str | None = None) -> None:
        for stats in self._for(protocol, model):
            stats.latency.add(response_time_ms)

    def add_generator_cpu(self, seconds: float) -> None:
        """One process's CPU time over the test (called once per process, at test stop)."""
        self.generator_cpu_s += seconds
        self.generator_processes += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocols": {name: stats.to_dict() for name, stats in self.protocols.items()},
            "models": {
                protocol: {model: stats.to_dict() for model, stats in models.items()}
                for protocol, models in self.models.items()
            },
            "generator_cpu_s": self.generator_cpu_s,
            "generator_processes": self.generator_processes,
        }

    def take(self) -> dict[str, Any]:
        """The counts since the last call, for a worker's report to the master."""
        data = self.to_dict()
        self.protocols = {}
        self.models = {}
        self.generator_cpu_s = 0.0
        self.generator_processes = 0
        return data

    def merge(self, data: dict[str, Any]) -> None:
        for name, stats in data.get("protocols", {}).items():
            self._for(name)[0].merge(stats)
        for name, models in data.get("models", {}).items():
            for model, stats in models.items():
                self._for(name, model)[1].merge(stats)
        self.generator_cpu_s += float(data.get("generator_cpu_s", 0.0))
        self.generator_processes += int(data.get("generator_processes", 0))

    def summary(self) -> dict[str, Any]:
        """Per protocol: answers, correct, wrong, accuracy and latency percentiles (ms), and the
        same per model under ``models`` (empty when no request named its model)."""
        out: dict[str, Any] = {}
        for name, stats in sorted(self.protocols.items()):
            models = self.models.get(name, {})
            out[name] = {
                **_summary(stats),
                "wrong_examples": stats.wrong_examples,
                "models": {model: _summary(share) for model, share in sorted(models.items())},
            }
        return out

    def write(self, path: str | Path, locust_totals: dict[str, float] | None = None) -> None:
        """The summary, the generator's CPU and, when given, Locust's own final totals (its
        ``--csv`` files are rewritten once a second, so they can miss the last second)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "summary": self.summary(),
            "generator": {
                "cpu_s": self.generator_cpu_s,
                "processes": self.generator_processes,
            },
            "raw": self.to_dict(),
        }
        if locust_totals is not None:
            document["locust"] = locust_totals
        # NaN is not JSON; a protocol without answers has accuracy null
        path.write_text(json.dumps(_nan_to_none(document), indent=2) + "\n")


def _summary(stats: ProtocolStats) -> dict[str, Any]:
    """Answers, accuracy and latency percentiles (ms) of one protocol, or of one model's share."""
    hist = stats.latency
    return {
        "answers": stats.answers,
        "correct": stats.correct,
        "wrong": stats.wrong,
        "accuracy": stats.accuracy(),
        "requests": hist.count,
        "latency_ms": {
            "mean": hist.mean(),
            "p50": hist.percentile(50),
            "p90": hist.percentile(90),
            "p99": hist.percentile(99),
            "max": hist.max_ms,
        },
    }


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def read_live_stats(path: str | Path) -> dict[str, Any]:
    """What a run wrote (see :meth:`LiveStats.write`): ``summary`` per protocol, ``generator``."""
    return json.loads(Path(path).read_text())
