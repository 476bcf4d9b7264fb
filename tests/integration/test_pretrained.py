"""The shipped models (pretrained/models.config: lenet5, and the committee lenet5-ensemble): each
one's files are the ones its card hashes, and served by the real server as ``make serve`` serves
them (the config file) each scores at least its card's test accuracy on MNIST's 10,000 test
images."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import contract
from client.api import connect
from client.base import ModelSpec
from contract import model_config
from contract.mnist import load_split, to_model_input
from tests.integration.conftest import start_server

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = ROOT / "pretrained" / contract.MODEL_NAME
MODELS_CONFIG = ROOT / "pretrained" / "models.config"
SHIPPED = {entry.name: Path(entry.base_path) for entry in model_config.read_file(MODELS_CONFIG)}
ENSEMBLE = "lenet5-ensemble"
REQUESTS = ROOT / "docs" / "requests"
TOLERANCE = 0.0005  # 0.05 points: the server's ONNX model against the card's Keras figure


def _card(name: str) -> tuple[Path, dict]:
    versions = contract.model_versions(SHIPPED[name])
    assert versions == [1], f"the shipped repository holds one version, found {versions}"
    version_dir = contract.version_path(SHIPPED[name], 1)
    return version_dir, json.loads((version_dir / contract.MODEL_CARD_FILENAME).read_text())


def test_the_shipped_config_serves_the_single_model_and_the_committee():
    assert list(SHIPPED) == [contract.MODEL_NAME, ENSEMBLE]
    assert SHIPPED[contract.MODEL_NAME] == PRETRAINED


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_files_match_their_card(name: str):
    version_dir, card = _card(name)
    on_disk = {str(p.relative_to(version_dir)) for p in version_dir.rglob("*") if p.is_file()}
    assert on_disk == set(card["files"]) | {contract.MODEL_CARD_FILENAME}
    for file, digest in card["files"].items():
        assert hashlib.sha256((version_dir / file).read_bytes()).hexdigest() == digest, file
    assert card["parity"]["passed"] and card["parity"]["images"] == 10_000
    assert set(card["data_checksums"]) == set(contract.mnist.FILES)
    if name == ENSEMBLE:  # chosen on validation among the ensemble grid's runs, every one listed
        assert card["ensemble"] == ENSEMBLE and card["grid"] == "training/grids/ensemble.toml"
        assert len(card["members"]) == card["k"] and not card["missing"]
        assert [m["rank"] for m in card["members"]] == list(range(1, card["k"] + 1))
        assert all(m["config_verified"] and m["config_digest"] for m in card["members"])
        assert card["reproduce"][-1].startswith("python -m training export --grid ensemble --ensemble ")
    else:
        assert card["grid"] == "training/grids/lab.toml"
        assert card["selection"] == "highest validation accuracy"
        assert card["reproduce"][0].startswith("python -m training run --grid lab --index ")
        size = sum((version_dir / file).stat().st_size for file in card["files"])
        assert size < 1.5e6, f"the shipped model should stay small, it is {size / 1e6:.2f} MB"


@pytest.mark.slow
def test_served_shipped_models_score_their_cards_test_accuracy(mnist_dir, tmp_path):
    images, labels = load_split("t10k", str(mnist_dir))
    server = start_server(None, tmp_path / "server.log", model_config_file=MODELS_CONFIG)
    try:
        for name in SHIPPED:
            digits = []
            with connect(grpc=server.grpc_target, spec=ModelSpec(name=name), timeout=60) as client:
                for start in range(0, len(images), 1000):
                    prediction = client.predict(to_model_input(images[start:start + 1000]))
                    assert prediction.model_version == 1
                    digits.append(prediction.digits)
            accuracy = float(np.mean(np.concatenate(digits) == labels))
            assert accuracy >= _card(name)[1]["metrics"]["test_accuracy"] - TOLERANCE, (name, accuracy)
    finally:
        server.stop()


def _post(url: str, path: Path) -> dict:
    request = urllib.request.Request(url, data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_readmes_request_files_are_mnist_test_image_0_and_answer_7(mnist_dir, tmp_path):
    # README and docs/serving.md curl these files and print the answers: keep them true.
    images, _ = load_split("t10k", str(mnist_dir))
    expected = to_model_input(images[:1])
    tf_file, v2_file = REQUESTS / "digit-7-mnist-t10k-0.json", REQUESTS / "digit-7-mnist-t10k-0.v2.json"
    tf_request, v2_request = json.loads(tf_file.read_text()), json.loads(v2_file.read_text())
    # (pixels written with 4 decimals, to keep the files readable)
    np.testing.assert_allclose(np.asarray(tf_request["instances"], np.float32), expected, atol=5e-5)
    (tensor,) = v2_request["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("image", "FP32", [1, 28, 28, 1])
    np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32),
                                  np.asarray(tf_request["instances"], np.float32))
    server = start_server(PRETRAINED, tmp_path / "server.log")
    try:
        tf_answer = _post(f"{server.rest_url}/v1/models/lenet5:predict", tf_file)
        v2_answer = _post(f"{server.rest_url}/v2/models/lenet5/infer", v2_file)
    finally:
        server.stop()
    (prediction,) = tf_answer["predictions"]
    assert prediction["digit"] == 7
    outputs = {output["name"]: output for output in v2_answer["outputs"]}
    assert v2_answer["id"] == v2_request["id"] and v2_answer["model_version"] == "1"
    assert outputs["digit"]["data"] == [7]
    assert outputs["probabilities"]["data"] == prediction["probabilities"]
