"""Export: the selected run (training/selection.py) -> a TF Serving model repository.

:func:`publish` is every export's last step, a run's (:func:`export_run`) or an ensemble's
(training/ensemble_export.py): the signature, the ONNX twin, the parity gate, the card's common
part and the atomic publish.

One version directory serves both TensorFlow Serving and our ONNX Runtime server::

    <model_base_path>/<version>/saved_model.pb, variables/   SavedModel, signature serving_default
    <model_base_path>/<version>/model.onnx                   the same function through tf2onnx
    <model_base_path>/<version>/model-card.json              config, metrics, hashes, parity, data,
                                                             baseline (training/baseline.py)

Both carry the contract's names: input ``image`` float32 [N, 28, 28, 1]; outputs
``probabilities`` float32 [N, 10] (softmax) and ``digit`` int64 [N] (argmax).

An export must pass the parity gate (ONNX Runtime vs TensorFlow on all test images: max
|probability difference| <= 1e-5 and identical digits) and is published atomically: built in a
hidden temporary directory beside the versions, then renamed into place as the next integer
version, so a reader (a server polling the repository) never sees a half-written version.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

import contract
from training import baseline, identity, preemption
from training.config import Grid
from training.data import Mnist
from training.records import MODEL_FILE, write_json_atomic
from training.selection import ExportError, reproduce, select_run

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
ONNX_OPSET = 17
TMP_PREFIX = ".tmp-export-"


def serving_function(model: keras.Model) -> tf.types.experimental.GenericFunction:
    """The serving signature: logits model -> {probabilities, digit} under the contract's names."""
    dtype, shape = contract.INPUT_SPEC[contract.INPUT_NAME]
    spec = tf.TensorSpec(shape, tf.as_dtype(dtype), name=contract.INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        probabilities = tf.nn.softmax(model(image, training=False), axis=-1)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_DIGIT: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    return serve


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_parity(version_dir: Path, session: ort.InferenceSession,
                 images: np.ndarray) -> dict[str, Any]:
    """Compare the written SavedModel (TensorFlow) with model.onnx (``session``, ONNX Runtime)
    on ``images``."""
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_NAME]
    tf_p, tf_d = [], []
    for start in range(0, len(images), baseline.BATCH):
        out = signature(**{contract.INPUT_NAME: tf.constant(images[start:start + baseline.BATCH])})
        tf_p.append(out[contract.OUTPUT_PROBABILITIES].numpy())
        tf_d.append(out[contract.OUTPUT_DIGIT].numpy())
    ort_p, ort_d = baseline.onnx_outputs(session, images)
    tf_p, tf_d = np.concatenate(tf_p), np.concatenate(tf_d)
    # The contract's shapes in both, [N, 10] and [N]: a difference would broadcast unseen.
    shapes = {"tensorflow": (tf_p.shape, tf_d.shape), "onnx": (ort_p.shape, ort_d.shape)}
    if set(shapes.values()) != {((len(images), contract.NUM_CLASSES), (len(images),))}:
        raise ExportError(f"outputs (probabilities, digit) of shapes {shapes}, not the "
                          f"contract's [N, {contract.NUM_CLASSES}] and [N]")
    max_diff = float(np.max(np.abs(tf_p - ort_p)))
    mismatches = int(np.sum(tf_d != ort_d))
    return {"images": int(len(images)), "max_abs_probability_difference": max_diff,
            "digit_mismatches": mismatches, "tolerance": PARITY_TOLERANCE,
            "passed": max_diff <= PARITY_TOLERANCE and mismatches == 0}


def _write_version(model: keras.Model, directory: Path) -> None:
    serve = serving_function(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(contract.SIGNATURE_NAME, serve)
    archive.write_out(str(directory), verbose=False)
    spec = serve.input_signature
    onnx_model, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    names_in = [i.name for i in onnx_model.graph.input]
    names_out = sorted(o.name for o in onnx_model.graph.output)
    if names_in != [contract.INPUT_NAME] or names_out != sorted(contract.OUTPUT_NAMES):
        raise ExportError(f"ONNX graph has inputs {names_in} and outputs {names_out}, "
                          f"not the contract's")
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(directory / contract.ONNX_FILENAME))


