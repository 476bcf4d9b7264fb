"""Session fixtures shared by every test package: real MNIST and a real exported model.

- ``mnist_dir``: the directory of the four official MNIST files, from $MNIST_DIR (CI and the
  Makefile point it at ../shared/data/mnist); the tests never download.
- ``mnist``: the verified lab split (training.data.Mnist); ``mnist_test``: (images, labels).
- ``trained_run``: a real LeNet-5 run (the lab's best config, one epoch on the full training
  split) trained once per session through training.train, in a temporary grid directory.
- ``model_base_path``: a model repository ``<tmp>/lenet5/`` with version 1 exported from that run
  by training.export (SavedModel + model.onnx + model-card.json, parity-checked).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Before any TensorFlow import (see training/__main__.py).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contract  # noqa: E402

FIXTURE_RUN_INDEX = 12  # lenet5-adam-0.001-relu-b128, the lab's best grid config


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = os.environ.get(contract.MNIST_DIR_ENV)
    if not path or not Path(path).is_dir():
        pytest.fail(f"set ${contract.MNIST_DIR_ENV} to the directory of the MNIST files "
                    "(make test points it at ../shared/data/mnist)")
    return Path(path)


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path):
    from training import data

    return data.load(mnist_dir, download=False)


@pytest.fixture(scope="session")
def mnist_test(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist.test_images, mnist.test_labels


@pytest.fixture(scope="session")
def trained_run(mnist, tmp_path_factory) -> Path:
    """The grid directory holding one real, finished run; returns the grid dir."""
    from training import config, train

    grid_dir = tmp_path_factory.mktemp("runs") / "lab"
    run_config = config.run_config("lab", FIXTURE_RUN_INDEX).with_overrides(epochs=1)
    train.run(run_config, mnist, grid_dir / run_config.name, index=FIXTURE_RUN_INDEX, grid="lab")
    return grid_dir


@pytest.fixture(scope="session")
def model_base_path(trained_run: Path, mnist, tmp_path_factory) -> Path:
    from training import config, export

    base = tmp_path_factory.mktemp("models") / contract.MODEL_NAME
    export.export_from_grid(config.load_grid("lab"), trained_run.parent, base, mnist)
    return base
