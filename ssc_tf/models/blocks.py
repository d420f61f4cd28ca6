"""Building blocks shared by every model: convolutions by (g, p), conv-BN-ReLU, residual blocks.

Each convolution is chosen by its pattern: a plain `keras.layers.Conv2D` where the pattern is
dense (g == 1 for a K x K window; no K x K part and p in (None, 1) for a 1 x 1 one) and an
`SSCConv2D` otherwise, so dense twins are exactly the standard networks.
"""

import keras

from ssc_tf import pattern as pattern_lib
from ssc_tf.layers import SSCConv2D

# PyTorch's BatchNorm defaults, as in the GraSP code the paper builds on.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def widths_to_gp(widths, g, p, model):
    """Maps each width (filter count) to its (g, p), checking one value per width.

    Args:
        widths: the model's widths, for example (32, 64, 128).
        g: one g (int >= 1 or None) per width.
        p: one p (int >= 1 or None) per width.
        model: the model's name, for messages.
    """
    for name, values in (("g", g), ("p", p)):
        if values is None or len(values) != len(widths):
            raise ValueError(
                f"Invalid value for argument `{name}` of model {model!r}: expected one value "
                f"per width {tuple(widths)} ({len(widths)} values). Received: {name}={values!r}"
            )
    return {w: pattern_lib.check_g_p(gw, pw) for w, gw, pw in zip(widths, g, p)}


def is_dense(kernel_size, g, p):
    """Whether the pattern (g, p) of a convolution is the full dense kernel."""
    if pattern_lib.check_pair("kernel_size", kernel_size) == (1, 1):
        return g == 1 or (g is None and p == 1)
    return g == 1


def conv(filters, kernel_size, strides, g, p, name):
    """A convolution without bias (batch norm follows), dense or SSC by its pattern."""
    if is_dense(kernel_size, g, p):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=False,
            kernel_initializer="he_normal", name=name,
        )
    return SSCConv2D(
        filters, kernel_size, g=g, p=p, strides=strides, padding="same", use_bias=False,
        name=name,
    )


def batch_norm(name):
    """Batch norm over the global batch: under a multi-replica `tf.distribute` strategy the
    replicas all-reduce their statistics, so every replica keeps the same moving averages (with
    local statistics they drift apart) and training sees the paper's single-device batch."""
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True, name=name
    )


def conv_bn(x, filters, kernel_size, strides, gp, name, relu=True):
    """conv -> batch norm (-> ReLU); `gp` is the convolution's (g, p)."""
    x = conv(filters, kernel_size, strides, *gp, name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, strides, gp, name):
    if strides == 1 and x.shape[-1] == filters:
        return x
    return conv_bn(x, filters, 1, strides, gp, f"{name}_shortcut", relu=False)


def basic_block(x, filters, strides, gp, name):
    """ResNet basic block: two 3 x 3 conv-BN, projection shortcut when the shape changes."""
    shortcut = _shortcut(x, filters, strides, gp, name)
    x = conv_bn(x, filters, 3, strides, gp, f"{name}_1")
    x = conv_bn(x, filters, 3, 1, gp, f"{name}_2", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def bottleneck_block(x, filters, strides, gp_3x3, gp_1x1, name):
    """ResNet bottleneck (v1.5: stride on the 3 x 3): 1x1 -> 3x3 -> 1x1 (4 x filters).

    Args:
        gp_3x3: the (g, p) of the 3 x 3 convolution.
        gp_1x1: maps a 1 x 1 convolution's filter count to its (g, p).
    """
    out = 4 * filters
    shortcut = _shortcut(x, out, strides, gp_1x1[out], name)
    x = conv_bn(x, filters, 1, 1, gp_1x1[filters], f"{name}_1")
    x = conv_bn(x, filters, 3, strides, gp_3x3, f"{name}_2")
    x = conv_bn(x, out, 1, 1, gp_1x1[out], f"{name}_3", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def classifier(x, num_classes):
    """Global average pooling and one dense linear layer (logits).

    The logits stay float32 under a mixed-precision policy, so the softmax loss is computed
    in float32 (Keras' mixed-precision guide).
    """
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
