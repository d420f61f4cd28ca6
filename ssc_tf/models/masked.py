"""Masked convolutions: the pruning baselines' dense kernels times a fixed 0/1 mask.

`MaskedConv2D` is a `keras.layers.Conv2D` whose kernel enters the convolution multiplied by
its `mask`, a non-trainable weight: the pruned weights get no gradient, and the mask is saved
and restored with the checkpoint like any other weight. `MaskedBuilder` builds the dense twin
of a network with a `MaskedConv2D` for every convolution that SSC would make sparse (the first
convolution and the classifier stay plain, as in SSC). `bake` turns a masked model into the
plain dense twin holding `kernel * mask`, which is what export and TFLite write.

A masked layer does all the dense work: the mask removes weights, not multiplications.
"""

import keras
import numpy as np

from ssc_tf.models import blocks
from ssc_tf.models import cloning


@keras.saving.register_keras_serializable(package="ssc_tf")
class MaskedConv2D(keras.layers.Conv2D):
    """A `Conv2D` whose kernel is multiplied by a fixed 0/1 `mask` (all ones when built).

    Set the mask with `layer.mask.assign(...)`; it is not trained. `live_params` counts the
    ones.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.mask = self.add_weight(
            name="mask", shape=self.kernel.shape, initializer="ones", trainable=False
        )

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * keras.ops.cast(self.mask, kernel.dtype))

    @property
    def live_params(self):
        return int(np.count_nonzero(keras.ops.convert_to_numpy(self.mask)))


class MaskedBuilder(blocks.Builder):
    """The dense twin with a `MaskedConv2D` for each convolution that takes a (g, p) setting.

    Build it with the dense twin's settings (g = 1 everywhere).
    """

    def conv(self, layer, g, p):
        if layer.setting is None:
            return self.dense_conv(layer)
        return self.dense_conv(layer, MaskedConv2D)


def masked_layers(model):
    """The `MaskedConv2D` layers of `model`, in forward order."""
    return [layer for layer in model.layers if isinstance(layer, MaskedConv2D)]


def masks(model):
    """`{layer name: mask as a bool numpy array}` of every `MaskedConv2D` of `model`."""
    return {
        layer.name: keras.ops.convert_to_numpy(layer.mask).astype(bool)
        for layer in masked_layers(model)
    }


def set_masks(model, layer_masks):
    """Assigns `layer_masks` (`{layer name: 0/1 array of the kernel's shape}`) to `model`.

    Raises:
        ValueError: the names are not exactly `model`'s masked layers, or a shape differs.
    """
    layers = {layer.name: layer for layer in masked_layers(model)}
    if set(layer_masks) != set(layers):
        raise ValueError(
            f"Invalid value for argument `layer_masks`: expected one mask per masked layer "
            f"{sorted(layers)}. Received masks for {sorted(layer_masks)}"
        )
    for name, mask in layer_masks.items():
        shape = tuple(layers[name].mask.shape)
        if np.shape(mask) != shape:
            raise ValueError(
                f"Invalid value for argument `layer_masks`: the mask of {name} must have the "
                f"kernel's shape {shape}. Received shape {np.shape(mask)}"
            )
        layers[name].mask.assign(np.asarray(mask, dtype=layers[name].mask.dtype))


def bake(model):
    """The plain dense twin of a masked `model`: its kernels are `kernel * mask`.

    Args:
        model: a functional model with `MaskedConv2D` layers (from `MaskedBuilder`).

    Returns:
        A copy of `model` (same layer names and graph) in which every `MaskedConv2D` is a
        `keras.layers.Conv2D` holding its masked kernel, and every other layer its weights;
        `model` itself when it has no masked layer.
    """
    if not masked_layers(model):
        return model

    def plain(layer):
        cls = keras.layers.Conv2D if isinstance(layer, MaskedConv2D) else type(layer)
        return cls.from_config(layer.get_config())

    def weights_of(layer):
        weights = layer.get_weights()
        if isinstance(layer, MaskedConv2D):
            kernel, *rest, mask = weights
            weights = [kernel * mask, *rest]
        return weights

    return cloning.rebuilt(model, plain, weights_of)
