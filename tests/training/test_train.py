"""Real training runs: accuracy reached, TensorBoard written, resume after a kill, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training import records, report
from training.config import Overrides, load_grid, run_config
from training.grid import run_grid

ROOT = Path(__file__).resolve().parents[2]
LAB_KEYS = {"optimizer", "learning_rate", "activation_function", "batch_size",
            "training_accuracy", "validation_accuracy", "test_accuracy", "elapsed_time"}


def test_one_epoch_of_lenet5_learns_mnist(trained_run):
    run_dir = trained_run / run_config("lab", 12).name
    result = records.read_result(run_dir)
    assert LAB_KEYS | {"epochs", "parameter_count", "seed", "status"} <= result.keys()
    assert result["status"] == records.COMPLETED
    assert result["parameter_count"] == 61_706
    # One epoch of the lab's best config on all 55,000 images: the lab saw ~97% here.
    assert result["validation_accuracy"] >= 0.95
    assert result["test_accuracy"] >= 0.95
    assert (run_dir / records.MODEL_FILE).exists()
    assert [h["epoch"] for h in records.read_history(run_dir)] == [0]


def test_tensorboard_has_batch_loss_epoch_accuracy_graph_and_hparams(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = trained_run / run_config("lab", 12).name / "tb"
    train = EventAccumulator(str(tb / "train"), size_guidance={"tensors": 0}).Reload()
    tags = train.Tags()
    assert "batch_loss" in tags["tensors"] and "epoch_accuracy" in tags["tensors"]
    assert len(train.Tensors("batch_loss")) > 100  # one point per batch (430 batches)
    assert "keras" in tags["tensors"]  # the conceptual graph
    validation = EventAccumulator(str(tb / "validation")).Reload()
    assert "epoch_accuracy" in validation.Tags()["tensors"]
    root = EventAccumulator(str(tb)).Reload()
    assert "_hparams_/session_start_info" in root.Tags()["tensors"]
    assert root.Tags()["graph"]  # the op graph


def _run_cli(args: list[str], mnist_dir: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_a_killed_run_resumes_from_its_last_epoch(mnist_dir, tmp_path):
    # An epoch of 3,000 images takes about 0.3 s: enough epochs that the kill, right after the
    # first one is saved, always lands with epochs still to train.
    epochs = 20
    args = ["run", "--grid", "lab", "--index", "12", "--runs-dir", str(tmp_path), "--epochs",
            str(epochs), "--train-limit", "3000", "--threads", "1", "--progress", "lines"]
    run_dir = tmp_path / "lab" / run_config("lab", 12).name
    first = _run_cli(args, mnist_dir)
    deadline = time.monotonic() + 240
    while not (run_dir / "backup" / "latest").exists():
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert records.read_result(run_dir) is None
    saved = len(records.read_history(run_dir))
    assert 1 <= saved < epochs, f"the kill came after {saved} of {epochs} epochs"

    second = _run_cli(args, mnist_dir)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    marker = f"/{epochs} "
    trained = [int(line.split(" epoch ")[1].split("/")[0]) for line in output.splitlines()
               if " epoch " in line and marker in line]
    # It did not start over: it went on from the last saved epoch (or repeated that one, when
    # the kill fell between the epoch's history line and its backup).
    assert trained and trained[0] in (saved, saved + 1) and trained[0] > 1, output
    assert trained[-1] == epochs, output
    result = records.read_result(run_dir)
    assert result["status"] == records.COMPLETED and result["epochs_run"] == epochs
    assert [h["epoch"] for h in records.read_history(run_dir)] == list(range(epochs))


def test_a_diverged_run_is_recorded_and_the_grid_goes_on(mnist_dir, tmp_path):
    # Run 19 (relu, Adam 0.1) pushed to a learning rate no float32 survives; run 0 trains.
    overrides = Overrides(epochs=1, train_limit=2000, settings=("19:learning_rate=1e30",))
    statuses = run_grid(load_grid("lab"), tmp_path, jobs=2, indexes=[19, 0],
                        data_dir=str(mnist_dir), overrides=overrides)
    assert statuses == {19: records.DIVERGED, 0: records.COMPLETED}
    diverged = records.read_result(tmp_path / "lab" / run_config("lab", 19).name)
    assert diverged["test_accuracy"] is None and diverged["config"]["learning_rate"] == 1e30
    # Finished runs (of the same settings) are not run again; the report covers both.
    assert run_grid(load_grid("lab"), tmp_path, jobs=2, indexes=[19, 0],
                    overrides=overrides) == statuses
    summary = report.write_report(tmp_path / "lab")
    assert summary["statuses"] == {"completed": 1, "diverged": 1}
    for name in ("results.json", "results.csv", "results.md", "accuracy_grid.png",
                 "training_time.png", "learning_curves.png"):
        assert (tmp_path / "lab" / name).stat().st_size > 0
    assert len(json.loads((tmp_path / "lab" / "results.json").read_text())) == 2


def test_cli_documents_every_command():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout
    for command in ("list", "run", "grid", "report", "export", "tensorboard --logdir"):
        assert command in out


@pytest.mark.parametrize("bad", [["run", "--index", "99"], ["run", "--index", "1", "--set", "x=1"]])
def test_cli_rejects_bad_runs_clearly(mnist_dir, bad):
    proc = _run_cli([*bad, "--runs-dir", "/nonexistent-never-written"], mnist_dir)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in output and "ERROR" in output


def test_clean_bn_statistics_run_records_both_and_saves_the_clean_model(mnist_dir, tmp_path):
    import keras
    import numpy as np

    from training import data, train

    mnist = data.load(mnist_dir)
    config = run_config("lab", 22).with_overrides(epochs=1, clean_epochs=0, train_limit=2000)
    assert config.clean_bn_statistics and config.elastic_alpha
    result = train.run(config, mnist, tmp_path)
    assert result["status"] == records.COMPLETED
    before = result["running_bn_statistics"]
    assert set(before) == {"validation_accuracy", "test_accuracy"}
    assert 0.0 <= before["validation_accuracy"] <= 1.0
    model = keras.models.load_model(tmp_path / records.MODEL_FILE)
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)
    outputs = np.asarray(conv1(mnist.train_images[:2000], training=False))
    np.testing.assert_allclose(np.asarray(model.get_layer("conv1_bn").moving_mean),
                               outputs.mean((0, 1, 2)), atol=1e-4)
    logits = model.predict(mnist.validation_images, batch_size=1000, verbose=0)
    assert result["validation_accuracy"] == np.mean(logits.argmax(1) == mnist.validation_labels)


def test_clean_phase_trains_last_epochs_on_clean_images_and_resumes_past_it(mnist_dir, tmp_path,
                                                                           monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training import data, train

    mnist = data.load(mnist_dir)
    config = run_config("lab", 22).with_overrides(epochs=3, clean_epochs=1, train_limit=1280)
    inputs = []  # what each phase trained on: distorted (a tf.data map) or the clean arrays
    real_inputs = train.training_inputs
    monkeypatch.setattr(train, "training_inputs", lambda *a, **kw: inputs.append(kw) or
                        real_inputs(*a, **kw))
    result = train.run(config, mnist, tmp_path)
    assert result["status"] == records.COMPLETED
    assert [h["epoch"] for h in records.read_history(tmp_path)] == [0, 1, 2]
    assert inputs[0]["elastic"] == (17.0, 4.0) and inputs[0]["augment"] is not None
    assert inputs[1].get("elastic") is None and inputs[1].get("augment") is None
    # TensorBoard's batch steps run on across the phases: 10 steps an epoch, 30 in all
    batch_loss = EventAccumulator(str(tmp_path / "tb" / "train"), size_guidance={"tensors": 0})
    steps = [event.step for event in batch_loss.Reload().Tensors("batch_loss")]
    assert steps == sorted(set(steps)) and max(steps) == 30

    # Run again over the finished backup (as a pod restarted after its last epoch): both
    # phases are found done, nothing is trained twice, the same model comes out.
    again = train.run(config, mnist, tmp_path)
    assert [h["epoch"] for h in records.read_history(tmp_path)] == [0, 1, 2]
    assert again["validation_accuracy"] == result["validation_accuracy"]


def test_a_backup_killed_mid_write_still_resumes(tmp_path):
    import keras
    import numpy as np

    from training.train import AtomicBackup

    def model_and_data():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        return model, np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")

    backup = tmp_path / "backup"
    model, x, y = model_and_data()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[AtomicBackup(str(backup))])
    assert os.readlink(backup / "latest") == "epoch-2"
    assert sorted(p.name for p in backup.iterdir()) == ["epoch-2", "latest"]
    # A kill while epoch 3 was being written: its half-written weights are never read.
    (backup / "epoch-3.tmp").mkdir()
    (backup / "epoch-3.tmp" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n")
    weights = [w.copy() for w in model.get_weights()]

    model, x, y = model_and_data()
    epochs = model.fit(x, y, epochs=4, verbose=0, callbacks=[AtomicBackup(str(backup))]).epoch
    assert epochs == [2, 3]  # resumed after epoch 2, with epoch 2's weights
    assert os.readlink(backup / "latest") == "epoch-4"
    assert sorted(p.name for p in backup.iterdir()) == ["epoch-4", "latest"]
    assert not np.array_equal(model.get_weights()[0], weights[0])
