"""``python -m loadtest perf`` against real servers, about a second per scenario (needs wrk, h2load);
Triton's ``perf_analyzer`` against the real server over TF Serving's gRPC API and V2 HTTP (binary
and JSON tensors) and gRPC, where it runs (``make test`` installs it: scripts/perf_analyzer.py).

Skipped, with the reason and how to install them, where the generators are missing. Targets are
never asserted here (the machine is shared): only that the benchmark measured what it says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, PREDICT_RPC, v2
from contract.proto import digits_tfserving_pb2 as pb
from contract.proto import digits_v2_pb2 as v2_pb
from loadtest.perf import bench as perf
from loadtest.perf import generators as gen

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["rest-c1", "rest-c16", "grpc-c1", "grpc-c16", "grpc-b64-c1"]  # the default
V2_SCENARIOS = ["v2-rest-c16", "v2-json-c1", "v2-grpc-c16"]

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
        "--server-args", "--access_log false",
        "--baseline-server-args", "--access_log true --rest_api_interface wsgi",
        "--rounds", "1", "--duration", "1", "--warmup", "0", "--mnist-dir", str(mnist_dir), "--out", str(out),
        "--scenarios", ",".join(SCENARIOS + V2_SCENARIOS),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "perf.json").read_text())
    assert record["scenarios"] == SCENARIOS + V2_SCENARIOS
    rows = {(r["server"], r["scenario"]): r for r in record["rounds"]}
    servers = {(server, s) for server in ("new", "baseline") for s in SCENARIOS + V2_SCENARIOS}
    # the transport floors, in the same rounds: granian RSGI for REST paths, and WSGI too (the
    # baseline runs it), grpcio for gRPC paths
    rest = [s for s in SCENARIOS + V2_SCENARIOS if not s.startswith(("grpc", "v2-grpc"))]
    grpc = [s for s in SCENARIOS + V2_SCENARIOS if s not in rest]
    floors = {(f"floor-{stack}", s) for stack in ("rsgi", "wsgi") for s in rest}
    floors |= {("floor-grpc", s) for s in grpc}
    assert set(rows) == servers | floors
    for key, row in rows.items():
        assert row["requests"] > 0 and row["generator_errors"] == 0 and row["server_errors"] in (0, -1)
        if key in servers:
            assert row["served"] >= row["requests"]  # the server's own count: every answer seen
        assert 0 < row["cpu_us_per_request"] < 1e5 and row["p99_ms"] >= row["p50_ms"] > 0
    assert rows[("new", "grpc-b64-c1")]["images"] == 64
    _check_floors(record)
    report = (out / "perf.md").read_text()
    assert report.strip() == done.stdout[done.stdout.index("### ") :].split("report: ")[0].strip()
    assert "Ratios new / baseline" in report and "| zero errors | all | 0 | met |" in report
    assert "the same code with `--access_log true --rest_api_interface wsgi`" in report
    assert "Floors measured in this run" in report and "| rest-c1 | granian WSGI, one worker | 1 |" in report
    assert "| REST at 1 connection ≤ 1.25x (transport floor + ORT floor) | rest-c1 |" in report
    assert "220 µs" not in report and "p99 ≤" not in report  # the absolute targets are gone


def _check_floors(record: dict) -> None:
    """The ORT floor before and after, the replies' sizes, and every scenario as multiples."""
    floors = record["floors"]
    for when in ("before", "after"):
        assert 0 < floors["ort"][when]["b64_image_us"] < floors["ort"][when]["b1_call_us"] < 1e4
    assert floors["interfaces"] == {"new": "rsgi", "baseline": "wsgi"}
    paths = {"rest-b1", "grpc-b1", "grpc-b64", "v2-rest-b1", "v2-json-b1", "v2-grpc-b1"}
    assert set(floors["replies"]) == paths and all(size > 0 for size in floors["replies"].values())
    multiples = {(m["server"], m["scenario"]): m for m in record["multiples"]}
    assert set(multiples) == {(server, s) for server in ("new", "baseline") for s in SCENARIOS + V2_SCENARIOS}
    assert multiples[("new", "rest-c1")]["transport"] == "floor-rsgi"
    assert multiples[("baseline", "rest-c1")]["transport"] == "floor-wsgi"
    assert multiples[("new", "grpc-b64-c1")]["ort_us"] == pytest.approx(64 * floors["ort"]["b64_image_us"])
    for m in multiples.values():
        assert 0 < m["vs_floors_median"] < m["vs_ort_median"]
    targets = {(t["target"].split(" ")[0], t["scenario"]) for t in record["targets"]}
    assert targets == {
        ("REST", "rest-c1"), ("REST", "rest-c16"), ("gRPC", "grpc-c1"), ("gRPC", "grpc-c16"),
        ("64-image", "grpc-b64-c1"), ("V2", "v2-rest-c16"), ("V2", "v2-json-c1"), ("V2", "v2-grpc-c16"),
        ("zero", "all"),
    }  # fmt: skip


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


