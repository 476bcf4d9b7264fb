"""The lab's architectures, counted."""

from __future__ import annotations

import numpy as np

import contract
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
    every = (*config.grid("lab"), *config.grid("experiments"))
    for run in {(r.model, r.activation, r.dropout, r.augment): r for r in every}.values():
        out = models.build(run)(images)
        assert tuple(out.shape) == (3, contract.NUM_CLASSES)


def test_augmenter_keeps_shape_and_range():
    images = np.random.default_rng(0).random((4, *contract.INPUT_SHAPE), dtype=np.float32)
    out = np.asarray(models.augmenter(1)(images, training=True))
    assert out.shape == images.shape
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert not np.allclose(out, images)


def test_clean_bn_statistics_normalize_every_layer_over_the_given_images():
    rng = np.random.default_rng(0)
    images = rng.random((50, *contract.INPUT_SHAPE), dtype=np.float32)
    model = models.lenet5_bn()
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    for layer in norms:  # stale running averages, as left by distorted training batches
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 100.0, np.float32))
    # a batch size that does not divide the images: the statistics are over all of them
    assert models.set_clean_bn_statistics(model, images, batch_size=7) == len(norms) == 4
    for layer in norms:
        out = np.asarray(type(model)(model.input, layer.output)(images, training=False))
        out = out.reshape(-1, out.shape[-1])
        # gamma 1, beta 0: each channel comes out centred, with variance v / (v + epsilon)
        variance = np.asarray(layer.moving_variance)
        np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4, err_msg=layer.name)
        np.testing.assert_allclose(out.var(0), variance / (variance + layer.epsilon), rtol=1e-3,
                                   err_msg=layer.name)
    first = [np.asarray(layer.moving_variance) for layer in norms]
    models.set_clean_bn_statistics(model, images, batch_size=50)  # one batch, same figures
    for layer, variance in zip(norms, first, strict=True):
        np.testing.assert_allclose(np.asarray(layer.moving_variance), variance, rtol=1e-5)
