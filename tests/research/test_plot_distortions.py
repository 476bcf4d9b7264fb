"""research.plot_distortions: the figure of the training-time distortions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_draws_the_figure(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures" / "distortions.png"
    done = subprocess.run(
        [sys.executable, "-m", "research.plot_distortions", "--data-dir", str(mnist_dir),
         "--count", "3", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
