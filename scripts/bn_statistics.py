"""Measure what clean batch norm statistics do to finished runs that trained with distortions.

Usage: python scripts/bn_statistics.py [--grid lab] [--runs-dir runs] [--data-dir DIR]
                                       [--index N ...] [--out FILE.md]

For each finished run whose model has batch norm and trained on distorted images (by default all
of them; or those named by --index), loads its saved model (runs/GRID/NAME/model.keras) and
reports validation and test accuracy with the running statistics it trained with, then with the
statistics recomputed on the clean training images (training.models.set_clean_bn_statistics,
what runs with clean_bn_statistics do at the end). The saved models and records are not changed.
Runs that already used clean statistics report the same figure twice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="lab")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--data-dir", help="MNIST directory (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--index", type=int, nargs="*", help="runs to measure (default: all "
                        "finished batch norm runs with distortions)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from training import data, models, records
    from training.config import grid

    runs = grid(args.grid)
    indices = args.index if args.index else [
        i for i, run in enumerate(runs)
        if run.model.startswith("lenet5_bn") and (run.augment or run.elastic_alpha)]
    mnist = data.load(args.data_dir)

    def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
        logits = model.predict(images, batch_size=1000, verbose=0)
        return float(np.mean(logits.argmax(1) == labels))

    def both(model: keras.Model) -> tuple[float, float]:
        return (accuracy(model, mnist.validation_images, mnist.validation_labels),
                accuracy(model, mnist.test_images, mnist.test_labels))

    lines = ["| index | name | elastic_alpha | epochs | validation (running) | test (running) "
             "| validation (clean) | test (clean) | test change |", "|" + "---|" * 9]
    for index in indices:
        run = runs[index]
        run_dir = args.runs_dir / args.grid / run.name
        model_file = run_dir / records.MODEL_FILE
        if not model_file.exists():
            print(f"run {index} ({run.name}): no saved model in {run_dir}, skipped",
                  file=sys.stderr)
            continue
        model = keras.models.load_model(model_file)
        running = both(model)
        # Runs trained with clean statistics saved them: their "running" figures are the clean
        # ones; the record keeps what the running statistics gave.
        result = records.read_result(run_dir) or {}
        if "running_bn_statistics" in result:
            saved = result["running_bn_statistics"]
            running = (saved["validation_accuracy"], saved["test_accuracy"])
        models.set_clean_bn_statistics(model, mnist.train_images)
        clean = both(model)
        line = (f"| {index} | {run.name} | {run.elastic_alpha:g} | {run.epochs} "
                f"| {running[0]:.2%} | {running[1]:.2%} | {clean[0]:.2%} | {clean[1]:.2%} "
                f"| {100 * (clean[1] - running[1]):+.2f} |")
        lines.append(line)
        print(line, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
