"""Training throughput benchmark (not a test): images/s of LeNet-5 on this machine.

Usage: python scripts/bench_training.py [--images 20000] [--data-dir DIR] [--out reports/bench_training.json]

Measures, in one run, each in a fresh process:
  1. plain ``model.fit`` on numpy arrays vs our training loop (training.train.training_inputs,
     the same compile), without and with the training-time distortions (a tf.data map), at batch
     50 and 128, one intra-op thread and TensorFlow's default;
  2. two single-threaded processes side by side vs one process with two threads (batch 128): how
     the grid runner should use the cores;
  3. the grid's aggregate throughput: four LeNet-5 runs (one epoch on --images images) through
     ``python -m training grid`` with --jobs 2 vs --jobs 1, start-up included.
Figures on a noisy machine: compare within a run, report ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
       "TF_CPP_MIN_LOG_LEVEL": "3"}


def child(mode: str, batch: int, threads: int, images: int, data_dir: str | None,
          start_at: float) -> None:
    """Measure one configuration in this process; print {"images_per_s": ...} as JSON."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from training import config, data, train

    mnist = data.load(data_dir)
    x, y = mnist.train_images[:images], mnist.train_labels[:images]
    run = config.run_config("lab", 12).with_overrides(batch_size=batch)
    model = train.compile_model(run, steps_per_epoch=images // batch)
    if mode == "fit":
        def epoch():
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
    else:
        from training import models

        augment = models.augmenter(1) if mode == "augment" else None
        inputs = train.training_inputs(x, y, batch, seed=1, augment=augment)

        def epoch():
            model.fit(**inputs, epochs=1, verbose=0)
    model.fit(x[: batch * 10], y[: batch * 10], batch_size=batch, epochs=1, verbose=0)  # trace
    while time.time() < start_at:  # side-by-side runs start together
        time.sleep(0.01)
    started = time.perf_counter()
    epoch()
    print(json.dumps({"images_per_s": images / (time.perf_counter() - started)}))


def measure(modes: list[tuple[str, int, int]], args) -> list[float]:
    """Run the configurations as simultaneous child processes; their images/s."""
    # Side by side: start together, after every child has imported TensorFlow and traced.
    start_at = time.time() + 30 if len(modes) > 1 else 0.0
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--batch", str(batch), "--threads",
         str(threads), "--images", str(args.images), "--start-at", str(start_at),
         *(["--data-dir", args.data_dir] if args.data_dir else [])],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for mode, batch, threads in modes]
    rates = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"child failed: {out}{err[-2000:]}")
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return rates


def grid_throughput(jobs: int, args) -> float:
    """Aggregate images/s of four one-epoch grid runs through the real grid runner."""
    indexes = "11,12,15,16"  # the lab grid's relu LeNet-5 runs with Adam at batch 50 and 128
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "training", "grid", "--grid", "lab",
                        "--indexes", indexes, "--runs-dir", runs, "--jobs", str(jobs),
                        "--epochs", "1", "--train-limit", str(args.images), "--no-report",
                        *(["--data-dir", args.data_dir] if args.data_dir else [])],
                       env=ENV, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return 4 * args.images / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="images per measured epoch")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default $MNIST_DIR)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_training.json"))
    parser.add_argument("--child", choices=("fit", "loop", "augment"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.threads, args.images, args.data_dir, args.start_at)
        return 0

    report: dict = {"images": args.images, "cpus": os.cpu_count(), "rows": []}

    def row(label: str, value: float) -> None:
        report["rows"].append({"measure": label, "images_per_s": round(value)})
        print(f"{label:60s} {value:8.0f} img/s", flush=True)

    for batch in (50, 128):
        for threads, tname in ((1, "1 thread"), (0, "TF default threads")):
            for mode, mname in (("fit", "plain model.fit on numpy"), ("loop", "our loop"),
                                ("augment", "our loop with distortions (tf.data)")):
                row(f"{mname}, batch {batch}, {tname}", measure([(mode, batch, threads)], args)[0])
    two = measure([("loop", 128, 1), ("loop", 128, 1)], args)
    row("our loop, batch 128: 2 single-threaded processes together", sum(two))
    row("our loop, batch 128: 1 process, 2 threads", measure([("loop", 128, 2)], args)[0])
    for jobs in (1, 2):
        row(f"grid runner, 4 one-epoch runs, --jobs {jobs} (aggregate, start-up included)",
            grid_throughput(jobs, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
