"""The lab's architectures, counted."""

from __future__ import annotations

import numpy as np

from client import contract
from training import config, models


def test_lenet5_has_the_labs_61706_parameters():
    for activation in ("sigmoid", "relu"):
        model = models.lenet5(activation)
        assert model.count_params() == models.LENET5_PARAMETERS == 61_706
        shapes = [layer.output.shape[1:] for layer in model.layers[1:6]]
        assert shapes == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (400,)]
    assert models.lenet5("relu", dropout=0.25).count_params() == 61_706


def test_optimized_model_stays_under_the_limit_and_softmax_is_784_to_10():
    for variant in models.OPTIMIZED_WIDTHS:
        model = models.lenet5_bn(variant=variant)
        assert model.count_params() <= models.OPTIMIZED_PARAMETER_LIMIT, variant
        # LeNet-5's skeleton: conv 'same', pool, conv 'valid', pool, three dense layers
        kinds = [type(layer).__name__ for layer in model.layers
                 if type(layer).__name__ in ("Conv2D", "MaxPooling2D", "Dense")]
        assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Dense", "Dense",
                         "Dense"], variant
    assert models.lenet5_bn().count_params() == 83_738
    assert models.lenet5_bn(variant="lenet5_bn_wide").count_params() == 95_474
    assert models.softmax_regression().count_params() == 784 * 10 + 10


def test_every_grid_model_maps_images_to_ten_logits():
    images = np.zeros((3, *contract.INPUT_SHAPE), np.float32)
    for run in config.grid("lab"):
        out = models.build(run)(images)
        assert tuple(out.shape) == (3, contract.NUM_CLASSES)


def test_augmenter_keeps_shape_and_range():
    images = np.random.default_rng(0).random((4, *contract.INPUT_SHAPE), dtype=np.float32)
    out = np.asarray(models.augmenter(1)(images, training=True))
    assert out.shape == images.shape
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert not np.allclose(out, images)
