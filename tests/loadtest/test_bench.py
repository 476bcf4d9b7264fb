"""The benchmark's options, its reading of Locust's files and the server's CPU, without a server."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest

from loadtest.checks import model_names
from loadtest.locust_bench.bench import (
    add_arguments,
    check_arguments,
    level_result,
    parse_levels,
    parse_protocols,
)
from loadtest.locust_bench.stats import LiveStats
from loadtest.server import _model_flags, cpu_seconds


def test_levels_are_checked() -> None:
    assert parse_levels("16,1,4,4") == [1, 4, 16]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_levels(bad)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_protocols_and_server_options_are_checked() -> None:
    assert parse_protocols("grpc,REST") == ["REST", "gRPC"]  # always REST first, as reported
    assert parse_protocols("v2-grpc, v2-json,grpc,v2-rest") == ["gRPC", "V2 REST", "V2 REST JSON", "V2 gRPC"]
    for bad in ("", "http", "rest,soap"):
        with pytest.raises(ValueError, match="--protocols"):
            parse_protocols(bad)
    rest, grpc = ("--rest", "http://127.0.0.1:8501"), ("--grpc", "127.0.0.1:8500")
    # a running server: the protocols are those it was given for, unless asked for explicitly
    assert check_arguments(_args(*rest)) == (["REST"], [1, 4, 16])
    assert check_arguments(_args(*rest, *grpc, "--users", "2")) == (["REST", "gRPC"], [2])
    assert check_arguments(_args(*rest, *grpc, "--protocols", "grpc"))[0] == ["gRPC"]
    assert check_arguments(_args(*rest, "--protocols", "rest,v2-json"))[0] == ["REST", "V2 REST JSON"]
    # ours, started over a repository, speaks both
    assert check_arguments(_args("--model-base-path", "m"))[0] == ["REST", "gRPC"]
    for argv, words in [
        ((), "--model-base-path"),
        ((*rest, "--protocols", "grpc"), "no address"),
        ((*rest, "--protocols", "v2-grpc"), "no address"),
        (("--model-base-path", "m", *grpc), "not both"),
        (("--model-base-path", "m", "--server-pid", "1"), "not both"),
        ((*rest, "--server-args", "--num_workers 1"), "--server-args"),
        ((*rest, "--duration", "0"), "--duration"),
        ((*rest, "--workers", "-1"), "--workers"),
        ((*rest, "--images-per-request", "0"), "--images-per-request"),
        ((*rest, "--images-per-request", "1025"), "--images-per-request"),
    ]:
        with pytest.raises(ValueError, match=words):
            check_arguments(_args(*argv))


def test_server_cpu_of_a_process_tree() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # burn some CPU in this process
    assert cpu_seconds(os.getpid()) > before > 0
    assert math.isnan(cpu_seconds(None))
    assert math.isnan(cpu_seconds(2**22 + 12345))  # above Linux's pid_max: no such process


def test_level_result_from_locust_and_live_files(tmp_path: Path) -> None:
    """One report row from Locust's stats CSV and our live JSON: rates, batches, CPU per image."""
    stats_csv = tmp_path / "grpc-u4_stats.csv"
    stats_csv.write_text(
        "Type,Name,Request Count,Failure Count,Requests/s\n"
        "gRPC,Predict,500,2,50.0\n"
        ",Aggregated,500,2,50.0\n"
    )
    live = LiveStats()
    for k in range(500 * 8):
        live.answer("gRPC", index=k, label=k % 10, digit=k % 10 if k % 100 else (k + 1) % 10)
    for ms in (2.0, 3.0, 9.0):
        live.latency("gRPC", ms)
    live.add_generator_cpu(2.5)
    live.write(tmp_path / "live.json")
    row = level_result("gRPC", 4, 8, 10.0, stats_csv, tmp_path / "live.json", 0.4, 0)
    assert (row.requests, row.failures, row.answers, row.wrong_digits) == (500, 2, 4000, 40)
    assert row.rps == 50.0 and row.images_per_s == 400.0
    assert row.live_accuracy == pytest.approx(0.99)
    assert row.server_cpu_us_per_request == pytest.approx(800.0)
    assert row.server_cpu_us_per_image == pytest.approx(100.0)
    assert row.generator_cpu_cores == pytest.approx(0.25) and row.generator_processes == 1
    assert row.generator_cpu_us_per_request == pytest.approx(5000.0)
    assert row.p50_ms == pytest.approx(3.0, rel=0.01) and row.max_ms == 9.0
    unknown = level_result("gRPC", 4, 8, 10.0, stats_csv, tmp_path / "live.json", math.nan, 0)
    assert math.isnan(unknown.server_cpu_us_per_request)  # no pid: unknown, never 0
    # Locust's final totals, recorded by the locustfile at quit, win over its CSV (a second old)
    live.write(tmp_path / "final.json", locust_totals={"requests": 520, "failures": 3, "rps": 52.0})
    final = level_result("gRPC", 4, 8, 10.0, stats_csv, tmp_path / "final.json", 0.52, 0)
    assert (final.requests, final.failures, final.rps) == (520, 3, 52.0)
    assert final.server_cpu_us_per_request == pytest.approx(1000.0)
    stats_csv.write_text("Type,Name,Request Count,Failure Count,Requests/s\ngRPC,Predict,1,0,1.0\n")
    with pytest.raises(RuntimeError, match="Aggregated"):
        level_result("gRPC", 4, 8, 10.0, stats_csv, tmp_path / "live.json", 0.4, 0)


