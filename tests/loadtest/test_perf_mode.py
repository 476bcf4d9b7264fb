"""``python -m loadtest perf`` without a server: generator output, gRPC frames, rounds and report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from contract import INPUT_NAME, MODEL_NAME
from contract.proto import digits_tfserving_pb2 as pb
from contract.proto import digits_v2_pb2 as v2_pb
from loadtest.__main__ import main
from loadtest.perf import bench as perf
from loadtest.perf import generators as gen
from loadtest.perf.multiples import check_targets
from loadtest.perf.report import (
    BASELINE,
    NEW,
    Round,
    Scenario,
    markdown,
    parse_scenarios,
    round_ratios,
    summarise,
)

WRK_TEXT = """\
Running 3s test @ http://127.0.0.1:18501/v1/models/lenet5:predict
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.90ms   21.83ms 149.97ms   92.94%
    Req/Sec     1.05k   318.31     1.61k    82.76%
  Latency Distribution
     50%  603.00us
     75%    1.94ms
     90%    4.97ms
     99%  119.37ms
  3118 requests in 3.03s, 0.85MB read
Requests/sec:   1029.46
Transfer/sec:    287.52KB
"""
WRK_ERRORS = """\
  Latency Distribution
     50%    2.43ms
     99%    1.02s
  6153 requests in 1.00s, 1.68MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:   6152.18
"""
PERF_LINE = (
    'PERF_JSON {"requests": 3120, "duration_us": 3031000, "p50_us": 601, "p99_us": 119370, '
    '"max_us": 149970, "connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}\n'
)
H2LOAD_TEXT = """\
starting benchmark...
Application protocol: h2c
finished in 3.00s, 2602.67 req/s, 483.01KB/s
requests: 7808 total, 7809 started, 7808 done, 7808 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 7808 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.42MB (1483800) total, 22.95KB (23499) headers (space savings 96.28%), 998.88KB (1022848) data
                     min         max         mean         sd        +/- sd
