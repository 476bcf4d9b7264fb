"""Devices: a GPU that was asked for must be there; on a GPU, mixed precision and a fed pipeline.

This machine has no GPU, so "asked for but absent" is the real situation here (GPUs are hidden
with CUDA_VISIBLE_DEVICES="" as well, so the tests mean the same on a GPU machine). Mixed
precision is exercised on the CPU in process (the CLI refuses it there, tested too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from training import devices, models, records, train
from training.config import run_config

ROOT = Path(__file__).resolve().parents[2]
INDEX = 12


def _cli(args: list[str], mnist_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MNIST_DIR": str(mnist_dir), "CUDA_VISIBLE_DEVICES": "", **env}
    environ.pop(devices.REQUIRE_GPU_ENV, None)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag, env", [(["--require-gpu"], {}),
                                       ([], {devices.REQUIRE_GPU_ENV: "1"})],
                         ids=["flag", "environment"])
def test_a_required_gpu_that_is_absent_fails_fast_with_exit_2(mnist_dir, tmp_path, flag, env):
    started = time.monotonic()
    ran = _cli(["run", "--grid", "lab", "--index", str(INDEX), "--runs-dir", str(tmp_path),
                *flag], mnist_dir, **env)
    took = time.monotonic() - started
    assert ran.returncode == 2, ran.stderr
    assert "a GPU is required" in ran.stderr and "TensorFlow sees none: CPU:0" in ran.stderr
    assert "CUDA_VISIBLE_DEVICES=''" in ran.stderr  # the facts that explain it
    assert "Traceback" not in ran.stderr
    # Before any data or model: nothing was written, and it took seconds (TensorFlow's import).
    assert not (tmp_path / "lab").exists()
    assert "parameters" not in ran.stderr
    assert took < 60, f"{took:.0f}s"


def test_mixed_precision_on_a_cpu_is_refused_before_training(mnist_dir, tmp_path):
    ran = _cli(["run", "--grid", "lab", "--index", str(INDEX), "--runs-dir", str(tmp_path),
                "--set", "mixed_precision=true"], mnist_dir)
    assert ran.returncode == 2, ran.stderr
    assert "mixed_precision = true needs a GPU" in ran.stderr
    assert not (tmp_path / "lab").exists()


@pytest.mark.slow
def test_without_the_requirement_a_run_trains_on_the_cpu_as_before(mnist_dir, tmp_path):
    # --no-require-gpu beats the environment; the record says where the run trained.
    ran = _cli(["run", "--grid", "lab", "--index", str(INDEX), "--runs-dir", str(tmp_path),
                "--epochs", "1", "--train-limit", "1000", "--threads", "1",
                "--no-require-gpu"], mnist_dir, **{devices.REQUIRE_GPU_ENV: "1"})
    assert ran.returncode == 0, ran.stderr
    assert "devices TensorFlow sees: CPU:0" in ran.stderr
    result = records.read_result(tmp_path / "lab" / run_config("lab", INDEX).name)
    assert result["status"] == records.COMPLETED
    assert len(result["devices"]) == 1 and result["devices"][0].startswith("CPU:0")
    assert result["config"]["mixed_precision"] is False


@pytest.mark.parametrize("flag, value, required", [
    (None, None, False), (None, "", False), (None, "0", False), (None, "false", False),
    (None, "1", True), (None, "TRUE", True), (None, " yes ", True),
    (True, None, True), (False, "1", False),
])
def test_the_requirement_comes_from_the_flag_else_the_environment(flag, value, required):
    environ = {} if value is None else {devices.REQUIRE_GPU_ENV: value}
    assert devices.gpu_required(flag, environ) is required


def test_an_unclear_requirement_is_an_error():
    with pytest.raises(devices.DeviceError, match="DIGITS_REQUIRE_GPU='maybe': expected"):
        devices.gpu_required(None, {devices.REQUIRE_GPU_ENV: "maybe"})


def test_the_check_passes_without_requirement_and_with_a_gpu():
    cpu = devices.Device("CPU", "CPU:0", "a CPU")
    gpu = devices.Device("GPU", "GPU:0", "NVIDIA H100, compute capability 9.0")
    devices.check([cpu], require_gpu=False, mixed_precision=False)
    devices.check([cpu, gpu], require_gpu=True, mixed_precision=True)
    with pytest.raises(devices.DeviceError, match="a GPU is required"):
        devices.check([cpu], require_gpu=True, mixed_precision=False)
    assert str(gpu) == "GPU:0 (NVIDIA H100, compute capability 9.0)"


def test_this_machine_is_described():
    found = devices.current()
    assert found[0].kind == "CPU" and found[0].name == "CPU:0"
    assert f"{os.cpu_count()} cores" in found[0].description


# --- mixed precision (in process: the mechanics are the same on a CPU, only slower) -----------
def test_mixed_precision_computes_in_float16_with_float32_logits_and_weights():
    config = run_config("lab", 22).with_overrides(mixed_precision=True)
    before = keras.config.dtype_policy().name
    model = train.compile_model(config, steps_per_epoch=10)
    assert keras.config.dtype_policy().name == before  # the global policy is left as it was
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert {v.dtype for v in model.weights} == {"float32"}
    assert model.output.dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # A float32 run's model is untouched by the option.
    plain = train.compile_model(config.with_overrides(mixed_precision=False), 10)
    assert plain.get_layer("conv1").compute_dtype == "float32"
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)
    assert [w.shape for w in plain.weights] == [w.shape for w in models.build(config).weights]


@pytest.mark.slow
def test_a_mixed_precision_run_trains_and_saves_a_float32_model(mnist, tmp_path):
    config = run_config("lab", INDEX).with_overrides(mixed_precision=True, epochs=1,
                                                     train_limit=3072)
    result = train.run(config, mnist, tmp_path)
    assert result["status"] == records.COMPLETED
    assert result["config"]["mixed_precision"] is True
    assert json.loads((tmp_path / records.CONFIG_FILE).read_text())["mixed_precision"] is True
    saved = keras.models.load_model(tmp_path / records.MODEL_FILE)
    # The model that is saved and exported is the float32 model, with the trained weights.
    assert {layer.compute_dtype for layer in saved.layers} == {"float32"}
    assert [layer.name for layer in saved.layers] == [
        layer.name for layer in models.build(config).layers]
    logits = saved.predict(mnist.validation_images, batch_size=1000, verbose=0)
    assert logits.dtype == np.float32
    assert result["validation_accuracy"] == np.mean(logits.argmax(1) == mnist.validation_labels)
    # It learns as the float32 run does (24 batches: 0.713 in float32, 0.717 mixed, measured).
    float32 = train.run(config.with_overrides(mixed_precision=False), mnist, tmp_path / "f32")
    assert abs(result["validation_accuracy"] - float32["validation_accuracy"]) < 0.05


def test_the_float32_copy_has_the_trained_weights():
    config = run_config("lab", 22).with_overrides(mixed_precision=True)
    mixed = train.compile_model(config, 10)
    plain = train.float32_model(mixed, config)
    for a, b in zip(mixed.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(mixed(images, training=False)),
                               np.asarray(plain(images, training=False)), atol=0.05)
    float32 = config.with_overrides(mixed_precision=False)
    model = train.compile_model(float32, 10)
    assert train.float32_model(model, float32) is model


# --- the input pipeline ------------------------------------------------------------------------
def test_the_parallel_pipeline_gives_the_same_batches(mnist):
    images, labels = mnist.train_images[:256], mnist.train_labels[:256]

    def two_epochs(parallel: bool) -> list[np.ndarray]:
        inputs = train.training_inputs(images, labels, 64, seed=3, elastic=(17.0, 4.0),
                                       augment=models.augmenter(3), parallel=parallel)
        return [np.asarray(x) for _ in range(2) for x, _ in inputs["x"]]

    serial, parallel = two_epochs(False), two_epochs(True)
    assert len(serial) == 8
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
