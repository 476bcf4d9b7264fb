"""The model-quality statistics: known images give known values, every batch size and shape the
same ones, and the model card's baseline has the shape the server reads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contract import mnist, quality

SIDE = 28
PIXELS = SIDE * SIDE


def _image(rows: slice = slice(0, 0), cols: slice = slice(0, 0), value: float = 1.0) -> np.ndarray:
    """One [28, 28, 1] image, black but for a rectangle of ``value``."""
    image = np.zeros((SIDE, SIDE, 1), np.float32)
    image[rows, cols] = value
    return image


EMPTY = _image()
CENTRED = _image(slice(12, 16), slice(12, 16))  # 4x4 around the centre (13.5, 13.5)
CORNER = _image(slice(0, 4), slice(0, 4))  # 4x4 whose centre of mass is (1.5, 1.5)
RIGHT = _image(slice(12, 16), slice(20, 24))  # centre of mass (13.5, 21.5): 8 px right
FAINT = _image(slice(12, 16), slice(12, 16), 0.4)  # grey below the ink threshold

KNOWN = {
    # image: (ink_fraction, mean_intensity, center_offset_pixels)
    "empty": (EMPTY, (0.0, 0.0, 0.0)),  # an all-black image counts as centred
    "centred": (CENTRED, (16 / PIXELS, 16 / PIXELS, 0.0)),
    "corner": (CORNER, (16 / PIXELS, 16 / PIXELS, math.hypot(12, 12))),
    "right": (RIGHT, (16 / PIXELS, 16 / PIXELS, 8.0)),
    "faint": (FAINT, (0.0, 0.4 * 16 / PIXELS, 0.0)),
}


@pytest.mark.parametrize("name", KNOWN)
def test_known_images_alone_and_in_a_batch(name: str) -> None:
    image, expected = KNOWN[name]
    alone = quality.input_statistics(image[None])
    batch = quality.input_statistics(np.stack([CORNER, image, EMPTY]))
    for statistic, value in zip(quality.STATISTICS, expected, strict=True):
        assert alone[statistic].shape == (1,)
        assert alone[statistic][0] == pytest.approx(value, abs=1e-6), statistic
        assert batch[statistic][1] == pytest.approx(value, abs=1e-6), statistic


def test_every_accepted_shape_gives_the_same_statistics() -> None:
    images = np.stack([CENTRED, CORNER, RIGHT])
    expected = quality.input_statistics(images)
    for shaped in (images.reshape(3, SIDE, SIDE), images.reshape(3, PIXELS), images.astype(np.float64)):
        got = quality.input_statistics(shaped)
        for statistic in quality.STATISTICS:
            np.testing.assert_allclose(got[statistic], expected[statistic], atol=1e-6)


@pytest.fixture(scope="module")
def mnist_images(mnist_dir) -> np.ndarray:
    images, _ = mnist.load_split("t10k", str(mnist_dir))
    return mnist.to_model_input(images[:2000])


def test_mnist_digits_look_like_mnist(mnist_images: np.ndarray) -> None:
    stats = quality.input_statistics(mnist_images)
    # MNIST digits are centred by their centre of mass (within a pixel of the image centre) and
    # cover a tenth to a fifth of the image with ink.
    assert np.median(stats["center_offset_pixels"]) < 1.0
    assert 0.08 < stats["ink_fraction"].mean() < 0.2
    assert 0.08 < stats["mean_intensity"].mean() < 0.2
    shifted = np.roll(mnist_images, 5, axis=2)  # 5 px to the right: drift the offset must show
    assert np.median(quality.input_statistics(shifted)["center_offset_pixels"]) > 4.0


def test_one_image_at_a_time_matches_the_batch(mnist_images: np.ndarray) -> None:
    """The one-image path (the server's common request) gives the batch's values within 1e-5."""
    rng = np.random.default_rng(0)
    images = np.concatenate([mnist_images[:300], rng.random((50, SIDE, SIDE, 1), dtype=np.float32),
                             np.stack([EMPTY, CENTRED, CORNER, RIGHT, FAINT])])
    batch = quality.input_statistics(images)
    for index in range(len(images)):
        alone = quality.input_statistics(images[index:index + 1])
        for statistic in quality.STATISTICS:
            assert alone[statistic].dtype == batch[statistic].dtype
            assert abs(float(alone[statistic][0]) - float(batch[statistic][index])) < 1e-5, (index, statistic)


def test_confidence_is_the_top_probability() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    np.testing.assert_array_equal(quality.confidence(probabilities), np.array([0.7, 0.5], np.float32))


def test_baseline_shape_and_counts() -> None:
    images = np.stack([CENTRED, CORNER, EMPTY, RIGHT])
    # top-1 probabilities 0.3 (on an edge: le=0.3), 0.6, 0.9 (an edge), 0.9995, 1.0
    top = [0.3, 0.6, 0.9, 0.9995, 1.0]
    probabilities = np.array([[p] + [(1 - p) / 9] * 9 for p in top])  # float64: edges exact
    baseline = quality.baseline_of(images, probabilities, ("train", "validation"))
    assert set(baseline) == {"input", "confidence"}
    inputs = baseline["input"]
    assert (inputs["images"], inputs["split"]) == (4, "train")
    assert set(inputs) == {"images", "split", *quality.STATISTICS}
    expected_ink = np.array([16, 16, 0, 16]) / PIXELS
    assert inputs["ink_fraction"]["mean"] == pytest.approx(expected_ink.mean())
    assert inputs["ink_fraction"]["std"] == pytest.approx(expected_ink.std())
    offsets = np.array([0.0, math.hypot(12, 12), 0.0, 8.0])
    assert inputs["center_offset_pixels"]["mean"] == pytest.approx(offsets.mean(), abs=1e-5)
    assert inputs["center_offset_pixels"]["std"] == pytest.approx(offsets.std(), abs=1e-5)
    confidence = baseline["confidence"]
    assert (confidence["images"], confidence["split"]) == (5, "validation")
    assert confidence["low_threshold"] == quality.LOW_CONFIDENCE
    assert confidence["low_share"] == pytest.approx(2 / 5)  # 0.3 and 0.6; 0.9 is not below 0.9
    assert confidence["buckets"] == list(quality.CONFIDENCE_BUCKETS)
    # buckets (0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999) and +Inf, each counting le its edge
    assert confidence["counts"] == [1, 0, 1, 1, 0, 0, 0, 2]
    assert sum(confidence["counts"]) == len(top)
