"""The serving package must never import TensorFlow (the serving image does not ship it)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import serving

ROOT = Path(__file__).resolve().parents[2]
# Every module of the package, found rather than listed, so a new module is covered at once.
MODULES = ["serving", *sorted(m.name for m in pkgutil.walk_packages(serving.__path__, "serving."))]


def test_every_module_is_covered() -> None:
    expected = {
        "serving.core.dataplane", "serving.rest.app", "serving.grpc.server", "serving.process.workers"
    }
    assert expected <= set(MODULES)


def test_importing_every_serving_module_loads_no_tensorflow() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'tf2onnx'})\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_source_file_mentions_a_tensorflow_import() -> None:
    for path in (ROOT / "serving").rglob("*.py"):
        text = path.read_text()
        assert "import tensorflow" not in text and "from tensorflow" not in text, path
