"""SIGTERM, as Kubernetes stops a pod: real signals to real `python -m training` processes.

A run stopped mid-epoch saves its state and exits 143 within seconds, without a result record;
the same command then finishes it with the full history and exactly the batches an
uninterrupted run trains. The grid runner passes the signal on to its runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training import records
from training.config import run_config
from training.preemption import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[2]
INDEX = 12  # lenet5-adam-0.001-relu-b128
# 200 batches of 128: an epoch takes a few seconds here, so a signal sent one second into the
# second epoch lands mid-epoch.
TRAIN_LIMIT, BATCHES, EPOCHS = 25_600, 200, 4
PROMPT = 10  # seconds from SIGTERM to exit, with room for a busy machine (measured: under 2)


def _cli(args: list[str], mnist_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"{path} did not appear in time"
        time.sleep(0.05)


def _terminate(process: subprocess.Popen) -> tuple[int, float, str]:
    """SIGTERM; the exit status, the seconds it took, the output."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return process.returncode, time.monotonic() - sent, output


def _batch_steps(run_dir: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train = EventAccumulator(str(run_dir / "tb" / "train"), size_guidance={"tensors": 0})
    return [event.step for event in train.Reload().Tensors("batch_loss")]


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_exits_143_and_the_same_command_finishes_the_run(
        mnist, mnist_dir, tmp_path):
    from training import train

    args = ["run", "--grid", "lab", "--index", str(INDEX), "--runs-dir", str(tmp_path),
            "--epochs", str(EPOCHS), "--train-limit", str(TRAIN_LIMIT), "--threads", "1",
            "--progress", "lines"]
    run_dir = tmp_path / "lab" / run_config("lab", INDEX).name
    first = _cli(args, mnist_dir)
    _wait_for(run_dir / "backup" / "latest", first)  # epoch 1 saved, epoch 2 begins
    time.sleep(1.0)
    code, took, output = _terminate(first)
    assert code == EXIT_PREEMPTED, output
    assert took < PROMPT, f"exited {took:.1f}s after SIGTERM"
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert records.read_result(run_dir) is None
    # The state as it was mid-epoch 2 (epoch index 1), not the end of epoch 1.
    latest = os.readlink(run_dir / "backup" / "latest")
    assert latest.startswith("epoch-1-batch-"), latest
    done = int(latest.rsplit("-", 1)[1])
    assert 0 < done < BATCHES
    assert [h["epoch"] for h in records.read_history(run_dir)] == [0]

    second = _cli(args, mnist_dir)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert f"resuming epoch 2 after its batch {done}" in output
    resumed = records.read_result(run_dir)
    assert resumed["status"] == records.COMPLETED and resumed["epochs_run"] == EPOCHS
    assert [h["epoch"] for h in records.read_history(run_dir)] == list(range(EPOCHS))
    # Exactly the batches of an uninterrupted run: the interrupted epoch trained only the
    # batches it had left, and the step count runs on across the stop (TensorBoard's steps
    # are the optimizer's).
    steps = _batch_steps(run_dir)
    assert steps == sorted(set(steps)) and max(steps) == EPOCHS * BATCHES
    assert resumed["validation_accuracy"] > 0.95

    # The same record keys as a run that was never stopped.
    config = run_config("lab", INDEX).with_overrides(epochs=1, train_limit=1000)
    uninterrupted = train.run(config, mnist, tmp_path / "uninterrupted", index=INDEX, grid="lab")
    assert resumed.keys() == uninterrupted.keys()


def test_sigterm_before_training_exits_143_at_once(mnist_dir, tmp_path):
    run_dir = tmp_path / "lab" / run_config("lab", INDEX).name
    process = _cli(["run", "--grid", "lab", "--index", str(INDEX), "--runs-dir", str(tmp_path),
                    "--epochs", "1", "--threads", "1", "--progress", "lines"], mnist_dir)
    for line in process.stdout:  # start-up: devices found, data and model next
        if "devices TensorFlow sees" in line:
            break
    code, took, output = _terminate(process)
    assert code == EXIT_PREEMPTED, output
    assert took < PROMPT
    assert records.read_result(run_dir) is None and not (run_dir / "backup").exists()


@pytest.mark.slow
def test_the_grid_passes_sigterm_to_its_runs_and_resumes(mnist_dir, tmp_path):
    args = ["grid", "--grid", "lab", "--indexes", str(INDEX), "--jobs", "1", "--runs-dir",
            str(tmp_path), "--epochs", "2", "--train-limit", str(TRAIN_LIMIT)]
    run_dir = tmp_path / "lab" / run_config("lab", INDEX).name
    grid = _cli(args, mnist_dir)
    _wait_for(run_dir / "backup" / "latest", grid)
    time.sleep(1.0)
    code, took, output = _terminate(grid)
    assert code == EXIT_PREEMPTED, output
    assert took < PROMPT
    assert "grid stopped by SIGTERM" in output
    # The run saved its state and was not recorded as failed; no report was written.
    assert records.read_result(run_dir) is None
    assert os.readlink(run_dir / "backup" / "latest").startswith("epoch-1-batch-")
    assert not (tmp_path / "lab" / "results.json").exists()

    again = _cli([*args, "--no-report"], mnist_dir)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    result = records.read_result(run_dir)
    assert result["status"] == records.COMPLETED
    assert [h["epoch"] for h in records.read_history(run_dir)] == [0, 1]


@pytest.mark.parametrize("command", ["data", "list", "report", "export"])
def test_every_single_process_command_handles_sigterm(command, mnist_dir, tmp_path, monkeypatch):
    # As PID 1 of an init container (`data`) or a Job (`report`, `export`), a command without a
    # handler would ignore SIGTERM until the grace period's SIGKILL.
    from training import __main__ as cli
    from training import preemption

    installed = []
    monkeypatch.setattr(preemption, "install", lambda: installed.append(True))
    monkeypatch.setattr(cli, "_command", lambda args: 0)
    assert cli.main([command, "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path)]) == 0
    assert installed == [True]

