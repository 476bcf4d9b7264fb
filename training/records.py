"""Run records on disk: file names, statuses, atomic writes (no TensorFlow import here)."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COMPLETED, DIVERGED, FAILED = "completed", "diverged", "failed"
FINISHED = (COMPLETED, DIVERGED)  # a grid does not run these again
RESULT_FILE, CONFIG_FILE, MODEL_FILE, HISTORY_FILE = (
    "result.json", "config.json", "model.keras", "history.csv")
DIGEST_FILE = "config.sha256"  # the run's identity (training/identity.py)
BACKUP_DIR, ELAPSED_FILE = "backup", "elapsed.txt"
# A run directory moved aside by --restart: <run>.superseded-<UTC time>/ (training/identity.py)
SUPERSEDED = ".superseded-"


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; servers and other pods read these
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def read_results(grid_dir: Path, runs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The result records under a grid directory, whichever machine wrote them, by run index.

    With ``runs`` (the grid's run names in index order): the records of those runs only, in that
    order, each with ``index`` set to its place in the grid; directories of runs the grid no
    longer declares are left out. Directories moved aside by ``--restart``
    (``<run>.superseded-<time>``) are never read.
    """
    if runs is None:
        results = [json.loads(p.read_text()) for p in sorted(grid_dir.glob(f"*/{RESULT_FILE}"))
                   if SUPERSEDED not in p.parent.name]
        return sorted(results, key=lambda r: (r.get("index") is None, r.get("index") or 0))
    out = []
    for index, name in enumerate(runs):
        result = read_result(grid_dir / name)
        if result is not None:
            out.append({**result, "index": index})
    return out


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch history (Keras CSVLogger); an epoch repeated after a resume keeps its last record."""
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return []
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items()}
    return [by_epoch[e] for e in sorted(by_epoch)]


def best(results: list[dict[str, Any]], model: str | None = None) -> dict[str, Any] | None:
    """Highest validation accuracy among completed runs (optionally of one architecture).

    Test accuracy plays no part (the lab picked by test accuracy: a bug); ties go to the lower
    index, the simpler, earlier run.
    """
    done = [r for r in results if r.get("status") == COMPLETED
            and (model is None or r.get("model") == model)]
    return max(done, key=lambda r: (r["validation_accuracy"], -(r.get("index") or 0)),
               default=None)
