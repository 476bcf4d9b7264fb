"""Run a grid locally: one single-threaded process per run, as many side by side as cores.

Two single-threaded TensorFlow processes train faster together than one process with two threads
(measured: scripts/bench_training.py), so the runner never oversubscribes: ``--jobs`` processes,
each with one intra-op and one inter-op thread. Each run is ``python -m training run --index N``,
exactly what a pod of the Kubernetes Indexed Job executes. Runs finished under the same config
are skipped, so a killed grid resumes where it stopped (and each run resumes from its last
epoch). A run that fails is recorded as ``failed`` and the grid goes on.

Before anything starts, every selected run's directory is checked against the run's resolved
config (training/identity.py): one that holds another config's training (an edited grid file,
other ``--set`` values) refuses the whole grid with :class:`identity.IdentityError`, naming the
runs and the settings that differ; with ``restart`` those directories are moved aside and their
runs start afresh.

SIGTERM to the runner (training/preemption.py) is passed on to every run in progress, each of
which saves its state and exits 143; no new run starts, nothing is recorded as failed, and the
runner returns with those runs ``preempted``. Run the same command again: it resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from training import identity, preemption, records
from training.config import Grid, Overrides, RunConfig

log = logging.getLogger(__name__)

# Relative cost of one epoch of each model, to start the longest runs first (only the order
# they give matters).
_MODEL_COST = {"softmax": 0.1, "lenet5": 1.0, "lenet5_bn": 3.0, "lenet5_bn_wide": 5.5}
PREEMPTED = "preempted"  # a status of this runner only: stopped by SIGTERM, resumed next time


def cost(config: RunConfig) -> float:
    per_epoch = _MODEL_COST[config.model] * (1.3 if config.batch_size < 100 else 1.0)
    distortions = (1.3 if config.augment else 1.0) * (1.3 if config.elastic_alpha else 1.0)
    return config.epochs * per_epoch * distortions


def run_dir_for(runs_dir: Path, config: RunConfig) -> Path:
    return runs_dir / config.name


class _Children:
    """The runs' processes: started unless the grid is stopping; SIGTERM passed on to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self, cmd: list[str]) -> int | None:
        """The run's exit status, or None if the grid stopped before it started."""
        with self._lock:
            if self.stopping:
                return None
            process = subprocess.Popen(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self, signum: int, frame: object) -> None:  # a signal handler
        with self._lock:
            if not self.stopping:
                log.warning("SIGTERM: stopping %d runs (each saves its state), starting no more",
                            len(self._running))
            self.stopping = True
            for process in self._running:
                process.send_signal(signal.SIGTERM)


def _run_child(children: _Children, index: int, grid_spec: str, runs_dir: Path,
               data_dir: str | None, overrides: list[str]) -> int | None:
    cmd = [sys.executable, "-m", "training", "run", "--grid", grid_spec, "--index", str(index),
           "--runs-dir", str(runs_dir), "--threads", "1", *overrides]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return children.run(cmd)


def run_grid(grid: Grid, runs_dir: Path, *, jobs: int, indexes: list[int] | None = None,
             data_dir: str | None = None, overrides: Overrides | None = None,
             restart: bool = False) -> dict[int, str]:
    """Run (or resume) every selected run under ``runs_dir/<grid name>``; returns index -> status.

    Raises IndexError (no such run), KeyError, TypeError or ValueError (a bad override) and
    :class:`identity.IdentityError` (a directory of another config, without ``restart``) before
    any run starts.
    """
    overrides = overrides or Overrides()
    grid_dir = runs_dir / grid.name
    selected = indexes if indexes is not None else list(range(len(grid.runs)))
    bad = [i for i in selected if not 0 <= i < len(grid.runs)]
    if bad:
        raise IndexError(f"grid {grid.name!r} has runs 0..{len(grid.runs) - 1}, not {bad}")
    configs = {i: overrides.apply(grid.runs[i], i) for i in selected}
    pending, statuses = _plan(grid_dir, configs, restart=restart)
    pending.sort(key=lambda i: -cost(configs[i]))  # longest first: the grid ends sooner
    log.info("grid %s: %d runs, %d already done, %d to run with %d parallel processes",
             grid.name, len(selected), len(statuses), len(pending), jobs)
    started = time.monotonic()
    children = _Children()
    main_thread = threading.current_thread() is threading.main_thread()  # (signals: only there)
    previous = signal.signal(signal.SIGTERM, children.stop) if main_thread else None
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(_run_child, children, i, grid.spec, runs_dir, data_dir,
                                   overrides.flags()): i for i in pending}
            for done, future in enumerate(as_completed(futures), start=1):
                index = futures[future]
                result = _record(grid, grid_dir, index, configs[index], future.result())
                statuses[index] = result["status"]
                log.info("[%d/%d done, %.0fs] run %d %s: %s (validation %s)", done,
                         len(pending), time.monotonic() - started, index, configs[index].name,
                         result["status"], result.get("validation_accuracy"))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return statuses


def _plan(grid_dir: Path, configs: dict[int, RunConfig], *,
          restart: bool) -> tuple[list[int], dict[int, str]]:
    """The runs to start, and the statuses of those finished under their config (skipped).

    A directory of another config (or contradicting itself, or legacy and unfinished) refuses
    the grid, every such run named; with ``restart`` it is moved aside and its run starts.
    """
    verdicts = {i: identity.inspect(run_dir_for(grid_dir, c), c) for i, c in configs.items()}
    done = {i: v for i, v in verdicts.items() if v.skippable}
    stale = {i: v for i, v in verdicts.items() if not (v.skippable or v.resumable)}
    if stale and not restart:
        lines = [f"  run {i} {configs[i].name}: {v.message()}" for i, v in stale.items()]
        raise identity.IdentityError(
            f"{len(stale)} run(s) of the grid hold training of another config; nothing was "
            "started:\n" + "\n".join(lines) + "\nrerun with --restart to train them afresh "
            f"(their directories are moved aside to <run>{records.SUPERSEDED}<time>/, never "
            "deleted)")
    for verdict in stale.values():
        identity.supersede(verdict.run_dir)
    legacy = sorted(configs[i].name for i, v in done.items() if v.kind == identity.LEGACY)
    if legacy:
        log.warning("left alone, finished before runs recorded their config digest (legacy, "
                    "not verified): %s", ", ".join(legacy))
    statuses = {i: records.read_result(v.run_dir)["status"] for i, v in done.items()}
    return [i for i in configs if i not in done], statuses


def _record(grid: Grid, grid_dir: Path, index: int, config: RunConfig,
            exit_code: int | None) -> dict:
    """The result of a run that ended (or never started): a crash is recorded as failed."""
    # 143: stopped by SIGTERM; -15: ended by it before its handler was installed
    if exit_code in (None, preemption.EXIT_PREEMPTED, -signal.SIGTERM):
        return {"status": PREEMPTED}
    result = records.read_result(run_dir_for(grid_dir, config))
    if exit_code != 0 or result is None:
        result = {"name": config.name, "index": index, "grid": grid.name,
                  "group": config.group, "status": records.FAILED,
                  "config": config.to_dict(), "config_digest": identity.digest(config.to_dict()),
                  "exit_code": exit_code}
        records.write_json_atomic(run_dir_for(grid_dir, config) / records.RESULT_FILE, result)
    return result
