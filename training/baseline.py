"""The model card's ``baseline``: what an exported model was trained on and how sure it was there,
in the server's own statistics (:func:`contract.quality.baseline_of`), so that its drift and
confidence alerts compare against the model's training data.

- ``input``: the statistics of the images the run trained on, its training split (MNIST's 55,000
  after the validation split, or the first ``train_limit`` of them), undistorted;
- ``confidence``: the top-1 probabilities of the exported model on the validation split, through
  ONNX Runtime on ``model.onnx``, as the server computes them.

The test set is never used. ``python -m training export`` (training/export.py) and
``scripts/card_baseline.py`` (the shipped model's card) both compute it with :func:`card_baseline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import contract
from contract import quality
from training.data import Mnist, training_set

BATCH = 1000  # images per ONNX Runtime call, as the parity check
VALIDATION_SPLIT = "validation"


@dataclass(frozen=True)
class Splits:
    """The images a baseline is computed on, and the names the card gives them."""

    train_images: np.ndarray
    train_name: str
    validation_images: np.ndarray
    validation_name: str = VALIDATION_SPLIT


def splits(data: Mnist, train_limit: int | None) -> Splits:
    """A run's training split (``train_limit`` as its config says) and the validation split."""
    images, _ = training_set(data, train_limit)
    limited = len(images) < len(data.train_images)
    name = f"train (the first {len(images):,} images)" if limited else "train"
    return Splits(images, name, data.validation_images)


def onnx_session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session on ``path`` (a model.onnx): the same answers on any host."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(session: ort.InferenceSession, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's ``probabilities`` [N, 10] and ``digit`` [N] on ``images``, in batches."""
    probabilities, digits = [], []
    for start in range(0, len(images), BATCH):
        p, d = session.run(list(contract.OUTPUT_NAMES),
                           {contract.INPUT_NAME: images[start:start + BATCH]})
        probabilities.append(p)
        digits.append(d)
    return np.concatenate(probabilities), np.concatenate(digits)


def card_baseline(data: Splits, session: ort.InferenceSession) -> dict[str, Any]:
    """The card's ``baseline``: input statistics of the training split, confidence of the model
    (``session``) on the validation split."""
    probabilities, _ = onnx_outputs(session, data.validation_images)
    return quality.baseline_of(data.train_images, probabilities,
                               (data.train_name, data.validation_name))
