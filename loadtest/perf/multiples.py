"""The perf benchmark's floors, every scenario as multiples of them, and the targets set in multiples.

Nothing here runs anything (:mod:`loadtest.perf.floors` measures the floors). Two floors, both
measured in the same run as the scenarios, so that the multiples travel between machines where
absolute µs do not:

- the ONNX Runtime floor (:class:`OrtFloor`): CPU µs per batch-1 call and per image at batch 64
  of the served ``model.onnx``, measured before and after the rounds; the mean of the two is used;
- the transport floors: rounds of an empty handler on the same stack (``floor-rsgi``,
  ``floor-wsgi``, ``floor-grpc`` :class:`~loadtest.perf.report.Round` rows), interleaved with the
  servers' rounds.

A scenario's multiples, per round and then their median (round k of a server beside round k of
its floor): ``server / (transport floor + ORT floor)`` and ``server / ORT floor``, where the ORT
floor of a request is the batch-1 call cost for one image, else images x the batch-64 cost per
image. The targets (issue 23) are reported, never enforced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from loadtest.perf.report import NEW, Round, Scenario, median, num

FLOOR_PREFIX = "floor-"
RSGI, WSGI, GRPC = "rsgi", "wsgi", "grpc"  # the floors' stacks (granian's two interfaces, grpcio)
STACKS = {
    RSGI: "granian RSGI, one worker",
    WSGI: "granian WSGI, one worker",
    GRPC: "grpcio, one process, generic handler on raw bytes",
}
FLOORS, ORT, TWIN = "transport + ORT", "ORT", "TF Serving twin"  # what a target divides by
ORT_LARGE_BATCH = 64  # the ORT floor's cost per image is measured at this batch size


def floor_label(stack: str) -> str:
    """The ``server`` of a floor's rounds: ``floor-rsgi``, ``floor-wsgi``, ``floor-grpc``."""
    return FLOOR_PREFIX + stack


def is_floor(label: str) -> bool:
    return label.startswith(FLOOR_PREFIX)


def transport_stack(scenario: Scenario, interface: str) -> str:
    """The floor that goes with a scenario on a server whose REST interface is ``interface``."""
    return GRPC if scenario.api == "grpc" else interface


def floor_stacks(scenarios: Iterable[Scenario], interfaces: Iterable[str]) -> list[str]:
    """The floors some scenario needs: RSGI for REST paths (and WSGI when a measured server's REST
    interface is WSGI), grpcio for gRPC paths."""
    apis, interfaces = {s.api for s in scenarios}, set(interfaces)
    stacks = [RSGI, *([WSGI] if WSGI in interfaces else [])] if "rest" in apis else []
    return stacks + ([GRPC] if "grpc" in apis else [])


def floor_measures(label: str, scenario: Scenario) -> bool:
    """Whether a server or floor of ``label`` runs ``scenario``: a floor runs its transport's."""
    if not is_floor(label):
        return True
    return (label == floor_label(GRPC)) == (scenario.api == "grpc")


@dataclass
class OrtFloor:
    """ONNX Runtime alone on the served model: before and after the rounds (loadtest.perf.ort_floor)."""

    model: str
    before: dict[str, float]
    after: dict[str, float]

    def mean(self, key: str) -> float:
        return (self.before[key] + self.after[key]) / 2

    @property
    def call_us(self) -> float:
        """CPU µs per batch-1 call (the mean of before and after)."""
        return self.mean("b1_call_us")

    @property
    def image_us(self) -> float:
        """CPU µs per image at batch 64 (the mean of before and after)."""
        return self.mean("b64_image_us")

    def request_us(self, images: int) -> float:
        """The ORT floor of one request of ``images`` images."""
        return self.call_us if images == 1 else images * self.image_us


@dataclass
class Floors:
    """What the multiples divide by: the ORT floor, and each measured server's REST interface."""

    ort: OrtFloor
    interfaces: dict[str, str]  # server label (new, baseline) -> rsgi / wsgi: its REST floor
    replies: dict[str, int] = field(default_factory=dict)  # "rest-b1" -> bytes the floors answer

    def as_dict(self) -> dict:
        ort = {**asdict(self.ort), "b1_call_us": self.ort.call_us, "b64_image_us": self.ort.image_us}
        return {"ort": ort, "used": "mean of before and after", "interfaces": self.interfaces,
                "replies": self.replies}  # fmt: skip


