"""The generated protobuf code is what scripts/gen_protos.py produces from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date():
    proc = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_when_the_generated_code_differs(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stale = tmp_path / "proto"
    gen_protos.generate(stale)
    (stale / "digits_tfserving_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(gen_protos, "OUT_DIR", stale)
    monkeypatch.setattr(sys, "argv", ["gen_protos.py", "--check"])
    assert gen_protos.main() == 1
