"""Batch norm folded into the convolution before it, for inference graphs.

At inference a batch norm is a per-filter affine map, `y = x * scale + shift` with
`scale = gamma / sqrt(moving_variance + epsilon)` and `shift = beta - moving_mean * scale`.
After a convolution it folds into the convolution's weights: every kernel weight of filter
`j` times `scale[j]`, and the bias `bias * scale + shift`.

- TFLite: the converter does that by itself for a `Conv2D`, but not for an `SSCConv2D`,
  whose output is the sum of two convolutions (K x K and 1 x 1). Left unfolded, each SSC
  layer of a converted model runs the batch norm as a MUL and an ADD of its own, and int8
  quantizes the sum before the batch norm per tensor. That sum's filters have ranges that the
  batch norm then evens out, so a filter of small range keeps only a few of its 256 levels
  (docs/deployment.md, "int8 fidelity"). Folded, the two convolutions carry the scale per
  filter (per-channel int8 weights), the bias fuses into the first one's CONV_2D, and the one
  quantized activation is the batch norm's output, as in the dense twin.
- TF: Grappler folds neither, so a SavedModel runs every batch norm as two more passes over
  each activation, for `SSCConv2D` and `Conv2D` alike.

`fold_batch_norm(model)` returns a copy of a functional model in which every
`BatchNormalization` whose one input is an `SSCConv2D` or a plain `Conv2D`, read by nothing
else, is folded into it: the copy computes what `model(x, training=False)` does (up to float
rounding) with one convolution with bias per folded pair. It is for inference only: the copy
has no batch norm to train.

Example:

>>> from ssc_tf import models
>>> model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
...                      g=(2, 4, 15), p=(2, 4, 4))
>>> folded = fold_batch_norm(model)
>>> sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
0
"""

import keras
import numpy as np

from ssc_tf.layers import SSCConv2D
from ssc_tf.models import cloning


def fold_batch_norm(model):
    """A copy of `model` with each batch norm that follows a convolution folded into it.

    Args:
        model: a functional `keras.Model` (as `ssc_tf.models.build` makes).

    Returns:
        A new functional model, its weights copied from `model`'s (folded where a pair was
        found); `model` is unchanged. With no pair to fold, `model` itself.
    """
    folded = _foldable_pairs(model)
    if not folded:
        return model
    batch_norms = set(folded.values())

    def clone(layer):
        config = layer.get_config()
        if layer.name in folded:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in batch_norms:
            return args[0]
        return layer(*args, **kwargs)

    def weights_of(layer):
        if layer.name in folded:
            return _folded_weights(layer, model.get_layer(folded[layer.name]))
        return layer.get_weights()

    return cloning.rebuilt(model, clone, weights_of, call_function=call)


def _foldable_pairs(model):
    """{convolution name: name of the batch norm it feeds alone}, for every such pair."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(
                layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        conv = parents[0].operation
        if _foldable(conv) and len(conv._outbound_nodes) == 1 and layer.axis in (-1, 3):
            pairs[conv.name] = layer.name
    return pairs


def _foldable(layer):
    """Whether `layer` is a channels-last convolution whose filters a batch norm can scale:
    an `SSCConv2D` (always channels-last) or a plain Keras `Conv2D` (not a subclass such as
    `MaskedConv2D`, whose weights differ)."""
    if isinstance(layer, SSCConv2D):
        return True
    return type(layer) is keras.layers.Conv2D and layer.data_format == "channels_last"


def _folded_weights(conv, batch_norm):
    """`conv`'s kernels scaled per filter and its bias shifted by `batch_norm`'s affine map."""
    gamma = (batch_norm.gamma.numpy() if batch_norm.scale
             else np.ones(conv.filters, np.float32))
    beta = batch_norm.beta.numpy() if batch_norm.center else np.zeros(conv.filters, np.float32)
    scale = gamma / np.sqrt(batch_norm.moving_variance.numpy() + batch_norm.epsilon)
    shift = beta - batch_norm.moving_mean.numpy() * scale
    bias = conv.bias.numpy() if conv.use_bias else np.zeros(conv.filters, np.float32)
    if not isinstance(conv, SSCConv2D):
        return [conv.kernel.numpy() * scale, bias * scale + shift]
    # The filter of each live weight, in the order of the layer's variables, each flattened
    # in C order: filters are the last axis of the dense (kh, kw, M, N) kernel.
    filters = conv.pattern.dense_index() % conv.filters
    kernels, start = [], 0
    for kernel in conv.kernels:
        values = kernel.numpy()
        stop = start + values.size
        kernels.append((values.ravel() * scale[filters[start:stop]]).reshape(values.shape))
        start = stop
    return kernels + [bias * scale + shift]
