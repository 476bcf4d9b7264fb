"""``python -m loadtest perf`` against real servers, about a second per scenario (needs wrk, h2load);
Triton's ``perf_analyzer`` against the real server, where its binary is installed.

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
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_SHAPE, PREDICT_RPC, v2
from contract.proto import digits_tfserving_pb2 as pb
from contract.proto import digits_v2_pb2 as v2_pb
from loadtest import generators as gen
from loadtest import perf

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
        "--server-args", "--access_log false", "--baseline-server-args", "--access_log true",
        "--rounds", "1", "--duration", "1", "--warmup", "0", "--mnist-dir", str(mnist_dir), "--out", str(out),
        "--scenarios", ",".join(SCENARIOS + V2_SCENARIOS),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "perf.json").read_text())
    assert record["scenarios"] == SCENARIOS + V2_SCENARIOS
    rows = {(r["server"], r["scenario"]): r for r in record["rounds"]}
    assert set(rows) == {(server, s) for server in ("new", "baseline") for s in SCENARIOS + V2_SCENARIOS}
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


# --- perf_analyzer (docs/loadtest.md: from the tritonclient 2.40 wheel, in a virtualenv of its own) --
def _perf_analyzer() -> tuple[str, dict[str, str]] | str:
    """(binary, environment) where perf_analyzer runs, else why not. ``$PERF_ANALYZER`` or PATH;
    the CUDA runtime it links (even without a GPU) is looked up in the binary's own virtualenv."""
    binary = os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer")
    if not binary:
        return "perf_analyzer not installed ($PERF_ANALYZER or PATH): see docs/loadtest.md"
    env = dict(os.environ)
    cudart = sorted(
        Path(binary).absolute().parents[1].glob("lib/python*/site-packages/nvidia/cuda_runtime/lib")
    )
    if cudart:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(cudart[0]), env.get("LD_LIBRARY_PATH")]))
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env, timeout=30)
    if done.returncode != 0:
        return f"perf_analyzer does not run here: {(done.stderr or done.stdout).strip()[-300:]}"
    return binary, env


PERF_ANALYZER = _perf_analyzer()
needs_perf_analyzer = pytest.mark.skipif(isinstance(PERF_ANALYZER, str), reason=str(PERF_ANALYZER))


def _run_perf_analyzer(server, mnist_test, tmp_path: Path, api: str, protocol: str, *args: str) -> None:
    """A few seconds of perf_analyzer over real digits; zero errors by it and by the server."""
    binary, env = PERF_ANALYZER  # type: ignore[misc]
    images = mnist_test[0][:16]
    data = tmp_path / "digits.json"  # perf_analyzer's own random data would be NaNs: refused
    rows = [{"image": {"content": image.ravel().tolist(), "shape": list(INPUT_SHAPE)}} for image in images]
    data.write_text(json.dumps({"data": rows}))
    target = server.rest_url.removeprefix("http://") if api == "rest" else server.grpc_target
    command = [
        binary, "-m", "lenet5", "-u", target, "-b", "1", "--concurrency-range", "2",
        "--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000",
        "--input-data", str(data), *args,
    ]  # fmt: skip
    before = perf.scrape(server.rest_url)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    after = perf.scrape(server.rest_url)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    counted = int(re.search(r"Request count: (\d+)", done.stdout)[1])
    served, failed = perf.served_delta(before, after, api, protocol)
    assert counted > 0 and served >= counted and failed == 0, (counted, served, failed)


@needs_perf_analyzer
@pytest.mark.slow
def test_perf_analyzer_drives_tf_servings_grpc_api(running_server, mnist_test, tmp_path: Path) -> None:
    _run_perf_analyzer(
        running_server, mnist_test, tmp_path, "grpc", "tfserving",
        "--service-kind", "tfserving", "-i", "grpc", "--model-signature-name", "serving_default",
    )  # fmt: skip


def _has_model_config(server) -> bool:
    """Triton's model configuration extension, which perf_analyzer's V2 mode asks for first."""
    try:
        with urllib.request.urlopen(f"{server.rest_url}/v2/models/lenet5/config", timeout=10):
            return True
    except urllib.error.HTTPError:
        return False


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
    if not _has_model_config(running_server):
        pytest.skip(
            "perf_analyzer's V2 mode first asks for Triton's model configuration "
            "(GET /v2/models/M/config, gRPC ModelConfig), which the server does not implement"
        )
    _run_perf_analyzer(running_server, mnist_test, tmp_path, api, "v2", "--service-kind", "triton", *args)
