"""What both harnesses refuse, through ``python -m loadtest``: an MNIST directory they cannot read
(exit 2, the absolute path named, before any server or load starts), a relative directory (made
absolute before any subprocess sees it), and a scenario that answered no request (exit 6, never a
row of NaN)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import contract
from loadtest.__main__ import main
from loadtest.locust_bench import bench
from loadtest.locust_bench.report import LevelResult
from loadtest.locust_bench.stats import LiveStats
from loadtest.perf import bench as perf
from loadtest.perf import generators as gen

ROOT = Path(__file__).resolve().parents[2]
NO_SERVER_S = 30  # generous for two busy cores: the check itself starts nothing


@pytest.mark.parametrize("mode", [[], ["perf"]], ids=["locust", "perf"])
def test_a_missing_mnist_dir_exits_2_naming_it_before_any_server(mode: list[str], tmp_path: Path) -> None:
    """The user's command, relative path and all: refused at once, nothing started or written."""
    env = {k: v for k, v in os.environ.items() if k != contract.MNIST_DIR_ENV}
    command = [sys.executable, "-m", "loadtest", *mode, "--model-base-path", str(ROOT / "no-models"),
               "--mnist-dir", "no/such/mnist", "--out", str(tmp_path / "out")]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{tmp_path / 'no' / 'such' / 'mnist'}" in done.stderr  # the absolute path it tried
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # no server log, no report directory: nothing started
    assert time.monotonic() - start < NO_SERVER_S


def _no_server(calls: list) -> object:
    def start_server(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("a server was started")

    return start_server


def test_mnist_files_missing_from_an_existing_dir_exit_2(monkeypatch, capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    started: list = []
    monkeypatch.setattr(bench, "start_server", _no_server(started))
    monkeypatch.setattr(perf, "start_server", _no_server(started))
    monkeypatch.setattr(gen, "missing_tools", lambda: [])  # perf: the generators are not the point
    for mode in ([], ["perf"]):
        argv = [*mode, "--model-base-path", "models", "--mnist-dir", "empty", "--out", "out"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / "empty") in err and "t10k-images-idx3-ubyte" in err, err
    assert started == [] and not (tmp_path / "out").exists()


def _level(protocol: str, users: int) -> LevelResult:
    return LevelResult(protocol, users, 1, 1.0, 100, 0, 100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 100, 0, 1.0,
                       0.1, 100.0, 1, 100.0, 100.0, 0.5, 0)  # fmt: skip


def _capture_commands(monkeypatch) -> list[list[str]]:
    """run_level replaced: it records the Locust master and worker command lines it would run."""
    commands: list[list[str]] = []

    def run_level(args: argparse.Namespace, protocol: str, users: int, out: Path) -> LevelResult:
        commands.append(bench._locust_command(args, users, out / "p", out / "live.json"))
        commands.append(bench._worker_command(args, 5557))
        return _level(protocol, users)

    monkeypatch.setattr(bench, "check_server", lambda args, protocols: None)
    monkeypatch.setattr(bench, "run_level", run_level)
    return commands


def _mnist_arg(command: list[str]) -> str:
    return command[command.index("--mnist-dir") + 1]


def test_a_relative_mnist_dir_reaches_locust_as_an_absolute_path(
    mnist_dir: Path, monkeypatch, tmp_path: Path
) -> None:
    """From another working directory, ``--mnist-dir`` relative to it, or ``$MNIST_DIR`` relative
    to it: the master and workers get the absolute path (they may run from elsewhere)."""
    real = mnist_dir.resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = os.path.relpath(real, elsewhere)
    commands = _capture_commands(monkeypatch)
    argv = ["--rest", "http://127.0.0.1:9", "--users", "1", "--duration", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--mnist-dir", relative]) == 0
    monkeypatch.setenv(contract.MNIST_DIR_ENV, relative)
    assert main(argv) == 0
    assert len(commands) == 4
    for command in commands:
        assert Path(_mnist_arg(command)).is_absolute(), command
        assert Path(_mnist_arg(command)) == real


def _zero_request_level(args: argparse.Namespace, protocol: str, users: int, out: Path) -> LevelResult:
    """What a Locust run whose users never sent a request leaves: an Aggregated row of zeros and
    a live-statistics file with nothing in it, read by the real ``level_result``."""
    locust_dir = out / "locust"
    locust_dir.mkdir(parents=True, exist_ok=True)
    stats = locust_dir / f"u{users}_stats.csv"
    stats.write_text("Type,Name,Request Count,Failure Count,Requests/s\n,Aggregated,0,0,0.0\n")
    LiveStats().write(locust_dir / "live.json", locust_totals={"requests": 0, "failures": 0, "rps": 0.0})
    return bench.level_result(protocol, users, 1, args.duration, stats, locust_dir / "live.json", 0.0, 0)


def test_a_level_with_no_request_fails_the_run_clearly(monkeypatch, capsys, tmp_path: Path) -> None:
    calls = []

    def run_level(args: argparse.Namespace, protocol: str, users: int, out: Path) -> LevelResult:
        calls.append((protocol, users))
        return _zero_request_level(args, protocol, users, out)

    monkeypatch.setattr(bench, "check_server", lambda args, protocols: None)
    monkeypatch.setattr(bench, "run_level", run_level)
    out = tmp_path / "out"
    argv = ["--rest", "http://127.0.0.1:9", "--users", "1,4", "--duration", "1", "--out", str(out)]
    assert main(argv) == 6
    captured = capsys.readouterr()
    assert calls == [("REST", 1)]  # it stopped there: the next levels would answer nothing too
    assert "REST u=1" in captured.err and "0 requests" in captured.err
    assert "likely cause" in captured.err
    assert "nan" not in captured.out.lower() and "Error:" not in captured.err  # no NaN row, no crash


class _FakeServer:
    pid = None  # no CPU reading
    rest_url, grpc_target = "http://127.0.0.1:9", "127.0.0.1:9"
    stopped = False

    def stop(self) -> int:
        self.stopped = True
        return 0


def test_a_perf_round_with_no_request_fails_the_run(
    mnist_dir: Path, monkeypatch, capsys, tmp_path: Path
) -> None:
    server = _FakeServer()
    monkeypatch.setattr(gen, "missing_tools", lambda: [])
    monkeypatch.setattr(perf, "start_servers", lambda args, out: [(perf.NEW, server, "fake")])
    monkeypatch.setattr(perf, "verify", lambda *args: None)
    monkeypatch.setattr(perf, "scrape", lambda url: {})
    wrk_said = "  0 requests in 1.00s, 0.00B read\nRequests/sec:      0.00\n"
    monkeypatch.setattr(
        perf.subprocess, "run", lambda *a, **k: SimpleNamespace(returncode=0, stdout=wrk_said, stderr="")
    )
    argv = ["perf", "--model-base-path", str(tmp_path), "--mnist-dir", str(mnist_dir), "--out",
            str(tmp_path / "o"), "--scenarios", "rest-c1", "--rounds", "1", "--duration", "1",
            "--warmup", "0"]  # fmt: skip
    assert main(argv) == 6
    err = capsys.readouterr().err
    assert "rest-c1" in err and "0 requests" in err and "new server" in err, err
    assert server.stopped
