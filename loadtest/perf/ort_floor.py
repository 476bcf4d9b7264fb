"""The ONNX Runtime floor: what the served ``model.onnx`` costs by itself.

Usage (``python -m loadtest perf`` runs it before and after its rounds, when no load runs):
  python -m loadtest.perf.ort_floor models/lenet5/1/model.onnx --images digits.npy --seconds 2
  # one JSON line: {"b1_call_us": ..., "b64_image_us": ..., "b1_wall_us": ..., "b64_image_wall_us": ...}

One session with one intra-op and one inter-op thread, as a server worker runs it by default
(``--tensorflow_intra_op_parallelism 1``), fed the digits the requests carry: the CPU time (user +
system of this process; with one thread ORT computes on the calling thread) per call at batch 1,
and per image at batch 64. Each figure is the median of ``WINDOWS`` windows, which together
last ``--seconds`` per batch size. A process of its own: nothing else of the harness runs in it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import INPUT_NAME, OUTPUT_NAMES
from loadtest.perf.multiples import ORT_LARGE_BATCH as LARGE_BATCH

WINDOWS = 5


def session(model: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def per_call_us(model: ort.InferenceSession, images: np.ndarray, seconds: float) -> tuple[float, float]:
    """(CPU µs, wall µs) per call on ``images``: medians over the windows."""
    feed = {INPUT_NAME: images}
    for _ in range(3):  # first calls allocate
        model.run(list(OUTPUT_NAMES), feed)
    cpu, wall = [], []
    for _ in range(WINDOWS):
        calls, cpu_start, wall_start = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - wall_start < seconds / WINDOWS:
            model.run(list(OUTPUT_NAMES), feed)
            calls += 1
        cpu.append((time.process_time() - cpu_start) / calls * 1e6)
        wall.append((time.perf_counter() - wall_start) / calls * 1e6)
    return statistics.median(cpu), statistics.median(wall)


def measure(model: Path, images: np.ndarray, seconds: float) -> dict[str, float]:
    """The floor of ``model``: CPU (and wall) µs per batch-1 call and per image at batch 64."""
    batch = np.resize(images, (LARGE_BATCH, *images.shape[1:])).astype(np.float32)  # repeats if fewer
    loaded = session(model)
    b1_cpu, b1_wall = per_call_us(loaded, batch[:1], seconds)
    b64_cpu, b64_wall = per_call_us(loaded, batch, seconds)
    return {
        "b1_call_us": b1_cpu,
        "b64_image_us": b64_cpu / LARGE_BATCH,
        "b1_wall_us": b1_wall,
        "b64_image_wall_us": b64_wall / LARGE_BATCH,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.perf.ort_floor", description=__doc__)
    parser.add_argument("model", type=Path, help="a model.onnx")
    parser.add_argument("--images", type=Path, required=True, help="a .npy of [N, 28, 28, 1] float32 digits")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size (default 2)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, np.load(args.images), args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