def publish(model: keras.Model, model_base_path: Path, parity_images: np.ndarray,
            card: dict[str, Any], splits: baseline.Splits | None = None,
            attachments: Mapping[str, Path] | None = None) -> int:
    """Export ``model`` (logits out) as the next version of the repository; returns the version
    number. With ``splits``, the card gets the model's baseline on them (training/baseline.py);
    ``attachments`` (file name in the version -> file) are copied in, hashed like the rest."""
    model_base_path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=model_base_path))
    try:
        _write_version(model, tmp)
        for name, source in (attachments or {}).items():
            shutil.copyfile(source, tmp / name)
        session = baseline.onnx_session(tmp / contract.ONNX_FILENAME)
        parity = check_parity(tmp, session, parity_images)
        if not parity["passed"]:
            raise ExportError(f"parity gate failed: {parity}")
        if splits is not None:
            card = {**card, "baseline": baseline.card_baseline(splits, session)}
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        write_json_atomic(tmp / contract.MODEL_CARD_FILENAME, {
            **card,
            "model_name": contract.MODEL_NAME,
            "signature": {"name": contract.SIGNATURE_NAME,
                          "method": contract.PREDICT_METHOD_NAME,
                          "inputs": {k: {"dtype": d, "shape": list(s)}
                                     for k, (d, s) in contract.INPUT_SPEC.items()},
                          "outputs": {k: {"dtype": d, "shape": list(s)}
                                      for k, (d, s) in contract.OUTPUT_SPEC.items()}},
            "parity": parity,
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in files},
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                         "onnx_opset": ONNX_OPSET},
        })
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a server may run as another user
        # Claim and publish with SIGTERM held off: stopped between the two, an empty claimed
        # directory would be left as the newest version.
        with preemption.deferred():
            while True:
                version = max(contract.model_versions(model_base_path), default=0) + 1
                target = contract.version_path(model_base_path, version)
                try:
                    target.mkdir()  # claim the number; a concurrent export takes the next one
                except FileExistsError:
                    continue
                os.replace(tmp, target)  # atomic: replaces the empty claimed directory
                break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("published version %d at %s (parity: max |dp| %.2e, %d digit mismatches)", version,
             target, parity["max_abs_probability_difference"], parity["digit_mismatches"])
    return version


def run_identity(result: Mapping[str, Any]) -> dict[str, Any]:
    """A card's ``config``, ``config_digest`` and ``config_verified`` for a run's record: the
    config that trained it and its identity (training/identity.py); a null digest is a legacy
    run, not verified."""
    digest = result.get("config_digest")
    return {"config": result.get("config"), "config_digest": digest,
            "config_verified": digest is not None and digest == identity.digest(result["config"])}


def export_from_grid(grid: Grid, runs_dir: Path, model_base_path: Path, data: Mnist,
                     run: str | None = None, *, allow_legacy: bool = False) -> int:
    """Select a run of a grid (best by validation unless named, its record checked:
    training/selection.py) and publish it."""
    result = select_run(runs_dir / grid.name, run, [r.name for r in grid.runs],
                        allow_legacy=allow_legacy)
    return export_run(grid, runs_dir, model_base_path, data, result, named=run)


def export_run(grid: Grid, runs_dir: Path, model_base_path: Path, data: Mnist,
               result: dict[str, Any], *, named: str | None = None) -> int:
    """Publish the run of ``result``, a record :func:`select_run` chose (``named``: the --run it
    was chosen by), so checked against the config that trained its weights: the card's config
    is that config, and its ``reproduce`` commands retrain exactly that."""
    log.info("exporting %s (validation %.4f, selected %s)", result["name"],
             result["validation_accuracy"], "by name" if named else "by validation accuracy")
    model = keras.models.load_model(runs_dir / grid.name / result["name"] / MODEL_FILE)
    card = {
        "run": result["name"],
        "grid": grid.source,
        "index": result["index"],
        "selection": f"named run {named!r}" if named else "highest validation accuracy",
        # What reproduces this version from scratch (MNIST in $MNIST_DIR or downloaded):
        "reproduce": reproduce(grid, result),
        **run_identity(result),
        "metrics": {k: result.get(k) for k in ("training_accuracy", "validation_accuracy",
                                               "test_accuracy")},
        "parameter_count": result.get("parameter_count"),
        "data_checksums": data.checksums,
    }
    config = result.get("config") or {}
    return publish(model, model_base_path, data.test_images, card,
                   baseline.splits(data, config.get("train_limit")))
