"""The generated protobuf code is what scripts/gen_protos.py produces from contract/proto/*.proto.

protoc runs in a subprocess: grpc_tools' compiler in the test process (beside TensorFlow's and
our loaded protos) can crash the interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/gen_protos.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_generated_code_is_up_to_date():
    proc = _gen("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_when_the_generated_code_differs(tmp_path):
    assert _gen("--out-dir", str(tmp_path)).returncode == 0
    assert _gen("--check", "--out-dir", str(tmp_path)).returncode == 0
    (tmp_path / "digits_tfserving_pb2.py").write_text("# edited by hand\n")
    proc = _gen("--check", "--out-dir", str(tmp_path))
    assert proc.returncode == 1 and "stale" in proc.stderr
