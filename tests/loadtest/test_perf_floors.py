"""The perf benchmark's floors: the multiples and targets arithmetic, which floor goes with which
scenario, the served model file, the ONNX Runtime floor, and the floor servers started for real
on loopback, answering exactly the bytes they are given."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import grpc
import psutil
import pytest

from contract import PREDICT_RPC
from contract.mnist import load_split, to_model_input
from loadtest.perf import bench, floors
from loadtest.perf.floor_server import Reply, read_routes, write_routes
from loadtest.perf.multiples import (
    GRPC,
    NEW,
    RSGI,
    WSGI,
    Floors,
    OrtFloor,
    check_targets,
    floor_label,
    floor_measures,
    floor_stacks,
    markdown,
    multiples,
    twin_ratios,
)
from loadtest.perf.report import BASELINE, Round, parse_scenarios

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = ROOT / "pretrained" / "lenet5"

# An ORT floor of 30 µs per call and 10 µs per image at batch 64 (before 28 / 9, after 32 / 11).
ORT = OrtFloor(
    "m.onnx", {"b1_call_us": 28.0, "b64_image_us": 9.0}, {"b1_call_us": 32.0, "b64_image_us": 11.0}
)


def _round(server: str, scenario: str, index: int, cpu_us: float, images: int = 1, errors: int = 0) -> Round:
    """A round of 1,000 answers whose server CPU was ``cpu_us`` per request."""
    served = -1 if server.startswith("floor-") else 1000
    return Round(server, scenario, index, images, 1000, 1.0, 1000.0, 0.3, 0.9, 2.0, errors, served, 0,
                 cpu_us * 1000 / 1e6, 1.0)  # fmt: skip


def test_the_ort_floor_is_the_mean_of_before_and_after() -> None:
    assert (ORT.call_us, ORT.image_us) == (30.0, 10.0)
    assert ORT.request_us(1) == 30.0 and ORT.request_us(64) == 640.0 and ORT.request_us(8) == 80.0


def test_each_scenario_as_multiples_of_its_floors() -> None:
    rounds = [
        _round(NEW, "rest-c1", 0, 300), _round(floor_label(RSGI), "rest-c1", 0, 170),
        _round(NEW, "rest-c1", 1, 330), _round(floor_label(RSGI), "rest-c1", 1, 190),
        _round(NEW, "grpc-b64-c1", 0, 1540, images=64), _round(floor_label(GRPC), "grpc-b64-c1", 0, 260, 64),
        _round(BASELINE, "rest-c1", 0, 200), _round(floor_label(WSGI), "rest-c1", 0, 70),
        _round(NEW, "rest-c1", -1, 9999),  # a warm-up: never counted
    ]  # fmt: skip
    scenarios = parse_scenarios("rest-c1,grpc-b64-c1")
    found = {(m.server, m.scenario): m for m in multiples(rounds, scenarios, Floors(ORT, {NEW: RSGI}))}
    rest = found[NEW, "rest-c1"]
    assert rest.transport == "floor-rsgi" and rest.vs_floors == pytest.approx([300 / 200, 330 / 220])
    assert rest.vs_ort == pytest.approx([10.0, 11.0]) and rest.server_us == pytest.approx(315)
    assert (rest.transport_us, rest.ort_us) == (pytest.approx(180), 30.0)
    batch = found[NEW, "grpc-b64-c1"]  # 64 images: the grpcio floor plus 64 x 10 µs
    assert batch.transport == "floor-grpc" and batch.vs_floors == pytest.approx([1540 / 900])
    # the baseline runs WSGI: held to the WSGI floor
    both = multiples(rounds, scenarios, Floors(ORT, {NEW: RSGI, BASELINE: WSGI}))
    (base,) = [m for m in both if m.server == BASELINE]
    assert base.transport == "floor-wsgi" and base.vs_floors == pytest.approx([2.0])


def test_a_round_without_its_floor_gives_no_multiple() -> None:
    rounds = [
        _round(NEW, "grpc-c1", 0, 300),
        _round(NEW, "grpc-c1", 1, 300),
        _round("floor-grpc", "grpc-c1", 1, 70),
    ]
    (m,) = multiples(rounds, parse_scenarios("grpc-c1"), Floors(ORT, {NEW: RSGI}))
    assert math.isnan(m.vs_floors[0]) and m.vs_floors[1] == pytest.approx(3.0)
    assert m.as_dict()["vs_floors_median"] == pytest.approx(3.0)  # the missing round is left out


def test_the_targets_are_the_issues_multiples() -> None:
    rounds = [
        # REST c1: 1.25 x (170 + 30) = 250 µs is the limit
        _round(NEW, "rest-c1", 0, 250), _round("floor-rsgi", "rest-c1", 0, 170),
        # REST c16: 5 x 30 = 150 µs is the limit; the transport floor does not count
        _round(NEW, "rest-c16", 0, 151), _round("floor-rsgi", "rest-c16", 0, 40),
        # gRPC c1: 1.2 x (270 + 30) = 360
        _round(NEW, "grpc-c1", 0, 359), _round("floor-grpc", "grpc-c1", 0, 270),
        # gRPC c16: 1.1 x (270 + 30) = 330
        _round(NEW, "grpc-c16", 0, 331), _round("floor-grpc", "grpc-c16", 0, 270),
        # 64 images: 1.1 x (260 + 64 x 10) = 990
        _round(NEW, "grpc-b64-c1", 0, 990, 64), _round("floor-grpc", "grpc-b64-c1", 0, 260, 64),
        # V2: within 10 % of the twin (rest-c1 250 -> 275; grpc-c1 359 -> 394.9)
        _round(NEW, "v2-json-c1", 0, 275), _round("floor-rsgi", "v2-json-c1", 0, 170),
        _round(NEW, "v2-grpc-c1", 0, 395), _round("floor-grpc", "v2-grpc-c1", 0, 270),
    ]  # fmt: skip
    scenarios = parse_scenarios("rest-c1,rest-c16,grpc-c1,grpc-c16,grpc-b64-c1,v2-json-c1,v2-grpc-c1")
    checks = check_targets(scenarios, rounds, Floors(ORT, {NEW: RSGI}))
    met = {scenario: (value, ok) for _, scenario, value, ok in checks}
    assert met["rest-c1"] == (pytest.approx(1.25), True)
    assert met["rest-c16"] == (pytest.approx(151 / 30), False)
    assert met["grpc-c1"] == (pytest.approx(359 / 300), True)
    assert met["grpc-c16"] == (pytest.approx(331 / 300), False)
    assert met["grpc-b64-c1"] == (pytest.approx(1.1), True)
    assert met["v2-json-c1"] == (pytest.approx(1.1), True)
    assert met["v2-grpc-c1"] == (pytest.approx(395 / 359), False)
    assert checks[-1] == ("zero errors", "all", 0.0, True)
    assert len(checks) == 8  # one target per scenario, then zero errors


def test_without_floors_only_the_twins_and_the_errors_are_checked() -> None:
    rounds = [_round(NEW, "rest-c16", 0, 200), _round(NEW, "v2-rest-c16", 0, 180, errors=2)]
    checks = check_targets(parse_scenarios("rest-c16,v2-rest-c16"), rounds, None)
    assert [(scenario, met) for _, scenario, _, met in checks] == [("v2-rest-c16", True), ("all", False)]
    assert twin_ratios(rounds, parse_scenarios("v2-rest-c16")[0]) == pytest.approx([0.9])
    assert twin_ratios(rounds, parse_scenarios("rest-c16")[0]) == []
    assert "Floors: not measured (--no-floors)." in markdown(parse_scenarios("rest-c16"), rounds, None)


def test_the_report_shows_the_floors_and_the_multiples() -> None:
    rounds = [_round(NEW, "rest-c1", 0, 300), _round("floor-rsgi", "rest-c1", 0, 170)]
    floors_ = Floors(ORT, {NEW: RSGI}, {"rest-b1": 123})
    report = markdown(parse_scenarios("rest-c1"), rounds, floors_)
    assert (
        "28.0 per batch-1 call and 9.0 per image at batch 64 before the rounds, 32.0 and 11.0 after" in report
    )
    assert "| rest-c1 | granian RSGI, one worker | 1 | 1,000 | 170 | 123 |" in report
    assert "| rest-c1 | new | 300 | 170 (rsgi) | 30.0 | **1.50** (1.50) | **10.00** (10.00) |" in report
    assert (
        "| REST at 1 connection ≤ 1.25x (transport floor + ORT floor) | rest-c1 | 1.50x | **not met** |"
        in report
    )
    record = json.loads(json.dumps(floors_.as_dict()))
    assert record["ort"]["b1_call_us"] == 30.0 and record["used"] == "mean of before and after"


def test_which_floors_run_and_which_scenarios_they_run() -> None:
    scenarios = parse_scenarios("rest-c1,v2-json-c16,grpc-c1")
    assert floor_stacks(scenarios, ["rsgi"]) == [RSGI, GRPC]
    assert floor_stacks(scenarios, ["rsgi", "wsgi"]) == [RSGI, WSGI, GRPC]
    assert floor_stacks(parse_scenarios("v2-grpc-c1"), ["wsgi"]) == [GRPC]
    rest, json_, grpc_ = scenarios
    assert floor_measures(NEW, grpc_) and floor_measures(BASELINE, rest)
    assert floor_measures("floor-rsgi", json_) and floor_measures("floor-wsgi", rest)
    assert not floor_measures("floor-rsgi", grpc_) and not floor_measures("floor-grpc", rest)
    assert floor_measures("floor-grpc", grpc_)


def test_a_servers_stacks_from_its_flags(monkeypatch) -> None:
    monkeypatch.delenv("SERVING_REST_API_INTERFACE", raising=False)
    assert floors.rest_interface("--access_log false") == "rsgi"
    assert floors.rest_interface("--access_log false --rest_api_interface wsgi") == "wsgi"
    assert floors.rest_interface("--rest_api_interface=wsgi --num_workers 1") == "wsgi"
    assert floors.floor_threads(GRPC, "") == 4 and floors.floor_threads(GRPC, "--grpc_max_threads 8") == 8
    assert floors.floor_threads(WSGI, "--rest_api_num_threads 2") == 2 and floors.floor_threads(RSGI, "") == 1
    monkeypatch.setenv("SERVING_REST_API_INTERFACE", "wsgi")  # the server reads it too
    assert (
        floors.rest_interface("") == "wsgi" and floors.rest_interface("--rest_api_interface rsgi") == "rsgi"
    )


def test_floors_are_pinned_as_the_servers_workers_are(monkeypatch) -> None:
    monkeypatch.delenv("SERVING_CPU_AFFINITY", raising=False)
    first = min(os.sched_getaffinity(0))
    assert floors.floor_cpu("--access_log false") is None
    assert floors.floor_cpu("--cpu_affinity --access_log false") == first
    assert floors.floor_cpu("--cpu_affinity true") == first
    assert floors.floor_cpu("--cpu_affinity=false") is None
    monkeypatch.setenv("SERVING_CPU_AFFINITY", "true")
    assert floors.floor_cpu("") == first and floors.floor_cpu("--cpu_affinity false") is None


def test_the_served_model_file_is_the_newest_version(tmp_path: Path) -> None:
    for version in ("1", "3", "10", "tmp-11"):
        (tmp_path / "m" / version).mkdir(parents=True)
    assert floors.served_model_file(str(tmp_path / "m"), None, "x") == tmp_path / "m" / "10" / "model.onnx"
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "a" base_path: "m" } config { name: "b" base_path: "n" } }'
    )
    assert floors.served_model_file(None, str(config), "a") == tmp_path / "m" / "10" / "model.onnx"
    with pytest.raises(ValueError, match="lists no model 'c'"):
        floors.served_model_file(None, str(config), "c")
    with pytest.raises(ValueError, match="no version directory"):
        floors.served_model_file(None, str(config), "b")


@pytest.mark.skipif(not PRETRAINED.is_dir(), reason="pretrained/lenet5 is not in this checkout")
def test_the_ort_floor_of_a_real_model(mnist_dir: Path, tmp_path: Path) -> None:
    model = floors.served_model_file(str(PRETRAINED), None, "lenet5")
    digits = to_model_input(load_split("t10k", str(mnist_dir))[0][:64])
    measured = floors.measure_ort(model, digits, 0.5, tmp_path)
    assert set(measured) == {"b1_call_us", "b64_image_us", "b1_wall_us", "b64_image_wall_us"}
    assert 0 < measured["b64_image_us"] < measured["b1_call_us"] < 1e5  # a batch shares the call's cost


# --- the floor servers, for real -----------------------------------------------------------------
PREDICT = "/v1/models/lenet5:predict"
INFER = "/v2/models/lenet5/infer"


def _exchanges() -> list[floors.Exchange]:
    """Two batch sizes on one REST path, a V2 binary answer with its header, two gRPC messages."""
    json_headers = (("Content-Type", "application/json"),)
    return [
        floors.Exchange("rest", PREDICT, b'{"instances": [1]}', json_headers,
                        Reply("application/json", b'{"predictions": [[0.1]]}')),
        floors.Exchange("rest", PREDICT, b'{"instances": [1, 2]}', json_headers,
                        Reply("application/json", b'{"predictions": [[0.1], [0.2]]}')),
        floors.Exchange("rest", INFER, b"\x00" * 40, (("Content-Type", "application/octet-stream"),),
                        Reply("application/octet-stream", b"head" + b"\x01" * 40,
                              (("inference-header-content-length", "4"),))),
        floors.Exchange("grpc", PREDICT_RPC, b"\x0a\x03abc", (), Reply("application/grpc", b"\x12\x02ok")),
        floors.Exchange("grpc", PREDICT_RPC, b"\x0a\x04abcd", (), Reply("application/grpc", b"\x12\x03ok2")),
    ]  # fmt: skip


def test_routes_survive_their_file(tmp_path: Path) -> None:
    routes = {e.route: e.reply for e in _exchanges()}
    write_routes(tmp_path / "routes.json", routes)
    assert read_routes(tmp_path / "routes.json") == routes


@pytest.mark.slow
@pytest.mark.parametrize("stack", [RSGI, WSGI, GRPC])
def test_a_floor_server_answers_the_given_bytes(stack: str, tmp_path: Path) -> None:
    exchanges = _exchanges()
    floor = floors.start_floor(stack, exchanges, 2, tmp_path, timeout=10)  # checks every answer itself
    try:
        mine = [e for e in exchanges if (e.api == "grpc") == (stack == GRPC)]
        for e in mine:
            where = floor.grpc_target if stack == GRPC else floor.rest_url
            assert floors.ask(e.api, where, e.path, e.body, dict(e.headers), 10) == e.reply
        if stack == GRPC:
            with pytest.raises(grpc.RpcError) as refused:  # a request of no route's length
                floors.ask("grpc", floor.grpc_target, PREDICT_RPC, b"\x0a", {}, 10)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        else:
            with pytest.raises(urllib.error.HTTPError, match="404"):
                floors.ask("rest", floor.rest_url, PREDICT, b"{}", {}, 10)
        assert floor.process.poll() is None
    finally:
        assert floor.stop() is not None
    assert floor.process.poll() is not None


@pytest.mark.slow
def test_a_pinned_floor_runs_every_thread_on_its_cpu(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    floor = floors.start_floor(RSGI, _exchanges(), 1, tmp_path, timeout=10, cpu=cpu)
    try:  # granian's master and its worker, every thread of each
        processes = [psutil.Process(floor.pid), *psutil.Process(floor.pid).children(recursive=True)]
        assert len(processes) >= 2
        for process in processes:
            assert {frozenset(os.sched_getaffinity(t.id)) for t in process.threads()} == {frozenset({cpu})}
    finally:
        floor.stop()


def test_a_floor_that_answers_otherwise_is_refused(tmp_path: Path) -> None:
    (wrong,) = [e for e in _exchanges() if e.api == "grpc"][:1]
    floor = floors.start_floor(GRPC, [wrong], 1, tmp_path, timeout=10)
    try:
        other = floors.Exchange("grpc", wrong.path, wrong.body, (), Reply("application/grpc", b"else"))
        with pytest.raises(RuntimeError, match="not our server's"):
            floors.check_answers(floor, [other], 10)
    finally:
        floor.stop()


def test_the_floor_server_command_line_is_documented() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.perf.floor_server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "rsgi" in done.stdout and "--routes" in done.stdout


def test_without_a_model_file_the_run_goes_on_without_floors(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--model-base-path", str(tmp_path)])
    assert bench.floors_model(args) == (None, f"no version directory under {tmp_path} (the model 'lenet5')")
    assert "warning: the floors are not measured: no version directory" in capsys.readouterr().err
    (tmp_path / "2").mkdir()
    assert bench.floors_model(args) == (tmp_path / "2" / "model.onnx", "")
    quick = parser.parse_args(["--model-base-path", str(tmp_path), "--no-floors"])
    assert bench.floors_model(quick) == (None, "--no-floors")


@pytest.mark.slow
def test_the_grpc_cost_breakdown_measures_each_handler(model_base_path: Path, mnist_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/grpc_cost_breakdown.py", "--model-base-path", str(model_base_path),
         "--mnist-dir", str(mnist_dir), "--variants", "reply,ort,predict", "--connections", "1",
         "--rounds", "1", "--seconds", "1", "--start-seconds", "3"],
        capture_output=True, text=True, timeout=180, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r"^\| (reply|ort|predict) \| (\d+) \|$", done.stdout, re.MULTILINE))
    assert set(rows) == {"reply", "ort", "predict"} and all(int(v) > 0 for v in rows.values()), done.stdout
    assert re.search(r"ONNX Runtime alone, in a loop .*: [\d.]+ µs per 1-image call", done.stdout)


def test_ort_between_calls_measures_every_condition(model_base_path: Path) -> None:
    (version,) = [p for p in model_base_path.iterdir() if p.name.isdigit()]
    done = subprocess.run(
        [sys.executable, "scripts/ort_between_calls.py", str(version), "--rounds", "1", "--calls", "30"],
        capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r"^(\S+) +([\d.]+) +[\d.]+ +[\d ]+$", done.stdout, re.MULTILINE))
    expected = {"loop", "idle-100", "idle-500", "idle-2000", "handoff"} | {
        f"evict-{kib}" for kib in (256, 1024, 2048, 4096, 16384)}
    assert set(rows) == expected and all(float(v) > 0 for v in rows.values()), done.stdout
    assert re.search(r"^loop +[\d.]+ +1\.00 ", done.stdout, re.MULTILINE), done.stdout
