"""Tests of the model factories: dense twins match the standard networks, SSC layers in place."""

import keras
import numpy as np
import pytest

from ssc_tf import SSCConv2D, SSCPattern
from ssc_tf import models


def _conv_layers(model):
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, SSCConv2D))]


def _bn_params(model):
    return sum(l.count_params() for l in model.layers
               if isinstance(l, keras.layers.BatchNormalization))


def test_dense_vgg19_matches_standard_cifar_vgg19():
    model = models.build("vgg19", num_classes=10, input_shape=(32, 32, 3),
                         g=(1, 1, 1, 1), p=(None,) * 4)
    widths = [3, 64, 64, 128, 128] + [256] * 4 + [512] * 8
    conv_weights = sum(9 * a * b for a, b in zip(widths[:-1], widths[1:]))
    assert conv_weights == 20_018_880
    assert not any(isinstance(l, SSCConv2D) for l in model.layers)
    # conv weights, BN (gamma, beta, moving mean and variance), linear classifier.
    assert model.count_params() == conv_weights + 4 * sum(widths[1:]) + 512 * 10 + 10
    assert round(model.count_params() / 1e6, 1) == 20.0


def test_dense_resnet32_has_doubled_widths_and_standard_count():
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(1, 1, 1), p=(None,) * 3)
    convs = _conv_layers(model)
    assert len(convs) == 1 + 30 + 2  # stem, 15 basic blocks, 2 projection shortcuts
    assert sorted({c.filters for c in convs}) == [32, 64, 128]
    assert model.count_params() == 1_865_450
    assert round(model.count_params() / 1e6, 1) == 1.9


def test_dense_resnet50_equals_keras_applications_resnet50_plus_conv_biases():
    model = models.build("resnet50", num_classes=1000, input_shape=(224, 224, 3),
                         g=(1,) * 4, p=(None,) * 4, p_1x1=(1,) * 6)
    reference = keras.applications.ResNet50(weights=None)
    # keras.applications' convolutions carry biases; ours (and torchvision's) do not.
    conv_biases = sum(l.filters for l in _conv_layers(reference))
    assert model.count_params() + conv_biases == reference.count_params() == 25_636_712
    # Without BN moving statistics: torchvision's resnet50 parameter count.
    assert model.count_params() - _bn_params(model) // 2 == 25_557_032


@pytest.mark.parametrize("name,kwargs", [
    ("vgg19", dict(g=(1, 4, 8, 64), p=(1, 4, 8, 25))),
    ("resnet32", dict(g=(2, 6, 64), p=(2, 16, 32))),
    ("resnet50", dict(g=(1, 1, 4, 8), p=(1, 2, 4, 8), p_1x1=(1, 1, 4, 4, 8, 8))),
])
def test_ssc_models_store_only_live_weights(name, kwargs):
    shape = (64, 64, 3) if name == "resnet50" else (32, 32, 3)
    sparse = models.build(name, num_classes=10, input_shape=shape, **kwargs)
    dense_kwargs = {k: tuple(1 if k == "g" or k == "p_1x1" else None for _ in v)
                    for k, v in kwargs.items()}
    dense = models.build(name, num_classes=10, input_shape=shape, **dense_kwargs)
    ssc_layers = [l for l in sparse.layers if isinstance(l, SSCConv2D)]
    assert ssc_layers
    saved = sum(l.dense_params - l.live_params for l in ssc_layers)
    assert sparse.count_params() == dense.count_params() - saved
    # First convolution and classifier stay dense; dense-pattern widths stay plain Conv2D.
    first = _conv_layers(sparse)[0]
    assert type(first) is keras.layers.Conv2D
    for layer in _conv_layers(sparse):
        if isinstance(layer, SSCConv2D):
            assert layer.g != 1 and not (layer.kernel_size == (1, 1) and layer.p == 1 and
                                         layer.g is None)
    logits = sparse(np.zeros((2,) + shape, "float32"), training=False)
    assert logits.shape == (2, 10)


def test_same_gp_for_every_layer_of_a_width():
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(2, 6, 64), p=(2, 16, 32))
    expected = {32: (2, 2), 64: (6, 16), 128: (64, 32)}
    for layer in model.layers:
        if isinstance(layer, SSCConv2D) and layer.kernel_size == (3, 3):
            assert (layer.g, layer.p) == expected[layer.filters]


def _shortcuts(model):
    return {l.name: l for l in model.layers if l.name.endswith("_shortcut_conv")}


def test_resnet32_shortcuts_take_their_widths_p_only():
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(2, 6, 64), p=(2, 16, 32))
    shortcuts = _shortcuts(model)
    assert sorted(shortcuts) == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    for name, p in (("stage2_block1_shortcut_conv", 16), ("stage3_block1_shortcut_conv", 32)):
        layer = shortcuts[name]
        assert isinstance(layer, SSCConv2D) and layer.kernel_size == (1, 1)
        assert (layer.g, layer.p) == (None, p)
        assert layer.live_params == SSCPattern(layer.filters // 2, layer.filters, 1, None,
                                               p).live_params


