"""The model card's baseline (training/baseline.py): written by the export on the run's training
and validation splits, and reproduced for the shipped card by scripts/card_baseline.py."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import contract
from contract import quality
from training import baseline, data

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "pretrained" / contract.MODEL_NAME / "1"
SCRIPT = ROOT / "scripts" / "card_baseline.py"


def _card(version_dir: Path) -> dict:
    return json.loads((version_dir / contract.MODEL_CARD_FILENAME).read_text())


def _assert_close(actual, expected, path="baseline"):
    """Same structure, same strings and counts, floats within 1e-6."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=0, abs_tol=1e-6), (path, actual, expected)
    else:
        assert actual == expected, (path, actual, expected)


def test_exported_card_has_the_training_baseline(model_base_path: Path, mnist):
    version = contract.version_path(model_base_path, 1)
    found = _card(version)["baseline"]
    assert set(found) == {"input", "confidence"}

    # Input statistics: the 55,000 training images the fixture's run trained on.
    inputs = found["input"]
    assert (inputs["split"], inputs["images"]) == ("train", len(mnist.train_images)) == ("train", 55000)
    assert set(inputs) == {"split", "images", *quality.STATISTICS}
    assert 0.05 < inputs["ink_fraction"]["mean"] < 0.3
    assert 0 < inputs["mean_intensity"]["mean"] < 0.3
    assert all(inputs[name]["std"] > 0 for name in quality.STATISTICS)

    # Confidence: the exported model's answers on the 5,000 validation images.
    conf = found["confidence"]
    assert (conf["split"], conf["images"]) == ("validation", len(mnist.validation_images)) == (
        "validation", 5000)
    assert conf["buckets"] == list(quality.CONFIDENCE_BUCKETS)
    assert len(conf["counts"]) == len(conf["buckets"]) + 1 and sum(conf["counts"]) == 5000
    assert conf["low_threshold"] == quality.LOW_CONFIDENCE and 0 <= conf["low_share"] < 0.2

    # Exactly those splits (never the test set), and the model.onnx the version holds.
    session = baseline.onnx_session(version / contract.ONNX_FILENAME)
    probabilities, _ = baseline.onnx_outputs(session, mnist.validation_images)
    expected = quality.baseline_of(mnist.train_images, probabilities, ("train", "validation"))
    _assert_close(found, expected)


def test_splits_follow_the_runs_train_limit(mnist):
    full = baseline.splits(mnist, None)
    assert full.train_images is mnist.train_images and full.train_name == "train"
    assert full.validation_images is mnist.validation_images
    assert full.validation_name == "validation"
    limited = baseline.splits(mnist, 20000)
    np.testing.assert_array_equal(limited.train_images, mnist.train_images[:20000])
    assert limited.train_name == "train (the first 20,000 images)"
    np.testing.assert_array_equal(limited.train_images, data.training_set(mnist, 20000)[0])
    assert limited.validation_images is mnist.validation_images


def _run_script(version_dir: Path, mnist_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(version_dir), "--mnist-dir",
                           str(mnist_dir)], capture_output=True, text=True, timeout=300)


def test_script_reproduces_the_shipped_cards_baseline(mnist_dir: Path, tmp_path: Path):
    shipped = _card(SHIPPED)
    assert "baseline" in shipped, "the shipped card has no baseline: run scripts/card_baseline.py"
    copy = tmp_path / "1"
    shutil.copytree(SHIPPED, copy)
    (copy / contract.MODEL_CARD_FILENAME).write_text(json.dumps(
        {k: v for k, v in shipped.items() if k != "baseline"}, indent=2, sort_keys=True) + "\n")

    done = _run_script(copy, mnist_dir)
    assert done.returncode == 0, done.stderr
    rewritten = _card(copy)
    _assert_close(rewritten["baseline"], shipped["baseline"])
    assert {k: v for k, v in rewritten.items() if k != "baseline"} == {
        k: v for k, v in shipped.items() if k != "baseline"}  # every other key kept
    # The export's format: the committed card is byte for byte what the script writes.
    assert (copy / contract.MODEL_CARD_FILENAME).read_text() == (
        SHIPPED / contract.MODEL_CARD_FILENAME).read_text()


def test_script_refuses_a_model_its_card_does_not_hash(mnist_dir: Path, tmp_path: Path):
    copy = tmp_path / "1"
    shutil.copytree(SHIPPED, copy)
    card = copy / contract.MODEL_CARD_FILENAME
    before = json.loads(card.read_text())
    before["files"][contract.ONNX_FILENAME] = "0" * 64
    card.write_text(json.dumps(before, indent=2, sort_keys=True) + "\n")

    done = _run_script(copy, mnist_dir)
    assert done.returncode == 2 and "is not the model.onnx its card hashes" in done.stderr
    assert json.loads(card.read_text()) == before


@pytest.mark.parametrize("limit", [None, 1000])
def test_card_baseline_uses_the_session_on_validation(mnist, limit):
    """card_baseline = baseline_of(training split, the session's answers on validation)."""

    class Fixed:  # a stand-in session: the same confident answer for every image
        def run(self, names, feeds):
            (images,) = feeds.values()
            p = np.zeros((len(images), 10), np.float32)
            p[:, 3] = 0.95
            p[:, 5] = 0.05
            return p, p.argmax(axis=1)

    splits = baseline.splits(mnist, limit)
    found = baseline.card_baseline(splits, Fixed())
    assert found["confidence"]["images"] == 5000 and found["confidence"]["low_share"] == 0.0
    assert found["confidence"]["counts"] == [0, 0, 0, 0, 5000, 0, 0, 0]  # 0.95: le=0.95 bucket
    assert found["input"]["images"] == (limit or 55000)