@dataclass
class Multiple:
    """One scenario on one server as multiples of its floors: per round, in round order."""

    server: str
    scenario: str
    transport: str  # the floor's label
    server_us: float  # medians over the rounds
    transport_us: float
    ort_us: float
    vs_floors: list[float]  # server / (transport floor + ORT floor), round by round
    vs_ort: list[float]  # server / ORT floor

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "vs_floors_median": median(self.vs_floors),
            "vs_ort_median": median(self.vs_ort),
        }


def _cpu(rounds: list[Round]) -> dict[tuple[str, str, int], float]:
    return {(r.server, r.scenario, r.round): r.cpu_us_per_request for r in rounds if r.round >= 0}


def multiples(rounds: list[Round], scenarios: list[Scenario], floors: Floors) -> list[Multiple]:
    """Every scenario of every server in ``floors.interfaces`` as multiples of its floors."""
    cpu = _cpu(rounds)
    found = []
    for server, interface in floors.interfaces.items():
        for scenario in scenarios:
            transport = floor_label(transport_stack(scenario, interface))
            indices = sorted(i for label, name, i in cpu if (label, name) == (server, scenario.name))
            if not indices:
                continue
            ort = floors.ort.request_us(scenario.images)
            mine = [cpu[server, scenario.name, i] for i in indices]
            theirs = [cpu.get((transport, scenario.name, i), math.nan) for i in indices]
            found.append(Multiple(
                server, scenario.name, transport, median(mine), median(theirs), ort,
                [m / (t + ort) for m, t in zip(mine, theirs, strict=True)], [m / ort for m in mine],
            ))  # fmt: skip
    return found


def twin(scenario: Scenario) -> Scenario | None:
    """The TF Serving path a V2 path is held to: V2 REST (binary or JSON) to REST, V2 gRPC to gRPC."""
    if scenario.wire_protocol != "v2":
        return None
    return Scenario("rest" if scenario.api == "rest" else "grpc", scenario.connections, scenario.images)


def twin_ratios(rounds: list[Round], scenario: Scenario, server: str = NEW) -> list[float]:
    """A V2 scenario's server CPU per request over its TF Serving twin's, round by round."""
    other = twin(scenario)
    if other is None:
        return []
    cpu = _cpu(rounds)
    return [
        value / cpu[server, other.name, i]
        for (label, name, i), value in sorted(cpu.items(), key=lambda kv: kv[0][2])
        if (label, name) == (server, scenario.name) and (server, other.name, i) in cpu
    ]


@dataclass(frozen=True)
class Target:
    """One target of issue 23: a multiple that must stay at or under ``limit``."""

    text: str
    against: str  # FLOORS, ORT or TWIN
    limit: float
    applies: Callable[[Scenario], bool] = field(compare=False)


def _single(protocol: str, connections: int) -> Callable[[Scenario], bool]:
    return lambda s: (s.protocol, s.images, s.connections) == (protocol, 1, connections)


TARGETS = (
    Target("REST at 1 connection ≤ 1.25x (transport floor + ORT floor)", FLOORS, 1.25, _single("rest", 1)),
    Target("REST at 16 connections ≤ 5x the ORT floor", ORT, 5.0, _single("rest", 16)),
    Target("gRPC at 1 connection ≤ 1.2x (grpcio floor + ORT floor)", FLOORS, 1.2, _single("grpc", 1)),
    Target("gRPC at 16 connections ≤ 1.1x (grpcio floor + ORT floor)", FLOORS, 1.1, _single("grpc", 16)),
    Target("64-image gRPC ≤ 1.1x (grpcio floor + 64 x the ORT cost per image at batch 64)", FLOORS, 1.1,
           lambda s: (s.protocol, s.images, s.connections) == ("grpc", 64, 1)),
    Target("V2 at most 10% dearer than its TF Serving twin (server CPU per request)", TWIN, 1.10,
           lambda s: twin(s) is not None),
)  # fmt: skip
ZERO_ERRORS = "zero errors"


def _measured(target: Target, scenario: Scenario, rounds: list[Round], found: dict[str, Multiple]) -> float:
    """The median multiple a target reads for a scenario of the new server (NaN: not measured)."""
    if target.against == TWIN:
        return median(twin_ratios(rounds, scenario))
    multiple = found.get(scenario.name)
    if multiple is None:
        return math.nan
    return median(multiple.vs_floors if target.against == FLOORS else multiple.vs_ort)


