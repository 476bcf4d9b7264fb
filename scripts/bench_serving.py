"""Benchmark the model server: REST and gRPC req/s, p50/p99, server CPU per request.

Usage (starts its own server on free loopback ports over a model repository):
  python scripts/bench_serving.py --model-base-path models/lenet5 [--duration 8]
      [--server-args "--num_workers 2 --rest_api_num_threads 1"]
or against a server already running (give its supervisor pid for the CPU figures):
  python scripts/bench_serving.py --rest-url http://127.0.0.1:8501 --grpc-target 127.0.0.1:8500 \
      --server-pid PID

Scenarios, one after the other: REST :predict (row format, one image) at 1 and 16 concurrent
clients, gRPC Predict (tensor_content, one image) at 1 and 16, gRPC with 64 images per request.
Clients are threads spread over several processes (the GIL would cap one process). Server CPU
per request is read from /proc (utime+stime of the supervisor and every process under it) before
and after each scenario, so it does not depend on how fast the load generator is. The client
shares the two cores with the server: req/s are lower than a separate load machine would see.
Not a test; prints a markdown table and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.bench import server_cpu_seconds  # noqa: E402
from contract import (  # noqa: E402
    INPUT_NAME,
    INPUT_SHAPE,
    MODEL_NAME,
    PREDICT_RPC,
    READINESS_PATH,
    REST_MODELS_PREFIX,
)
from contract.codecs import make_tensor_proto  # noqa: E402
from contract.proto import digits_tfserving_pb2 as pb  # noqa: E402


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, *INPUT_SHAPE), dtype=np.float32)


def _rest_worker(url: str, body: bytes, threads: int, start_at: float, stop_at: float,
                 out: mp.Queue) -> None:
    parsed = urlparse(url)
    path = f"{REST_MODELS_PREFIX}/{MODEL_NAME}:predict"
    results: list[list[float]] = []
    errors = [0]

    def loop() -> None:
        latencies: list[float] = []
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        time.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors[0] += 1
        results.append(latencies)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(([x for lat in results for x in lat], errors[0]))


def _grpc_worker(target: str, payload: bytes, threads: int, start_at: float, stop_at: float,
                 out: mp.Queue) -> None:
    import grpc

    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(PREDICT_RPC, request_serializer=None, response_deserializer=None)
    results: list[list[float]] = []
    errors = [0]

    def loop() -> None:
        latencies: list[float] = []
        time.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                call(payload, timeout=10)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError:
                errors[0] += 1
        results.append(latencies)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    channel.close()
    out.put(([x for lat in results for x in lat], errors[0]))


def run_scenario(kind: str, clients: int, images: int, args: argparse.Namespace) -> dict:
    batch = _images(images)
    if kind == "rest":
        target, worker = args.rest_url, _rest_worker
        payload = json.dumps({"instances": batch.tolist()}).encode()
    else:
        target, worker = args.grpc_target, _grpc_worker
        request = pb.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(batch, use_tensor_content=True))
        payload = request.SerializeToString()
    processes = min(clients, args.client_processes)
    per_process = [clients // processes + (i < clients % processes) for i in range(processes)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    # Warm-up: connections made and caches hot before the measured window.
    now = time.monotonic()
    warm = ctx.Process(target=worker, args=(target, payload, 1, now, now + 1.0, out))
    warm.start()
    out.get()
    warm.join()
    # Clients start (imports, connections) first and all begin at start_at: the window.
    start_at = time.monotonic() + 2.0
    stop_at = start_at + args.duration
    procs = [
        ctx.Process(target=worker, args=(target, payload, n, start_at, stop_at, out))
        for n in per_process
    ]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu_before, t_before = server_cpu_seconds(args.server_pid), time.monotonic()
    results = [out.get() for _ in procs]
    cpu_after, t_after = server_cpu_seconds(args.server_pid), time.monotonic()
    for p in procs:
        p.join()
    latencies = np.sort(np.concatenate([np.asarray(r[0]) for r in results]))
    errors = sum(r[1] for r in results)
    count = len(latencies)
    seconds = t_after - t_before
    return {
        "api": kind,
        "clients": clients,
        "images_per_request": images,
        "requests": count,
        "errors": errors,
        "req_per_s": count / seconds,
        "images_per_s": count * images / seconds,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3) if count else None,
        "p99_ms": float(np.percentile(latencies, 99) * 1e3) if count else None,
        "server_cpu_us_per_request": (cpu_after - cpu_before) / count * 1e6 if count else None,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace) -> subprocess.Popen:
    grpc_port, rest_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "serving", "--model_base_path", args.model_base_path,
        "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        *shlex.split(args.server_args),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args.rest_url, args.grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
    args.server_pid = process.pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=2)
            conn.request("GET", READINESS_PATH)
            if conn.getresponse().status == 200:
                time.sleep(2)  # every worker up (the first ready answer may come from one)
                return process
        except OSError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", help="start a server over this repository")
    parser.add_argument("--server-args", default="", help="extra flags for the started server")
    parser.add_argument("--rest-url")
    parser.add_argument("--grpc-target")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--scenarios", default="rest:1:1,rest:16:1,grpc:1:1,grpc:16:1,grpc:1:64,grpc:4:64",
                        help="comma-separated api:clients:images")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    server = None
    if args.model_base_path:
        server = start_server(args)
    elif not (args.rest_url and args.grpc_target and args.server_pid):
        parser.error("give --model-base-path, or --rest-url, --grpc-target and --server-pid")
    try:
        rows = []
        for spec in args.scenarios.split(","):
            kind, clients, images = spec.split(":")
            rows.append(run_scenario(kind, int(clients), int(images), args))
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    print("| API | clients | images/req | req/s | images/s | p50 ms | p99 ms | server CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['api']} | {r['clients']} | {r['images_per_request']} | {r['req_per_s']:.0f} | "
              f"{r['images_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['server_cpu_us_per_request']:.0f} | {r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
