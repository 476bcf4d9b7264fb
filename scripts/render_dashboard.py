"""Render the Grafana dashboard's panels from a running Prometheus into PNGs, with matplotlib.

Reads the dashboard JSON (monitoring/dashboards/digits.json), asks Prometheus' range-query API for
every query of every panel over a time range, with the dashboard's variables substituted as
Grafana would ($model, $version: the newest unless given, $__rate_interval, $__interval,
$__range), and draws each panel where the dashboard puts it (its gridPos): one PNG of the whole
dashboard and one per dashboard row. Panel types drawn: timeseries (stacking, fill-between bands,
threshold lines, dashed series), stat, state-timeline and heatmap (a Prometheus histogram's
buckets); anything else is an error.

Usage (a Prometheus scraping the server, e.g. the one tests/integration/test_prometheus.py starts,
which calls this script when DIGITS_DASHBOARD_FIGURES is set):

    python scripts/render_dashboard.py http://127.0.0.1:9090 --minutes 5 --rate-interval 20s \\
        --out docs/figures/monitoring --mark "1767225600=inverted digits"
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, PercentFormatter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "monitoring" / "dashboards" / "digits.json"
OUT = ROOT / "docs" / "figures" / "monitoring"
GRID_COLUMNS = 24  # Grafana's grid width
FIGURE_WIDTH = 15.0  # inches, the whole grid
UNIT_INCHES = 0.36  # height of one grid unit
HEADER_INCHES = 0.45  # the figure's title
TICKS_INCHES = 0.25  # x tick labels under a plot
FONT = 8.5
DPI = 100
TIMEOUT_S = 30.0
STATE_COLOURS = {1.0: "tab:green", 0.0: "lightgrey"}  # state-timeline: serving / dropped


# --- Prometheus -----------------------------------------------------------------------------------
@dataclass
class Series:
    labels: dict[str, str]
    times: np.ndarray  # unix seconds
    values: np.ndarray


def query_range(prometheus: str, query: str, start: float, end: float, step: float) -> list[Series]:
    """Prometheus' /api/v1/query_range: every series of ``query`` (raises on a query error)."""
    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": step})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 400/422: the query; the body says why
        body = json.load(exc)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus rejected {query!r}: {body.get('error')}")
    return [
        Series(
            labels=item["metric"],
            times=np.array([float(t) for t, _ in item["values"]]),
            values=np.array([float(v) for _, v in item["values"]]),
        )
        for item in body["data"]["result"]
    ]


def newest_version(prometheus: str, model: str) -> str:
    """The highest version of ``model`` Prometheus has seen available (the dashboard's default)."""
    params = urllib.parse.urlencode({"match[]": f'serving_model_version_available{{model="{model}"}}'})
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/label/version/values?{params}",
                                timeout=TIMEOUT_S) as response:
        versions = json.load(response)["data"]
    if not versions:
        raise SystemExit(f"Prometheus has no serving_model_version_available for model {model!r}")
    return max(versions, key=int)


# --- The dashboard --------------------------------------------------------------------------------
@dataclass
class Context:
    """What a rendering needs besides the panel: the server, the range, the variables, marks."""

    prometheus: str
    start: float
    end: float
    step: float
    variables: dict[str, str]
    marks: list[tuple[float, str]] = field(default_factory=list)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}`` variables replaced (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def legend(target: dict[str, Any], labels: dict[str, str]) -> str:
    """A series' name as Grafana shows it: the target's legendFormat ({{label}}) or its labels."""
    fmt = target.get("legendFormat") or ""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or labels.get("__name__", "value")


def fetch(panel: dict[str, Any], ctx: Context) -> list[tuple[str, dict[str, Any], Series]]:
    """(legend, target, series) of every visible target's series, in the targets' order."""
    out = []
    for target in panel["targets"]:
        if target.get("hide"):
            continue
        query = substitute(target["expr"], ctx.variables)
        for series in query_range(ctx.prometheus, query, ctx.start, ctx.end, ctx.step):
            out.append((legend(target, series.labels), target, series))
    return out


def overrides(panel: dict[str, Any], name: str) -> dict[str, Any]:
    """The override properties matching a series name (byName and byRegexp matchers)."""
    props: dict[str, Any] = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override["matcher"]
        hit = (matcher["id"] == "byName" and matcher["options"] == name) or (
            matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name))
        if hit:
            props.update({p["id"]: p["value"] for p in override["properties"]})
    return props


def defaults(panel: dict[str, Any]) -> dict[str, Any]:
    return panel.get("fieldConfig", {}).get("defaults", {})


