"""Command line of the training job.

Usage examples::

    python -m training data                               # download (if missing) and verify MNIST
    python -m training list --grid lab                    # the runs of a grid, by index
    python -m training grid --grid lab                    # the full lab grid, all cores
    python -m training grid --grid quick                  # the demo grid (small and short)
    python -m training grid --grid my-grid.toml           # your own grid file
    python -m training run --grid lab --index 12          # one run (a pod of the Indexed Job)
    python -m training report --grid lab                  # results.{json,csv,md} + figures
    python -m training export --grid lab --model-base-path models/lenet5   # best by validation
    python -m training export --grid lab --run lenet5-recipe-nodropout     # a named run
    python -m training export --grid ensemble --ensemble lenet5-ensemble   # a committee, as one model
    tensorboard --logdir runs/lab

--grid takes a shipped grid's name (lab, quick, experiments: training/grids/*.toml) or the path
of a grid file (format: training/grids/README.md); a grid's runs live in RUNS_DIR/<its name>.

The training modules are imported inside main(), by the command that needs them, on purpose:
``list``, ``grid`` and ``report`` never load TensorFlow (a slow import; the grid's parent
process stays light beside its children). None of these imports breaks a cycle.

Every command reads MNIST from --data-dir (default $MNIST_DIR, else data/mnist; downloaded there
if missing and the machine is online).

``run`` logs the devices TensorFlow sees before it reads any data; with --require-gpu (or
$DIGITS_REQUIRE_GPU=1, what the GPU manifests set) and no GPU it stops there (training/devices.py).
Exit status of ``run``: 0 trained (completed or diverged), 2 a run no retry can fix (bad grid,
index, setting or data; a required GPU absent; mixed precision without a GPU; a run directory
trained under another config), 143 stopped by SIGTERM with its state saved
(training/preemption.py): the same command resumes it. ``grid`` passes SIGTERM on to its runs
and exits 143 too; run again, it resumes.

A run is its resolved config (training/identity.py): ``run`` and ``grid`` refuse (2) a
directory trained under another config, naming the settings that differ, unless ``--restart``
(the directory is moved aside, never deleted); ``report`` and ``export`` refuse (2) a record
that contradicts the config that trained it, and ``export`` a legacy one (recorded before config
digests) unless ``--allow-legacy``.

``export --ensemble NAME`` publishes a grid's ``[[ensembles]]`` committee, chosen on validation
(training/ensemble_selection.py); it refuses (2) an unknown ensemble, and a candidate that has
not completed unless ``--partial``. ``export`` exits 1 when the parity gate fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Before TensorFlow loads: oneDNN kernels, which TensorFlow leaves off by default on our CPUs,
# train faster there (docs/training.md gives the measurement).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contract  # noqa: E402
from training import preemption  # noqa: E402
from training.config import (  # noqa: E402
    Grid,
    GridError,
    Overrides,
    RunConfig,
    load_grid,
    shipped_grids,
)
from training.identity import IdentityError  # noqa: E402

if TYPE_CHECKING:
    from training.data import Mnist

log = logging.getLogger("training")


def _parse_indexes(text: str | None) -> list[int] | None:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _overrides(args: argparse.Namespace) -> Overrides:
    """--epochs, --train-limit and --set, checked when applied to a run."""
    return Overrides(epochs=args.epochs, train_limit=args.train_limit, settings=tuple(args.set))


def build_parser() -> argparse.ArgumentParser:
    """The command line; each sub-command names its function (``args.func``)."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--grid", default="lab",
                        help=f"a shipped grid ({', '.join(shipped_grids())}) or a grid file's "
                             "path (default: lab, the product grid)")
    common.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="root of the run directories; a grid lives in RUNS_DIR/GRID "
                             "(default: runs)")
    common.add_argument("--data-dir", default=None,
                        help=f"MNIST directory (default: ${contract.MNIST_DIR_ENV} or "
                             f"{contract.DEFAULT_MNIST_DIR})")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    knobs = argparse.ArgumentParser(add_help=False)
    knobs.add_argument("--epochs", type=int, default=None,
                       help="override every run's epochs (a clean phase that no longer fits "
                            "is dropped)")
    knobs.add_argument("--train-limit", type=int, default=None,
                       help="train on the first N training images only (smoke tests)")
    knobs.add_argument("--set", action="append", default=[], metavar="[INDEX:]KEY=VALUE",
                       help="override a run setting (JSON value), optionally for one run index "
                            "only, e.g. --set learning_rate=0.01 --set 19:epochs=3")
    knobs.add_argument("--restart", action="store_true",
                       help="a run whose directory holds training of another config (or from "
                            "before config digests) starts afresh, the directory moved aside to "
                            "RUN.superseded-TIME/ (never deleted); without it such a run is "
                            "refused (exit 2). A run of the same config resumes either way")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="list the runs of a grid by index")
    p.set_defaults(func=_list)
    p = sub.add_parser("data", parents=[common],
                       help="download (when missing) and verify the MNIST files in --data-dir")
    p.set_defaults(func=_data)

    p = sub.add_parser("run", parents=[common, knobs], help="train one run of a grid (resumes)")
    p.set_defaults(func=_run)
    p.add_argument("--index", type=int,
                   default=int(os.environ["JOB_COMPLETION_INDEX"])
                   if "JOB_COMPLETION_INDEX" in os.environ else None,
                   help="run index (default: $JOB_COMPLETION_INDEX, set by an Indexed Job)")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra-op threads (0: TensorFlow's default)")
    p.add_argument("--progress", choices=("bar", "lines"), default=None,
                   help="progress display (default: a bar on a terminal, else lines)")
    p.add_argument("--require-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="fail (exit 2) unless TensorFlow sees a GPU (default: "
                        "$DIGITS_REQUIRE_GPU, set by the GPU manifests; unset: not required)")

    p = sub.add_parser("grid", parents=[common, knobs],
                       help="run a whole grid locally, one process per core")
    p.set_defaults(func=_grid_command)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="runs side by side, each single-threaded (default: number of cores)")
    p.add_argument("--indexes", default=None, help="only these runs, e.g. '0-3,20'")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")

    p = sub.add_parser("report", parents=[common],
                       help="results.json/csv/md and PNG figures of a grid")
    p.set_defaults(func=_report)

    p = sub.add_parser("export", parents=[common],
                       help="export the best run (by validation accuracy), a named run, or an "
                            "ensemble of runs")
    p.set_defaults(func=_export)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, help="export this run (name or index) instead")
    which.add_argument("--ensemble", default=None, metavar="NAME",
                       help="export the grid's [[ensembles]] committee NAME instead, its members "
                            "and combination chosen on validation (docs/training.md#ensembles)")
    p.add_argument("--partial", action="store_true",
                   help="with --ensemble: choose among the candidates that completed, the card "
                        "naming the missing ones (default: refuse, exit 2, naming them)")
    p.add_argument("--model-base-path", type=Path, default=None,
                   help=f"model repository (default: {contract.DEFAULT_MODEL_BASE_PATH}; with "
                        f"--ensemble NAME: {contract.DEFAULT_MODEL_BASE_PATH.parent}/NAME)")
    p.add_argument("--allow-legacy", action="store_true",
                   help="export runs recorded before config digests (their configs cannot be "
                        "checked; the model card says config_verified: false)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command != "grid":  # (the grid runner passes SIGTERM on to its runs itself)
        preemption.install()  # first: PID 1 in a container ignores SIGTERM without a handler
    try:
        return _command(args)
    except preemption.Preempted:
        log.warning("stopped by SIGTERM (exit status %d); the same command resumes",
                    preemption.EXIT_PREEMPTED)
        return preemption.EXIT_PREEMPTED


class _Refused(Exception):
    """A command that cannot go on: its message is logged as an error, the exit status is
    ``status`` (2: nothing a retry can fix)."""

    def __init__(self, message: object, status: int = 2) -> None:
        super().__init__(str(message))
        self.status = status


def _command(args: argparse.Namespace) -> int:
    """The sub-command's function; a refusal is logged and becomes the exit status."""
    try:
        return args.func(args)
    except IdentityError as refused:  # a run directory or record of another config
        log.error("%s", refused)
        return 2
    except _Refused as refused:
        log.error("%s", refused)
        return refused.status


def _load_grid(args: argparse.Namespace) -> Grid:
    """The grid named by --grid, or a refusal saying what is wrong with it."""
    try:
        return load_grid(args.grid)
    except GridError as exc:
        raise _Refused(exc) from None


def _load_mnist(args: argparse.Namespace) -> Mnist:
    """MNIST from --data-dir (downloaded if missing), or a refusal saying why not."""
    from training import data

    try:
        return data.load(args.data_dir)
    except data.DataError as exc:
        raise _Refused(exc) from None


# --- The sub-commands ---------------------------------------------------------------------------
def _data(args: argparse.Namespace) -> int:
    from training import data

    mnist = _load_mnist(args)
    print(f"MNIST verified in {data.mnist_dir(args.data_dir)}: {len(mnist.train_images):,} "
          f"training, {len(mnist.validation_images):,} validation, "
          f"{len(mnist.test_images):,} test images")
    return 0


def _list(args: argparse.Namespace) -> int:
    grid = _load_grid(args)
    if grid.description:
        print(grid.description, end="\n\n")
    for index, config in enumerate(grid.runs):
        limit = f" train_limit={config.train_limit}" if config.train_limit else ""
        print(f"{index:3d}  {config.name:52s} {config.model:15s} epochs={config.epochs}{limit}")
    for spec in grid.ensembles:
        print(f"\nensemble {spec.name}: at most {spec.limit} of runs "
              f"{', '.join(map(str, spec.candidates))}")
    return 0


def _grid_command(args: argparse.Namespace) -> int:
    """Every selected run of the grid, then (unless --no-report) the report; 1 if a run failed."""
    grid = _load_grid(args)
    from training import grid as grid_runner

    try:
        statuses = grid_runner.run_grid(grid, args.runs_dir, jobs=args.jobs,
                                        indexes=_parse_indexes(args.indexes),
                                        data_dir=args.data_dir, overrides=_overrides(args),
                                        restart=args.restart)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise _Refused(exc) from None
    if grid_runner.PREEMPTED in statuses.values():
        log.warning("grid stopped by SIGTERM; the same command resumes it")
        return preemption.EXIT_PREEMPTED
    if not args.no_report:
        _write_report(args, grid)
    failed = sorted(i for i, s in statuses.items() if s == "failed")
    if failed:
        log.error("runs failed: %s (see their logs; rerun the same command to retry)", failed)
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    _write_report(args, _load_grid(args))
    return 0


def _write_report(args: argparse.Namespace, grid: Grid) -> None:
    """results.{json,csv,md} and the figures of the grid's runs, in RUNS_DIR/<grid name>."""
    from training import report

    report.write_report(args.runs_dir / grid.name, [run.name for run in grid.runs])


def _export(args: argparse.Namespace) -> int:
    """The best run by validation accuracy (or --run) into --model-base-path; 1 if refused, 2 if
    its record does not describe its weights (checked before TensorFlow loads)."""
    grid = _load_grid(args)
    if args.ensemble is not None:
        return _export_ensemble(args, grid)
    if args.partial:
        raise _Refused("--partial goes with --ensemble")
    from training import selection

    base = args.model_base_path or contract.DEFAULT_MODEL_BASE_PATH
    try:
        result = selection.select_run(args.runs_dir / grid.name, args.run,
                                      [run.name for run in grid.runs],
                                      allow_legacy=args.allow_legacy)
        mnist = _load_mnist(args)
        from training import export

        version = export.export_run(grid, args.runs_dir, base, mnist, result, named=args.run)
    except selection.ExportError as exc:
        raise _Refused(exc, status=1) from None
    print(f"exported version {version} to {base / str(version)}")
    return 0


def _export_ensemble(args: argparse.Namespace, grid: Grid) -> int:
    """The committee --ensemble names into --model-base-path (default models/NAME); 2 if the
    grid declares no such ensemble or a candidate is missing without --partial (checked before
    TensorFlow loads), 1 if the export failed its checks."""
    from training import ensemble_selection, selection

    try:
        spec = grid.ensemble(args.ensemble)
        found, missing = ensemble_selection.candidates(
            grid, spec, args.runs_dir / grid.name, partial=args.partial,
            allow_legacy=args.allow_legacy)
    except KeyError as exc:
        raise _Refused(exc.args[0]) from None
    except ensemble_selection.EnsembleError as exc:
        raise _Refused(exc) from None
    if missing:
        log.warning("ensemble %s without %d missing candidates (--partial): %s", spec.name,
                    len(missing), ", ".join(m.name for m in missing))
    base = args.model_base_path or contract.DEFAULT_MODEL_BASE_PATH.parent / spec.name
    mnist = _load_mnist(args)
    from training import ensemble_export

    try:
        version = ensemble_export.export_ensemble(grid, spec, args.runs_dir, base, mnist, found,
                                                  missing)
    except selection.ExportError as exc:
        raise _Refused(exc, status=1) from None
    print(f"exported ensemble {spec.name} as version {version} to {base / str(version)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """One run, failing fast: its settings, its directory, the devices, the data, training."""
    grid = _load_grid(args)
    config = _run_config(args, grid)
    run_dir = args.runs_dir / grid.name / config.name
    from training import identity

    identity.prepare(run_dir, config, restart=args.restart)  # before the slow TensorFlow import
    _check_devices(args, config)
    from training import train

    mnist = _load_mnist(args)
    bar = args.progress == "bar" or (args.progress is None and sys.stdout.isatty())
    result = train.run(config, mnist, run_dir, index=args.index, grid=grid.name,
                       progress_bar=bar)
    return 0 if result["status"] in ("completed", "diverged") else 1


def _run_config(args: argparse.Namespace, grid: Grid) -> RunConfig:
    """Run --index of the grid with --epochs, --train-limit and --set applied (all checked)."""
    if args.index is None:
        raise _Refused("run needs --index N (or $JOB_COMPLETION_INDEX)")
    try:
        return _overrides(args).apply(grid.run(args.index), args.index)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise _Refused(exc) from None


def _check_devices(args: argparse.Namespace, config: RunConfig) -> None:
    """TensorFlow's threads as --threads asks, its devices logged; a refusal when the run needs a
    GPU that TensorFlow does not see."""
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from training import devices

    try:
        found = devices.setup()
        devices.check(found, require_gpu=devices.gpu_required(args.require_gpu),
                      mixed_precision=config.mixed_precision)
    except devices.DeviceError as exc:
        raise _Refused(exc) from None


if __name__ == "__main__":
    sys.exit(main())
