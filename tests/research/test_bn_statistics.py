"""research.bn_statistics: a finished run's accuracy with its running and with clean statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

COMMAND = [sys.executable, "-m", "research.bn_statistics"]


def test_reports_a_saved_models_figures_and_skips_runs_without_one(trained_run: Path, mnist_dir: Path,
                                                                    tmp_path: Path) -> None:
    from training import config, records

    (record,) = trained_run.glob(f"*/{records.RESULT_FILE}")
    result = json.loads(record.read_text())
    index, name = result["index"], result["name"]
    out = tmp_path / "bn.md"
    done = subprocess.run(
        [*COMMAND, "--index", str(index), "0", "--runs-dir", str(trained_run.parent),
         "--data-dir", str(mnist_dir), "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "run 0 (softmax-sgd-0.01-b128): no saved model" in done.stderr
    table = out.read_text()
    assert table in done.stdout
    run = config.run_config("lab", index)
    # The fixture's LeNet-5 has no batch norm: clean statistics change nothing, and the figures
    # recomputed from the saved model are those of its record.
    figures = f"| {result['validation_accuracy']:.2%} | {result['test_accuracy']:.2%} "
    assert (f"| {index} | {name} | {run.elastic_alpha:g} | {run.epochs} {figures}{figures}"
            "| +0.00 |") in table.splitlines()
    assert len(table.splitlines()) == 3, "header, rule and the one run with a saved model"
