"""Export: repository layout, the contract's signature in both formats, parity, atomic publish."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import contract
from training import export, identity, records
from training.config import RunConfig


def test_repository_layout_and_model_card(model_base_path: Path):
    assert contract.model_versions(model_base_path) == [1]
    version = contract.version_path(model_base_path, 1)
    for name in (contract.SAVED_MODEL_FILENAME, contract.ONNX_FILENAME,
                 contract.MODEL_CARD_FILENAME, "variables/variables.index"):
        assert (version / name).is_file(), name
    assert not [p for p in model_base_path.iterdir() if p.name.startswith(".")]  # no leftovers
    card = json.loads((version / contract.MODEL_CARD_FILENAME).read_text())
    assert card["parity"]["passed"] and card["parity"]["images"] == 10000
    assert card["parity"]["max_abs_probability_difference"] <= 1e-5
    assert card["parity"]["digit_mismatches"] == 0
    assert card["selection"] == "highest validation accuracy"
    assert card["metrics"]["validation_accuracy"] >= 0.95
    assert set(card["data_checksums"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    for name, digest in card["files"].items():
        assert hashlib.sha256((version / name).read_bytes()).hexdigest() == digest


def test_onnx_model_speaks_the_contract(model_base_path: Path, mnist_test):
    session = ort.InferenceSession(str(model_base_path / "1" / contract.ONNX_FILENAME),
                                   providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == (contract.INPUT_NAME, "tensor(float)",
                                                   list(contract.INPUT_SHAPE))
    outputs = {o.name: o.type for o in session.get_outputs()}
    assert outputs == {contract.OUTPUT_PROBABILITIES: "tensor(float)",
                       contract.OUTPUT_DIGIT: "tensor(int64)"}
    images, labels = mnist_test
    probabilities, digits = session.run(list(contract.OUTPUT_NAMES),
                                        {contract.INPUT_NAME: images[:2000]})
    assert probabilities.shape == (2000, 10) and digits.shape == (2000,)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(digits, probabilities.argmax(axis=1))
    assert np.mean(digits == labels[:2000]) >= 0.95


def test_savedmodel_signature_matches_onnx(model_base_path: Path, mnist_test):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_base_path / "1"))
    signature = loaded.signatures[contract.SIGNATURE_NAME]
    (name, spec), = signature.structured_input_signature[1].items()
    assert name == contract.INPUT_NAME and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, *contract.INPUT_SHAPE]
    assert set(signature.structured_outputs) == set(contract.OUTPUT_NAMES)
    images = mnist_test[0][:500]
    out = signature(image=tf.constant(images))
    session = ort.InferenceSession(str(model_base_path / "1" / contract.ONNX_FILENAME),
                                   providers=["CPUExecutionProvider"])
    p, d = session.run(list(contract.OUTPUT_NAMES), {contract.INPUT_NAME: images})
    assert out[contract.OUTPUT_DIGIT].dtype == tf.int64
    np.testing.assert_array_equal(out[contract.OUTPUT_DIGIT].numpy(), d)
    assert np.abs(out[contract.OUTPUT_PROBABILITIES].numpy() - p).max() <= 1e-5


def _fake_run(grid_dir: Path, index: int, validation: float, test: float, status="completed"):
    config = RunConfig(name=f"run{index}", group="grid")
    run_dir = grid_dir / config.name
    identity.claim(run_dir, config)  # config.json and its digest, as a run writes them
    (run_dir / records.MODEL_FILE).write_bytes(b"placeholder for selection only")
    records.write_json_atomic(run_dir / records.RESULT_FILE, {
        "name": config.name, "index": index, "status": status,
        "validation_accuracy": validation, "test_accuracy": test, "config": config.to_dict(),
        "config_digest": identity.digest(config.to_dict())})


def test_selection_uses_validation_never_test(tmp_path):
    _fake_run(tmp_path, 0, validation=0.990, test=0.999)  # best on test: must not win
    _fake_run(tmp_path, 1, validation=0.995, test=0.990)
    _fake_run(tmp_path, 2, validation=0.999, test=0.999, status="diverged")
    _fake_run(tmp_path, 3, validation=0.995, test=0.980)  # a tie goes to the lower index
    assert export.select_run(tmp_path)["name"] == "run1"
    assert export.select_run(tmp_path, run="run3")["name"] == "run3"
    assert export.select_run(tmp_path, run="0")["name"] == "run0"
    with pytest.raises(export.ExportError, match="no completed run 'run2'"):
        export.select_run(tmp_path, run="run2")
    with pytest.raises(export.ExportError, match="no completed runs"):
        export.select_run(tmp_path / "empty")


@pytest.fixture(scope="module")
def trained_model(trained_run):
    import keras

    return keras.models.load_model(trained_run / "lenet5-adam-0.001-relu-b128" / records.MODEL_FILE)


def test_failed_parity_publishes_nothing(trained_model, mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no export can pass this gate
    with pytest.raises(export.ExportError, match="parity gate failed"):
        export.publish(trained_model, tmp_path, mnist.test_images[:100], {})
    assert list(tmp_path.iterdir()) == []


def test_publish_is_atomic_and_takes_the_next_version(trained_model, model_base_path, mnist,
                                                      tmp_path):
    repo = tmp_path / contract.MODEL_NAME
    shutil.copytree(model_base_path, repo)
    (repo / "7").mkdir()  # a stray empty version number is skipped, never overwritten
    seen: dict[int, set[str]] = {}
    stop = threading.Event()

    def reader():  # what a polling server sees while the export runs
        while not stop.is_set():
            for version in contract.model_versions(repo):
                if version > 1 and version != 7:
                    seen.setdefault(version, set()).update(
                        p.name for p in contract.version_path(repo, version).iterdir())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        version = export.publish(trained_model, repo, mnist.test_images[:200], {"run": "test"})
        deadline = time.monotonic() + 10
        while version not in seen and time.monotonic() < deadline:  # let the reader look at it
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert version == 8
    assert contract.model_versions(repo) == [1, 7, 8]
    complete = {contract.ONNX_FILENAME, contract.SAVED_MODEL_FILENAME,
                contract.MODEL_CARD_FILENAME, "variables"}
    assert seen and all(complete <= names for names in seen.values())  # never half-written
    assert not [p for p in repo.iterdir() if p.name.startswith(export.TMP_PREFIX)]
