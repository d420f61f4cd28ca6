"""SSCConv2D: the structured sparse convolution layer (Keras 3, TensorFlow backend)."""

import math

import keras
import numpy as np
import tensorflow as tf

from ssc_tf import pattern as pattern_lib

IMPLEMENTATIONS = ("structured", "reference")


def _check_implementation(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            "Invalid value for argument `implementation`: expected one of "
            f"{IMPLEMENTATIONS}. Received: implementation={implementation!r}"
        )
    return implementation


def _center_tap_window_dynamic(length, kernel, stride, padding):
    """`pattern.center_tap_window` for a spatial length known only at run time (a tensor)."""
    if padding == "same":
        count = (length + stride - 1) // stride
        pad_before = tf.maximum((count - 1) * stride + kernel - length, 0) // 2
    else:
        count = (length - kernel) // stride + 1
        pad_before = 0
    start = kernel // 2 - pad_before
    pad_end = tf.maximum(start + (count - 1) * stride + 1 - length, 0)
    return start, count, pad_end


def _spatial_size(input_shape):
    """(height, width) of an input shape given as (h, w[, c]) or (batch, h, w, c)."""
    return tuple(input_shape[1:3]) if len(input_shape) == 4 else tuple(input_shape[:2])


def _scatter(index, values, size):
    """A vector of `size` zeros with `values` at the distinct positions `index`.

    SparseToDense, unlike scatter_nd, runs multi-threaded on CPU (5x-10x faster here for a
    512-channel kernel) and has a gradient; it only places weights, never activations.
    """
    return tf.raw_ops.SparseToDense(
        sparse_indices=index[:, None],
        output_shape=[size],
        sparse_values=values,
        default_value=tf.zeros((), values.dtype),
        validate_indices=False,
    )


