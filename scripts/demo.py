"""`make demo`: the whole system in about five minutes, ending with a summary.

Usage: python scripts/demo.py [--runs-dir runs] [--model-base-path models/lenet5] [--out reports]

Steps: train the quick grid (python -m training grid --grid quick), select its best run by
validation accuracy and export it (python -m training export), serve it (python -m serving on
127.0.0.1 with TF Serving's ports), classify the sample photos in client/samples over REST and
gRPC, run a short Locust load test (python -m loadtest), stop the server, print a summary: the
quick grid, the selected run, the exported version and its parity, the sample predictions, the
load-test figures, where the reports, plots and TensorBoard logs are, and the wall time.
Each step is the same command a person would type; their output streams as they run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import contract
from client.api import connect
from client.images import load_inputs
from contract.errors import ServingError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "client" / "samples"
READY_TIMEOUT_S = 90
TARGET_S = 300  # the demo's promise: five minutes on a 2-core machine, venv excluded


def banner(step: int, total: int, text: str) -> None:
    print(f"\n== [{step}/{total}] {text}", flush=True)


def run(*args: str) -> None:
    """Run one step's command with its output streaming; stop the demo if it fails."""
    print("$ " + " ".join(args), flush=True)
    code = subprocess.call([sys.executable, *args], cwd=ROOT)
    if code != 0:
        raise SystemExit(f"demo: step failed (exit {code}): {' '.join(args)}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start_server(model_base_path: Path, log_path: Path) -> subprocess.Popen:
    for port in (contract.GRPC_PORT, contract.REST_PORT):
        if not port_free(port):
            raise SystemExit(f"demo: port {port} on 127.0.0.1 is taken (another server?); stop it")
    command = [sys.executable, "-m", "serving", "--model_base_path", str(model_base_path),
               "--host", "127.0.0.1", "--port", str(contract.GRPC_PORT),
               "--rest_api_port", str(contract.REST_PORT)]
    print("$ " + " ".join(command[1:]) + f"  (log: {log_path})", flush=True)
    log = log_path.open("w")
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen, rest: str, grpc: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            ready = True
            for kind, where in (("rest", rest), ("grpc", grpc)):
                with connect(timeout=2, **{kind: where}) as client:
                    ready = ready and any(v.available for v in client.status())
            if ready:
                return
        except ServingError:
            pass
        if server.poll() is not None:
            raise SystemExit("demo: the server exited during start-up; see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the server was not ready within {READY_TIMEOUT_S} s")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def classify_samples(rest: str, grpc: str) -> list[dict]:
    """Every sample photo over both protocols; the true digit is in the file name."""
    paths = sorted(SAMPLES.iterdir())
    images = np.stack([load_inputs(str(p))[0].pixels for p in paths])
    answers = {}
    for kind, where in (("REST", {"rest": rest}), ("gRPC", {"grpc": grpc})):
        with connect(**where) as client:
            answers[kind] = client.predict(images)
    rows = []
    for i, path in enumerate(paths):
        truth = int(re.match(r"digit-(\d)", path.name).group(1))
        rest_digit, grpc_digit = int(answers["REST"].digits[i]), int(answers["gRPC"].digits[i])
        rows.append({"file": path.name, "truth": truth, "rest": rest_digit, "grpc": grpc_digit,
                     "p": float(answers["REST"].confidence()[i])})
        mark = "right" if rest_digit == truth else "WRONG"
        same = "" if rest_digit == grpc_digit else f" (gRPC said {grpc_digit})"
        print(f"  {path.name:34s} -> {rest_digit}  p={rows[-1]['p']:.3f}  {mark}{same}")
    return rows


def summary(args: argparse.Namespace, samples: list[dict], bench_dir: Path, version_dir: Path,
            elapsed: float) -> str:
    grid_dir = args.runs_dir / "quick"
    results = json.loads((grid_dir / "results.json").read_text())
    chosen = json.loads((grid_dir / "summary.json").read_text())["best"]
    card = json.loads((version_dir / contract.MODEL_CARD_FILENAME).read_text())
    lines = ["", "=" * 78, "digits demo: summary", "=" * 78, "",
             "Quick grid (training/grids/quick.toml: 20,000 training images, the lab's 5 epochs, "
             "8 for the optimized run; full validation and test sets):",
             f"  {'run':44s} {'valid.':>7s} {'test':>7s} {'time':>6s}"]
    for r in results:
        if r.get("status") != "completed":
            lines.append(f"  {r['name']:44s} {r.get('status')}")
            continue
        lines.append(f"  {r['name']:44s} {r['validation_accuracy']:7.2%} "
                     f"{r['test_accuracy']:7.2%} {r['elapsed_time']:5.0f}s")
    parity = card["parity"]
    lines += ["", f"Selected by validation accuracy: {chosen['name']} "
              f"(validation {chosen['validation_accuracy']:.2%}, test {chosen['test_accuracy']:.2%})",
              f"Exported: {version_dir} (SavedModel + model.onnx); parity ONNX vs TensorFlow on "
              f"{parity['images']:,} test images: max |dp| {parity['max_abs_probability_difference']:.1e}, "
              f"{parity['digit_mismatches']} digit mismatches",
              ""]
    right = sum(s["rest"] == s["truth"] for s in samples)
    agree = all(s["rest"] == s["grpc"] for s in samples)
    lines.append(f"Sample photos (client/samples): {right}/{len(samples)} right over REST; gRPC "
                 f"{'gave the same digits' if agree else 'DISAGREED'}")
    wrong = [f"{s['file']} -> {s['rest']}" for s in samples if s["rest"] != s["truth"]]
    if wrong:
        lines.append("  wrong: " + ", ".join(wrong))
    report = bench_dir / "report.csv"
    if report.is_file():
        lines += ["", "Load test (Locust, loopback, load generator on the same 2 cores as the server):"]
        with report.open() as handle:
            for row in csv.DictReader(handle):
                cpu = row.get("server_cpu_us_per_request") or "nan"
                lines.append(
                    f"  {row['protocol']:5s} {int(row['users']):2d} users: "
                    f"{float(row['rps']):6,.0f} req/s, p50 {float(row['p50_ms']):5.2f} ms, "
                    f"p99 {float(row['p99_ms']):6.2f} ms, {row['failures']} failures, "
                    f"server CPU {float(cpu):4.0f} us/request, "
                    f"live accuracy {float(row['live_accuracy']):.2%}")
    lines += ["", "Where things are:",
              f"  results   {grid_dir}/results.md (.csv, .json), figures {grid_dir}/*.png",
              f"  logs      tensorboard --logdir {grid_dir}",
              f"  model     {version_dir}/model-card.json",
              f"  load test {bench_dir}/report.md, plot {bench_dir}/latency.png",
              "",
              f"Wall time: {elapsed:.0f} s ({elapsed / 60:.1f} min; the target is "
              f"{TARGET_S // 60} min on 2 cores: {'met' if elapsed <= TARGET_S else 'NOT met'})"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--model-base-path", type=Path, default=contract.DEFAULT_MODEL_BASE_PATH)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    os.chdir(ROOT)
    started = time.monotonic()
    total = 5
    rest, grpc = f"http://127.0.0.1:{contract.REST_PORT}", f"127.0.0.1:{contract.GRPC_PORT}"
    args.out.mkdir(parents=True, exist_ok=True)
    bench_dir = args.out / "bench"

    banner(1, total, "training the quick grid (python -m training list --grid quick shows it)")
    # --restart: runs left by another config or an older release are moved aside and retrained
    # (the same config's runs are resumed or skipped, as always).
    run("-m", "training", "grid", "--grid", "quick", "--runs-dir", str(args.runs_dir), "--restart")
    banner(2, total, "selecting the best run by validation accuracy and exporting it")
    before = set(contract.model_versions(args.model_base_path))
    run("-m", "training", "export", "--grid", "quick", "--runs-dir", str(args.runs_dir),
        "--model-base-path", str(args.model_base_path))
    version = max(set(contract.model_versions(args.model_base_path)) - before)
    version_dir = contract.version_path(args.model_base_path, version)

    banner(3, total, f"serving {args.model_base_path}: REST {rest}, gRPC {grpc}")
    server = start_server(args.model_base_path, args.out / "server.log")
    try:
        wait_ready(server, rest, grpc)
        banner(4, total, "classifying the sample photos over REST and gRPC")
        samples = classify_samples(rest, grpc)
        banner(5, total, "a short load test: 1 and 16 users, REST then gRPC")
        run("-m", "loadtest", "--rest", rest, "--grpc", grpc, "--users", "1,16",
            "--duration", "5", "--workers", "1", "--server-pid", str(server.pid),
            "--out", str(bench_dir))
    finally:
        stop_server(server)
    print(summary(args, samples, bench_dir, version_dir, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
