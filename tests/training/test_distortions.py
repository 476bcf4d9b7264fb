"""Elastic distortions: the blur, the resampling and the fields, checked against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training import distortions, models
from training.train import training_inputs


def _digits(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28, 1), np.float32)
    images[:, 6:22, 10:18] = rng.random((n, 16, 8, 1))  # a blob inside a zero border
    return images


@pytest.mark.parametrize("size,sigma", [(28, 4.0), (28, 1.5), (9, 2.0)])
def test_blur_matrix_is_a_mirrored_gaussian_convolution(size, sigma):
    field = np.random.default_rng(1).uniform(-1, 1, (size, size)).astype(np.float32)
    kernel = distortions.gaussian_kernel(sigma)
    radius = len(kernel) // 2
    padded = np.pad(field, radius, mode="symmetric")
    # reference: separable convolution over the mirrored field, rows then columns
    rows = np.stack([np.convolve(r, kernel, mode="valid") for r in padded])
    expected = np.stack([np.convolve(c, kernel, mode="valid") for c in rows.T]).T
    matrix = distortions.blur_matrix(size, sigma)
    np.testing.assert_allclose(matrix @ field @ matrix.T, expected, atol=1e-5)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)  # constant fields survive


def test_warp_by_whole_pixels_shifts_and_fills_with_background():
    images = np.random.default_rng(2).random((3, 28, 28, 1), dtype=np.float32)
    field = np.zeros((3, 28, 28, 2), np.float32)
    np.testing.assert_allclose(distortions.warp(images, field), images, atol=1e-6)
    field[..., 0], field[..., 1] = 2.0, -1.0  # read 2 rows below, 1 column to the left
    out = distortions.warp(images, field).numpy()
    np.testing.assert_allclose(out[:, :-2, 1:], images[:, 2:, :-1], atol=1e-6)
    assert np.all(out[:, -2:] == 0) and np.all(out[:, :, :1] == 0)


def test_warp_interpolates_bilinearly():
    images = np.arange(28 * 28, dtype=np.float32).reshape(1, 28, 28, 1)
    field = np.full((1, 28, 28, 2), 0.25, np.float32)
    out = distortions.warp(images, field).numpy()
    # the ramp is linear in both axes: half-way reads are exact
    np.testing.assert_allclose(out[0, :27, :27, 0], images[0, :27, :27, 0] + 0.25 * 28 + 0.25,
                               rtol=1e-6)


def test_elastic_fields_are_per_image_independent_and_alpha_sized():
    seed = tf.constant([3, 4], tf.int64)
    field = distortions.displacement_fields(64, 28, 28, seed, 34.0, 4.0).numpy()
    assert field.shape == (64, 28, 28, 2)
    assert not np.allclose(field[0], field[1])  # one field per image, not per batch
    assert abs(np.corrcoef(field[..., 0].ravel(), field[..., 1].ravel())[0, 1]) < 0.1
    assert 1.0 < field.std() < 2.5  # pixels, for Simard's alpha 34, sigma 4
    half = distortions.displacement_fields(64, 28, 28, seed, 17.0, 4.0).numpy()
    np.testing.assert_allclose(half * 2, field, atol=1e-5)


def test_elastic_is_seeded_and_keeps_shape_range_and_ink():
    images = _digits()
    a = distortions.elastic(images, tf.constant([1, 1], tf.int64)).numpy()
    b = distortions.elastic(images, tf.constant([1, 1], tf.int64)).numpy()
    c = distortions.elastic(images, tf.constant([1, 2], tf.int64)).numpy()
    assert a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, images)
    assert a.min() >= 0 and a.max() <= 1
    assert 0.8 < a.sum() / images.sum() < 1.2  # moved, not erased
    unchanged = distortions.elastic(images, tf.constant([1, 1], tf.int64), alpha=0.0).numpy()
    np.testing.assert_allclose(unchanged, images, atol=1e-6)


def test_training_inputs_distort_differently_every_epoch():
    images, labels = _digits(16), np.arange(16)
    inputs = training_inputs(images, labels, 16, seed=5, elastic=(34.0, 4.0))
    ds = inputs["x"]
    (x1, y1), = list(ds)
    (x2, y2), = list(ds)
    assert x1.shape == (16, 28, 28, 1)
    order1, order2 = np.asarray(y1), np.asarray(y2)
    # every image once per epoch, and a second epoch draws new distortions
    assert sorted(order1) == sorted(labels)
    first = {int(i): x for i, x in zip(order1, np.asarray(x1), strict=True)}
    second = {int(i): x for i, x in zip(order2, np.asarray(x2), strict=True)}
    assert not np.allclose(first[0], second[0])


def test_affine_fields_rotate_zoom_and_shift_within_their_ranges():
    seed = tf.constant([5, 6], tf.int64)
    still = distortions.affine_fields(4, 28, 28, seed, rotation_degrees=0, shift=0, zoom=0)
    np.testing.assert_allclose(still, 0.0, atol=1e-5)
    shifted = distortions.affine_fields(64, 28, 28, seed, rotation_degrees=0, shift=0.1,
                                        zoom=0).numpy()
    per_image = shifted.reshape(64, -1, 2)
    np.testing.assert_allclose(per_image, np.broadcast_to(per_image[:, :1], per_image.shape),
                               atol=1e-4)  # one shift per image
    assert np.abs(shifted).max() <= 2.8 + 1e-4 and np.abs(shifted).max() > 1.5
    turned = distortions.affine_fields(64, 28, 28, seed, rotation_degrees=10, shift=0,
                                       zoom=0).numpy()
    # about the centre (13.5, 13.5): corners move at most r * theta, the centre stays
    corner_radius = np.hypot(13.5, 13.5)
    assert np.abs(turned).max() <= corner_radius * np.radians(10) + 1e-3
    centre = turned[:, 13:15, 13:15]
    assert np.abs(centre).max() < 0.1


def test_distort_resamples_once_and_blurs_less_than_chained_distortions(mnist):
    images = mnist.validation_images[:256]
    seed = tf.constant([7, 8], tf.int64)
    identity = distortions.distort(images, seed, affine=False, alpha=0.0).numpy()
    np.testing.assert_allclose(identity, images, atol=1e-6)

    def sharpness(x):
        return float(np.mean(np.abs(np.diff(np.asarray(x), axis=1))))

    ours = distortions.distort(images, seed)
    chained = distortions.elastic(models.augmenter(1)(images, training=True), seed)
    assert sharpness(images) * 0.9 < sharpness(ours)
    assert sharpness(chained) < sharpness(ours) * 0.9
