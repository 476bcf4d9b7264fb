"""ONNX Runtime's cost of served models, side by side: µs per image at batch 1 and 64.

Usage: python scripts/model_cost.py pretrained/lenet5/1 pretrained/lenet5-ensemble/1 [--rounds 7]

Each model's ``model.onnx`` in a session as the perf harness's ONNX Runtime floor builds it
(``loadtest.perf.ort_floor``: one intra-op thread, as a server worker runs it), the MNIST-shaped
input of zeros, wall time per call; rounds interleave the models so that drift in the machine's
load falls on all of them; medians printed, with each one's ratio to the first model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import INPUT_SHAPE, ONNX_FILENAME
from loadtest.perf.ort_floor import per_call_us, session

BATCHES = (1, 64)


def _per_image_us(session: ort.InferenceSession, batch: int, seconds: float) -> float:
    images = np.zeros((batch, *INPUT_SHAPE), np.float32)
    return per_call_us(session, images, seconds)[1] / batch  # wall: one thread computes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", type=Path, help="version directories holding model.onnx")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per model, batch and round")
    args = parser.parse_args()
    sessions = {str(v): session(v / ONNX_FILENAME) for v in args.versions}
    samples: dict[tuple[str, int], list[float]] = {(m, b): [] for m in sessions for b in BATCHES}
    for index in range(args.rounds):
        order = list(sessions) if index % 2 == 0 else list(sessions)[::-1]
        for name in order:
            for batch in BATCHES:
                samples[name, batch].append(_per_image_us(sessions[name], batch, args.seconds))
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    first = next(iter(sessions))
    print(f"{'model':40} {'µs/image b1':>12} {'µs/image b64':>13} {'x first b1':>11} {'x first b64':>12}")
    for name in sessions:
        b1, b64 = (statistics.median(samples[name, b]) for b in BATCHES)
        r1 = b1 / statistics.median(samples[first, 1])
        r64 = b64 / statistics.median(samples[first, 64])
        print(f"{name:40} {b1:12.1f} {b64:13.1f} {r1:11.2f} {r64:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
