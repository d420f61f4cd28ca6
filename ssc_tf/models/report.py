"""Per-layer and whole-model counts of a built model: live and dense weights, MACs.

Every number comes from the layers' own patterns (`SSCPattern`), never recomputed here.
"""

import dataclasses
import math

import keras

from ssc_tf.architectures import Counts
from ssc_tf.layers import SSCConv2D
from ssc_tf.models.masked import MaskedConv2D


@dataclasses.dataclass(frozen=True)
class ConvStats(Counts):
    """One convolution: its shape, pattern and exact counts (weights only, no bias or BN)."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple
    strides: tuple
    output_size: tuple
    g: object
    p: object


@dataclasses.dataclass(frozen=True)
class ModelStats(Counts):
    """A model's convolutions (`layers`, `ConvStats` each), and the `Counts` totals over all
    its weight layers (convolutions and the classifier's kernel; no biases, no batch norm)."""

    layers: tuple


def _conv_stats(layer):
    in_channels = layer.input.shape[-1]
    output_size = tuple(layer.output.shape[1:3])
    pixels = math.prod(output_size)
    if isinstance(layer, SSCConv2D):
        live, dense, g, p = layer.live_params, layer.dense_params, layer.g, layer.p
    elif isinstance(layer, MaskedConv2D):  # all dense work; `live` counts the mask's ones
        dense = math.prod(layer.kernel.shape)
        live, g, p = layer.live_params, 1, None
    else:
        dense = math.prod(layer.kernel.shape) * layer.groups
        live, g, p = math.prod(layer.kernel.shape), layer.groups, None
    return ConvStats(
        name=layer.name, in_channels=in_channels, out_channels=layer.filters,
        kernel_size=tuple(layer.kernel_size), strides=tuple(layer.strides),
        output_size=output_size, g=g, p=p, live_params=live, dense_params=dense,
        macs=pixels * live, dense_macs=pixels * dense,
    )


def model_stats(model):
    """Counts of every convolution of a functional `model`, and its totals."""
    convs = tuple(
        _conv_stats(l) for l in model.layers if isinstance(l, (keras.layers.Conv2D, SSCConv2D))
    )
    dense_layers = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    fc_params = sum(math.prod(l.kernel.shape) for l in dense_layers)
    live = sum(c.live_params for c in convs) + fc_params
    dense = sum(c.dense_params for c in convs) + fc_params
    return ModelStats(
        layers=convs,
        live_params=live,
        dense_params=dense,
        macs=sum(c.macs for c in convs) + fc_params,
        dense_macs=sum(c.dense_macs for c in convs) + fc_params,
    )