# --- Axes -----------------------------------------------------------------------------------------
def unit_formatter(unit: str | None) -> FuncFormatter | PercentFormatter | EngFormatter:
    if unit == "percentunit":
        return PercentFormatter(1.0, decimals=None)
    if unit == "s":
        return EngFormatter(unit="s", sep=" ")
    if unit in ("reqps", "ops"):
        return FuncFormatter(lambda v, _: f"{v:g}/s")
    return FuncFormatter(lambda v, _: f"{v:g}")


def time_axis(ax: Axes, ctx: Context) -> None:
    ax.set_xlim(_dates(np.array([ctx.start, ctx.end])))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    inches = ax.get_position().width * ax.figure.get_size_inches()[0]
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=max(2, int(inches / 0.8))))
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    for when, text in ctx.marks:
        x = _dates(np.array([when]))[0]
        ax.axvline(x, color="black", linestyle=":", linewidth=1)
        ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                    textcoords="offset points", fontsize=FONT - 1)


def _dates(unix: np.ndarray) -> np.ndarray:
    return np.array([mdates.date2num(datetime.fromtimestamp(t)) for t in unix])


def legend_below(ax: Axes) -> None:
    """Grafana's legend under the plot: the axes shrink to make room for its rows."""
    handles, labels = ax.get_legend_handles_labels()
    if not labels:
        return
    fig = ax.figure
    width, height = fig.get_size_inches()
    box = ax.get_position()
    column = 0.4 + 0.06 * max(len(label) for label in labels)  # inches per legend entry
    rows = math.ceil(len(labels) / max(1, min(len(labels), int(box.width * width // column))))
    ncol = math.ceil(len(labels) / rows)
    # matplotlib fills a legend column by column: reorder so that its rows read in order.
    order = [i for c in range(ncol) for i in range(c, len(labels), ncol)]
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    room = (rows * 0.2 + 0.05) / height
    ax.set_position((box.x0, box.y0 + room, box.width, box.height - room))
    below = -TICKS_INCHES / ((box.height - room) * height)  # under the tick labels, in axes units
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(0, below), ncol=ncol, fontsize=FONT - 0.5,
              frameon=False, handlelength=1.5, columnspacing=1.0, borderaxespad=0, borderpad=0)


# --- Panels ---------------------------------------------------------------------------------------
def draw_timeseries(ax: Axes, panel: dict[str, Any], ctx: Context) -> None:
    found = fetch(panel, ctx)
    if defaults(panel).get("custom", {}).get("stacking", {}).get("mode") == "normal":
        _stacked(ax, found)
    else:
        _lines(ax, panel, found)
    _threshold_lines(ax, panel)
    ax.yaxis.set_major_formatter(unit_formatter(defaults(panel).get("unit")))
    if "min" in defaults(panel):
        ax.set_ylim(bottom=defaults(panel)["min"])
    if "max" in defaults(panel):
        ax.set_ylim(top=defaults(panel)["max"])
    time_axis(ax, ctx)
    if not found:
        _no_data(ax)
    legend_below(ax)


def _lines(ax: Axes, panel: dict[str, Any], found: list[tuple[str, dict, Series]]) -> None:
    """One line per series, with the overrides' colour, dash and width; fillBelowTo bands."""
    drawn: dict[str, Any] = {}
    for name, _, series in found:
        props = overrides(panel, name)
        width = props.get("custom.lineWidth", 1.5)
        hidden = width == 0 or props.get("custom.hideFrom", {}).get("legend")
        (line,) = ax.plot(_dates(series.times), series.values, label="_nolegend_" if hidden else name,
                          color=props.get("color", {}).get("fixedColor"), linewidth=width,
                          linestyle="--" if props.get("custom.lineStyle", {}).get("fill") == "dash" else "-")
        drawn[name] = (series, line)
    for name, (series, line) in drawn.items():
        other = overrides(panel, name).get("custom.fillBelowTo")
        if other in drawn:  # Grafana's band between two series (a baseline +/- its spread)
            low = drawn[other][0]
            common, mine, theirs = np.intersect1d(series.times, low.times, return_indices=True)
            ax.fill_between(_dates(common), low.values[theirs], series.values[mine], label=name,
                            color=line.get_color(), alpha=0.2, linewidth=0)


def _stacked(ax: Axes, found: list[tuple[str, dict, Series]]) -> None:
    if not found:
        return
    times = np.unique(np.concatenate([s.times for _, _, s in found]))
    rows = []
    for _, _, series in found:
        row = np.zeros(len(times))
        row[np.searchsorted(times, series.times)] = series.values
        rows.append(row)
    colours = plt.get_cmap("tab10").colors
    ax.stackplot(_dates(times), np.array(rows), labels=[n for n, _, _ in found],
                 colors=[colours[i % len(colours)] for i in range(len(rows))], alpha=0.85)


def _threshold_lines(ax: Axes, panel: dict[str, Any]) -> None:
    if defaults(panel).get("custom", {}).get("thresholdsStyle", {}).get("mode") not in ("line", "dashed"):
        return
    for step in defaults(panel).get("thresholds", {}).get("steps", []):
        if step.get("value") is not None:
            ax.axhline(step["value"], color=step.get("color", "red"), linestyle="--", linewidth=1)


def draw_state_timeline(ax: Axes, panel: dict[str, Any], ctx: Context) -> None:
    """One row per series, coloured where it is 1 (serving) or 0 (dropped), blank where absent;
    each row's name written inside it, at the left."""
    found = fetch(panel, ctx)
    for row, (name, _, series) in enumerate(found):
        for value, colour in STATE_COLOURS.items():
            spans = [(a, b - a) for a, b in _date_spans(series.times[series.values == value], ctx.step)]
            ax.broken_barh(spans, (row - 0.4, 0.8), color=colour)
        ax.annotate(name, (0, row), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=FONT,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
    ax.set_yticks([])
    ax.set_ylim(len(found) - 0.5, -0.5)
    time_axis(ax, ctx)
    if not found:
        _no_data(ax)


def _date_spans(times: np.ndarray, step: float) -> list[tuple[float, float]]:
    """Consecutive sample times (gaps of at most 1.5 steps) as (start, end) spans, in plot dates."""
    spans: list[tuple[float, float]] = []
    for t in times:
        if spans and t - spans[-1][1] <= 1.5 * step:
            spans[-1] = (spans[-1][0], t + step)
        else:
            spans.append((t, t + step))
    return [tuple(_dates(np.array(span))) for span in spans]


def draw_heatmap(ax: Axes, panel: dict[str, Any], ctx: Context) -> None:
    """A histogram's buckets over time (cumulative ``le`` series de-accumulated), each column
    normalised to the share of observations per bucket; the colour bar in the panel's margin."""
    found = fetch(panel, ctx)
    time_axis(ax, ctx)
    if not found:
        _no_data(ax)
        return
    by_le = sorted(found, key=lambda f: float(f[2].labels["le"]))
    times = np.unique(np.concatenate([s.times for _, _, s in by_le]))
    cumulative = np.zeros((len(by_le), len(times)))
    for i, (_, _, series) in enumerate(by_le):
        cumulative[i, np.searchsorted(times, series.times)] = series.values
    counts = np.diff(cumulative, axis=0, prepend=0.0).clip(min=0)
    totals = counts.sum(axis=0)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    bounds = ["0"] + [s.labels["le"].replace("+Inf", "1") for _, _, s in by_le]
    x = _dates(np.append(times, times[-1] + ctx.step))
    mesh = ax.pcolormesh(x, np.arange(len(by_le) + 1), share, cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(np.arange(len(bounds)), bounds, fontsize=FONT)
    ax.grid(False)
    box = ax.get_position()
    width = ax.figure.get_size_inches()[0]
    cax = ax.figure.add_axes((box.x1 + 0.1 / width, box.y0, 0.12 / width, box.height))
    bar = ax.figure.colorbar(mesh, cax=cax, format=PercentFormatter(1.0))
    bar.ax.tick_params(labelsize=FONT - 1)


def draw_stat(ax: Axes, panel: dict[str, Any], ctx: Context) -> None:
    """The last value of each series, coloured by the panel's thresholds."""
    found = fetch(panel, ctx)
    ax.set_xticks([])
    ax.set_yticks([])
    if not found:
        _no_data(ax)
        return
    fmt = unit_formatter(defaults(panel).get("unit"))
    for i, (name, _, series) in enumerate(found):
        value = series.values[-1]
        y = 1 - (i + 0.5) / len(found)
        ax.text(0.5, y, fmt(value, 0), ha="center", va="center", fontsize=26, weight="bold",
                color=_threshold_colour(panel, value), transform=ax.transAxes)
        if len(found) > 1:
            ax.text(0.5, y - 0.3 / len(found), name, ha="center", fontsize=FONT, transform=ax.transAxes)


def _threshold_colour(panel: dict[str, Any], value: float) -> str:
    colour = "black"
    for step in defaults(panel).get("thresholds", {}).get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            colour = step.get("color", colour)
    return colour


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "No data", ha="center", va="center", color="grey", transform=ax.transAxes)


DRAW: dict[str, Callable[[Axes, dict[str, Any], Context], None]] = {
    "timeseries": draw_timeseries,
    "state-timeline": draw_state_timeline,
    "heatmap": draw_heatmap,
    "stat": draw_stat,
}
# Inches between a panel's grid cell and its plot: (left, right, top, bottom), for tick labels,
# the title, a colour bar.
MARGINS = {"stat": (0.1, 0.1, 0.3, 0.1), "state-timeline": (0.15, 0.15, 0.3, 0.3),
           "heatmap": (0.6, 0.75, 0.3, 0.3)}
DEFAULT_MARGINS = (0.6, 0.15, 0.3, 0.3)


# --- Figures --------------------------------------------------------------------------------------
def rows(dashboard: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(row title, its panels) in the dashboard's order; panels before any row go under ""."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            out.append((panel["title"], [panel]))
        elif out:
            out[-1][1].append(panel)
        else:
            out.append(("", [panel]))
    return out


def render(panels: list[dict[str, Any]], ctx: Context, title: str, path: Path) -> None:
    """The panels laid out by their gridPos (rows as headings), saved as one PNG."""
    top = min(p["gridPos"]["y"] for p in panels)
    units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) - top
    width, height = FIGURE_WIDTH, units * UNIT_INCHES + HEADER_INCHES
    fig = plt.figure(figsize=(width, height))
    fig.suptitle(title, fontsize=FONT + 4, x=0.01, y=1 - 0.12 / height, ha="left", va="top")
    for panel in panels:
        pos = panel["gridPos"]
        left, right = pos["x"] / GRID_COLUMNS * width, (pos["x"] + pos["w"]) / GRID_COLUMNS * width
        upper = HEADER_INCHES + (pos["y"] - top) * UNIT_INCHES  # inches from the figure's top
        lower = upper + pos["h"] * UNIT_INCHES
        text = substitute(panel["title"], ctx.variables)
        if panel["type"] == "row":
            fig.text(0.01, 1 - (upper + lower) / 2 / height, text, fontsize=FONT + 3, weight="bold",
                     va="center")
            continue
        if panel["type"] not in DRAW:
            raise SystemExit(f"panel {panel['title']!r}: type {panel['type']!r} is not drawn by this script")
        m_left, m_right, m_top, m_bottom = MARGINS.get(panel["type"], DEFAULT_MARGINS)
        ax = fig.add_axes(((left + m_left) / width, 1 - (lower - m_bottom) / height,
                           (right - left - m_left - m_right) / width,
                           (lower - upper - m_top - m_bottom) / height))
        ax.set_title(text, fontsize=FONT + 1.5, loc="left", weight="bold")
        DRAW[panel["type"]](ax, panel, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "panels"


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``20s``, ``5m``, ``1h``) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20s, 5m)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


def mark(text: str) -> tuple[float, str]:
    when, _, label = text.partition("=")
    try:
        return float(when), label
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected UNIX_SECONDS=LABEL, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prometheus", help="Prometheus' base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, default=OUT, help="directory of the PNGs")
    parser.add_argument("--model", default="lenet5", help="the dashboard's $model")
    parser.add_argument("--version", help="the dashboard's $version (default: the newest available)")
    parser.add_argument("--minutes", type=float, default=15.0, help="range: the last N minutes")
    parser.add_argument("--start", type=float, help="range start (unix seconds; overrides --minutes)")
    parser.add_argument("--end", type=float, help="range end (unix seconds; default now)")
    parser.add_argument("--step", type=duration_seconds, help="resolution (default: range / 300)")
    parser.add_argument("--rate-interval", default="1m",
                        help="$__rate_interval (Grafana: 4 scrape intervals at least)")
    parser.add_argument("--mark", type=mark, action="append", default=[],
                        help="a vertical line at UNIX_SECONDS=LABEL on every time axis (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - 60 * args.minutes
    step = args.step or max(1.0, math.ceil((end - start) / 300))
    duration_seconds(args.rate_interval)  # fails early on a typo
    version = args.version or newest_version(args.prometheus, args.model)
    variables = {"model": args.model, "version": version, "__rate_interval": args.rate_interval,
                 "__interval": f"{step:g}s", "__range": f"{int(end - start)}s"}
    ctx = Context(args.prometheus, start, end, step, variables, args.mark)
    dashboard = json.loads(args.dashboard.read_text())
    title = f"{dashboard['title']} — model {args.model}"
    render(dashboard["panels"], ctx, title, args.out / "dashboard.png")
    for row_title, panels in rows(dashboard):
        render(panels, ctx, title, args.out / f"{slug(row_title)}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
