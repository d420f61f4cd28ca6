"""ssc_tf: Structured Sparse Convolutions for TensorFlow/Keras.

The public API is small:

- `ssc_tf.SSCConv2D`: the structured sparse convolution layer.
- `ssc_tf.SSCPattern`: the layer's sparsity pattern and exact counts (numpy only).
- `ssc_tf.paper_density`: the paper's density estimate, eq. (10).
"""

__version__ = "0.1.0"

from ssc_tf.pattern import SSCPattern, paper_density  # noqa: E402

__all__ = ["SSCConv2D", "SSCPattern", "paper_density", "__version__"]


def __getattr__(name):
    # The layer imports TensorFlow; `import ssc_tf.pattern` stays numpy-only.
    if name == "SSCConv2D":
        from ssc_tf.layers import SSCConv2D

        return SSCConv2D
    raise AttributeError(f"module 'ssc_tf' has no attribute {name!r}")
