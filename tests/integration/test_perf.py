"""``python -m loadtest perf`` against real servers, about a second per scenario (needs wrk, h2load).

Skipped, with the reason and how to install them, where the generators are missing. Targets are
never asserted here (the machine is shared): only that the benchmark measured what it says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, PREDICT_RPC
from contract.proto import digits_tfserving_pb2 as pb
from loadtest import generators as gen
from loadtest import perf

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["rest-c1", "rest-c16", "grpc-c1", "grpc-c16", "grpc-b64-c1"]

needs_generators = pytest.mark.skipif(
    bool(gen.missing_tools()), reason=f"{', '.join(gen.missing_tools())} not installed: {gen.INSTALL_HINT}"
)


@needs_generators
@pytest.mark.slow
def test_perf_measures_every_scenario_on_both_servers(
    model_base_path: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "perf"
    command = [
        sys.executable, "-m", "loadtest", "perf", "--model-base-path", str(model_base_path),
        "--server-args", "--access_log false", "--baseline-server-args", "--access_log true",
        "--rounds", "1", "--duration", "1", "--warmup", "0", "--mnist-dir", str(mnist_dir), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "perf.json").read_text())
    assert record["scenarios"] == SCENARIOS
    rows = {(r["server"], r["scenario"]): r for r in record["rounds"]}
    assert set(rows) == {(server, s) for server in ("new", "baseline") for s in SCENARIOS}
    for row in rows.values():
        assert row["requests"] > 0 and row["generator_errors"] == 0 and row["server_errors"] == 0
        assert row["served"] >= row["requests"]  # the server's own count: every answer seen
        assert 0 < row["cpu_us_per_request"] < 1e5 and row["p99_ms"] >= row["p50_ms"] > 0
    assert rows[("new", "grpc-b64-c1")]["images"] == 64
    report = (out / "perf.md").read_text()
    assert report.strip() == done.stdout[done.stdout.index("### ") :].split("report: ")[0].strip()
    assert "Ratios new / baseline" in report and "| zero errors | all | 0 | met |" in report
    assert "the same code with `--access_log true`" in report


@needs_generators
@pytest.mark.slow
def test_h2load_counts_a_grpc_error_as_a_success_and_the_server_counters_do_not(
    running_server, tmp_path: Path
) -> None:
    """Why the benchmark reads the server's counters: an error is an HTTP 200 with grpc-status 5."""
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name="no-such-model"))
    request.inputs["image"].dtype = pb.DT_FLOAT
    request.inputs["image"].tensor_shape.dim.add(size=1)
    for size in INPUT_SHAPE:
        request.inputs["image"].tensor_shape.dim.add(size=size)
    request.inputs["image"].tensor_content = np.zeros(INPUT_SHAPE, np.float32).tobytes()
    body = tmp_path / "frame.bin"
    body.write_bytes(gen.grpc_frame(request.SerializeToString()))
    log = tmp_path / "h2load.log"
    command = gen.h2load_command(f"http://{running_server.grpc_target}{PREDICT_RPC}", 1, 1, body, log)
    before = perf.scrape(running_server.rest_url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    after = perf.scrape(running_server.rest_url)
    result = gen.parse_h2load(done.stdout, log.read_text())
    assert result.requests > 0 and result.errors == 0  # h2load saw only HTTP 200s
    served, failed = perf.served_delta(before, after, "grpc")
    assert failed == served >= result.requests  # every one was NOT_FOUND
