"""What one ONNX Runtime call costs, by what the thread does between calls.

Usage: python scripts/ort_between_calls.py pretrained/lenet5/1 [--rounds 5] [--calls 2000] [--cpu 0]

Inside the server one batch-1 call of the served model costs several times what it costs in a
loop (docs/performance.md, issue 23). This measures the same call, one intra-op thread as a
worker runs it, timed alone (the calling thread's CPU time around ``session.run``), in
conditions that isolate what a request stream does around it:

- ``loop``: back to back, as the ORT floor measures it;
- ``idle-<µs>``: the thread sleeps between calls, as a worker waits for the next request at one
  connection (the core idles or runs something else meanwhile);
- ``evict-<KiB>``: between calls the thread writes a buffer of that size (other work pushing the
  model's weights and buffers out of the core's caches), no idling;
- ``handoff``: each call runs on a pool thread woken through a queue, as grpcio's thread pool
  (and granian's blocking thread) are, and answers through another.

Rounds interleave the conditions; medians of the per-call CPU µs, and each as a multiple of
``loop``. With ``--cpu``, the process is pinned to that CPU (as ``--cpu_affinity`` pins a worker).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import INPUT_NAME, INPUT_SHAPE, ONNX_FILENAME, OUTPUT_NAMES
from loadtest.perf.ort_floor import session

IDLE_US = (100, 500, 2000)
EVICT_KIB = (256, 1024, 2048, 4096, 16384)


def timed_call(model, feed: dict) -> float:
    """The calling thread's CPU µs for one ``run``."""
    start = time.thread_time_ns()
    model.run(list(OUTPUT_NAMES), feed)
    return (time.thread_time_ns() - start) / 1e3


def inline(model, feed: dict, calls: int, between: Callable[[], None]) -> float:
    """Median CPU µs per call, ``between`` run before each call."""
    costs = []
    for _ in range(calls):
        between()
        costs.append(timed_call(model, feed))
    return statistics.median(costs)


def handoff(model, feed: dict, calls: int, gap_s: float) -> float:
    """Median CPU µs per call on a pool thread woken through a queue, ``gap_s`` between requests."""
    requests: queue.SimpleQueue = queue.SimpleQueue()
    replies: queue.SimpleQueue = queue.SimpleQueue()

    def pool_thread() -> None:
        while requests.get() is not None:
            replies.put(timed_call(model, feed))

    thread = threading.Thread(target=pool_thread, daemon=True)
    thread.start()
    costs = []
    for _ in range(calls):
        time.sleep(gap_s)
        requests.put(True)
        costs.append(replies.get())
    requests.put(None)
    thread.join()
    return statistics.median(costs)


def conditions(model, feed: dict, calls: int) -> dict[str, Callable[[], float]]:
    """Each condition's name and the measurement of one round of it."""
    found: dict[str, Callable[[], float]] = {"loop": lambda: inline(model, feed, calls, lambda: None)}
    for us in IDLE_US:
        found[f"idle-{us}"] = lambda s=us / 1e6: inline(model, feed, calls, lambda: time.sleep(s))
    for kib in EVICT_KIB:
        buffer = np.zeros(kib * 1024, np.uint8)

        def evict(buffer: np.ndarray = buffer) -> None:
            buffer += 1  # reads and writes every line of it

        found[f"evict-{kib}"] = lambda e=evict: inline(model, feed, calls, e)
    found["handoff"] = lambda: handoff(model, feed, calls, IDLE_US[0] / 1e6)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=Path, help="a version directory holding model.onnx")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="per condition and round")
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    model = session(args.version / ONNX_FILENAME)
    feed = {INPUT_NAME: np.random.default_rng(0).random((1, *INPUT_SHAPE), np.float32)}
    for _ in range(20):  # first calls allocate
        model.run(list(OUTPUT_NAMES), feed)
    measured = conditions(model, feed, args.calls)
    samples: dict[str, list[float]] = {name: [] for name in measured}
    for index in range(args.rounds):
        order = list(measured) if index % 2 == 0 else list(measured)[::-1]
        for name in order:
            samples[name].append(measured[name]())
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    loop = statistics.median(samples["loop"])
    print(f"{'between calls':14} {'CPU µs/call':>12} {'x loop':>7}   rounds")
    for name, values in samples.items():
        median = statistics.median(values)
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:14} {median:12.1f} {median / loop:7.2f}   {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
