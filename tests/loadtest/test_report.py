"""The benchmark's report files: CSV, markdown table (batch columns when batched) and the plot."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

from loadtest.locust_bench.report import LevelResult, ModelShare, markdown_table, write_report


def _result(protocol: str, users: int, images_per_request: int = 1) -> LevelResult:
    return LevelResult(
        protocol=protocol,
        users=users,
        images_per_request=images_per_request,
        duration_s=5,
        requests=1000 * users,
        failures=0,
        rps=200.0 * users,
        images_per_s=200.0 * users * images_per_request,
        p50_ms=1.0 + users / 10,
        p90_ms=2.0 + users / 10,
        p99_ms=4.0 + users / 10,
        max_ms=9.0 + users,
        answers=1000 * users * images_per_request,
        wrong_digits=12 * users,
        live_accuracy=0.988,
        generator_cpu_cores=0.3,
        generator_cpu_us_per_request=300.0,
        generator_processes=2,
        server_cpu_us_per_request=math.nan,
        server_cpu_us_per_image=math.nan,
        load_average=1.5,
        locust_exit_code=0,
    )


def test_report_files(tmp_path: Path) -> None:
    results = [_result(protocol, users) for protocol in ("REST", "gRPC") for users in (1, 4)]
    csv_path, md_path, png_path = write_report(results, tmp_path, "Benchmark: test")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["protocol"], int(r["users"])) for r in rows] == [
        ("REST", 1),
        ("REST", 4),
        ("gRPC", 1),
        ("gRPC", 4),
    ]
    assert rows[0]["images_per_request"] == "1" and "server_cpu_us_per_image" in rows[0]
    markdown = md_path.read_text()
    assert markdown.startswith("Benchmark: test\n\n| protocol | users | requests |")
    assert "| gRPC | 4 | 4000 | 0 | 800 | 1.40 | 2.40 | 4.40 |" in markdown
    assert "images/req" not in markdown  # one image per request: no batch columns
    assert "—" in markdown  # no server pid: no server CPU figure, said so rather than 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000


def test_report_of_batched_requests_shows_images() -> None:
    table = markdown_table([_result("gRPC", 1, 64), _result("gRPC", 4, 64)])
    header = table.splitlines()[0]
    assert "| images/req |" in header and "| images/s |" in header and "server CPU µs/image" in header
    assert "| gRPC | 4 | 64 | 4000 | 0 | 800 | 51200 | 1.40 |" in table


def _no_requests(protocol: str, users: int) -> LevelResult:
    """A level whose users never sent a request: Locust's zeros, NaN where nothing was measured."""
    nan = math.nan
    nothing = dict(requests=0, rps=0.0, images_per_s=0.0, p50_ms=nan, p90_ms=nan, p99_ms=nan,
                   max_ms=nan, answers=0, wrong_digits=0, live_accuracy=nan)  # fmt: skip
    return replace(_result(protocol, users), **nothing)


def test_levels_without_requests_never_crash_the_report(tmp_path: Path) -> None:
    """Not plotted (no latency to put on a log scale) and named in report.md, never a crash."""
    nothing_at_all = [_no_requests("REST", 1), _no_requests("REST", 4)]
    for results in (nothing_at_all, [_no_requests("REST", 1), _result("gRPC", 4)]):
        _, md_path, png_path = write_report(results, tmp_path, "Benchmark: test")
        assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "not plotted: no requests at REST u=1" in md_path.read_text()
    _, md_path, png_path = write_report([], tmp_path, "Benchmark: nothing ran")
    assert png_path.is_file() and md_path.read_text().startswith("Benchmark: nothing ran")


def test_each_models_share_is_reported_when_the_users_spread_over_several(tmp_path: Path) -> None:
    one = _result("REST", 1)
    one.models = [ModelShare("REST", 1, "lenet5", 1000, 1000, 12, 0.988, 1.1, 4.1)]
    _, md_path, _ = write_report([one], tmp_path, "Benchmark: one model")
    assert "Per model" not in md_path.read_text() and not (tmp_path / "report-models.csv").exists()
    two = _result("gRPC", 4)
    two.models = [ModelShare("gRPC", 4, name, 2000, 2000, 24, 0.988, 1.4, 4.4)
                  for name in ("lenet5", "lenet5-ensemble")]  # fmt: skip
    csv_path, md_path, _ = write_report([one, two], tmp_path, "Benchmark: two models")
    markdown = md_path.read_text()
    assert "Per model:" in markdown
    assert "| gRPC | 4 | lenet5-ensemble | 2000 | 1.40 | 4.40 | 0.9880 | 24 |" in markdown
    with open(tmp_path / "report-models.csv", newline="") as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["lenet5", "lenet5-ensemble"]
    with open(csv_path, newline="") as f:
        assert "models" not in next(csv.DictReader(f)), "report.csv: one row per level, no nested rows"