@keras.saving.register_keras_serializable(package="ssc_tf")
class SSCConv2D(keras.layers.Layer):
    """2D structured sparse convolution (SSC, Verma et al., WACV 2023).

    Computes the convolution of a `Conv2D` whose kernel has a fixed structured sparsity
    pattern: for filter n and input channel m, the kernel is a full kh x kw kernel where m and n
    fall in the same of `g` contiguous, balanced channel blocks, a 1 x 1 kernel (the window's
    center tap) where it is not and `m % p == n % p`, and empty otherwise. Neither `g` nor `p`
    has to divide the channel counts. Special cases: `g=1` is `Conv2D`; `p=None` with g
    dividing both channel counts is `Conv2D(groups=g)`; `g=None, p=1` is a 1 x 1 `Conv2D`
    applied at the window's center.

    Only live weights are variables, so checkpoints, `.keras` files and SavedModels shrink with
    the density. With `implementation="structured"` the layer runs as regular dense ops and
    does only the live work: the kh x kw part is one grouped (or depthwise) convolution per run
    of equal-sized blocks on a contiguous channel range; the 1 x 1 part reshapes the channels
    to (M/p, p) and runs one batched matrix product over the p residues, with the positions
    already covered by kh x kw kernels held at zero. TensorFlow's batched matmul takes the
    batch axis first, so the activations are transposed to residue-major order and back (two
    contiguous copies, measured faster than the transpose-free masked 1 x 1 matmul for every
    p >= 2 in `tools/benchmark_layer.py`). `implementation="reference"` scatters the live
    weights into the dense kernel and runs one `Conv2D`: it does all the dense work and is
    the test oracle.

    Initialization uses the real fans of the sparse pattern, not the dense ones: for a
    `VarianceScaling` initializer (`he_normal`, the default, `glorot_uniform`, `lecun_normal`,
    ...) each live weight of filter n and input m is drawn with
    `stddev = sqrt(scale / fan)`, where fan_in(n) counts the live taps feeding filter n
    (kh * kw per kh x kw kernel, 1 per 1 x 1 kernel) and fan_out(m) the live taps reading input
    m. Other initializers are applied to each weight variable as they are.

    Args:
        filters: int, the number of filters N (output channels).
        kernel_size: int or tuple of 2 ints, the window (kh, kw).
        g: int >= 1, the number of channel blocks of the kh x kw part, or None for no
            kh x kw part.
        p: int >= 1, the residue modulus of the 1 x 1 part, or None for no 1 x 1 part. At
            least one of g and p must be set, and every filter must get a kernel (checked at
            build, when the input channels are known).
        strides: int or tuple of 2 ints, the strides of the convolution. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive), as in `Conv2D`. Defaults to
            `"valid"`.
        activation: activation function applied to the output, or None. Defaults to None.
        use_bias: bool, whether to add a bias per filter. Defaults to True.
        kernel_initializer: initializer of the live kernel weights (see above). Defaults to
            `"he_normal"`.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        kernel_regularizer: regularizer applied to every live kernel weight variable.
        bias_regularizer: regularizer applied to the bias.
        implementation: `"structured"` (default) or `"reference"`; both hold the same
            variables and compute the same function.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Input shape:
        4D tensor `(batch, height, width, in_channels)` (channels last).

    Output shape:
        4D tensor `(batch, new_height, new_width, filters)`.

    Returns:
        The convolution of the input, plus bias and activation if set.

    Example:

    >>> x = np.random.rand(4, 8, 8, 128).astype("float32")
    >>> layer = SSCConv2D(128, 3, g=16, p=4, padding="same")
    >>> layer(x).shape
    TensorShape([4, 8, 8, 128])
    >>> round(layer.live_params / layer.dense_params, 4)
    0.0898
    """

    def __init__(
        self,
        filters,
        kernel_size,
        g,
        p,
        strides=1,
        padding="valid",
        activation=None,
        use_bias=True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        implementation="structured",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = pattern_lib.check_positive_int("filters", filters)
        self.kernel_size = pattern_lib.check_pair("kernel_size", kernel_size)
        self.g, self.p = pattern_lib.check_g_p(g, p)
        self.strides = pattern_lib.check_pair("strides", strides)
        self.padding = pattern_lib.check_padding(padding)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.implementation = _check_implementation(implementation)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._pattern = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                "The channel dimension of the inputs to SSCConv2D must be defined. "
                f"Received input_shape={input_shape}"
            )
        self._pattern = pattern_lib.SSCPattern(
            in_channels, self.filters, self.kernel_size, self.g, self.p
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        shapes = self._pattern.weight_shapes()
        # Constant index maps between live weights and their dense / residue positions. The
        # residue index is a constant of every graph (SavedModels included): int32 halves it.
        self._dense_index = self._pattern.dense_index()
        if self.p is not None:
            self._residue_index = self._pattern.residue_index.astype(np.int32)
        initial = self._initial_values(shapes)
        self.kernels = []
        for i, (name, shape) in enumerate(shapes):
            kernel = self.add_weight(
                name=name,
                shape=shape,
                initializer=initial[i],
                regularizer=self.kernel_regularizer,
            )
            # Also an attribute of its own: tf.train.Checkpoint and SavedModel follow
            # attributes but not Keras' tracked lists, and would miss the kernels.
            setattr(self, name, kernel)
            self.kernels.append(kernel)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )

    def _initial_values(self, shapes):
        """One initializer per weight variable, honoring the pattern's real fans."""
        base = self.kernel_initializer
        if not isinstance(base, keras.initializers.VarianceScaling):
            return [base] * len(shapes)
        in_idx, out_idx = np.unravel_index(
            self._dense_index,
            self.kernel_size + (self._pattern.in_channels, self.filters),
        )[2:]
        fan_in = self._pattern.fan_in()[out_idx]
        fan_out = self._pattern.fan_out()[in_idx]
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        std = np.sqrt(base.scale / fan[base.mode])
        # One draw of unit-scale samples (a (1, n) shape has fan 1) with Keras' own
        # distribution and seed handling, scaled per weight and split across the variables.
        unit = keras.initializers.VarianceScaling(
            scale=1.0, mode="fan_in", distribution=base.distribution, seed=base.seed
        )
        sizes = [math.prod(shape) for _, shape in shapes]
        offsets = np.cumsum([0] + sizes)
        drawn = []

        def initializer(i):
            def init(shape, dtype=None):
                if not drawn:
                    drawn.append(unit((1, sum(sizes)), dtype=dtype)[0])
                part = drawn[0][offsets[i] : offsets[i + 1]] * std[offsets[i] : offsets[i + 1]]
                return keras.ops.reshape(keras.ops.cast(part, dtype), shape)

            return init

        return [initializer(i) for i in range(len(shapes))]

    @property
    def pattern(self):
        """The layer's `SSCPattern` (available once the layer is built)."""
        if self._pattern is None:
            raise ValueError(
                f"Layer {self.name} has no pattern yet: it needs its input channels. Build it "
                "first (call it on an input, or `layer.build(input_shape)`)."
            )
        return self._pattern

    @property
    def live_params(self):
        """Live kernel weights (no bias): the weights this layer stores."""
        return self.pattern.live_params

    @property
    def dense_params(self):
        """Kernel weights of the dense `Conv2D` of the same shape (no bias)."""
        return self.pattern.dense_params

    def macs(self, input_shape):
        """Exact multiply-accumulates for one example of `input_shape` (h, w[, c]) or
        (batch, h, w, c); the batch dimension is ignored."""
        return self.pattern.macs(_spatial_size(input_shape), self.strides, self.padding)

    def dense_macs(self, input_shape):
        """Multiply-accumulates of the dense `Conv2D` of the same shape, one example."""
        return self.pattern.dense_macs(_spatial_size(input_shape), self.strides, self.padding)

    def dense_kernel(self):
        """The dense (kh, kw, M, N) kernel: live weights in place, zeros elsewhere."""
        live = tf.concat([tf.reshape(self._cast(k), [-1]) for k in self.kernels], axis=0)
        shape = self.kernel_size + (self.pattern.in_channels, self.filters)
        return tf.reshape(_scatter(self._dense_index, live, math.prod(shape)), shape)

    def set_dense_kernel(self, kernel):
        """Sets the live weights from a dense (kh, kw, M, N) kernel (for example a `Conv2D`'s).

        Entries outside the pattern are ignored: the layer keeps the projection of `kernel`
        onto its pattern.
        """
        shape = self.kernel_size + (self.pattern.in_channels, self.filters)
        kernel = np.asarray(kernel)
        if kernel.shape != shape:
            raise ValueError(
                f"Invalid value for argument `kernel`: expected shape {shape}. "
                f"Received: kernel.shape={kernel.shape}"
            )
        live = kernel.reshape(-1)[self._dense_index]
        offset = 0
        for variable in self.kernels:
            size = math.prod(variable.shape)
            variable.assign(live[offset : offset + size].reshape(variable.shape))
            offset += size

    def _cast(self, variable):
        return tf.cast(variable, self.compute_dtype)

    def call(self, inputs):
        if self.implementation == "reference":
            outputs = tf.nn.conv2d(
                inputs, self.dense_kernel(), self.strides, self.padding.upper()
            )
        else:
            outputs = self._structured(inputs)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self._cast(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _structured(self, inputs):
        parts = []
        if self.pattern.runs:
            parts.append(self._kxk(inputs))
        if self.pattern.num_pointwise_kernels:
            parts.append(self._pointwise(inputs))
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def _kxk(self, inputs):
        """The kh x kw part: one grouped or depthwise convolution per run of blocks."""
        strides, padding = self.strides, self.padding.upper()
        outputs = []
        for run, kernel in zip(self.pattern.runs, self.kernels):
            kernel = self._cast(kernel)
            x = inputs
            if run.in_channels != self.pattern.in_channels:
                x = inputs[..., run.in_start : run.in_start + run.in_channels]
            if run.in_block == 1 and run.num_blocks > 1 and strides[0] == strides[1]:
                # One input per block: a depthwise convolution with multiplier out_block has
                # the same output order as the grouped one and a faster kernel.
                kernel = tf.reshape(kernel, self.kernel_size + (run.num_blocks, run.out_block))
                y = tf.nn.depthwise_conv2d(x, kernel, (1,) + strides + (1,), padding)
            else:
                y = tf.nn.conv2d(x, kernel, strides, padding)
            outputs.append(y)
        y = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)
        missing = self.filters - self.pattern.kxk_filters
        if missing:
            y = tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, missing]])
        return y

    def _center_taps(self, inputs):
        """The inputs each window's center tap reads: (batch, out_h, out_w, M)."""
        starts, counts, pad_ends = [], [], []
        for axis, kernel, stride in zip((1, 2), self.kernel_size, self.strides):
            length = inputs.shape[axis]
            if length is None:
                window = _center_tap_window_dynamic(
                    tf.shape(inputs)[axis], kernel, stride, self.padding
                )
            else:
                window = pattern_lib.center_tap_window(length, kernel, stride, self.padding)
            for values, value in zip((starts, counts, pad_ends), window):
                values.append(value)
        x = inputs
        # Only an even window's center tap can fall into 'same' padding.
        if any(k % 2 == 0 for k in self.kernel_size) and any(
            isinstance(v, tf.Tensor) or v for v in pad_ends
        ):
            x = tf.pad(x, [[0, 0], [0, pad_ends[0]], [0, pad_ends[1]], [0, 0]])
        if self.strides == (1, 1) and starts == [0, 0] and counts == list(inputs.shape[1:3]):
            return x
        (sh, sw), (h0, w0), (nh, nw) = self.strides, starts, counts
        return x[:, h0 : h0 + (nh - 1) * sh + 1 : sh, w0 : w0 + (nw - 1) * sw + 1 : sw, :]

    def _pointwise(self, inputs):
        """The 1 x 1 part: a batched matrix product over the p residues."""
        x = self._center_taps(inputs)
        p, a, c = self.pattern.residue_shape
        in_channels = self.pattern.in_channels
        live = self._cast(self.kernels[-1])
        weights = tf.reshape(_scatter(self._residue_index, live, p * a * c), (p, a, c))
        height, width = x.shape[1:3]
        if height is None or width is None:
            height, width = tf.unstack(tf.shape(x)[1:3])
        if a * p != in_channels:
            x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, a * p - in_channels]])
        if p == 1:
            y = tf.matmul(tf.reshape(x, [-1, a]), weights[0])
        else:
            residues = tf.transpose(tf.reshape(x, [-1, a, p]), [2, 0, 1])
            y = tf.transpose(tf.matmul(residues, weights), [1, 2, 0])
        y = tf.reshape(y, [-1, height, width, c * p])
        if c * p != self.filters:
            y = y[..., : self.filters]
        return y

    def compute_output_shape(self, input_shape):
        height, width = (
            pattern_lib.conv_output_length(length, k, s, self.padding)
            for length, k, s in zip(input_shape[1:3], self.kernel_size, self.strides)
        )
        return (input_shape[0], height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "g": self.g,
                "p": self.p,
                "strides": self.strides,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "implementation": self.implementation,
            }
        )
        return config
