"""The benchmark's results and report files: one :class:`LevelResult` per protocol and level.

``write_report`` writes ``report.csv`` (every field), ``report.md`` (a header saying how the run
was made, then one table row per level, and, when the users addressed several models, a table of
each model's share: ``report-models.csv`` holds it too) and ``latency.png`` (latency percentiles
and throughput against concurrency). Nothing here talks to a server or starts Locust. A level
without requests (the benchmark stops at one, :class:`loadtest.checks.NoRequests`) is never
plotted: it has no latency to put on a log scale; report.md names it instead.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import matplotlib.ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # the object API: no pyplot, no display, no global state

from loadtest.paths import PATHS


@dataclass
class LevelResult:
    """One protocol at one concurrency level."""

    protocol: str
    users: int
    images_per_request: int
    duration_s: float
    requests: int
    failures: int
    rps: float
    images_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    answers: int  # digits checked (images, not requests)
    wrong_digits: int
    live_accuracy: float
    generator_cpu_cores: float  # CPU seconds of all Locust processes / test seconds
    generator_cpu_us_per_request: float
    generator_processes: int
    server_cpu_us_per_request: float  # NaN when the server's pid is unknown
    server_cpu_us_per_image: float
    load_average: float  # the machine's 1-minute load at the end: others' work shows here
    locust_exit_code: int
    models: list[ModelShare] = field(default_factory=list)  # each model's share, when several


@dataclass
class ModelShare:
    """One model's share of a level whose users spread their requests over several models."""

    protocol: str
    users: int
    model: str
    requests: int
    answers: int
    wrong_digits: int
    live_accuracy: float
    p50_ms: float
    p99_ms: float


# (field, markdown title, format); the batch columns only when some request carried several images
COLUMNS = [
    ("protocol", "protocol", "{}"),
    ("users", "users", "{}"),
    ("images_per_request", "images/req", "{}"),
    ("requests", "requests", "{}"),
    ("failures", "failures", "{}"),
    ("rps", "req/s", "{:.0f}"),
    ("images_per_s", "images/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p90_ms", "p90 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("max_ms", "max ms", "{:.1f}"),
    ("live_accuracy", "live accuracy", "{:.4f}"),
    ("wrong_digits", "wrong digits", "{}"),
    ("generator_cpu_cores", "Locust CPU (cores)", "{:.2f}"),
    ("generator_cpu_us_per_request", "Locust CPU µs/req", "{:.0f}"),
    ("server_cpu_us_per_request", "server CPU µs/req", "{:.0f}"),
    ("server_cpu_us_per_image", "server CPU µs/image", "{:.1f}"),
    ("load_average", "load avg (1 min)", "{:.1f}"),
]
BATCH_ONLY = {"images_per_request", "images_per_s", "server_cpu_us_per_image"}
MODEL_COLUMNS = [
    ("protocol", "protocol", "{}"),
    ("users", "users", "{}"),
    ("model", "model", "{}"),
    ("requests", "requests", "{}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("live_accuracy", "live accuracy", "{:.4f}"),
    ("wrong_digits", "wrong digits", "{}"),
]
LEVEL_FIELDS = [f.name for f in fields(LevelResult) if f.name != "models"]


def _cell(fmt: str, value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return fmt.format(value)


def markdown_table(results: list[LevelResult]) -> str:
    batched = any(r.images_per_request > 1 for r in results)
    return _table([c for c in COLUMNS if batched or c[0] not in BATCH_ONLY], results)


def _table(columns: list[tuple[str, str, str]], rows: list) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(fmt, getattr(r, key)) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def model_shares(results: list[LevelResult]) -> list[ModelShare]:
    """Every level's per-model rows, where its users addressed more than one model."""
    return [share for r in results if len(r.models) > 1 for share in r.models]


def write_report(results: list[LevelResult], out: Path, header: str) -> tuple[Path, Path, Path]:
    """report.csv, report.md and latency.png in ``out``."""
    csv_path, md_path, png_path = out / "report.csv", out / "report.md", out / "latency.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LEVEL_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    empty = [f"{r.protocol} u={r.users}" for r in results if not _plottable(r)]
    note = f"\n(not plotted: no requests at {', '.join(empty)})\n" if empty else ""
    shares = model_shares(results)
    per_model = f"\nPer model:\n\n{_table(MODEL_COLUMNS, shares)}\n" if shares else ""
    if shares:
        with open(out / "report-models.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[column.name for column in fields(ModelShare)])
            writer.writeheader()
            writer.writerows(asdict(share) for share in shares)
    md_path.write_text(f"{header}\n\n{markdown_table(results)}\n{per_model}{note}")
    plot(results, png_path)
    return csv_path, md_path, png_path


def _plottable(r: LevelResult) -> bool:
    """A level with requests and a latency to plot (a log scale takes positive numbers only)."""
    return r.requests > 0 and r.p50_ms > 0  # NaN > 0 is False


def plot(results: list[LevelResult], path: Path) -> None:
    """Latency percentiles (log scale) and throughput against the number of users."""
    batched = any(r.images_per_request > 1 for r in results)
    results = [r for r in results if _plottable(r)]
    fig = Figure(figsize=(11, 4.2))
    lat, thr = fig.subplots(1, 2)
    colours = dict(zip(PATHS, ("tab:blue", "tab:orange", "tab:green", "tab:olive", "tab:red"), strict=True))
    for protocol in PATHS:
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
        rate = [r.images_per_s if batched else r.rps for r in rows]
        thr.plot(users, rate, "-", marker="o", color=colours[protocol], label=protocol)
    if results:  # log scales and legends need something on them
        _scales(lat, thr, sorted({r.users for r in results}))
    lat.set_ylabel("latency (ms)")
    lat.set_title("Latency percentiles vs concurrency")
    thr.set_ylim(bottom=0)
    thr.set_ylabel("images / s" if batched else "requests / s")
    thr.set_title("Throughput vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _scales(lat: Axes, thr: Axes, levels: list[int]) -> None:
    """Users on a log2 axis on both plots, latency on a log axis."""
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
