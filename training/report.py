"""Results of a grid: results.json, results.csv, results.md and PNG figures like the lab's.

Reads every ``<grid_dir>/*/result.json`` (runs may come from different machines sharing the
directory). Each finished record is first checked against the config that trained it
(training/identity.py): a record that contradicts its run directory stops the report
(:class:`identity.IdentityError`); a legacy record (from before config digests) is listed, and
named as not verified. Figures: test accuracy over the 16-run grid by optimizer, learning rate, activation
and batch size; training time by optimizer and batch size; learning curves of the selected runs;
an ensemble's accuracy against its number of members (:func:`members_figure`, drawn by
training/ensemble_export.py).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training import identity  # noqa: E402
from training.records import best, read_history, read_results, write_json_atomic  # noqa: E402

log = logging.getLogger(__name__)

COLUMNS = ("index", "name", "group", "model", "optimizer", "learning_rate",
           "activation_function", "batch_size", "dropout", "augment", "elastic_alpha", "schedule",
           "clean_bn_statistics", "clean_epochs", "epochs", "parameter_count", "seed", "status",
           "training_accuracy", "validation_accuracy", "test_accuracy", "elapsed_time")


def _row(result: dict[str, Any]) -> dict[str, Any]:
    config = result.get("config", {})
    row = {k: result.get(k, config.get(k)) for k in COLUMNS}
    row["activation_function"] = result.get("activation_function", config.get("activation"))
    # Records from before these settings existed:
    row["elastic_alpha"] = config.get("elastic_alpha", 0.0)
    row["clean_bn_statistics"] = config.get("clean_bn_statistics", False)
    row["clean_epochs"] = config.get("clean_epochs", 0)
    if row["model"] == "softmax":  # no hidden layer: the activation setting plays no part
        row["activation_function"] = "none"
    return row


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.0f}"
    return "" if value is None else str(value)


def markdown_table(results: list[dict[str, Any]]) -> str:
    cols = ("index", "name", "model", "optimizer", "learning_rate", "activation_function",
            "batch_size", "dropout", "elastic_alpha", "clean_bn_statistics", "clean_epochs",
            "epochs", "status", "training_accuracy", "validation_accuracy", "test_accuracy", "elapsed_time")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for result in results:
        row = _row(result)
        row["elastic_alpha"] = f"{row['elastic_alpha']:g}"  # 0, 17, 34: not a fraction
        row["clean_bn_statistics"] = "yes" if row["clean_bn_statistics"] else "no"
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _accuracy_figure(results: list[dict[str, Any]], path: Path) -> None:
    grid_runs = [_row(r) for r in results if r.get("group") == "grid"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, optimizer in zip(axes, ("sgd", "adam"), strict=True):
        runs = [r for r in grid_runs if r["optimizer"] == optimizer]
        combos = sorted({(r["learning_rate"], r["activation_function"]) for r in runs})
        for offset, batch in ((-0.2, 50), (0.2, 128)):
            values = []
            for lr, act in combos:
                match = [r for r in runs if (r["learning_rate"], r["activation_function"],
                                             r["batch_size"]) == (lr, act, batch)]
                values.append((match[0]["test_accuracy"] or 0.0) * 100 if match else 0.0)
            bars = ax.bar([i + offset for i in range(len(combos))], values, width=0.4,
                          label=f"batch {batch}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(combos)), [f"lr {lr}\n{act}" for lr, act in combos])
        ax.set_title(f"LeNet-5, {optimizer.upper()}")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(loc="lower right")
    fig.suptitle("Lab grid: test accuracy by optimizer, learning rate, activation, batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_figure(results: list[dict[str, Any]], path: Path) -> None:
    grid_runs = [_row(r) for r in results if r.get("group") == "grid" and r.get("elapsed_time")]
    fig, ax = plt.subplots(figsize=(6, 4))
    labels, values = [], []
    for optimizer in ("sgd", "adam"):
        for batch in (50, 128):
            times = [r["elapsed_time"] for r in grid_runs
                     if r["optimizer"] == optimizer and r["batch_size"] == batch]
            if times:
                labels.append(f"{optimizer}\nbatch {batch}")
                values.append(sum(times) / len(times))
    bars = ax.bar(labels, values, color=["#4c72b0", "#4c72b0", "#dd8452", "#dd8452"][:len(values)])
    ax.bar_label(bars, fmt="%.0f s")
    ax.set_ylabel("mean training time per run (s)")
    ax.set_title("Training time by optimizer and batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves_figure(grid_dir: Path, runs: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        history = read_history(grid_dir / run["name"])
        if not history:
            continue
        epochs = [h["epoch"] + 1 for h in history]
        (line,) = axes[0].plot(epochs, [h["loss"] for h in history], label=run["name"])
        colour = line.get_color()  # one colour per run in both panels
        axes[1].plot(epochs, [h["accuracy"] * 100 for h in history], "--", color=colour,
                     label=f"{run['name']} train (running mean, training mode)")
        axes[1].plot(epochs, [h["val_accuracy"] * 100 for h in history], color=colour,
                     label=f"{run['name']} validation")
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy", ylim=(95, 100))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves of the selected runs (best by validation accuracy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def members_figure(curve: Sequence[Mapping[str, Any]], k: int, rule: str, title: str,
                   path: Path) -> None:
    """Validation and test accuracy of the top-k committees against k, one colour per rule,
    the chosen (k, rule) marked. ``curve``: {"k", "rule", "validation_accuracy",
    "test_accuracy"} points (training/ensemble_selection.py)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for number, each in enumerate(dict.fromkeys(p["rule"] for p in curve)):
        points = [p for p in curve if p["rule"] == each]
        ks = [p["k"] for p in points]
        colour = f"C{number}"
        ax.plot(ks, [p["validation_accuracy"] * 100 for p in points], "-o", color=colour,
                label=f"validation, {each}")
        ax.plot(ks, [p["test_accuracy"] * 100 for p in points], "--s", color=colour,
                alpha=0.7, label=f"test, {each}")
    ax.axvline(k, color="grey", linestyle=":", label=f"chosen on validation: k = {k}, {rule}")
    ax.set(xlabel="members: the top k candidates by validation accuracy", ylabel="accuracy (%)",
           title=title)
    ax.set_xticks(sorted({p["k"] for p in curve}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(grid_dir: Path, runs: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the tables and figures into ``grid_dir``; returns a summary of the selection."""
    results = read_results(grid_dir, runs)
    if not results:
        raise FileNotFoundError(f"no result.json under {grid_dir}")
    legacy = identity.check_records(grid_dir, results)
    if legacy:
        log.warning("recorded before config digests, listed but not verified: %s",
                    ", ".join(legacy))
    write_json_atomic(grid_dir / "results.json", results)
    with (grid_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_row(r) for r in results)
    overall, faithful = best(results), best(results, "lenet5")
    summary = {
        "runs": len(results),
        "statuses": {s: sum(r.get("status") == s for r in results)
                     for s in sorted({r.get("status") for r in results})},
        "total_elapsed_time": sum(r.get("elapsed_time") or 0 for r in results),
        "best": overall and {k: overall[k] for k in ("name", "validation_accuracy",
                                                      "test_accuracy")},
        "best_faithful_lenet5": faithful and {k: faithful[k] for k in (
            "name", "validation_accuracy", "test_accuracy")},
        "legacy_not_verified": legacy,
    }
    text = [markdown_table(results), "",
            f"Selected by validation accuracy: {json.dumps(summary['best'])}",
            f"Best faithful LeNet-5 by validation accuracy: "
            f"{json.dumps(summary['best_faithful_lenet5'])}", ""]
    if legacy:
        text += [f"Recorded before config digests (their configs not verified): "
                 f"{', '.join(legacy)}", ""]
    (grid_dir / "results.md").write_text("\n".join(text))
    _accuracy_figure(results, grid_dir / "accuracy_grid.png")
    _time_figure(results, grid_dir / "training_time.png")
    chosen = [r for r in (overall, faithful) if r]
    _curves_figure(grid_dir, list({r["name"]: r for r in chosen}.values()),
                   grid_dir / "learning_curves.png")
    write_json_atomic(grid_dir / "summary.json", summary)
    log.info("report of %d runs in %s: best %s", len(results), grid_dir, summary["best"])
    return summary
