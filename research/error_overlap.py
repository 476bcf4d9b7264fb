"""Which held-out digits finished runs miss, how much they share, and what their ensemble scores.

Usage: python -m research.error_overlap --index N [N ...] [--against N] [--grid lab]
                                        [--runs-dir runs] [--data-dir DIR] [--out FILE.md]
                                        [--figure FILE.png]

Loads the saved models of the runs named by --index (runs/GRID/NAME/model.keras) and reports,
for the validation and the test images: each run's accuracy and error count; the accuracy of
their ensemble (mean of the softmax probabilities: a yardstick, not a model we ship, as it has
len(--index) times the parameters); how many images every run misses; the correlation of the
runs' validation and test accuracies (from three runs on); and, for the run named by
--against (default: the grid's selected run, training.records.best), how many of its validation
errors are errors of the other runs too. --figure draws the validation digits every run misses.
The saved models and records are not changed.

TensorFlow, Keras and the training modules are imported inside main(), so that --help answers
at once; none of these imports breaks a cycle.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def missed(probabilities: np.ndarray, labels: np.ndarray) -> set[int]:
    """Indices of the images whose most probable class is not their label."""
    return set(np.flatnonzero(probabilities.argmax(1) != labels).tolist())


def overlap(probabilities: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Errors of each model and of their ensemble on one image set.

    ``probabilities`` maps a model's name to its [N, 10] softmax output. Returns per-model
    accuracies and error index sets, the ensemble's accuracy (mean probabilities), how many
    models miss each missed image (image index -> count), and the images every model misses.
    """
    errors = {name: missed(p, labels) for name, p in probabilities.items()}
    missed_by = Counter(i for images in errors.values() for i in images)
    ensemble = np.mean(list(probabilities.values()), axis=0)
    ensemble_errors = len(missed(ensemble, labels))
    return {
        "accuracy": {name: 1 - len(e) / len(labels) for name, e in errors.items()},
        "errors": errors,
        "ensemble_accuracy": 1 - ensemble_errors / len(labels),
        "ensemble_errors": ensemble_errors,
        "ensemble_prediction": ensemble.argmax(1),
        "missed_by": dict(missed_by),
        "missed_by_all": sorted(i for i, n in missed_by.items() if n == len(probabilities)),
    }


def _table(runs: dict[int, str], validation: dict, test: dict) -> list[str]:
    lines = ["| index | name | validation | val. errors | test | test errors |", "|" + "---|" * 6]
    for index, name in runs.items():
        lines.append(f"| {index} | {name} | {validation['accuracy'][name]:.2%} "
                     f"| {len(validation['errors'][name])} | {test['accuracy'][name]:.2%} "
                     f"| {len(test['errors'][name])} |")
    lines.append(f"| | ensemble of {len(runs)} (mean probabilities) "
                 f"| {validation['ensemble_accuracy']:.2%} | {validation['ensemble_errors']} "
                 f"| {test['ensemble_accuracy']:.2%} | {test['ensemble_errors']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, nargs="+", required=True, help="runs to compare")
    parser.add_argument("--against", type=int, help="a run whose validation errors are "
                        "looked up among the others' (default: the grid's selected run)")
    parser.add_argument("--grid", default="lab", help="a shipped grid's name or a grid file")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--data-dir", help="MNIST directory (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--figure", type=Path, help="PNG of the validation digits all miss")
    args = parser.parse_args(argv)

    import keras

    from training import data, records
    from training.config import load_grid
    from training.train import EVAL_BATCH

    the_grid = load_grid(args.grid)
    runs = the_grid.runs
    grid_dir = args.runs_dir / the_grid.name
    if args.against is None:
        selected = records.best(records.read_results(grid_dir, [run.name for run in runs]))
        args.against = selected["index"] if selected else None
    mnist = data.load(args.data_dir)

    def probabilities(index: int, *image_sets: np.ndarray) -> list[np.ndarray]:
        path = grid_dir / runs[index].name / records.MODEL_FILE
        if not path.exists():
            raise SystemExit(f"run {index} ({runs[index].name}): no saved model at {path}")
        model = keras.models.load_model(path)
        return [keras.ops.convert_to_numpy(keras.ops.softmax(
            model.predict(images, batch_size=EVAL_BATCH, verbose=0))) for images in image_sets]

    names = {i: runs[i].name for i in args.index}
    outputs = {names[i]: probabilities(i, mnist.validation_images, mnist.test_images)
               for i in args.index}
    validation = overlap({n: p[0] for n, p in outputs.items()}, mnist.validation_labels)
    test = overlap({n: p[1] for n, p in outputs.items()}, mnist.test_labels)

    lines = _table(names, validation, test)
    spread = Counter(validation["missed_by"].values())
    lines += ["", f"Validation images missed by k of the {len(names)} runs: " + ", ".join(
        f"k={k}: {spread[k]}" for k in sorted(spread, reverse=True)) + "; test images missed "
        f"by all: {len(test['missed_by_all'])}."]
    if len(names) > 2:
        r = np.corrcoef([validation["accuracy"][n] for n in names.values()],
                        [test["accuracy"][n] for n in names.values()])[0, 1]
        lines.append(f"Correlation of validation and test accuracy over the {len(names)} runs: "
                     f"r = {r:+.2f}.")
    if args.against is not None:
        against = runs[args.against].name
        own = validation["errors"].get(against)
        if own is None:  # not among the compared runs
            own = missed(probabilities(args.against, mnist.validation_images)[0],
                         mnist.validation_labels)
        others = {i for name, images in validation["errors"].items() if name != against
                  for i in images}
        lines.append(
            f"Run {args.against} ({against}): {len(own)} validation errors, "
            f"{len(own & set(validation['missed_by_all']))} of them missed by all compared "
            f"runs, {len(own & others)} by at least one other, {len(own - others)} by none.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.figure:
        _figure(args.figure, mnist.validation_images, mnist.validation_labels,
                validation["missed_by_all"], validation["ensemble_prediction"], len(names))
    return 0


def _figure(path: Path, images: np.ndarray, labels: np.ndarray, indices: list[int],
            predicted: np.ndarray, count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(len(indices), 10))
    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices, strict=False):  # more axes than digits
        ax.imshow(images[i, :, :, 0], cmap="gray_r")
        ax.set_title(f"#{i}: {labels[i]}→{predicted[i]}", fontsize=8)
    fig.suptitle(f"Validation digits all {count} runs miss (label→ensemble)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