def test_several_models_are_named_with_commas_and_need_a_config_file_to_start_a_server() -> None:
    assert model_names("lenet5") == ["lenet5"]
    assert model_names(" lenet5, lenet5-ensemble,lenet5 ") == ["lenet5", "lenet5-ensemble"]
    with pytest.raises(ValueError, match="--model-name"):
        model_names(" , ")
    rest = ("--rest", "http://127.0.0.1:8501")
    several = ("--model-name", "lenet5,lenet5-ensemble")
    assert check_arguments(_args(*rest, *several))[0] == ["REST"]
    assert check_arguments(_args("--model-config-file", "models.config", *several))[0] == ["REST", "gRPC"]
    for argv, words in [
        (("--model-base-path", "m", *several), "--model-config-file"),
        (("--model-base-path", "m", "--model-config-file", "c"), "not both"),
        (("--model-config-file", "c", *rest), "not both"),
    ]:
        with pytest.raises(ValueError, match=words):
            check_arguments(_args(*argv))


def test_the_started_server_gets_one_model_or_the_config_file() -> None:
    assert _model_flags("m", ["lenet5"], None) == [
        "--model_name", "lenet5", "--model_base_path", str(Path("m").resolve())]  # fmt: skip
    flags = _model_flags(None, ["lenet5", "lenet5-ensemble"], "pretrained/models.config")
    assert flags == ["--model_config_file", str(Path("pretrained/models.config").resolve())]
    for base, names in (("m", ["a", "b"]), (None, ["a"])):
        with pytest.raises(ValueError):
            _model_flags(base, names, None)


def test_level_result_keeps_each_models_share(tmp_path: Path) -> None:
    stats_csv = tmp_path / "rest-u2_stats.csv"
    stats_csv.write_text("Type,Name,Request Count,Failure Count,Requests/s\n,Aggregated,30,0,3.0\n")
    live = LiveStats()
    for k in range(30):
        model = ("lenet5", "lenet5-ensemble")[k % 2]
        live.latency("REST", 1.0 + k % 2, model=model)
        live.answer("REST", index=k, label=1, digit=1 if k % 2 or k % 3 else 2, model=model)
    live.write(tmp_path / "live.json")
    row = level_result("REST", 2, 1, 10.0, stats_csv, tmp_path / "live.json", math.nan, 0)
    assert row.answers == 30 and row.wrong_digits == 5
    shares = {share.model: share for share in row.models}
    assert sorted(shares) == ["lenet5", "lenet5-ensemble"]
    assert (shares["lenet5"].requests, shares["lenet5"].wrong_digits) == (15, 5)
    assert (shares["lenet5-ensemble"].requests, shares["lenet5-ensemble"].live_accuracy) == (15, 1.0)
    assert shares["lenet5-ensemble"].p50_ms == pytest.approx(2.0, rel=0.01)
