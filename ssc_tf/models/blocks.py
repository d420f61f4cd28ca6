"""Keras layers for the nodes of an `architectures.Network`, and the model they make.

Everything about a network (widths, counts, strides, shortcuts, names) comes from the walk of
its spec table (`ssc_tf.architectures.network`); this module only says which Keras layers a
node is. `Builder` makes SSC models and their dense twins: each convolution is chosen by its
pattern, a plain `keras.layers.Conv2D` where the pattern is dense (g == 1 for a K x K window; no
K x K part and p in (None, 1) for a 1 x 1 one) and an `SSCConv2D` otherwise, so dense twins are
exactly the standard networks. Other builders override `Builder.conv` and keep everything
else: the pruning baselines' masked twin (`ssc_tf.models.masked`) and the `tf_keras` twin
that tfmot prunes (`ssc_tf.pruning.magnitude`), which also passes its own Keras module.
"""

import keras
import tensorflow as tf

from ssc_tf import architectures
from ssc_tf import pattern as pattern_lib
from ssc_tf.layers import SSCConv2D

# PyTorch's BatchNorm defaults, as in the GraSP code the paper builds on.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def is_dense(kernel_size, g, p):
    """Whether the pattern (g, p) of a convolution is the full dense kernel."""
    if pattern_lib.check_pair("kernel_size", kernel_size) == (1, 1):
        return g == 1 or (g is None and p == 1)
    return g == 1


class Builder:
    """Builds the functional model of an `architectures.Network` with one Keras.

    Args:
        keras_module: the Keras whose layers make the model: Keras 3 (`keras`, the default)
            or, for tfmot, `tf_keras`.
        pointwise_layout: the `SSCConv2D` layers' `pointwise_layout` (`pattern.LAYOUTS`).
        fan: the `SSCConv2D` layers' `fan` (`pattern.FANS`).
    """

    def __init__(self, keras_module=keras, pointwise_layout=pattern_lib.JOINED,
                 fan=pattern_lib.FANS[0]):
        self.keras = keras_module
        self.pointwise_layout = pointwise_layout
        self.fan = fan

    def conv(self, layer, g, p):
        """The convolution `layer` (an `architectures.ConvLayer`) without bias (batch norm
        follows), dense or SSC by its pattern (g, p)."""
        if is_dense(layer.kernel_size, g, p):
            return self.dense_conv(layer)
        return SSCConv2D(
            layer.filters, layer.kernel_size, g=g, p=p, strides=layer.strides, padding="same",
            use_bias=False, pointwise_layout=self.pointwise_layout, fan=self.fan,
            name=layer.name,
        )

    def dense_conv(self, layer, conv_class=None):
        """The standard convolution `layer` (a `conv_class`, by default this Keras' Conv2D)."""
        conv_class = conv_class or self.keras.layers.Conv2D
        return conv_class(
            layer.filters, layer.kernel_size, strides=layer.strides, padding="same",
            use_bias=False, kernel_initializer="he_normal", name=layer.name,
        )

    def batch_norm(self, name):
        """Batch norm over the global batch: under a multi-replica `tf.distribute` strategy the
        replicas all-reduce their statistics, so every replica keeps the same moving averages
        (with local statistics they drift apart) and training sees the paper's single-device
        batch.

        Synchronized only when the strategy in scope at build time (`train` builds under its
        strategy) has more than one replica: with one, Keras would still all-reduce a sum, a
        squared sum and a count per layer and take the variance as E[x^2] - E[x]^2, which cancels
        in float32, where the local path (`tf.nn.moments`) subtracts the mean first. The
        variables are the same either way, so a checkpoint restores across the two.
        """
        return self.keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
            synchronized=tf.distribute.get_strategy().num_replicas_in_sync > 1,
        )

    def conv_bn(self, x, node, settings):
        """conv -> batch norm (-> ReLU) of an `architectures.ConvBN` node.

        Args:
            x: the input tensor.
            node: the `ConvBN`.
            settings: the model's (g, p) per setting, from `architectures.settings_of`.
        """
        x = self.conv(node.conv, *architectures.layer_gp(node.conv, settings))(x)
        x = self.batch_norm(node.bn_name)(x)
        return self.keras.layers.ReLU(name=node.relu_name)(x) if node.relu else x

    def residual_block(self, x, node, settings):
        """An `architectures.ResidualBlock`: ReLU(shortcut + main path).

        The shortcut's layers are created before the main path's, so the weights keep the
        order of the checkpoints saved so far.
        """
        shortcut = x if node.shortcut is None else self.conv_bn(x, node.shortcut, settings)
        for layer in node.layers:
            x = self.conv_bn(x, layer, settings)
        x = self.keras.layers.Add(name=node.add_name)([shortcut, x])
        return self.keras.layers.ReLU(name=node.out_name)(x)

    def pool(self, x, node, settings):
        """An `architectures.Pool` node: max-pooling (`settings` is unused: no weights)."""
        del settings
        pooling = node.pooling
        return self.keras.layers.MaxPooling2D(
            pooling.pool_size, strides=pooling.strides, padding=pooling.padding, name=node.name
        )(x)

    def classifier(self, x, node, num_classes):
        """An `architectures.Classifier`: global average pooling and one dense linear layer.

        The logits stay float32 under a mixed-precision policy, so the softmax loss is
        computed in float32 (Keras' mixed-precision guide).
        """
        x = self.keras.layers.GlobalAveragePooling2D(name=node.pool_name)(x)
        return self.keras.layers.Dense(num_classes, name=node.name, dtype="float32")(x)

    def model(self, network, settings, num_classes):
        """The functional model of an `architectures.Network`.

        Args:
            network: the walk of the model's spec table.
            settings: the model's (g, p) per setting, from `architectures.settings_of`.
            num_classes: classes of the classifier.
        """
        nodes = {
            architectures.ConvBN: self.conv_bn,
            architectures.ResidualBlock: self.residual_block,
            architectures.Pool: self.pool,
        }
        inputs = self.keras.Input(network.input_shape, name=network.input_name)
        x = inputs
        for node in network.nodes:
            x = nodes[type(node)](x, node, settings)
        outputs = self.classifier(x, network.classifier, num_classes)
        return self.keras.Model(inputs, outputs, name=network.model)
