"""Elastic distortions (Simard, Steinkraus & Platt 2003), batched, in TensorFlow.

Every image gets its own random displacement field: uniform noise in [-1, 1] per pixel and
axis, smoothed by a Gaussian of standard deviation ``sigma`` pixels, scaled by ``alpha``. The
image is resampled bilinearly at the displaced coordinates, with background (0) outside it.
Simard et al. used sigma 4, alpha 34 on MNIST (SIMARD_SIGMA, SIMARD_ALPHA).

Affine and elastic distortions are composed into one displacement field and the image is
resampled once: each bilinear resampling blurs, and twice-blurred training digits taught a model
the blur (run 28's first attempt, which chained Keras' affine layers and this warp: see
docs/experiments.md).

Keras 3.15 has ``keras.layers.RandomElasticTransform``, but its TensorFlow kernel draws the x and
y fields from the same seed (every displacement points along the diagonal) and, when the batch
size is unknown at trace time (as in a ``tf.data`` map), one field serves the whole batch. Hence
these few functions of our own.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

SIMARD_ALPHA = 34.0
SIMARD_SIGMA = 4.0
# The affine distortions' ranges (models.augmenter uses them too): rotation in degrees, shift
# and zoom as fractions of the image size.
ROTATION_DEGREES = 10.0
SHIFT = 0.1
ZOOM = 0.1


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """[size, size] matrix of a 1-D Gaussian blur with mirrored borders (scipy's default).

    Blurring a field f along both axes is then M @ f @ M.T: two small matmuls, much cheaper on
    a CPU than a depthwise convolution with the same kernel.
    """
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    matrix = np.zeros((size, size), np.float32)
    for i in range(size):
        for t, weight in zip(range(-radius, radius + 1), kernel, strict=True):
            j = i + t
            while not 0 <= j < size:  # symmetric reflection: d c b a | a b c d | d c b a
                j = -j - 1 if j < 0 else 2 * size - j - 1
            matrix[i, j] += weight
    return matrix


def displacement_fields(batch: tf.Tensor, height: int, width: int, seed: tf.Tensor,
                        alpha: float, sigma: float) -> tf.Tensor:
    """[batch, height, width, 2] displacements (dy, dx) in pixels, one field per image."""
    noise = tf.random.stateless_uniform([batch, 2, height, width], seed=seed, minval=-1.0,
                                        maxval=1.0)
    along_y = tf.constant(blur_matrix(height, sigma))
    along_x_t = tf.constant(blur_matrix(width, sigma).T)
    smooth = tf.matmul(tf.matmul(along_y, noise), along_x_t)  # [batch, 2, height, width]
    return alpha * tf.transpose(smooth, [0, 2, 3, 1])


def warp(images: tf.Tensor, field: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling: out[b, y, x] = images[b, y + dy, x + dx], zero outside the image.

    images: [B, H, W, C] float; field: [B, H, W, 2] (dy, dx) in pixels.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    ys, xs = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32),
                         indexing="ij")
    # One pixel of zero border, coordinates clamped into it: outside reads as background.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    hmax, wmax = tf.cast(h + 1, tf.float32), tf.cast(w + 1, tf.float32)
    y = tf.clip_by_value(ys[None] + field[..., 0] + 1.0, 0.0, hmax)
    x = tf.clip_by_value(xs[None] + field[..., 1] + 1.0, 0.0, wmax)
    y0, x0 = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, h + 1), tf.minimum(x0i + 1, w + 1)
    flat = tf.reshape(padded, [b, (h + 2) * (w + 2), c])

    def at(yi: tf.Tensor, xi: tf.Tensor) -> tf.Tensor:
        index = tf.reshape(yi * (w + 2) + xi, [b, -1])
        return tf.reshape(tf.gather(flat, index, batch_dims=1), [b, h, w, c])

    return ((1 - wy) * (1 - wx) * at(y0i, x0i) + (1 - wy) * wx * at(y0i, x1i)
            + wy * (1 - wx) * at(y1i, x0i) + wy * wx * at(y1i, x1i))


def affine_fields(batch: tf.Tensor, height: int, width: int, seed: tf.Tensor,
                  rotation_degrees: float = ROTATION_DEGREES, shift: float = SHIFT,
                  zoom: float = ZOOM) -> tf.Tensor:
    """[batch, height, width, 2] displacements of a random rotation, zoom and shift per image.

    The output pixel p reads the input at c + R(theta) (p - c) / s + t (c the image centre).
    """
    u = tf.random.stateless_uniform([batch, 4], seed=seed, minval=-1.0, maxval=1.0)
    theta = u[:, 0] * rotation_degrees * math.pi / 180.0
    scale = 1.0 + u[:, 1] * zoom
    ty, tx = u[:, 2] * shift * height, u[:, 3] * shift * width
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) - cy,
                         tf.range(width, dtype=tf.float32) - cx, indexing="ij")
    cos, sin = (tf.cos(theta) / scale)[:, None, None], (tf.sin(theta) / scale)[:, None, None]
    src_y = cos * ys[None] - sin * xs[None] + ty[:, None, None]
    src_x = sin * ys[None] + cos * xs[None] + tx[:, None, None]
    return tf.stack([src_y - ys[None], src_x - xs[None]], axis=-1)


def distort(images: tf.Tensor, seed: tf.Tensor, *, affine: bool = True,
            alpha: float = SIMARD_ALPHA, sigma: float = SIMARD_SIGMA) -> tf.Tensor:
    """Random affine (if ``affine``) plus elastic (if ``alpha``) distortions, resampled once."""
    images = tf.convert_to_tensor(images, tf.float32)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    field = tf.zeros([batch, height, width, 2])
    if affine:
        field += affine_fields(batch, height, width, seeds[0])
    if alpha:
        field += displacement_fields(batch, height, width, seeds[1], alpha, sigma)
    return warp(images, field)


def elastic(images: tf.Tensor, seed: tf.Tensor, alpha: float = SIMARD_ALPHA,
            sigma: float = SIMARD_SIGMA) -> tf.Tensor:
    """Elastically distorted images only (no affine part), [B, H, W, C] in, same out."""
    return distort(images, seed, affine=False, alpha=alpha, sigma=sigma)