@needs_generators
@pytest.mark.slow
def test_a_v2_grpc_error_is_counted_for_v2_only(running_server, tmp_path: Path) -> None:
    """The same check for V2's ModelInfer: the server's counters carry the protocol label, so the
    errors land on the V2 gRPC path and not on TF Serving's."""
    request = v2_pb.ModelInferRequest(model_name="no-such-model")
    request.inputs.add(name="image", datatype="FP32", shape=[1, *INPUT_SHAPE])
    request.raw_input_contents.append(np.zeros(INPUT_SHAPE, "<f4").tobytes())
    body = tmp_path / "frame.bin"
    body.write_bytes(gen.grpc_frame(request.SerializeToString()))
    log = tmp_path / "h2load.log"
    command = gen.h2load_command(f"http://{running_server.grpc_target}{v2.MODEL_INFER_RPC}", 1, 1, body, log)
    before = perf.scrape(running_server.rest_url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    after = perf.scrape(running_server.rest_url)
    result = gen.parse_h2load(done.stdout, log.read_text())
    assert result.requests > 0 and result.errors == 0  # h2load saw only HTTP 200s
    served, failed = perf.served_delta(before, after, "grpc", "v2")
    assert failed == served >= result.requests  # every one was NOT_FOUND
    assert perf.served_delta(before, after, "grpc") == (0, 0)  # TF Serving's gRPC: nothing


# --- perf_analyzer (docs/loadtest.md; installed into .perf_analyzer/ by scripts/perf_analyzer.py) ----
PERF_ANALYZER_WRAPPER = ROOT / ".perf_analyzer" / "bin" / "perf_analyzer"


def _perf_analyzer() -> tuple[str | None, str]:
    """(the perf_analyzer to run, "") or (None, why not): ``$PERF_ANALYZER``, else the one
    ``make test`` installs into .perf_analyzer/, else PATH."""
    binary = os.environ.get("PERF_ANALYZER") or (
        str(PERF_ANALYZER_WRAPPER) if PERF_ANALYZER_WRAPPER.exists() else shutil.which("perf_analyzer")
    )
    if not binary:
        return None, "perf_analyzer not installed: python scripts/perf_analyzer.py (make test does)"
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        problem = "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-300:]
    except OSError as exc:
        problem = str(exc)
    if problem:  # e.g. libb64.so.0d missing: apt-get install libb64-0d
        return None, f"perf_analyzer ({binary}) does not run here: {problem}"
    return binary, ""


PERF_ANALYZER, PERF_ANALYZER_MISSING = _perf_analyzer()
needs_perf_analyzer = pytest.mark.skipif(PERF_ANALYZER is None, reason=PERF_ANALYZER_MISSING)


def _run_perf_analyzer(server, mnist_test, tmp_path: Path, api: str, protocol: str, *args: str) -> None:
    """Three 0.5 s windows of perf_analyzer (its fewest to call a measurement stable) over real
    digits at two concurrent requests; zero errors by its own count and by the server's
    counters, which saw every request it counted."""
    images = mnist_test[0][:16]
    data = tmp_path / "digits.json"  # perf_analyzer's own random data would be NaNs: refused
    rows = [{"image": {"content": image.ravel().tolist(), "shape": list(INPUT_SHAPE)}} for image in images]
    data.write_text(json.dumps({"data": rows}))
    target = server.rest_url.removeprefix("http://") if api == "rest" else server.grpc_target
    command = [
        str(PERF_ANALYZER), "-m", "lenet5", "-u", target, "-b", "1", "--concurrency-range", "2",
        "--measurement-interval", "500", "--max-trials", "3", "--stability-percentage", "1000",
        "--input-data", str(data), *args,
    ]  # fmt: skip
    before = perf.scrape(server.rest_url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    after = perf.scrape(server.rest_url)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    counted = int(re.search(r"Request count: (\d+)", done.stdout)[1])
    assert re.search(r"Throughput: [0-9.]+ infer/sec", done.stdout), done.stdout[-2000:]
    served, failed = perf.served_delta(before, after, api, protocol)
    assert counted > 0 and served >= counted and failed == 0, (counted, served, failed)


@needs_perf_analyzer
@pytest.mark.slow
def test_perf_analyzer_drives_tf_servings_grpc_api(running_server, mnist_test, tmp_path: Path) -> None:
    _run_perf_analyzer(
        running_server, mnist_test, tmp_path, "grpc", "tfserving",
        "--service-kind", "tfserving", "-i", "grpc", "--model-signature-name", "serving_default",
    )  # fmt: skip


@needs_perf_analyzer
@pytest.mark.slow
@pytest.mark.parametrize(
    ("api", "args"),
    [
        ("rest", ("-i", "http", "--input-tensor-format", "binary", "--output-tensor-format", "binary")),
        ("rest", ("-i", "http", "--input-tensor-format", "json", "--output-tensor-format", "json")),
        ("grpc", ("-i", "grpc")),
    ],
    ids=["http-binary", "http-json", "grpc"],
)
def test_perf_analyzer_drives_the_v2_api(running_server, mnist_test, tmp_path: Path, api, args) -> None:
    """Triton's own mode: perf_analyzer reads the model configuration (GET .../config, gRPC
    ModelConfig), then infers over V2 HTTP with binary or JSON tensors, or over V2 gRPC."""
    _run_perf_analyzer(running_server, mnist_test, tmp_path, api, "v2", "--service-kind", "triton", *args)
