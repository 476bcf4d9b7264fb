"""Measure what clean batch norm statistics do to finished runs that trained with distortions.

Usage: python -m research.bn_statistics [--grid lab] [--runs-dir runs] [--data-dir DIR]
                                        [--index N ...] [--out FILE.md]

For each finished run whose model has batch norm and trained on distorted images (by default all
of them; or those named by --index), loads its saved model (runs/GRID/NAME/model.keras) and
reports validation and test accuracy with the running statistics it trained with, then with the
statistics recomputed on the clean training images (training.models.set_clean_bn_statistics,
what runs with clean_bn_statistics do at the end). The saved models and records are not changed.
Runs that already used clean statistics report both figures from their result record.

TensorFlow, Keras and the training modules are imported inside main(), so that --help answers
at once; none of these imports breaks a cycle.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="lab", help="a shipped grid's name or a grid file")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--data-dir", help="MNIST directory (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--index", type=int, nargs="*", help="runs to measure (default: all "
                        "finished batch norm runs with distortions)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    import keras

    from training import data, models, records
    from training.config import load_grid
    from training.train import held_out_accuracies

    the_grid = load_grid(args.grid)
    runs = the_grid.runs
    indices = args.index if args.index else [
        i for i, run in enumerate(runs)
        if run.model.startswith("lenet5_bn") and (run.augment or run.elastic_alpha)]
    mnist = data.load(args.data_dir)

    lines = ["| index | name | elastic_alpha | epochs | validation (running) | test (running) "
             "| validation (clean) | test (clean) | test change |", "|" + "---|" * 9]
    for index in indices:
        run = runs[index]
        run_dir = args.runs_dir / the_grid.name / run.name
        result = records.read_result(run_dir) or {}
        if "running_bn_statistics" in result:
            # Trained with clean statistics: the record holds both figures (the saved model
            # already has the clean statistics).
            running, clean = result["running_bn_statistics"], result
        elif (run_dir / records.MODEL_FILE).exists():
            model = keras.models.load_model(run_dir / records.MODEL_FILE)
            running = held_out_accuracies(model, mnist)
            models.set_clean_bn_statistics(model, mnist.train_images)
            clean = held_out_accuracies(model, mnist)
        else:
            print(f"run {index} ({run.name}): no saved model in {run_dir}, skipped",
                  file=sys.stderr)
            continue
        line = (f"| {index} | {run.name} | {run.elastic_alpha:g} | {run.epochs} "
                f"| {running['validation_accuracy']:.2%} | {running['test_accuracy']:.2%} "
                f"| {clean['validation_accuracy']:.2%} | {clean['test_accuracy']:.2%} "
                f"| {100 * (clean['test_accuracy'] - running['test_accuracy']):+.2f} |")
        lines.append(line)
        print(line, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
