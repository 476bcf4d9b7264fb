"""A user's own grid file, end to end through the CLI: list, grid (runs + report), export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import contract

TINY_GRID = """\
description = "two tiny runs"

[defaults]
epochs = 1
train_limit = 2000

[[runs]]
name = "softmax"
group = "softmax"
model = "softmax"
optimizer = "sgd"
learning_rate = 0.1

[[runs]]
name = "lenet5-{optimizer}"
group = "grid"
product = { optimizer = ["adam"] }
"""


def _cli(*args: str, mnist_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_user_grid_file_runs_end_to_end(mnist_dir, tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_GRID)
    listed = _cli("list", "--grid", "tiny.toml", mnist_dir=mnist_dir, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "two tiny runs" in listed.stdout
    assert "  0  softmax" in listed.stdout and "  1  lenet5-adam" in listed.stdout

    ran = _cli("grid", "--grid", "tiny.toml", "--jobs", "2", mnist_dir=mnist_dir, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    grid_dir = tmp_path / "runs" / "tiny"  # runs live under RUNS_DIR/<file stem>
    results = json.loads((grid_dir / "results.json").read_text())
    assert [(r["index"], r["name"], r["status"]) for r in results] == [
        (0, "softmax", "completed"), (1, "lenet5-adam", "completed")]
    assert (grid_dir / "accuracy_grid.png").stat().st_size > 0

    reported = _cli("report", "--grid", "tiny.toml", mnist_dir=mnist_dir, cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr

    exported = _cli("export", "--grid", "tiny.toml", "--model-base-path", "models/lenet5",
                    mnist_dir=mnist_dir, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = json.loads((tmp_path / "models/lenet5/1" / contract.MODEL_CARD_FILENAME).read_text())
    best = max(results, key=lambda r: r["validation_accuracy"])
    assert card["run"] == best["name"] and card["index"] == best["index"]
    assert card["reproduce"] == [
        f"python -m training run --grid tiny.toml --index {best['index']}",
        f"python -m training export --grid tiny.toml --run {best['name']}",
    ]


def test_a_malformed_grid_file_is_refused_by_every_command(mnist_dir, tmp_path):
    (tmp_path / "bad.toml").write_text('[[runs]]\nname = "a"\ngroup = "g"\nlearnig_rate = 0.1\n')
    for command in (["list"], ["run", "--index", "0"], ["grid"], ["report"], ["export"]):
        proc = _cli(*command, "--grid", "bad.toml", mnist_dir=mnist_dir, cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "bad.toml: [[runs]] #1 ('a'): unknown key(s) ['learnig_rate']" in proc.stderr
        assert "Traceback" not in proc.stderr
    missing = _cli("list", "--grid", "nowhere.toml", mnist_dir=mnist_dir, cwd=tmp_path)
    assert missing.returncode == 2 and "unknown grid 'nowhere.toml'" in missing.stderr
