"""The perf benchmark's results: rounds, medians, ratios against the baseline.

Nothing here runs a server or a generator (:mod:`loadtest.perf.bench` does): a :class:`Round` is one
scenario measured once on one server (or on a transport floor: :mod:`loadtest.perf.multiples`,
which also holds the targets); ``summarise`` takes the median of each scenario's rounds per
server and the per-round ratios new/baseline (rounds are paired by their index: round k of the
new server ran next to round k of the baseline); ``markdown`` writes the servers' table and the
ratios that go into docs/performance.md.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from loadtest.paths import BY_KEY

NEW, BASELINE = "new", "baseline"
# A scenario's path is a key of loadtest.paths: rest, grpc (TF Serving's APIs), v2-rest (V2 REST
# with binary tensors), v2-json (V2 REST with JSON tensors), v2-grpc.
_SCENARIO = re.compile(
    r"^(?P<protocol>" + "|".join(sorted(BY_KEY, key=len, reverse=True)) + r")"
    r"(?:-b(?P<images>\d+))?-c(?P<connections>\d+)$"
)


@dataclass(frozen=True)
class Scenario:
    """One load: a wire path, closed-loop connections, images per request (``grpc-b64-c1``).

    ``protocol`` is the path: ``rest`` / ``grpc`` (TF Serving's APIs), ``v2-rest`` (V2 REST with
    binary tensors), ``v2-json`` (V2 REST with JSON tensors), ``v2-grpc`` (V2 gRPC).
    """

    protocol: str
    connections: int
    images: int = 1

    @property
    def api(self) -> str:
        """``rest`` or ``grpc``: the transport (the server's ``api`` metrics label)."""
        return BY_KEY[self.protocol].transport

    @property
    def wire_protocol(self) -> str:
        """``tfserving`` or ``v2`` (the server's ``protocol`` metrics label)."""
        return BY_KEY[self.protocol].protocol

    @property
    def name(self) -> str:
        batch = f"-b{self.images}" if self.images > 1 else ""
        return f"{self.protocol}{batch}-c{self.connections}"

    @classmethod
    def parse(cls, text: str) -> Scenario:
        match = _SCENARIO.match(text.strip().lower())
        if match is None:
            raise ValueError(
                f"a scenario is {'|'.join(BY_KEY)}[-bIMAGES]-cCONNECTIONS (e.g. grpc-b64-c1, "
                f"v2-rest-c16), got {text!r}"
            )
        scenario = cls(match["protocol"], int(match["connections"]), int(match["images"] or 1))
        if scenario.connections < 1 or not 1 <= scenario.images <= 1024:
            raise ValueError(f"scenario {text!r}: connections >= 1 and 1..1024 images per request")
        return scenario


def parse_scenarios(text: str) -> list[Scenario]:
    scenarios = [Scenario.parse(item) for item in text.split(",") if item.strip()]
    if not scenarios:
        raise ValueError("--scenarios names no scenario")
    return list(dict.fromkeys(scenarios))


@dataclass
class Round:
    """One scenario measured once on one server."""

    server: str  # NEW, BASELINE or a transport floor (floor-rsgi, floor-wsgi, floor-grpc)
    scenario: str
    round: int
    images: int
    requests: int  # answers the generator received
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    generator_errors: int
    served: int  # predict answers the server counted in the window (its metrics); -1 unknown (floors)
    server_errors: int  # of which not OK
    cpu_s: float  # the server process tree's user+sys time over the window
    load_average: float
    detail: str = ""

    @property
    def errors(self) -> int:
        return self.generator_errors + max(self.server_errors, 0)

    @property
    def cpu_us_per_request(self) -> float:
        # The server's own count is the right divisor (it includes answers the generator cut off).
        count = self.served if self.served > 0 else self.requests
        return self.cpu_s / count * 1e6 if count else math.nan

    @property
    def cpu_us_per_image(self) -> float:
        return self.cpu_us_per_request / self.images

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "cpu_us_per_request": self.cpu_us_per_request,
            "cpu_us_per_image": self.cpu_us_per_image,
        }


METRICS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "cpu_us_per_image")


@dataclass
class Summary:
    """A scenario on one server: medians over rounds, errors summed."""

    scenario: str
    server: str
    rounds: int
    medians: dict[str, float]
    errors: int


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def summarise(rounds: list[Round]) -> dict[tuple[str, str], Summary]:
    """(scenario, server) -> medians over its rounds."""
    groups: dict[tuple[str, str], list[Round]] = {}
    for r in rounds:
        groups.setdefault((r.scenario, r.server), []).append(r)
    return {
        key: Summary(key[0], key[1], len(rows), {m: median(getattr(r, m) for r in rows) for m in METRICS},
                     sum(r.errors for r in rows))
        for key, rows in groups.items()
    }  # fmt: skip


def round_ratios(rounds: list[Round], scenario: str, metric: str) -> list[float]:
    """new / baseline of ``metric`` for each round index both servers ran."""
    by_round = {(r.server, r.round): getattr(r, metric) for r in rounds if r.scenario == scenario}
    ratios = []
    for (server, index), value in sorted(by_round.items(), key=lambda kv: kv[0][1]):
        base = by_round.get((BASELINE, index))
        if server == NEW and base and not math.isnan(value) and not math.isnan(base):
            ratios.append(value / base)
    return ratios


def num(value: float, fmt: str) -> str:
    return "—" if value is None or math.isnan(value) else fmt.format(value)


def _ratio(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "—"


def markdown(header: str, scenarios: list[Scenario], rounds: list[Round]) -> str:
    """The report: how it was run, one row per scenario and server, the ratios new / baseline."""
    summaries = summarise(rounds)
    has_baseline = any(r.server == BASELINE for r in rounds)
    lines = [header, ""]
    title = "| scenario | server | rounds | req/s | p50 ms | p99 ms | server CPU µs/req | µs/image | errors |"
    lines += [title, "|" + "---|" * (title.count("|") - 1)]
    for scenario in scenarios:
        for server in (BASELINE, NEW) if has_baseline else (NEW,):
            s = summaries.get((scenario.name, server))
            if s is None:
                continue
            m = s.medians
            cells = [
                num(m["rps"], "{:,.0f}"),
                num(m["p50_ms"], "{:.2f}"),
                num(m["p99_ms"], "{:.2f}"),
                num(m["cpu_us_per_request"], "{:.0f}"),
                num(m["cpu_us_per_image"], "{:.1f}"),
            ]
            lines.append(f"| {scenario.name} | {server} | {s.rounds} | {' | '.join(cells)} | {s.errors} |")
    if has_baseline:
        lines += [
            "",
            "Ratios new / baseline (median of the per-round ratios; each round's ratio listed):",
            "",
            "| scenario | server CPU µs/req | req/s | p99 ms |",
            "|---|---|---|---|",
        ]
        for scenario in scenarios:
            cells = []
            for metric in ("cpu_us_per_request", "rps", "p99_ms"):
                ratios = round_ratios(rounds, scenario.name, metric)
                cells.append(f"**{median(ratios):.2f}** ({_ratio(ratios)})" if ratios else "—")
            lines.append(f"| {scenario.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