time for request:      240us     25.89ms       372us       422us    99.14%
"""


def test_wrk_text_is_read_with_its_latency_distribution() -> None:
    result = gen.parse_wrk(WRK_TEXT)
    assert (result.requests, result.duration_s, result.rps) == (3118, 3.03, 1029.46)
    assert result.p50_ms == pytest.approx(0.603) and result.p99_ms == pytest.approx(119.37)
    assert result.max_ms == pytest.approx(149.97) and result.errors == 0 and result.detail == ""


def test_wrk_errors_are_counted_and_named() -> None:
    result = gen.parse_wrk(WRK_ERRORS)
    assert result.errors == 15 and result.detail == "read 2, timeout 1, non-2xx/3xx 12"
    assert result.p99_ms == pytest.approx(1020.0) and math.isnan(result.max_ms)


def test_our_scripts_json_line_gives_microsecond_percentiles() -> None:
    result = gen.parse_wrk(WRK_TEXT + PERF_LINE)
    assert (result.requests, result.duration_s) == (3120, 3.031)
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (0.601, 119.37, 149.97)
    failing = PERF_LINE.replace('"status": 0', '"status": 4').replace('"read": 0', '"read": 1')
    assert gen.parse_wrk(WRK_TEXT + failing).errors == 5


def test_not_wrk_output_is_refused() -> None:
    with pytest.raises(ValueError, match="not wrk output"):
        gen.parse_wrk("wrk: command not found")


def test_h2load_summary_and_log_file_percentiles() -> None:
    log = "".join(f"1795999738663729\t200\t{us}\n" for us in range(100, 1100))  # 100..1099 µs
    result = gen.parse_h2load(H2LOAD_TEXT, log)
    assert (result.requests, result.duration_s, result.rps, result.errors) == (7808, 3.0, 2602.67, 0)
    assert result.p50_ms == pytest.approx(0.5995) and result.p99_ms == pytest.approx(1.08901)
    assert result.max_ms == pytest.approx(1.099)
    without_log = gen.parse_h2load(H2LOAD_TEXT)
    assert math.isnan(without_log.p99_ms) and without_log.max_ms == pytest.approx(25.89)


def test_h2load_failures_are_errors() -> None:
    text = H2LOAD_TEXT.replace(
        "7808 succeeded, 0 failed, 0 errored, 0 timeout", "7800 succeeded, 8 failed, 3 errored, 1 timeout"
    )
    text = text.replace("7808 2xx, 0 3xx, 0 4xx, 0 5xx", "7800 2xx, 0 3xx, 5 4xx, 0 5xx")
    result = gen.parse_h2load(text)
    assert result.errors == 8  # "failed" already holds the errored, timed-out and 4xx requests
    assert result.detail == "failed 8, errored 3, timeout 1, 4xx 5"
    with pytest.raises(ValueError, match="not h2load output"):
        gen.parse_h2load("h2load: invalid option")


def test_grpc_frame_is_flag_length_message() -> None:
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=MODEL_NAME))
    request.inputs[INPUT_NAME].tensor_content = b"\x00" * 3136
    message = request.SerializeToString()
    frame = gen.grpc_frame(message)
    assert frame[:5] == b"\x00" + len(message).to_bytes(4, "big") and frame[5:] == message
    assert pb.PredictRequest.FromString(gen.parse_grpc_frame(frame)) == request
    for bad in (b"\x00\x00", b"\x01" + frame[1:], frame + b"x"):
        with pytest.raises(ValueError):
            gen.parse_grpc_frame(bad)


def test_generator_commands(tmp_path: Path) -> None:
    script = tmp_path / "post.lua"
    script.write_text(gen.wrk_script(tmp_path / 'we"ird.json'))
    assert 'io.open("' + str(tmp_path) + '/we\\"ird.json", "rb")' in script.read_text()
    assert gen.wrk_command("http://h/p", 16, 5, script) == [
        "wrk", "-t1", "-c16", "-d5s", "--timeout=10s", "--latency", "-s", str(script), "http://h/p",
    ]  # fmt: skip
    command = gen.h2load_command("http://h/x", 1, 5, tmp_path / "b.bin", tmp_path / "log")
    assert command[:4] == ["h2load", "-t1", "-c1", "-m1"] and command[-1] == "http://h/x"
    assert ["-H", "content-type: application/grpc", "-H", "te: trailers"] == command[-5:-1]


def test_scenarios_parse() -> None:
    assert [s.name for s in parse_scenarios("rest-c1, GRPC-b64-c1,grpc-c16,rest-c1")] == [
        "rest-c1", "grpc-b64-c1", "grpc-c16",
    ]  # fmt: skip
    assert Scenario.parse("grpc-b64-c4") == Scenario("grpc", 4, 64)
    for bad in ("http-c1", "rest", "rest-c0", "grpc-b2000-c1", ""):
        with pytest.raises(ValueError):
            parse_scenarios(bad)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    perf.add_arguments(parser)
    return parser.parse_args(["--model-base-path", "m", *argv])


def test_options_are_checked() -> None:
    assert len(perf.check_arguments(_args())) == 5
    assert not _args().no_floors and _args("--no-floors").no_floors
    every_path = perf.check_arguments(_args("--scenarios", "paths"))
    assert len(every_path) == 10 and [s.name for s in every_path][-2:] == ["v2-grpc-c1", "v2-grpc-c16"]
    for argv, words in [
        (("--rounds", "0"), "--rounds"),
        (("--baseline-rev", "HEAD", "--baseline-source", "x"), "not both"),
        (("--baseline-json", "f", "--baseline-server-args", ""), "earlier run"),
        (("--scenarios", "soap-c1"), "scenario"),
    ]:
        with pytest.raises(ValueError, match=words):
            perf.check_arguments(_args(*argv))


def test_missing_generators_are_named_with_how_to_install(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(gen.shutil, "which", lambda tool: None)
    assert main(["perf", "--model-base-path", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "wrk, h2load not found" in message and "apt-get install -y wrk nghttp2-client" in message


def test_server_counters_from_a_scrape() -> None:
    text = (
        "# HELP serving_requests_total Requests\n"
        'serving_requests_total{api="rest",code="OK",method="predict",protocol="tfserving"} 120.0\n'
        'serving_requests_total{api="rest",code="INVALID_ARGUMENT",method="predict",'
        'protocol="tfserving"} 2.0\n'
        'serving_requests_total{api="grpc",code="OK",method="predict",protocol="tfserving"} 7.0\n'
        'serving_requests_total{api="grpc",code="OK",method="status",protocol="tfserving"} 9.0\n'
        'serving_requests_total{api="rest",code="OK",method="infer",protocol="v2"} 30.0\n'
        'serving_requests_total{api="grpc",code="OK",method="predict",protocol="v2"} 40.0\n'
        'serving_requests_total{api="grpc",code="OK",method="model_ready",protocol="v2"} 1.0\n'
        'serving_requests_created{api="grpc",code="OK",method="status",protocol="tfserving"} 1.7e9\n'
    )
    before = perf.request_counts(text)
    assert before[("rest", "tfserving", "predict", "OK")] == 120 and len(before) == 7
    after = {
        **before,
        ("rest", "tfserving", "predict", "OK"): 220.0,
        ("rest", "tfserving", "predict", "NOT_FOUND"): 1.0,
        ("rest", "v2", "infer", "OK"): 35.0,
        ("rest", "v2", "infer", "INVALID_ARGUMENT"): 2.0,
        ("grpc", "v2", "predict", "OK"): 50.0,
    }
    assert perf.served_delta(before, after, "rest") == (101, 1)
    assert perf.served_delta(before, after, "grpc") == (0, 0)
    assert perf.served_delta(before, after, "rest", "v2") == (7, 2)  # not the TF Serving ones
    assert perf.served_delta(before, after, "grpc", "v2") == (10, 0)  # readiness calls not counted
    # a server from before the protocol label (a baseline revision) speaks TF Serving's API only
    old = perf.request_counts('serving_requests_total{api="rest",code="OK",method="predict"} 5.0\n')
    assert old == {("rest", "tfserving", "predict", "OK"): 5.0}


def test_every_path_gets_the_request_files_the_client_library_would_send(
    mnist_dir: Path, tmp_path: Path
) -> None:
    (inputs,) = perf.prepare_inputs({2}, str(mnist_dir), perf.ModelSpec(), tmp_path).values()
    assert set(inputs.files) == {"rest", "grpc", "v2-rest", "v2-json", "v2-grpc"}
    binary_script = inputs.files["v2-rest"].read_text()
    body = (tmp_path / "v2-rest-b2.body").read_bytes()
    header_length = len(body) - 2 * 784 * 4
    assert f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"' in binary_script
    assert 'wrk.headers["Content-Type"] = "application/octet-stream"' in binary_script
    assert np.array_equal(np.frombuffer(body[header_length:], "<f4").reshape(2, 28, 28, 1), inputs.images)
    document = json.loads((tmp_path / "v2-json-b2.body").read_bytes())
    assert document["inputs"][0]["shape"] == [2, 28, 28, 1]
    assert 'wrk.headers["Content-Type"] = "application/json"' in inputs.files["v2-json"].read_text()
    message = v2_pb.ModelInferRequest.FromString(gen.parse_grpc_frame(inputs.files["v2-grpc"].read_bytes()))
    assert message.model_name == MODEL_NAME and len(message.raw_input_contents[0]) == 2 * 784 * 4
    assert pb.PredictRequest.FromString(gen.parse_grpc_frame(inputs.files["grpc"].read_bytes()))


def test_scenarios_know_their_transport_and_protocol() -> None:
    scenarios = parse_scenarios(perf.PATHS_SCENARIOS)
    assert [s.name for s in scenarios] == [
        "rest-c1", "rest-c16", "grpc-c1", "grpc-c16", "v2-rest-c1", "v2-rest-c16",
        "v2-json-c1", "v2-json-c16", "v2-grpc-c1", "v2-grpc-c16",
    ]  # fmt: skip
    assert Scenario.parse("v2-json-b64-c4") == Scenario("v2-json", 4, 64)
    assert [(s.api, s.wire_protocol) for s in parse_scenarios("v2-rest-c1,v2-grpc-c1,grpc-c1")] == [
        ("rest", "v2"), ("grpc", "v2"), ("grpc", "tfserving"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="v2-json"):
        parse_scenarios("v2-soap-c1")


def _round(
    server: str, scenario: str, index: int, cpu_s: float, rps: float = 1000.0, images: int = 1
) -> Round:
    return Round(server, scenario, index, images, 1000, 1.0, rps, 0.3, 0.9, 2.0, 0, 1000, 0, cpu_s, 1.0)


def test_medians_ratios_and_targets() -> None:
    rounds = [
        _round(NEW, "rest-c1", 0, 0.20), _round(BASELINE, "rest-c1", 0, 0.40),
        _round(BASELINE, "rest-c1", 1, 0.50), _round(NEW, "rest-c1", 1, 0.25),
        _round(NEW, "rest-c1", 2, 0.30), _round(BASELINE, "rest-c1", 2, 0.30),
        _round(NEW, "grpc-b64-c1", 0, 1.6, images=64),
    ]  # fmt: skip
    summaries = summarise(rounds)
    assert summaries[("rest-c1", NEW)].medians["cpu_us_per_request"] == pytest.approx(250.0)
    assert summaries[("rest-c1", BASELINE)].rounds == 3
    assert round_ratios(rounds, "rest-c1", "cpu_us_per_request") == pytest.approx([0.5, 0.5, 1.0])
    assert summaries[("grpc-b64-c1", NEW)].medians["cpu_us_per_image"] == pytest.approx(25.0)
    scenarios = parse_scenarios("rest-c1,grpc-b64-c1")
    # no absolute targets any more: without floors, only zero errors is checked (the multiples:
    # test_perf_floors.py)
    assert check_targets(scenarios, rounds, None) == [("zero errors", "all", 0.0, True)]
    report = markdown("### header", scenarios, rounds)
    header = (
        "| scenario | server | rounds | req/s | p50 ms | p99 ms | server CPU µs/req | µs/image | errors |"
    )
    assert f"{header}\n|---|---|---|---|---|---|---|---|---|\n| rest-c1 | baseline |" in report
    assert "| rest-c1 | baseline | 3 | 1,000 | 0.30 | 0.90 | 400 | 400.0 | 0 |" in report
    assert "| rest-c1 | **0.50** (0.50 0.50 1.00) | **1.00** (1.00 1.00 1.00) |" in report
    assert "µs per single-image request" not in report and "Targets" not in report


def test_an_unknown_server_count_falls_back_to_the_generators() -> None:
    row = Round(NEW, "rest-c1", 0, 1, 500, 1.0, 500.0, 0.3, 0.9, 2.0, 0, -1, -1, 0.1, 1.0)
    assert row.cpu_us_per_request == pytest.approx(200.0) and row.errors == 0


def test_a_baseline_from_an_earlier_runs_json(tmp_path: Path) -> None:
    rounds = [_round(NEW, "rest-c1", 0, 0.2), _round(BASELINE, "rest-c1", 0, 0.4)]
    record = {"rounds": [r.as_dict() for r in rounds]}
    record["rounds"][0]["p99_ms"] = None  # NaN is written as null
    path = tmp_path / "perf.json"
    path.write_text(json.dumps(record))
    (loaded,) = perf.load_baseline(path)
    assert loaded.server == BASELINE and loaded.cpu_s == 0.2 and math.isnan(loaded.p99_ms)


def test_the_baseline_may_address_another_model_of_the_same_server_config() -> None:
    args = _args("--baseline-model-name", "lenet5-ensemble")
    assert perf.check_arguments(args)
    assert perf.model_of(perf.NEW, args) == "lenet5"
    assert perf.model_of(perf.BASELINE, args) == "lenet5-ensemble"
    with pytest.raises(ValueError, match="--baseline-json"):
        perf.check_arguments(_args("--baseline-model-name", "x", "--baseline-json", "old.json"))
    plain = _args()
    assert perf.model_of(perf.BASELINE, plain) == perf.model_of(perf.NEW, plain) == "lenet5"
