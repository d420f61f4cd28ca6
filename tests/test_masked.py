"""MaskedConv2D, the masked dense twin and its baking into plain kernels."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf.models import masked
from ssc_tf.models import report


def _masked_and_plain(mask):
    x = keras.Input((5, 5, 3))
    layer = masked.MaskedConv2D(4, 3, padding="same", use_bias=True, name="conv")
    model = keras.Model(x, layer(x))
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    bias = rng.standard_normal(4).astype("float32")
    layer.set_weights([kernel, bias, mask])
    plain = keras.layers.Conv2D(4, 3, padding="same")
    plain.build((None, 5, 5, 3))
    plain.set_weights([kernel * mask, bias])
    return model, layer, plain


def test_masked_conv_is_conv2d_of_the_masked_kernel_and_its_pruned_weights_get_no_gradient():
    mask = (np.random.default_rng(1).random((3, 3, 3, 4)) < 0.3).astype("float32")
    model, layer, plain = _masked_and_plain(mask)
    x = np.random.default_rng(2).standard_normal((2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(model(x), plain(x), atol=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    kernel_grad, _ = tape.gradient(loss, [layer.kernel.value, layer.bias.value])
    assert np.all(kernel_grad.numpy()[mask == 0] == 0)
    assert np.count_nonzero(kernel_grad.numpy()[mask == 1]) == int(mask.sum())
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert layer.live_params == int(mask.sum())


def _quickstart_masked():
    config = dataclasses.replace(flagfile.load("quickstart"), sparsity="snip")
    return models.build(config.model, **config.model_kwargs())


def test_masked_twin_masks_every_setting_conv_and_keeps_stem_and_classifier_plain():
    model = _quickstart_masked()
    names = [layer.name for layer in masked.masked_layers(model)]
    assert len(names) == 32 and "stem_conv" not in names
    assert "stage2_block1_shortcut_conv" in names
    assert type(model.get_layer("stem_conv")) is keras.layers.Conv2D
    # All ones when built: the twin's counts are the dense twin's.
    assert report.model_stats(model).live_params == 1_855_584


def test_set_masks_checks_names_and_shapes_and_bake_multiplies_the_kernels():
    model = _quickstart_masked()
    rng = np.random.default_rng(0)
    layer_masks = {
        layer.name: rng.random(layer.kernel.shape) < 0.1 for layer in masked.masked_layers(model)
    }
    with pytest.raises(ValueError, match=r"^Invalid value for argument `layer_masks`: expected"):
        masked.set_masks(model, dict(list(layer_masks.items())[1:]))
    wrong = {**layer_masks, "stage1_block1_1_conv": np.ones((1, 1, 32, 32))}
    with pytest.raises(ValueError, match=r"the mask of stage1_block1_1_conv must have"):
        masked.set_masks(model, wrong)
    masked.set_masks(model, layer_masks)
    kept = sum(int(m.sum()) for m in layer_masks.values())
    assert report.model_stats(model).live_params == 1_855_584 - sum(
        m.size for m in layer_masks.values()) + kept
    for name, mask in masked.masks(model).items():
        np.testing.assert_array_equal(mask, layer_masks[name])

    baked = masked.bake(model)
    assert not masked.masked_layers(baked)
    assert [l.name for l in baked.layers] == [l.name for l in model.layers]
    kernel = baked.get_layer("stage1_block1_1_conv").get_weights()[0]
    source = model.get_layer("stage1_block1_1_conv")
    np.testing.assert_array_equal(kernel, source.get_weights()[0] * layer_masks[source.name])
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(baked(x), model(x), atol=1e-4)


def test_bake_returns_a_model_without_masks_unchanged():
    config = flagfile.load("quickstart")
    model = models.build(config.model, **config.model_kwargs())
    assert masked.bake(model) is model


def test_masked_takes_the_dense_pattern_only():
    config = flagfile.load("quickstart")
    with pytest.raises(ValueError, match=r"^Invalid value for argument `masked`: .*g = 1"):
        models.build(config.model, **config.model_kwargs(), masked=True)
