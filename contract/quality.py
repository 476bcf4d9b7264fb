"""Model-quality statistics: what the server measures of its inputs and answers, and what the
training job records as their baseline in the model card. One definition for both sides, so that
drift is measured against exactly what the model was trained on.

Per image (float32 pixels in [0, 1], ``[N, 28, 28, 1]``, ``[N, 28, 28]`` or ``[N, 784]``):

- ``ink_fraction``          the share of pixels above ``INK_THRESHOLD``
- ``mean_intensity``        the mean pixel value
- ``center_offset_pixels``  the distance, in pixels, from the image centre to the intensity's
  centre of mass (MNIST digits are centred by their centre of mass)

Per answer: the top-1 probability (``confidence``); an answer below ``LOW_CONFIDENCE`` counts as
low-confidence. The histogram buckets are the server's Prometheus buckets and the card's.
The baseline's shape in a model card (``baseline_of`` builds it)::

    {"input": {"images": N, "split": "...", "ink_fraction": {"mean": m, "std": s}, ...},
     "confidence": {"images": N, "split": "...", "low_threshold": 0.9, "low_share": x,
                    "buckets": [...], "counts": [...]}}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import contract

INK_THRESHOLD = 0.5
LOW_CONFIDENCE = 0.9
STATISTICS = ("ink_fraction", "mean_intensity", "center_offset_pixels")
BUCKETS: dict[str, tuple[float, ...]] = {
    "ink_fraction": (0.02, 0.05, 0.08, 0.11, 0.14, 0.17, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75),
    "mean_intensity": (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75),
    "center_offset_pixels": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
}
CONFIDENCE_BUCKETS = (0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999)

_SIDE = contract.IMAGE_SIZE
_CENTRE = (_SIDE - 1) / 2
_COORDS = np.arange(_SIDE, dtype=np.float32)
# Per pixel in row-major order: 1, its row, its column. One dot product of an image with these
# gives its mass and its two first moments (float64, so the sums over 784 pixels stay exact).
_MOMENTS = np.stack(
    [np.ones(_SIDE * _SIDE), np.repeat(_COORDS, _SIDE), np.tile(_COORDS, _SIDE)], axis=1
).astype(np.float64)


def input_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Each image's statistics: ``{name: float array [N]}`` (an all-black image is centred)."""
    if len(images) == 1:
        return _one_image_statistics(np.asarray(images, dtype=np.float32).reshape(_SIDE * _SIDE))
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), _SIDE, _SIDE)
    rows, cols = flat.sum(axis=2), flat.sum(axis=1)  # [N, 28] each: mass per row, per column
    mass = rows.sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    dy = np.where(mass > 0, rows @ _COORDS / safe - _CENTRE, 0.0)
    dx = np.where(mass > 0, cols @ _COORDS / safe - _CENTRE, 0.0)
    return {
        "ink_fraction": (flat > INK_THRESHOLD).mean(axis=(1, 2)),
        "mean_intensity": mass / (_SIDE * _SIDE),
        "center_offset_pixels": np.hypot(dx, dy),
    }


def _one_image_statistics(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """``input_statistics`` of one image (the server's common request): one dot product and
    scalar arithmetic in place of a dozen array operations, each with numpy's per-call overhead."""
    mass, row_moment, column_moment = (pixels @ _MOMENTS).tolist()
    offset = 0.0
    if mass > 0:
        offset = math.hypot(row_moment / mass - _CENTRE, column_moment / mass - _CENTRE)
    return {
        "ink_fraction": np.array([np.count_nonzero(pixels > INK_THRESHOLD) / pixels.size]),
        "mean_intensity": np.array([mass / pixels.size], dtype=np.float32),
        "center_offset_pixels": np.array([offset], dtype=np.float32),
    }


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """The top-1 probability of each answer, [N]."""
    return np.asarray(probabilities).max(axis=1)


def baseline_of(images: np.ndarray, probabilities: np.ndarray, splits: tuple[str, str]) -> dict[str, Any]:
    """The model card's baseline: input statistics of ``images`` (the data the model was trained
    on, named by ``splits[0]``), confidence of ``probabilities`` (its answers on ``splits[1]``)."""
    stats = input_statistics(images)
    top = confidence(probabilities)
    edges = np.asarray(CONFIDENCE_BUCKETS)
    counts = np.searchsorted(edges, top, side="left")  # bucket index: le=edge, as Prometheus counts
    return {
        "input": {
            "images": len(images),
            "split": splits[0],
            **{name: {"mean": float(v.mean()), "std": float(v.std())} for name, v in stats.items()},
        },
        "confidence": {
            "images": len(top),
            "split": splits[1],
            "low_threshold": LOW_CONFIDENCE,
            "low_share": float((top < LOW_CONFIDENCE).mean()),
            "buckets": list(CONFIDENCE_BUCKETS),
            "counts": np.bincount(counts, minlength=len(edges) + 1).tolist(),
        },
    }
