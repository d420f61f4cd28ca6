"""What the layer tests share: seeded inputs, layers holding the same weights, gradients."""

import numpy as np
import tensorflow as tf

from ssc_tf import SSCConv2D
from ssc_tf import execution_plan
from ssc_tf import layers as layers_lib

ATOL = 1e-4
# Without oneDNN, TF's CPU grouped convolution has no gradient (TF's own error: "Gradients for
# grouped convolutions are not supported on CPU"); test_layers.test_grouped_gradients_under_onednn
# runs those checks in a process with oneDNN on.
GROUPED_GRADIENTS = layers_lib.current_runtime() != execution_plan.CPU_EIGEN


def random_inputs(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def same_weights(implementations, filters, in_shape, **kwargs):
    """One layer per implementation, all holding the same random weights."""
    layers = {}
    for implementation in implementations:
        layers[implementation] = SSCConv2D(filters, implementation=implementation, **kwargs)
        layers[implementation].build(in_shape)
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal(w.shape).astype("float32")
               for w in layers[implementations[0]].get_weights()]
    for layer in layers.values():
        layer.set_weights(weights)
    return layers


def pair(filters, in_shape, **kwargs):
    """The planned layer (`"auto"`) and the dense oracle, holding the same weights."""
    layers = same_weights(("auto", "dense"), filters, in_shape, **kwargs)
    return layers["auto"], layers["dense"]


def outputs_and_gradients(layer, x, upstream):
    """A training step's outputs and gradients (`training=True`: an `"auto"` layer runs its
    training form, which never needs a gradient that the runtime lacks)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * upstream)
    # Zeros for a variable that no op reads (a pattern without live 1 x 1 weights).
    grads = tape.gradient(
        loss, [x] + [v.value for v in layer.trainable_variables],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return y.numpy(), [g.numpy() for g in grads]