def check_targets(
    scenarios: list[Scenario], rounds: list[Round], floors: Floors | None
) -> list[tuple[str, str, float, bool]]:
    """(target, scenario, measured multiple, met) of the new server for every target that applies
    to a scenario run and could be measured (without floors: the twins only), then zero errors."""
    found = {m.scenario: m for m in multiples(rounds, scenarios, floors) if m.server == NEW} if floors else {}
    checks = []
    for target in TARGETS:
        for scenario in scenarios:
            if not target.applies(scenario) or (floors is None and target.against != TWIN):
                continue
            value = _measured(target, scenario, rounds, found)
            if not math.isnan(value):
                checks.append((target.text, scenario.name, value, value <= target.limit))
    errors = sum(r.errors for r in rounds if r.server == NEW)
    return [*checks, (ZERO_ERRORS, "all", float(errors), errors == 0)]


def _listed(values: list[float]) -> str:
    shown = " ".join(num(v, "{:.2f}") for v in values)
    return f"**{num(median(values), '{:.2f}')}** ({shown})" if values else "—"


def floors_markdown(scenarios: list[Scenario], rounds: list[Round], floors: Floors) -> list[str]:
    """The floors measured in this run and every scenario as multiples of them."""
    ort = floors.ort
    lines = [
        "",
        f"Floors measured in this run. ONNX Runtime alone on `{ort.model}` (one session, one "
        "intra-op and one inter-op thread, CPU µs): "
        f"{num(ort.before['b1_call_us'], '{:.1f}')} per batch-1 call and "
        f"{num(ort.before['b64_image_us'], '{:.1f}')} per image at batch 64 before the rounds, "
        f"{num(ort.after['b1_call_us'], '{:.1f}')} and {num(ort.after['b64_image_us'], '{:.1f}')} "
        f"after; used: their mean, {ort.call_us:.1f} and {ort.image_us:.1f}. Transport floors "
        "(an empty handler answering the bytes our server answered, medians of their rounds):",
        "",
        "| scenario | floor | rounds | req/s | CPU µs/req | reply bytes |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        for stack in STACKS:
            rows = [r for r in rounds if (r.server, r.scenario) == (floor_label(stack), scenario.name)]
            if rows:
                size = floors.replies.get(f"{scenario.protocol}-b{scenario.images}", 0)
                lines.append(
                    f"| {scenario.name} | {STACKS[stack]} | {len(rows)} | "
                    f"{num(median(r.rps for r in rows), '{:,.0f}')} | "
                    f"{num(median(r.cpu_us_per_request for r in rows), '{:.0f}')} | {size:,} |"
                )
    lines += [
        "",
        "Server CPU per request as multiples of the floors (median of the per-round multiples; "
        "each round's listed):",
        "",
        "| scenario | server | CPU µs/req | transport floor µs | ORT floor µs | x (transport + ORT) "
        "| x ORT |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in multiples(rounds, scenarios, floors):
        lines.append(
            f"| {m.scenario} | {m.server} | {num(m.server_us, '{:.0f}')} | "
            f"{num(m.transport_us, '{:.0f}')} ({m.transport.removeprefix(FLOOR_PREFIX)}) | "
            f"{m.ort_us:.1f} | {_listed(m.vs_floors)} | {_listed(m.vs_ort)} |"
        )
    return lines


def targets_markdown(scenarios: list[Scenario], rounds: list[Round], floors: Floors | None) -> list[str]:
    lines = ["", "Targets (issue 23: multiples of the floors of this run), medians of the new server:", ""]
    lines += ["| target | scenario | measured | met |", "|---|---|---|---|"]
    for text, scenario, value, met in check_targets(scenarios, rounds, floors):
        shown = num(value, "{:.0f}") if text == ZERO_ERRORS else num(value, "{:.2f}x")
        lines.append(f"| {text} | {scenario} | {shown} | {'met' if met else '**not met**'} |")
    return lines


def markdown(scenarios: list[Scenario], rounds: list[Round], floors: Floors | None, why_not: str = "") -> str:
    """The floors, the multiples and the targets (without floors, ``why_not``: the targets that
    need none)."""
    if floors:
        lines = floors_markdown(scenarios, rounds, floors)
    else:
        lines = ["", f"Floors: not measured ({why_not or '--no-floors'})."]
    return "\n".join(lines + targets_markdown(scenarios, rounds, floors)) + "\n"
