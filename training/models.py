"""The lab's models as plain Keras graphs: softmax regression, LeNet-5, and an optimized LeNet-5.

All return logits (the loss is computed from logits; the lab's clipped log of the softmax was a
bug). The exported serving model adds the softmax and the argmax (see training/export.py). A
:func:`committee` of trained models is one graph too, its logits the combined members'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

import contract
from training import distortions
from training.config import RunConfig
from training.ensemble_selection import MEAN_LOGITS, RULES

LENET5_PARAMETERS = 61_706  # the lab's count; tests/training checks it
OPTIMIZED_PARAMETER_LIMIT = 100_000


def _lab_init() -> dict:
    # The lab's initialisation: weights truncated normal (stddev 0.1), biases 0.1.
    return dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
                bias_initializer=keras.initializers.Constant(0.1))


def softmax_regression() -> keras.Model:
    """Section 1 of the lab: 784 -> 10, one affine layer."""
    image = keras.Input(contract.INPUT_SHAPE, name=contract.INPUT_NAME)
    x = layers.Flatten()(image)
    logits = layers.Dense(contract.NUM_CLASSES, name="logits", kernel_initializer="zeros")(x)
    return keras.Model(image, logits, name="softmax_regression")


def lenet5(activation: str = "relu", dropout: float = 0.0) -> keras.Model:
    """LeNet-5 as in the lab: 61,706 trainable parameters."""
    init = _lab_init()
    image = keras.Input(contract.INPUT_SHAPE, name=contract.INPUT_NAME)
    x = layers.Conv2D(6, 5, padding="same", activation=activation, name="conv1", **init)(image)
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 14x14x6
    x = layers.Conv2D(16, 5, padding="valid", activation=activation, name="conv2", **init)(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 5x5x16
    x = layers.Flatten(name="flatten")(x)  # 400
    x = layers.Dense(120, activation=activation, name="fc1", **init)(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(84, activation=activation, name="fc2", **init)(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout2")(x)
    logits = layers.Dense(contract.NUM_CLASSES, name="logits", **init)(x)
    return keras.Model(image, logits, name="lenet5")


# The optimized family: LeNet-5's skeleton with other widths, (conv1, conv2) filters and
# (fc1, fc2) units. Each stays under OPTIMIZED_PARAMETER_LIMIT (tests/training checks it).
OPTIMIZED_WIDTHS = {
    "lenet5_bn": ((16, 32), (80, 64)),  # 83,738 parameters
    # Wider convolutions, narrower FC: the parameters move from fc1 to conv2 (95,474).
    "lenet5_bn_wide": ((24, 48), (52, 48)),
}


def lenet5_bn(activation: str = "relu", dropout: float = 0.0,
              variant: str = "lenet5_bn") -> keras.Model:
    """LeNet-5's conv/pool/FC skeleton, wider convolutions, batch norm: under 100k parameters.

    conv 5x5xC1 'same' -> pool -> conv 5x5xC2 'valid' -> pool -> FC U1 -> FC U2 -> FC 10, with
    (C1, C2), (U1, U2) from OPTIMIZED_WIDTHS[variant]. Batch norm after every hidden layer (its
    bias replaces the layer's).
    """
    (c1, c2), (u1, u2) = OPTIMIZED_WIDTHS[variant]

    def block(x, layer, name):
        x = layer(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_act")(x)

    image = keras.Input(contract.INPUT_SHAPE, name=contract.INPUT_NAME)
    x = block(image, layers.Conv2D(c1, 5, padding="same", use_bias=False, name="conv1"), "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 14x14xC1
    x = block(x, layers.Conv2D(c2, 5, padding="valid", use_bias=False, name="conv2"), "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 5x5xC2
    x = layers.Flatten(name="flatten")(x)
    x = block(x, layers.Dense(u1, use_bias=False, name="fc1"), "fc1")
    if dropout:
        x = layers.Dropout(dropout, name="dropout1")(x)
    x = block(x, layers.Dense(u2, use_bias=False, name="fc2"), "fc2")
    if dropout:
        x = layers.Dropout(dropout, name="dropout2")(x)
    logits = layers.Dense(contract.NUM_CLASSES, name="logits")(x)
    return keras.Model(image, logits, name=variant)


def build(config: RunConfig) -> keras.Model:
    """The model a run trains (logits out)."""
    if config.model == "softmax":
        return softmax_regression()
    if config.model == "lenet5":
        return lenet5(config.activation, config.dropout)
    return lenet5_bn(config.activation, config.dropout, variant=config.model)


class Combine(layers.Layer):
    """Members' logits -> the committee's logits, whose softmax is (training/ensemble_selection.py):

    - ``mean_probabilities``: the mean of the members' probabilities (log of the mean, computed
      as a log-sum-exp of log-probabilities: finite where a probability underflows);
    - ``mean_logits``: the mean of the members' log-probabilities (the softmax of the mean of
      their logits: the same).
    """

    def __init__(self, rule: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if rule not in RULES:
            raise ValueError(f"unknown committee rule {rule!r}; known: {', '.join(RULES)}")
        self.rule = rule

    def call(self, logits: list) -> keras.KerasTensor:
        log_probabilities = ops.stack([ops.log_softmax(z, axis=-1) for z in logits], axis=0)
        if self.rule == MEAN_LOGITS:
            return ops.mean(log_probabilities, axis=0)
        return ops.logsumexp(log_probabilities, axis=0) - math.log(len(logits))

    def get_config(self) -> dict:
        return {**super().get_config(), "rule": self.rule}


def committee(members: Sequence[keras.Model], names: Sequence[str], rule: str,
              name: str = "committee") -> keras.Model:
    """One graph of trained ``members`` (their layers and weights inside, each renamed to its
    ``names`` entry), logits out: the members' combined by ``rule`` (:class:`Combine`)."""
    image = keras.Input(contract.INPUT_SHAPE, name=contract.INPUT_NAME)
    logits = [keras.Model(member.input, member.output, name=member_name)(image)
              for member, member_name in zip(members, names, strict=True)]
    return keras.Model(image, Combine(rule, name="combine")(logits), name=name)


