"""research.error_overlap: errors shared by finished runs, and their ensemble, from saved models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from research import error_overlap

COMMAND = [sys.executable, "-m", "research.error_overlap"]


def _fixture_index(trained_run: Path) -> int:
    """The grid index of the one run the ``trained_run`` fixture trained (from its record)."""
    from training import records

    (result,) = trained_run.glob(f"*/{records.RESULT_FILE}")
    return json.loads(result.read_text())["index"]


def _one_hot(digits: list[int], confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(digits), 10), (1 - confidence) / 9)
    p[np.arange(len(digits)), digits] = confidence
    return p


def test_overlap_counts_shared_errors_and_the_ensemble_vote():
    labels = np.array([0, 1, 2, 3])
    a = _one_hot([0, 1, 5, 7])  # misses images 2 and 3
    b = _one_hot([0, 4, 2, 7])  # misses 1 and 3
    c = _one_hot([0, 1, 2, 3])  # misses nothing
    c[3] = _one_hot([3], confidence=0.5)[0]  # ... image 3 only weakly: the ensemble says 7
    result = error_overlap.overlap({"a": a, "b": b, "c": c}, labels)
    assert result["errors"] == {"a": {2, 3}, "b": {1, 3}, "c": set()}
    assert result["accuracy"] == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert result["missed_by"] == {1: 1, 2: 1, 3: 2}
    assert result["missed_by_all"] == []
    assert result["ensemble_accuracy"] == 0.75  # images 1, 2 outvoted; image 3 goes to 7
    assert list(result["ensemble_prediction"]) == [0, 1, 2, 7]
    both = error_overlap.overlap({"a": a, "b": b}, labels)
    assert both["missed_by_all"] == [3]


def test_script_reads_saved_models_and_agrees_with_their_records(trained_run, mnist, mnist_dir,
                                                                 tmp_path):
    from training import config, records, train

    fixture_index = _fixture_index(trained_run)
    grid_dir = tmp_path / "runs" / "lab"
    shutil.copytree(trained_run, grid_dir)
    softmax = config.run_config("lab", 0).with_epochs(1)
    train.run(softmax, mnist, grid_dir / softmax.name, index=0, grid="lab")

    out, figure = tmp_path / "overlap.md", tmp_path / "missed.png"
    done = subprocess.run(
        [*COMMAND, "--index", str(fixture_index), "0", "--runs-dir", str(tmp_path / "runs"),
         "--data-dir", str(mnist_dir), "--out", str(out), "--figure", str(figure)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert text in done.stdout
    # Each run's figures, recomputed from its saved model, are those of its record.
    for index in (fixture_index, 0):
        name = config.run_config("lab", index).name
        result = json.loads((grid_dir / name / records.RESULT_FILE).read_text())
        errors = round((1 - result["validation_accuracy"]) * len(mnist.validation_labels))
        assert (f"| {index} | {name} | {result['validation_accuracy']:.2%} | {errors} "
                f"| {result['test_accuracy']:.2%} |") in text
    assert "| | ensemble of 2 (mean probabilities) |" in text
    # --against defaults to the grid's selected run: the LeNet-5 beats softmax regression.
    selected = config.run_config("lab", fixture_index).name
    assert f"Run {fixture_index} ({selected}): " in text
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_names_a_run_without_a_saved_model(trained_run, mnist_dir, tmp_path):
    done = subprocess.run(
        [*COMMAND, "--index", "0", "--runs-dir", str(trained_run.parent), "--data-dir", str(mnist_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "run 0 (softmax-sgd-0.01-b128): no saved model" in done.stderr
