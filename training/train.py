"""One training run: tf.data input, Keras fit, TensorBoard, per-epoch checkpoints, resume, result.

A run directory holds everything of one run::

    <run_dir>/config.json       the RunConfig (a run can be resumed or re-exported without guessing)
    <run_dir>/config.sha256     its digest, the run's identity (training/identity.py)
    <run_dir>/backup/           training state (weights, optimizer, epoch) after every epoch:
                                epoch-<n>/ directories, ``latest`` a symlink to the newest
                                (epoch-<n>-batch-<k>/ when a SIGTERM stopped the run mid-epoch)
    <run_dir>/history.csv       per-epoch loss/accuracy/val_accuracy (appended across resumes)
    <run_dir>/tb/               TensorBoard: batch loss, epoch accuracies, graph, HParams
    <run_dir>/model.keras       the trained model (logits out), written when the run ends
    <run_dir>/result.json       the result record (the lab's keys + ours), written last, atomically

The directory belongs to one config: a run resumes (or re-evaluates) only the training of its
own config, checked by digest before anything loads (training/identity.py).

Killed at any point, the same command resumes from the last finished epoch. Stopped by SIGTERM
(training/preemption.py), the run saves its state at the end of the batch in progress and the
same command resumes there, training only the rest of that epoch.

On a GPU (training/devices.py): XLA (Keras' ``jit_compile="auto"``, off on a CPU), the distortion
map in parallel with prefetching tuned by tf.data, and, when the config says so, mixed precision.
On a CPU everything is as it was.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

import contract
from training import devices, distortions, identity, models, preemption
from training.config import RunConfig
from training.data import Mnist, training_set
from training.records import (
    BACKUP_DIR,
    COMPLETED,
    DIVERGED,
    ELAPSED_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RESULT_FILE,
    read_history,
    write_json_atomic,
)

log = logging.getLogger(__name__)

EVAL_BATCH = 1000
TB_DIR = "tb"  # TensorBoard's logs, in the run directory


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, but a kill at any instant leaves a backup that loads.

    Keras writes ``latest.weights.h5`` in place: a kill during the write leaves a truncated file
    that the next start cannot open (and, after the first epoch, no previous one to fall back
    on). Here every epoch's state goes into a fresh ``epoch-<n>/`` directory, and the ``latest``
    symlink is swapped to it atomically once the weights and the epoch are both on disk; older
    epochs are then removed.

    Mid-epoch, :meth:`save_partial` saves the state after the batches trained so far into
    ``epoch-<n>-batch-<k>/`` the same way (a SIGTERM's last act); :meth:`saved_position` tells
    the resumed run how much of that epoch is left to train.
    """

    LATEST = "latest"

    def __init__(self, backup_dir: str) -> None:
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self._root = Path(backup_dir)
        self._point_at(self._root / self.LATEST)
        self._epoch = 0  # the epoch in progress
        self._batch_offset = 0  # its batches trained before this fit (resumed mid-epoch)

    def _point_at(self, directory: Path) -> None:
        self._weights_path = str(directory / "latest.weights.h5")
        self._training_metadata_path = str(directory / "training_metadata.json")

    def saved_position(self) -> tuple[int, int]:
        """(epochs finished, batches of the next one trained) by the backup; (0, 0) if none."""
        metadata = self._root / self.LATEST / "training_metadata.json"
        if not metadata.exists():
            return 0, 0
        saved = json.loads(metadata.read_text())
        return int(saved["epoch"]), int(saved.get("batch") or 0)

    def on_train_begin(self, logs=None) -> None:
        self._point_at(self._root / self.LATEST)  # nothing there: a fresh start
        self._load_model()
        self._epoch, self._batch_offset = self.saved_position()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch != self._epoch:
            self._batch_offset = 0
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        super().on_epoch_end(epoch, logs)
        self._batch_offset = 0

    def save_partial(self, batch: int) -> None:
        """Save the state after ``batch`` (0-based, as Keras counts this fit's batches)."""
        self._save(self._epoch, self._batch_offset + batch + 1)

    def _save_model(self) -> None:  # Keras' hook, at the end of every epoch
        self._save(self._current_epoch, 0)

    def _save(self, epoch: int, batch: int) -> None:
        final = self._root / (f"epoch-{epoch}" + (f"-batch-{batch}" if batch else ""))
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # an epoch repeated after a resume
        staging.mkdir(parents=True)
        self._point_at(staging)
        self.model.save_weights(self._weights_path, overwrite=True)
        write_json_atomic(Path(self._training_metadata_path), {"epoch": epoch, "batch": batch})
        os.replace(staging, final)
        link = self._root / (self.LATEST + ".tmp")
        link.unlink(missing_ok=True)
        link.symlink_to(final.name)
        os.replace(link, self._root / self.LATEST)
        for old in self._root.glob("epoch-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self._point_at(self._root / self.LATEST)


def hparams_of(config: RunConfig) -> dict[str, Any]:
    """The run's settings as HParams (TensorBoard's table needs scalars, not None)."""
    return {k: (v if v is not None else -1) for k, v in config.to_dict().items() if k != "name"}


def training_inputs(images: np.ndarray, labels: np.ndarray, batch: int, *, seed: int,
                    augment: keras.Sequential | None = None,
                    elastic: tuple[float, float] | None = None,
                    parallel: bool = False) -> dict[str, Any]:
    """``model.fit`` arguments for the training data, reshuffled every epoch (as the lab's
    ``next_batch`` did).

    Without distortions Keras' own numpy path is the fastest: tf.data's shuffle over the whole
    training set is slower with one thread (scripts/bench_training.py measures both). Distortions
    need a tf.data map: ``augment`` alone (Keras' affine layers), or with ``elastic`` =
    (alpha, sigma) our affine + elastic field, resampled once (``augment`` only says whether
    affine is on).

    ``parallel`` (on a GPU): the distortions run on as many CPU threads as tf.data finds useful
    and batches are prefetched as deep as it tunes, so that the GPU never waits for the CPU. The
    map stays ordered and every batch keeps its stateless seed, so with ``elastic`` the batches
    are the same as without (``augment`` alone draws from Keras' stateful random layers, whose
    draws may then go to other batches from run to run). On a CPU one map thread and two
    batches ahead: the grid's runs are single-threaded side by side, and more threads would
    only compete with the training step. (Keras' numpy path already maps and prefetches with
    tf.data.AUTOTUNE.)
    """
    if augment is None and elastic is None:
        return {"x": images, "y": labels, "batch_size": batch, "shuffle": True}
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch)
    # One stateless seed per batch, new ones every epoch: reproducible from the run's seed.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def distort(xy: tuple[tf.Tensor, tf.Tensor], pair: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = xy
        if elastic is None:
            return augment(x, training=True), y
        # affine and elastic composed, one resampling (see training/distortions.py)
        alpha, sigma = elastic
        return distortions.distort(x, pair, affine=augment is not None, alpha=alpha,
                                   sigma=sigma), y

    threads, ahead = (tf.data.AUTOTUNE, tf.data.AUTOTUNE) if parallel else (1, 2)
    ds = tf.data.Dataset.zip(ds, seeds).map(distort, num_parallel_calls=threads, deterministic=True)
    return {"x": ds.prefetch(ahead), "shuffle": False}