def test_a_dense_widths_shortcut_is_a_plain_conv2d():
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(2, 1, 64), p=(2, None, 32))
    shortcuts = _shortcuts(model)
    assert type(shortcuts["stage2_block1_shortcut_conv"]) is keras.layers.Conv2D
    assert (shortcuts["stage3_block1_shortcut_conv"].g,
            shortcuts["stage3_block1_shortcut_conv"].p) == (None, 32)
    dense = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(1, 1, 1), p=(None,) * 3)
    assert all(type(l) is keras.layers.Conv2D for l in _shortcuts(dense).values())


def test_a_shortcut_width_without_p_raises_naming_p():
    with pytest.raises(ValueError, match=(
        r"^Invalid value for argument `p` of model 'resnet32': width 64 has a 1 x 1 "
        r"convolution \(stage2_block1_shortcut_conv\), which takes p only; None leaves it no "
        r"kernel\. Received: p=\(2, None, 32\)$"
    )):
        models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                     g=(2, 6, 64), p=(2, None, 32))
    # Width 32 has no 1 x 1 convolution: p = None leaves its 3 x 3 layers the K x K part.
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(2, 6, 64), p=(None, 16, 32))
    assert model.get_layer("stage1_block1_1_conv").p is None


def test_resnet50_1x1_layers_use_p_by_filter_count():
    model = models.build("resnet50", num_classes=10, input_shape=(64, 64, 3),
                         g=(1, 1, 4, 8), p=(1, 2, 2, 2), p_1x1=(1, 1, 2, 2, 2, 2))
    one_by_one = [l for l in model.layers
                  if isinstance(l, SSCConv2D) and l.kernel_size == (1, 1)]
    assert {l.filters for l in one_by_one} == {256, 512, 1024, 2048}
    assert all(l.g is None and l.p == 2 for l in one_by_one)


def test_unknown_model_and_wrong_gp_length_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`name`.*'resnet32'.*Received: name='resnet18'"):
        models.build("resnet18", num_classes=10, input_shape=(32, 32, 3), g=(1,), p=(1,))
    with pytest.raises(ValueError, match=r"`g` of model 'resnet32'.*\(32, 64, 128\)"):
        models.build("resnet32", num_classes=10, input_shape=(32, 32, 3), g=(2, 4), p=(2, 4, 4))
    with pytest.raises(ValueError, match=r"`p`.*Received: p=0"):
        models.build("vgg19", num_classes=10, input_shape=(32, 32, 3),
                     g=(1, 2, 4, 16), p=(1, 0, 2, 2))
    with pytest.raises(ValueError, match=r"`p_1x1` of model 'resnet32'.*Received: p_1x1=\(1,\)"):
        models.build("resnet32", num_classes=10, input_shape=(32, 32, 3), g=(2, 4, 4),
                     p=(2, 4, 4), p_1x1=(1,))
    with pytest.raises(ValueError, match=r"`p_1x1` of model 'resnet50'.*\(64, 128, 256, 512, "
                                         r"1024, 2048\) \(6 values\)"):
        models.build("resnet50", num_classes=10, input_shape=(64, 64, 3), g=(1,) * 4,
                     p=(None,) * 4)


def test_layer_and_weight_order_of_a_projection_block_stay_the_checkpoints():
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(1, 1, 1), p=(None,) * 3)
    names = [l.name for l in model.layers]
    assert names[:4] == ["images", "stem_conv", "stem_bn", "stem_relu"]
    assert names[-3:] == ["stage3_block5_out", "pool", "logits"]
    i = names.index("stage2_block1_1_conv")
    assert names[i:i + 9] == [
        "stage2_block1_1_conv", "stage2_block1_1_bn", "stage2_block1_1_relu",
        "stage2_block1_shortcut_conv", "stage2_block1_2_conv", "stage2_block1_shortcut_bn",
        "stage2_block1_2_bn", "stage2_block1_add", "stage2_block1_out",
    ]
    paths = [w.path for w in model.weights]
    i = paths.index("stage2_block1_shortcut_conv/kernel")
    assert paths[i - 1:i + 3] == [
        "stage2_block1_1_bn/moving_variance", "stage2_block1_shortcut_conv/kernel",
        "stage2_block1_2_conv/kernel", "stage2_block1_shortcut_bn/gamma",
    ]


@pytest.mark.parametrize("fan", ["dense", "live"])
def test_the_config_fan_reaches_every_ssc_layer_and_only_ssc_models(fan):
    import dataclasses

    from ssc_tf import flagfile

    config = dataclasses.replace(flagfile.load("quickstart"), fan=fan)
    model = models.build(config.model, **config.model_kwargs())
    # 30 K x K layers of the 15 blocks and the 2 projection shortcuts; the stem is dense.
    ssc_layers = [layer for layer in model.layers if isinstance(layer, SSCConv2D)]
    assert len(ssc_layers) == 32 and {layer.fan for layer in ssc_layers} == {fan}
    assert "fan" not in dataclasses.replace(config, sparsity="random").model_kwargs()
