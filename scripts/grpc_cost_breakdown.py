"""Where a gRPC Predict's server CPU goes: our gRPC server with its Predict handler cut down.

One process runs our gRPC server as a worker does (``serving.grpc.server.build_server`` over a
real data plane and model), its ``Predict`` handler replaced in turn by:

  reply    the real answer's bytes, prepared once: grpcio, our method binding, error
           translation, observation and metrics, and none of the work
  ort      reply, and one ONNX Runtime run on a fixed image (its CPU inside the server)
  ort2     reply, and two runs (the second one shows a run whose caches the first warmed)
  busy     reply, and a loop burning ``--busy-us`` µs of this thread's CPU in Python
  predict  the real handler: decode, data plane, model, quality metrics, encode

h2load drives each (the first MNIST test digit as a ``tensor_content`` PredictRequest, one
stream per connection), in interleaved rounds; the server process's CPU (user + sys) per
answered request, medians. ``--cpu N`` pins the process (every thread) to CPU N. Compare each
row with ``python -m loadtest.perf.ort_floor`` (ONNX Runtime alone, in a loop) and the perf
benchmark's grpcio floor: docs/performance.md says what the differences mean.

  python scripts/grpc_cost_breakdown.py --model-base-path pretrained/lenet5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("reply", "ort", "ort2", "busy", "predict")


def serve(variant: str, port: int, model_base_path: Path, busy_us: float) -> None:
    """In the child: our gRPC server on 127.0.0.1:``port`` with the ``variant`` handler."""
    import numpy as np

    from contract import INPUT_SHAPE, MODEL_NAME
    from serving.core.dataplane import DataPlane
    from serving.core.repository import ModelRepository
    from serving.grpc import server as grpc_server
    from serving.grpc.tfserving_servicer import PredictionHandlers

    repository = ModelRepository(MODEL_NAME, model_base_path, poll_wait_seconds=0)
    repository.start()
    model = repository.get(None, None)
    image = np.zeros((1, *INPUT_SHAPE), np.float32)
    prepared: dict[str, bytes] = {}

    class Variant(PredictionHandlers):
        def predict(self, request, context):  # noqa: ANN001, ANN201 - the servicer's signature
            if variant == "predict":
                return super().predict(request, context)
            if "reply" not in prepared:
                prepared["reply"] = super().predict(request, context)
            for _ in range({"ort": 1, "ort2": 2}.get(variant, 0)):
                model.run(image)
            if variant == "busy":
                end = time.thread_time() + busy_us / 1e6
                while time.thread_time() < end:
                    pass
            return prepared["reply"]

    grpc_server.PredictionHandlers = Variant  # build_server binds the handlers it names
    server, _, _ = grpc_server.build_server(DataPlane(repository), f"127.0.0.1:{port}", access_log=False)
    server.start()
    threading.Event().wait()


def _frame(work: Path, mnist_dir: str | None) -> Path:
    """The gRPC frame of a one-digit PredictRequest, as the perf benchmark sends it."""
    from client.base import ModelSpec
    from client.grpc_client import predict_request
    from contract import MODEL_NAME
    from contract.mnist import load_split, to_model_input
    from loadtest.perf.generators import grpc_frame

    pixels = to_model_input(load_split("t10k", mnist_dir)[0][:1])
    path = work / "predict.bin"
    path.write_bytes(grpc_frame(predict_request(pixels, ModelSpec(name=MODEL_NAME)).SerializeToString()))
    return path


def _measure(process: subprocess.Popen, port: int, connections: int, seconds: float, frame: Path) -> float:
    """CPU µs per answered request of ``process`` under h2load."""
    from contract import PREDICT_RPC
    from loadtest.perf.generators import h2load_command, parse_h2load
    from loadtest.server import cpu_seconds

    url = f"http://127.0.0.1:{port}{PREDICT_RPC}"
    log = frame.parent / "h2load.log"
    before = cpu_seconds(process.pid)
    done = subprocess.run(h2load_command(url, connections, seconds, frame, log), capture_output=True,
                          text=True, check=True)  # fmt: skip
    used = cpu_seconds(process.pid) - before
    result = parse_h2load(done.stdout)
    if result.errors or not result.requests:
        raise RuntimeError(f"h2load: {result.errors} errors, {result.requests} answers: {done.stdout[-800:]}")
    return used / result.requests * 1e6


def _start(variant: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    from loadtest.server import free_port, pinned_to

    port = free_port()
    command = [sys.executable, __file__, "--serve", variant, "--port", str(port),
               "--model-base-path", str(args.model_base_path), "--busy-us", str(args.busy_us)]  # fmt: skip
    process = subprocess.Popen(command, preexec_fn=pinned_to(args.cpu), stdin=subprocess.DEVNULL)
    time.sleep(args.start_seconds)
    if process.poll() is not None:
        raise RuntimeError(f"the {variant} server exited with status {process.returncode}")
    return process, port


def _ort_floor(args: argparse.Namespace) -> float:
    """The perf benchmark's ONNX Runtime floor of the newest version, in a process of its own
    (pinned like the servers)."""
    import numpy as np

    from contract import ONNX_FILENAME, model_versions, version_path
    from contract.mnist import load_split, to_model_input
    from loadtest.server import pinned_to

    model = version_path(args.model_base_path, model_versions(args.model_base_path)[-1]) / ONNX_FILENAME
    with tempfile.TemporaryDirectory() as work:
        digits = Path(work) / "digits.npy"
        np.save(digits, to_model_input(load_split("t10k", args.mnist_dir)[0][:64]))
        command = [sys.executable, "-m", "loadtest.perf.ort_floor", str(model), "--images", str(digits),
                   "--seconds", "2"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True,
                              preexec_fn=pinned_to(args.cpu), cwd=ROOT)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])["b1_call_us"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-base-path", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {VARIANTS}")
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per round, variant and connections")
    parser.add_argument("--busy-us", type=float, default=100.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin each server to this CPU")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR"))
    parser.add_argument("--start-seconds", type=float, default=4.0, help="wait for a server to load")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser


def _rounds(args: argparse.Namespace, variants: list[str], connections: list[int]) -> dict:
    """(variant, connections) -> CPU µs per request of each round; the order alternates."""
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        frame = _frame(Path(work), args.mnist_dir)
        servers = {variant: _start(variant, args) for variant in variants}
        try:
            for index in range(args.rounds):
                order = variants if index % 2 == 0 else variants[::-1]
                for variant in order:
                    process, port = servers[variant]
                    for c in connections:
                        value = _measure(process, port, c, args.seconds, frame)
                        results.setdefault((variant, c), []).append(value)
                        print(f"round {index + 1}/{args.rounds} {variant} c{c}: {value:.0f} µs/request",
                              flush=True)  # fmt: skip
        finally:
            for process, _ in servers.values():
                process.kill()
                process.wait()
    return results


def main() -> int:
    args = _parser().parse_args()
    if args.serve:
        serve(args.serve, args.port, args.model_base_path, args.busy_us)
        return 0
    variants = args.variants.split(",")
    connections = [int(c) for c in args.connections.split(",")]
    results = _rounds(args, variants, connections)
    floor = _ort_floor(args)
    print(f"ONNX Runtime alone, in a loop (loadtest.perf.ort_floor): {floor:.1f} µs per 1-image call")
    print("\n| handler | " + " | ".join(f"{c} connection(s), CPU µs/request" for c in connections) + " |")
    print("|---|" + "---|" * len(connections))
    for variant in variants:
        cells = [f"{statistics.median(results[(variant, c)]):.0f}" for c in connections]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