def compile_model(config: RunConfig, steps_per_epoch: int) -> keras.Model:
    """The run's model, compiled: loss from logits, accuracy. XLA as Keras' ``"auto"`` decides:
    on a GPU, never on a CPU-only machine (slower on our CPUs)."""
    model = _build(config)
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile="auto",
    )
    return model


def _build(config: RunConfig) -> keras.Model:
    """The run's model; with ``mixed_precision``, under Keras' mixed_float16 policy (float16
    compute, float32 variables) with the logits cast to float32: the softmax and the loss must
    be computed in float32 (Keras' rule for mixed precision, for numerical stability)."""
    if not config.mixed_precision:
        return models.build(config)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = models.build(config)
        logits = keras.layers.Activation("linear", dtype="float32",
                                         name="logits_float32")(inner.output)
        return keras.Model(inner.input, logits, name=inner.name)
    finally:
        keras.config.set_dtype_policy(previous)


def float32_model(model: keras.Model, config: RunConfig) -> keras.Model:
    """A mixed-precision run's trained model as the float32 model a float32 run trains: its
    weights were float32 all along; this is the model that is evaluated, saved and exported."""
    if not config.mixed_precision:
        return model
    plain = models.build(config)
    plain.set_weights(model.get_weights())
    return plain


def _optimizer(config: RunConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                    decay_steps=config.epochs * steps_per_epoch)
    optimizer = (keras.optimizers.SGD(lr) if config.optimizer == "sgd"
                 else keras.optimizers.Adam(lr))
    if config.mixed_precision:
        # Dynamic loss scaling: float16 gradients of small losses would underflow to zero.
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class _TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, with batch steps counted from the optimizer's step.

    Keras restarts its batch counter at every ``fit``: a resumed run, or the clean phase of a
    run, would draw its batch losses over the first ones. Listed after BackupAndRestore, so the
    step is the restored one.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._global_train_batch = int(self.model.optimizer.iterations.numpy())

    def flush(self) -> None:
        """Write out what the writers hold (a SIGTERM must not lose the last batch losses)."""
        for writer in self._writers.values():
            writer.flush()