def set_clean_bn_statistics(model: keras.Model, images: np.ndarray,
                            batch_size: int = 2000) -> int:
    """Set every batch norm layer's moving mean/variance to the exact statistics of ``images``.

    Training with distortions leaves running averages of *distorted* batches in batch norm; the
    model is evaluated and served on clean images. Layer by layer, in graph order (each layer's
    inputs already use the corrected statistics of the layers before it), the mean and the
    (biased, as batch norm's own) variance over all images and positions are accumulated in
    float64 over batches and written into the layer. Returns the number of layers set.
    """
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in norms:
        upstream = keras.Model(model.input, layer.input)
        total = np.zeros(layer.input.shape[-1])
        total_sq = np.zeros_like(total)
        count = 0
        for start in range(0, len(images), batch_size):
            x = np.asarray(upstream(images[start:start + batch_size], training=False), np.float64)
            x = x.reshape(-1, x.shape[-1])
            total += x.sum(0)
            total_sq += (x * x).sum(0)
            count += len(x)
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / count - mean * mean, 0.0)
                                     .astype(np.float32))
    return len(norms)


def augmenter(seed: int) -> keras.Sequential:
    """Training-time distortions: small rotations, shifts and zooms, as in LeCun 1998/Simard 2003."""
    return keras.Sequential(
        [
            layers.RandomRotation(distortions.ROTATION_DEGREES / 360, fill_mode="constant",
                                  seed=seed),
            layers.RandomTranslation(distortions.SHIFT, distortions.SHIFT, fill_mode="constant",
                                     seed=seed + 1),
            layers.RandomZoom(distortions.ZOOM, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )
