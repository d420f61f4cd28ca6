"""The convolutions of the paper's architectures as a table, and exact counts, without TensorFlow.

`models.report.model_stats` counts a built Keras model; tools that try thousands of (g, p)
settings (tools/search_gp.py) cannot build a model for each. This module restates the layer
shapes that `models.build` produces (SPEC section 2: names, channels, kernel, stride, output
size, and which width's (g, p) each convolution takes) and counts them with `SSCPattern`, so its
totals equal `model_stats` exactly: weights only (no bias, no batch norm), every convolution
plus the classifier's kernel, MACs of one example with the classifier counted once per weight.
"""

import dataclasses
import functools
import math

from ssc_tf import pattern as pattern_lib
from ssc_tf import widths as widths_lib

# Which list a convolution's pattern comes from: the --g/--p entry of its width, or ResNet-50's
# --p_1x1 entry of its width (no K x K part).
GP = "gp"
P_1X1 = "p_1x1"

# The widths whose layers share one (g, p), in the order of the --g and --p lists.
_WIDTHS = {
    "vgg19": widths_lib.VGG19,
    "resnet32": widths_lib.RESNET32,
    "resnet50": widths_lib.RESNET50,
}
MODELS = tuple(_WIDTHS)

# VGG-19's five blocks, as indices into widths.VGG19 (2 x 2 max-pool between blocks).
_VGG19_BLOCKS = ((0, 0), (1, 1), (2,) * 4, (3,) * 4, (3,) * 4)
_RESNET32_BLOCKS_PER_STAGE = 5
_RESNET50_BLOCKS_PER_STAGE = (3, 4, 6, 3)
_RESNET50_EXPANSION = 4


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One convolution of a model, named as in the Keras model.

    Attributes:
        name: the Keras layer's name.
        in_channels: input channels.
        filters: output channels.
        kernel_size: the (square) window size.
        strides: the (square) stride; padding is 'same'.
        output_size: (height, width) of the output for the model's input size.
        setting: `(GP, width)` or `(P_1X1, width)`: the per-width setting the layer takes; None
            for a layer that is always dense (the first convolution).
    """

    name: str
    in_channels: int
    filters: int
    kernel_size: int
    strides: int
    output_size: tuple
    setting: tuple | None

    @property
    def dense_params(self):
        """Weights of the dense kernel."""
        return self.kernel_size**2 * self.in_channels * self.filters

    @property
    def pixels(self):
        """Output positions of one example: MACs = pixels x live weights."""
        return math.prod(self.output_size)


@dataclasses.dataclass(frozen=True)
class Counts:
    """Weight and multiply-accumulate counts: live (what the pattern keeps) and dense (the
    dense layers of the same shapes). Per layer, or totals over every convolution and the
    classifier's kernel (no biases, no batch norm) as `count` and `model_stats` give them."""

    live_params: int
    dense_params: int
    macs: int
    dense_macs: int

    @property
    def kept_fraction(self):
        return self.live_params / self.dense_params


def _strided(size, strides):
    """Output size of a 'same'-padded convolution or pooling."""
    return tuple(-(-s // strides) for s in size)


def _vgg19(size, channels):
    layers = []
    for s, block in enumerate(_VGG19_BLOCKS):
        if s:
            size = tuple(x // 2 for x in size)  # MaxPooling2D(2), 'valid'
        for i, w in enumerate(block):
            filters = widths_lib.VGG19[w]
            setting = None if s == i == 0 else (GP, filters)
            layers.append(
                ConvLayer(f"block{s + 1}_{i + 1}_conv", channels, filters, 3, 1, size, setting)
            )
            channels = filters
    return layers


def _resnet32(size, channels):
    stem = widths_lib.RESNET32[0]
    layers = [ConvLayer("stem_conv", channels, stem, 3, 1, size, None)]
    channels = stem
    for s, filters in enumerate(widths_lib.RESNET32):
        setting = (GP, filters)
        for b in range(_RESNET32_BLOCKS_PER_STAGE):
            name, strides = f"stage{s + 1}_block{b + 1}", 2 if s and not b else 1
            out = _strided(size, strides)
            layers += [
                ConvLayer(f"{name}_1_conv", channels, filters, 3, strides, out, setting),
                ConvLayer(f"{name}_2_conv", filters, filters, 3, 1, out, setting),
            ]
            if strides != 1 or channels != filters:
                layers.append(
                    ConvLayer(f"{name}_shortcut_conv", channels, filters, 1, strides, out,
                              setting)
                )
            channels, size = filters, out
    return layers


def _resnet50(size, channels):
    size = _strided(size, 2)
    layers = [ConvLayer("stem_conv", channels, 64, 7, 2, size, None)]
    channels, size = 64, _strided(size, 2)  # MaxPooling2D(3, strides=2, 'same')
    for s, (filters, count) in enumerate(
        zip(widths_lib.RESNET50, _RESNET50_BLOCKS_PER_STAGE)
    ):
        expanded = _RESNET50_EXPANSION * filters
        for b in range(count):
            name, strides = f"stage{s + 1}_block{b + 1}", 2 if s and not b else 1
            out = _strided(size, strides)
            layers += [
                ConvLayer(f"{name}_1_conv", channels, filters, 1, 1, size, (P_1X1, filters)),
                ConvLayer(f"{name}_2_conv", filters, filters, 3, strides, out, (GP, filters)),
                ConvLayer(f"{name}_3_conv", filters, expanded, 1, 1, out, (P_1X1, expanded)),
            ]
            if strides != 1 or channels != expanded:
                layers.append(
                    ConvLayer(f"{name}_shortcut_conv", channels, expanded, 1, strides, out,
                              (P_1X1, expanded))
                )
            channels, size = expanded, out
    return layers


_TABLES = {"vgg19": _vgg19, "resnet32": _resnet32, "resnet50": _resnet50}


def _check_model(model):
    if model not in MODELS:
        raise ValueError(
            f"Invalid value for argument `model`: expected one of {MODELS}. "
            f"Received: model={model!r}"
        )


def conv_layers(model, input_shape):
    """Every convolution of `model` in forward order (the main path before the shortcut).

    Args:
        model: one of `MODELS`.
        input_shape: (height, width, channels) of the inputs.

    Returns:
        A tuple of `ConvLayer`.
    """
    _check_model(model)
    height, width, channels = input_shape
    return tuple(_TABLES[model]((height, width), channels))


def classifier_inputs(model):
    """Features entering the classifier (its kernel is features x classes)."""
    _check_model(model)
    if model == "resnet50":
        return _RESNET50_EXPANSION * widths_lib.RESNET50[-1]
    return _WIDTHS[model][-1]


@functools.lru_cache(maxsize=None)
def live_params(in_channels, filters, kernel_size, g, p):
    """Exact live weights of one convolution (cached: searches count the same shapes often).

    Raises:
        ValueError: from `SSCPattern`, when (g, p) leaves a filter without any kernel.
    """
    return pattern_lib.SSCPattern(in_channels, filters, kernel_size, g, p).live_params


def layer_gp(layer, settings):
    """The (g, p) of `layer` given `settings`, a dict from `ConvLayer.setting` to (g, p)."""
    return (1, None) if layer.setting is None else settings[layer.setting]


def settings_of(model, g, p, p_1x1=()):
    """Maps each `ConvLayer.setting` of `model` to its (g, p), from the per-width lists."""
    _check_model(model)
    settings = {(GP, w): (gw, pw) for w, gw, pw in zip(_WIDTHS[model], g, p, strict=True)}
    if model == "resnet50":
        settings.update(
            {(P_1X1, w): (None, pw) for w, pw in zip(widths_lib.RESNET50_1X1, p_1x1, strict=True)}
        )
    return settings


def count(model, num_classes, input_shape, g, p, p_1x1=()):
    """Exact totals of the model `models.build(model, ...)` would build, without building it.

    Takes the model factory's keyword arguments, so `count(config.model,
    **config.model_kwargs())` counts an experiment.

    Args:
        model: one of `MODELS`.
        num_classes: classes of the classifier.
        input_shape: (height, width, channels) of the inputs.
        g: one g per width of the model (int >= 1 or None).
        p: one p per width (int >= 1 or None).
        p_1x1: ResNet-50 only: one p per 1 x 1 width.

    Returns:
        `Counts`, equal to `models.report.model_stats` of the built model.
    """
    settings = settings_of(model, g, p, p_1x1)
    live = dense = macs = dense_macs = 0
    for layer in conv_layers(model, input_shape):
        layer_live = live_params(
            layer.in_channels, layer.filters, layer.kernel_size, *layer_gp(layer, settings)
        )
        live, dense = live + layer_live, dense + layer.dense_params
        macs += layer.pixels * layer_live
        dense_macs += layer.pixels * layer.dense_params
    fc = classifier_inputs(model) * num_classes
    return Counts(
        live_params=live + fc, dense_params=dense + fc, macs=macs + fc, dense_macs=dense_macs + fc
    )