class _StopOnSigterm(keras.callbacks.Callback):
    """A SIGTERM during training (training/preemption.py): at the end of the batch in progress,
    save the state mid-epoch and stop; after an epoch's last batch, stop once the epoch's own
    backup is written (listed after the backup, so its on_epoch_end comes first)."""

    def __init__(self, backup: AtomicBackup):
        super().__init__()
        self.backup = backup

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps")
        if preemption.requested() and (steps is None or batch + 1 < steps):
            self.backup.save_partial(batch)
            epoch, done = self.backup.saved_position()
            log.info("saved the state after %d batches of epoch %d", done, epoch + 1)
            raise preemption.Preempted("SIGTERM")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        preemption.check()


class _EpochLog(keras.callbacks.Callback):
    """One progress line per epoch (the grid runs several runs side by side) + elapsed time."""

    def __init__(self, name: str, epochs: int, elapsed_file: Path):
        super().__init__()
        self.name, self.epochs, self.elapsed_file = name, epochs, elapsed_file
        self.previous = float(elapsed_file.read_text()) if elapsed_file.exists() else 0.0
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.previous + time.monotonic() - self.started

    def save(self) -> None:
        self.elapsed_file.write_text(f"{self.elapsed():.3f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.save()
        log.info("%s epoch %d/%d loss %.4f acc %.4f val_acc %.4f (%.0fs)", self.name, epoch + 1,
                 self.epochs, logs.get("loss", math.nan), logs.get("accuracy", math.nan),
                 logs.get("val_accuracy", math.nan), self.elapsed())


def _accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    logits = model.predict(images, batch_size=EVAL_BATCH, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def held_out_accuracies(model: keras.Model, data: Mnist) -> dict[str, float]:
    """Validation and test accuracy of ``model``, under the result record's keys."""
    return {"validation_accuracy": _accuracy(model, data.validation_images,
                                             data.validation_labels),
            "test_accuracy": _accuracy(model, data.test_images, data.test_labels)}


def run(config: RunConfig, data: Mnist, run_dir: Path, *, index: int | None = None,
        grid: str | None = None, progress_bar: bool = False) -> dict[str, Any]:
    """Train one run to the end (resuming if a backup exists) and write its result record.

    ``run_dir`` must hold no training, or only ``config``'s (:func:`identity.claim`; else
    :class:`identity.IdentityError` before anything is read or trained). A SIGTERM (with
    training/preemption.py installed) raises :class:`preemption.Preempted` once the state is
    saved; the same call later resumes from it.
    """
    identity.claim(run_dir, config)  # before the backup is resumed: it must be this config's
    keras.utils.set_random_seed(config.seed)

    # Prepare the data: the training images the config asks for, distorted as it says.
    train_x, train_y = training_set(data, config.train_limit)
    steps = math.ceil(len(train_x) / config.batch_size)
    found = devices.current()
    inputs = _distorted_inputs(config, train_x, train_y, parallel=devices.has_gpu(found))

    # Build the model, and describe the run to TensorBoard.
    model = compile_model(config, steps)
    _write_hparams_and_graph(model, config, run_dir / TB_DIR)

    # Train, resuming from the backup; a SIGTERM stops it with the state saved.
    callbacks = _RunCallbacks.create(config, run_dir)
    log.info("%s: %d parameters, %d epochs of %d steps%s", config.name, model.count_params(),
             config.epochs, steps, ", mixed precision" if config.mixed_precision else "")
    fit = _Fit(model, callbacks.backup, steps, config.name, fit_args={
        "validation_data": (data.validation_images, data.validation_labels),
        "validation_batch_size": EVAL_BATCH, "callbacks": callbacks.in_order,
        "verbose": 1 if progress_bar else 0})
    try:
        losses = _train(fit, config, inputs, train_x, train_y)
    except preemption.Preempted:
        callbacks.epoch_log.save()
        callbacks.tensorboard.flush()
        raise

    # Evaluate, save the model and write the result record.
    model = float32_model(model, config)
    history = read_history(run_dir)  # all epochs, across resumes
    diverged = _diverged(losses + [row["loss"] for row in history], model)
    result = _result_record(config, data, index=index, grid=grid, model=model, history=history,
                            diverged=diverged, found=found,
                            elapsed=callbacks.epoch_log.elapsed())
    if not diverged:
        if config.clean_bn_statistics:
            result["running_bn_statistics"] = _use_clean_bn_statistics(model, data, train_x)
        result["training_accuracy"] = _accuracy(model, train_x, train_y)
        result.update(held_out_accuracies(model, data))
        _save_model(model, run_dir, result, step=config.epochs)
    log.info("%s: %s, train %s val %s test %s in %.0fs", config.name, result["status"],
             result["training_accuracy"], result["validation_accuracy"],
             result["test_accuracy"], result["elapsed_time"])
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


# --- Prepare the data ---------------------------------------------------------------------------
def _distorted_inputs(config: RunConfig, images: np.ndarray, labels: np.ndarray, *,
                     parallel: bool) -> dict[str, Any]:
    """``model.fit`` arguments for the run's (first) phase: the distortions the config turns on."""
    augment = models.augmenter(config.seed) if config.augment else None
    elastic = (config.elastic_alpha, config.elastic_sigma) if config.elastic_alpha else None
    return training_inputs(images, labels, config.batch_size, seed=config.seed, augment=augment,
                           elastic=elastic, parallel=parallel)


# --- Describe the run to TensorBoard ------------------------------------------------------------
def _write_hparams_and_graph(model: keras.Model, config: RunConfig, tb_dir: Path) -> None:
    """The run's settings (HParams) and the model's op graph, in ``tb_dir``."""
    with tf.summary.create_file_writer(str(tb_dir)).as_default():
        hp.hparams(hparams_of(config), trial_id=config.name)
        # The op graph of the model (Keras 3's callback writes only the conceptual graph).
        forward = tf.function(lambda x: model(x, training=False))
        spec = tf.TensorSpec((None, *contract.INPUT_SHAPE), tf.float32)
        tf.summary.graph(forward.get_concrete_function(spec).graph)


# --- Train --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RunCallbacks:
    """A run's callbacks in the order Keras calls them, and those ``run`` uses again by name."""

    in_order: list[keras.callbacks.Callback]
    backup: AtomicBackup
    tensorboard: _TensorBoard
    epoch_log: _EpochLog

    @classmethod
    def create(cls, config: RunConfig, run_dir: Path) -> _RunCallbacks:
        epoch_log = _EpochLog(config.name, config.epochs, run_dir / ELAPSED_FILE)
        backup = AtomicBackup(str(run_dir / BACKUP_DIR))
        tensorboard = _TensorBoard(str(run_dir / TB_DIR), update_freq="batch", write_graph=True)
        in_order = [
            keras.callbacks.TerminateOnNaN(),
            # CSV before the backup: a kill between the two repeats an epoch (deduplicated on
            # read) rather than losing its line.
            keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
            backup,
            tensorboard,
            epoch_log,
            _StopOnSigterm(backup),  # last: an epoch's line and backup are written first
        ]
        return cls(in_order, backup, tensorboard, epoch_log)


@dataclass(frozen=True)
class _Fit:
    """``model.fit`` as every phase of a run calls it: same callbacks, validation and display."""

    model: keras.Model
    backup: AtomicBackup
    steps: int  # batches per epoch
    name: str  # the run's, for the log
    fit_args: dict[str, Any]

    def __call__(self, inputs: dict[str, Any], first: int, last: int) -> list[float]:
        """Epochs ``first`` to ``last - 1`` (Keras skips those the backup has finished); an
        epoch that a SIGTERM interrupted first, for the batches it had left. The losses."""
        epoch, done = self.backup.saved_position()
        losses: list[float] = []
        if done and first <= epoch < last:
            log.info("%s: resuming epoch %d after its batch %d", self.name, epoch + 1, done)
            losses += self.model.fit(**inputs, initial_epoch=epoch, epochs=epoch + 1,
                                     steps_per_epoch=self.steps - done,
                                     **self.fit_args).history.get("loss", [])
            if self.model.stop_training:  # the loss turned NaN
                return losses
        return losses + self.model.fit(**inputs, initial_epoch=first, epochs=last,
                                       **self.fit_args).history.get("loss", [])


def _train(fit: _Fit, config: RunConfig, inputs: dict[str, Any], train_x: np.ndarray,
           train_y: np.ndarray) -> list[float]:
    """All the run's epochs; the losses of those trained by this call.

    Two phases when the last epochs train on clean images: the distorted ``inputs`` up to
    ``epochs - clean_epochs``, then the clean images. The backup carries the epoch across both
    (a resumed run skips a finished phase: Keras starts at the backup's epoch) and the
    optimizer's step, so the learning-rate schedule runs on as one.
    """
    distorted_epochs = config.epochs - config.clean_epochs
    with preemption.deferred():  # a SIGTERM stops training at the end of a batch
        losses = fit(inputs, 0, distorted_epochs)
        if config.clean_epochs and not fit.model.stop_training:  # (stopped: NaN loss)
            clean = training_inputs(train_x, train_y, config.batch_size, seed=config.seed)
            losses += fit(clean, distorted_epochs, config.epochs)
    return losses


# --- Evaluate and write the result --------------------------------------------------------------
def _diverged(losses: list[float], model: keras.Model) -> bool:
    """Whether training blew up: a loss or a weight that is not finite."""
    return any(not math.isfinite(x) for x in losses) or not all(
        np.isfinite(w).all() for w in model.get_weights())


def _result_record(config: RunConfig, data: Mnist, *, index: int | None, grid: str | None,
                   model: keras.Model, history: list[dict[str, float]], diverged: bool,
                   found: list[devices.Device], elapsed: float) -> dict[str, Any]:
    """The run's result record, accuracies still None (set once the model is evaluated)."""
    return {
        # The lab's keys ...
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "activation_function": config.activation,
        "batch_size": config.batch_size,
        "training_accuracy": None,
        "validation_accuracy": None,
        "test_accuracy": None,
        "elapsed_time": round(elapsed, 3),
        # ... and ours.
        "name": config.name,
        "index": index,
        "grid": grid,
        "group": config.group,
        "model": config.model,
        "epochs": config.epochs,
        "epochs_run": len(history),
        "parameter_count": int(model.count_params()),
        "seed": config.seed,
        "status": DIVERGED if diverged else COMPLETED,
        "config": config.to_dict(),
        "config_digest": identity.digest(config.to_dict()),  # the run's identity
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "devices": [str(d) for d in found],
        "data_checksums": data.checksums,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _use_clean_bn_statistics(model: keras.Model, data: Mnist,
                             train_x: np.ndarray) -> dict[str, float]:
    """Replace batch norm's running statistics by the clean training images' own; returns the
    held-out accuracies the running statistics gave, so that the record keeps their effect.
    Idempotent, so a kill here is safe."""
    running = held_out_accuracies(model, data)
    models.set_clean_bn_statistics(model, train_x)
    return running


def _save_model(model: keras.Model, run_dir: Path, result: dict[str, Any], *, step: int) -> None:
    """model.keras, and the final accuracies as TensorBoard scalars (``tb/final``)."""
    model.save(run_dir / MODEL_FILE)
    with tf.summary.create_file_writer(str(run_dir / TB_DIR / "final")).as_default():
        for key in ("training_accuracy", "validation_accuracy", "test_accuracy"):
            tf.summary.scalar(key, result[key], step=step)
