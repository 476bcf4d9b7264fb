"""Selection: which run of a grid is exported, checked, and the commands that reproduce it.

The best completed run by *validation* accuracy (test accuracy plays no part: the lab picked by
test accuracy, a bug; ties go to the lower index), or a run named by ``--run``. The records the
choice reads are checked against the configs that trained them (training/identity.py): a record
that contradicts its run directory is refused, and so is a legacy record (no config digest)
unless ``allow_legacy``. No TensorFlow here: ``export`` refuses before its slow import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training import identity
from training.config import Grid, RunConfig, set_flags
from training.records import COMPLETED, MODEL_FILE, best, read_results


class ExportError(RuntimeError):
    """No run to export, or an export that failed its checks (nothing was published)."""


def select_run(grid_dir: Path, run: str | None = None, runs: Sequence[str] | None = None, *,
               allow_legacy: bool = False) -> dict[str, Any]:
    """The result record to export: ``run`` (name or index), else the best by validation accuracy
    among ``runs`` (the grid's run names; default: every run under ``grid_dir``).

    Every record the choice compares is checked (:class:`identity.IdentityError` when one
    contradicts its directory); a legacy choice is refused unless ``allow_legacy``.
    """
    results = [r for r in read_results(grid_dir, runs)
               if r.get("status") == COMPLETED and (grid_dir / r["name"] / MODEL_FILE).exists()]
    if run is not None:
        results = [r for r in results if run in (r["name"], str(r.get("index")))][:1]
        if not results:
            raise ExportError(f"no completed run {run!r} with a saved model in {grid_dir}")
    legacy = identity.check_records(grid_dir, results)
    chosen = best(results)
    if chosen is None:
        raise ExportError(f"no completed runs with a saved model in {grid_dir}")
    if chosen["name"] in legacy and not allow_legacy:
        raise identity.IdentityError(
            f"{grid_dir / chosen['name']}: recorded before runs carried a config digest, so "
            f"nothing shows that its record's config trained its weights; retrain it (run with "
            f"--restart) or export it anyway with --allow-legacy (its model card then says "
            f"config_verified: false)")
    return chosen


def reproduce(grid: Grid, result: Mapping[str, Any]) -> list[str]:
    """The commands that retrain and re-export the run of ``result`` from scratch: the grid's
    run at its index, with ``--set`` for every setting its record's config has otherwise."""
    index = result["index"]
    trained = result.get("config") or {}
    try:  # a legacy config may lack settings added since: they were at their defaults
        trained = RunConfig.from_dict(dict(trained)).to_dict()
    except (TypeError, ValueError):
        pass
    declared = grid.run(index).to_dict()
    changed = {k: v for k, v in trained.items() if declared.get(k) != v}
    run = ["python -m training run", f"--grid {grid.spec}", f"--index {index}",
           *set_flags(changed)]
    return [" ".join(run), f"python -m training export --grid {grid.spec} --run {result['name']}"]
