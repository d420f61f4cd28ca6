"""SSCConv2D: the structured sparse convolution layer (Keras 3, TensorFlow backend)."""

import math

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from ssc_tf import arguments
from ssc_tf import execution_plan
from ssc_tf import pattern as pattern_lib


def current_runtime():
    """The `execution_plan` runtime that layers traced now run on.

    An enclosing `execution_plan.target_runtime` wins; else a visible GPU; else the CPU, with
    or without oneDNN (TensorFlow exposes that switch only through its private port module).
    """
    override = execution_plan.runtime_override()
    if override is not None:
        return override
    if tf.config.list_logical_devices("GPU"):
        return execution_plan.GPU
    if _pywrap_util_port.IsMklEnabled():
        return execution_plan.CPU_ONEDNN
    return execution_plan.CPU_EIGEN


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


def _reshape_channels(x, channel_dims, like=None):
    """`x` reshaped to the (batch, height, width) of `like` (default: `x`), then
    `channel_dims`."""
    like = x if like is None else like
    height, width = (
        tf.shape(like)[axis] if like.shape[axis] is None else like.shape[axis] for axis in (1, 2)
    )
    return tf.reshape(x, [-1, height, width, *channel_dims])


def _device_index(positions):
    """Constant positions (numpy integers, or an int32 tensor computed from constants) as the
    int64 index that a gather or scatter reads.

    On a GPU, TensorFlow keeps int32 tensors in host memory, so an int32 index would be copied
    to the device at every step. The graph stores an int32 constant (half the bytes: int64
    constants made the quickstart's SavedModel 2.46 MB instead of 2.06 MB) and casts it;
    Grappler folds the cast of a constant into an int64 constant, which stays on the device,
    in every traced graph (`tf.function`, a served SavedModel).
    """
    if not tf.is_tensor(positions):
        positions = np.asarray(positions, np.int32)
    return tf.cast(positions, tf.int64)


def _scatter(index, values, size):
    """A vector of `size` zeros with `values` at the distinct positions `index`.

    SparseToDense, unlike scatter_nd, runs multi-threaded on CPU (5x-10x faster here for a
    512-channel kernel) and has a gradient; it only places weights, never activations.
    """
    return tf.raw_ops.SparseToDense(
        sparse_indices=_device_index(index)[:, None],
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
    center tap) where it is not and `(m - offset) % p == n % p`, and empty otherwise. Neither
    `g` nor `p` has to divide the channel counts. The offset is `pointwise_layout`'s:
    `"joined"` (the default) rotates each filter's 1 x 1 inputs into the next block, so the
    kernels join every block into one connected layer, `"aligned"` (offset 0) is ssc_tf's
    earlier layout, which can close the channels into isolated groups (`ssc_tf.pattern`,
    docs/pattern.md). Special cases: `g=1` is `Conv2D`; `p=None` with g dividing both channel
    counts is `Conv2D(groups=g)`; `g=None, p=1` is a 1 x 1 `Conv2D` applied at the window's
    center.

    Only live weights are variables, so checkpoints, `.keras` files and SavedModels shrink with
    the density. The layer computes its function in one of several exactly equivalent forms
    (`ssc_tf.execution_plan`): the kh x kw part as grouped, depthwise, shifted depthwise or
    per-block convolutions on contiguous channel ranges, the 1 x 1 part as a batched matrix
    product or a grouped 1 x 1 convolution over the p residues of the inputs rotated by the
    offset, or as one 1 x 1 convolution of the masked kernel, or the whole layer as one dense
    convolution of the masked kernel (`"dense"`: all the dense work, the test oracle). With
    `implementation="auto"` (the default) the execution plan picks the form measured fastest
    for the layer's shape, batch regime (small or large batch, or a training step) and runtime
    (TF CPU with or without oneDNN, GPU, TFLite), when the layer is traced; a form's name
    forces it.

    For a `VarianceScaling` initializer (`he_normal`, the default, `glorot_uniform`,
    `lecun_normal`, ...) each live weight of filter n and input m is drawn with
    `stddev = sqrt(scale / fan)`, where `fan` says which fans: `"dense"` (the default) the
    dense kernel's, as a `Conv2D` or a masked dense convolution starts (fan_in kh * kw * M,
    fan_out kh * kw * N), so the live weights start as the same weights of a dense kernel
    would; `"live"` the pattern's real fans, fan_in(n) the live taps feeding filter n (kh * kw
    per kh x kw kernel, 1 per 1 x 1 kernel) and fan_out(m) the live taps reading input m, which
    keeps each output's variance without a normalization after the layer. Under batch norm the
    weights' scale sets how fast they learn, and the dense fans learn at the pace of the masked
    pruning baselines (docs/pattern.md, "Initial scale"). Other initializers are applied to
    each weight variable as they are.

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
        fan: `"dense"` (default) or `"live"`: the fans a `VarianceScaling` initializer scales
            each live weight by (see above).
        pointwise_layout: `"joined"` (default) or `"aligned"`: which inputs the 1 x 1
            kernels read (see above). A layer saved without it (before ssc_tf had the joined
            layout) loads as `"aligned"`, the layout its weights belong to.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        kernel_regularizer: regularizer applied to every live kernel weight variable.
        bias_regularizer: regularizer applied to the bias.
        implementation: `"auto"` (default: the execution plan decides), `"dense"`, or a
            form `"kxk+pointwise"` from `execution_plan.FORMS` (`"grouped+bmm"`,
            `"depthwise+conv"`, ...). Every form holds the same variables and computes the
            same function.
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
        implementation="auto",
        fan="dense",
        pointwise_layout=pattern_lib.JOINED,
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
        self._form = execution_plan.parse(implementation)
        if self._form is not None and self._form.kxk in ("depthwise", "shifted") and (
            self.strides[0] != self.strides[1]
        ):
            raise ValueError(
                f"Invalid value for argument `implementation`: {implementation!r} needs equal "
                f"strides (a depthwise convolution's). Received: strides={self.strides}"
            )
        self.implementation = implementation
        self.fan = arguments.check_choice("fan", fan, pattern_lib.FANS)
        self.pointwise_layout = arguments.check_choice(
            "pointwise_layout", pointwise_layout, pattern_lib.LAYOUTS)
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
            in_channels, self.filters, self.kernel_size, self.g, self.p,
            layout=self.pointwise_layout,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        shapes = self._pattern.weight_shapes()
        # Constant index maps between live weights and their dense / residue positions: the
        # constants of every graph that places weights (SavedModels included), so int32
        # (`_device_index` makes them int64 where a scatter reads them).
        self._dense_index = self._pattern.dense_index().astype(np.int32)
        if self.p is not None:
            self._residue_index = self._pattern.residue_index.astype(np.int32)
            self._pointwise_index = self._pattern.pointwise_dense_index().astype(np.int32)
            self._grouped_pointwise_index = (
                self._pattern.grouped_pointwise_index().astype(np.int32))
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
        """One initializer per weight variable, scaled by the fans `self.fan` names."""
        base = self.kernel_initializer
        if not isinstance(base, keras.initializers.VarianceScaling):
            return [base] * len(shapes)
        in_idx, out_idx = np.unravel_index(
            self._dense_index,
            self.kernel_size + (self._pattern.in_channels, self.filters),
        )[2:]
        if self.fan == "dense":
            window = math.prod(self.kernel_size)
            fan_in = np.full(out_idx.shape, window * self._pattern.in_channels)
            fan_out = np.full(in_idx.shape, window * self.filters)
        else:
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
        shape = self.kernel_size + (self.pattern.in_channels, self.filters)
        if current_runtime() in execution_plan.TFLITE_RUNTIMES:
            return self._placed(self.kernels, self._dense_index, shape)
        return self._placed(self.kernels, self._dense_positions(), shape)

    def _dense_positions(self):
        """`SSCPattern.dense_index` as an int32 tensor, the K x K part's positions computed in
        the graph from the runs (a few ranges and products, which TensorFlow folds into a
        constant when it optimizes the graph: VGG-19's layers of 270,336 live weights ran as
        fast in the dense form as with a stored index), only the 1 x 1 part's stored. A
        SavedModel that serves small batches in the dense form and large ones in a
        structured one (`ssc_tf.serving_plan`) holds its second graph for 0.75 MB (the
        quickstart ResNet-32) where with an index of every live weight it took 1.35 MB."""
        m, n = self.pattern.in_channels, self.filters
        kh, kw = self.kernel_size
        h, w = tf.reshape(tf.range(kh), (kh, 1, 1, 1)), tf.reshape(tf.range(kw), (1, kw, 1, 1))
        positions = []
        for run in self.pattern.runs:
            i = tf.reshape(tf.range(run.in_block), (1, 1, run.in_block, 1))
            o = tf.reshape(tf.range(run.out_channels), (1, 1, 1, run.out_channels))
            row = run.in_start + (o // run.out_block) * run.in_block + i
            positions.append(tf.reshape(((h * kw + w) * m + row) * n + run.out_start + o, [-1]))
        if self.pattern.num_pointwise_kernels:
            center = (kh // 2) * kw + kw // 2
            positions.append(center * m * n + tf.constant(self._pointwise_index))
        return tf.concat(positions, axis=0)

    def _placed(self, variables, index, shape):
        """A kernel of `shape`: the values of `variables`, flattened in order, at the flat
        positions `index`, zeros elsewhere.

        For a TFLite file (`execution_plan.target_runtime`), whose converter freezes the
        weights anyway, the kernel is placed in numpy and enters the graph as a constant: the
        converter does not fold SparseToDense, so LiteRT would run it at every invoke and int8
        could not quantize the kernel per channel.
        """
        if current_runtime() in execution_plan.TFLITE_RUNTIMES:
            with tf.init_scope():
                live = np.concatenate([np.ravel(v.numpy()) for v in variables])
            kernel = np.zeros(math.prod(shape), live.dtype)
            kernel[index] = live
            return tf.constant(kernel.reshape(shape), self.compute_dtype)
        live = tf.concat([tf.reshape(self._cast(v), [-1]) for v in variables], axis=0)
        return tf.reshape(_scatter(index, live, math.prod(shape)), shape)

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

    def call(self, inputs, training=None):
        if self._form is not None:
            form = self._form
        elif training:
            form = self._planned(inputs, execution_plan.TRAIN)
        else:
            form = self._inference_form(inputs)
        outputs = self._run(inputs, form, self._cast(self.bias) if self.use_bias else None)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def plan_shape(self, input_shape):
        """The `execution_plan.LayerShape` of this layer for inputs of `input_shape`, or None
        where the plan has no rule (a non-square window or stride, an unknown spatial size):
        such layers run `"dense"`."""
        size = _spatial_size(input_shape)
        if None in size or len(set(self.kernel_size)) > 1 or len(set(self.strides)) > 1:
            return None
        return execution_plan.LayerShape(
            in_channels=self.pattern.in_channels, filters=self.filters,
            kernel_size=self.kernel_size[0], strides=self.strides[0], input_size=size,
            g=self.g, p=self.p,
        )

    def planned_form(self, input_shape, regime, runtime=None):
        """The form `implementation="auto"` runs for `input_shape` in `regime` (one of
        `execution_plan.REGIMES`) on `runtime` (default: the current one), with the times of the
        cost table an enclosing `execution_plan.cost_table` names (default: the package's),
        for a TFLite runtime those of the LiteRT CPU an enclosing
        `execution_plan.target_runtime` names."""
        shape = self.plan_shape(input_shape)
        if shape is None:
            return execution_plan.parse(execution_plan.DENSE)
        return execution_plan.choose(shape, runtime or current_runtime(), regime,
                                     path=execution_plan.costs_path(),
                                     litert_cpu=execution_plan.litert_cpu_override())

    def _planned(self, inputs, regime):
        """The form `implementation="auto"` runs now: the one an enclosing
        `execution_plan.layer_forms` (or `target_runtime`) names for this layer, else
        `planned_form`."""
        override = execution_plan.form_override(self.name)
        if override is not None:
            return override
        return self.planned_form(inputs.shape, regime)

    def _inference_form(self, inputs):
        """The inference form: the small-batch one for a batch known to be small (TFLite
        files run at batch 1), else the large-batch one. A graph traced for any batch takes
        the large-batch form; a SavedModel's serving graph holds both, each traced with its
        forms named (`ssc_tf.serving.ServingModel`'s `batch_forms`)."""
        batch = inputs.shape[0]
        small_batch = batch is not None and batch <= execution_plan.SMALL_BATCH_MAX
        if small_batch or current_runtime() in execution_plan.TFLITE_RUNTIMES:
            return self._planned(inputs, execution_plan.SMALL_BATCH)
        return self._planned(inputs, execution_plan.LARGE_BATCH)

    def _run(self, inputs, form, bias):
        if form.dense:
            outputs = tf.nn.conv2d(
                inputs, self.dense_kernel(), self.strides, self.padding.upper()
            )
            return outputs if bias is None else tf.nn.bias_add(outputs, bias)
        parts = []
        if self.pattern.runs:
            parts.append(self._kxk(inputs, form.kxk))
        if self.pattern.num_pointwise_kernels:
            parts.append(self._pointwise(inputs, form.pointwise))
        if bias is not None:
            # On the first part, before the sum: the TFLite converter fuses an Add of a
            # constant into the CONV_2D before it, as a Conv2D's bias (a folded batch norm's
            # shift: `ssc_tf.models.folding`). An Add, not a BiasAdd: Grappler fuses a
            # convolution and its BiasAdd into _FusedConv2D, which TF's CPU kernels without
            # oneDNN cannot run for a grouped convolution.
            parts[0] = parts[0] + bias
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def _kxk(self, inputs, how):
        """The kh x kw part, run by run, each `how` (one of `execution_plan.KXK_FORMS`)."""
        run_kxk = {"grouped": self._grouped, "depthwise": self._depthwise, "split": self._split,
                   "shifted": self._shifted}
        outputs = []
        for run, kernel in zip(self.pattern.runs, self.kernels):
            x = inputs
            if run.in_channels != self.pattern.in_channels:
                x = inputs[..., run.in_start : run.in_start + run.in_channels]
            outputs.append(run_kxk[how](x, run, self._cast(kernel)))
        y = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)
        missing = self.filters - self.pattern.kxk_filters
        if missing:
            y = tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, missing]])
        return y

    def _conv(self, x, kernel):
        return tf.nn.conv2d(x, kernel, self.strides, self.padding.upper())

    def _depthwise_conv(self, x, kernel):
        return tf.nn.depthwise_conv2d(
            x, kernel, (1,) + self.strides + (1,), self.padding.upper()
        )

    def _grouped(self, x, run, kernel):
        """One grouped convolution; a depthwise one (same output order, a faster kernel) where
        every block has one input."""
        if run.in_block == 1 and run.num_blocks > 1 and self.strides[0] == self.strides[1]:
            kernel = tf.reshape(kernel, self.kernel_size + (run.num_blocks, run.out_block))
            return self._depthwise_conv(x, kernel)
        return self._conv(x, kernel)

    def _depthwise(self, x, run, kernel):
        """Every input of the run convolved with its block's out_block kernels (a depthwise
        convolution with that multiplier), then summed over each block's inputs."""
        kh, kw = self.kernel_size
        nb, ib, ob = run.num_blocks, run.in_block, run.out_block
        kernel = tf.reshape(kernel, (kh, kw, ib, nb, ob))
        kernel = tf.reshape(tf.transpose(kernel, [0, 1, 3, 2, 4]), (kh, kw, nb * ib, ob))
        y = self._depthwise_conv(x, kernel)
        if ib == 1:
            return y
        return _reshape_channels(
            tf.reduce_sum(_reshape_channels(y, (nb, ib, ob)), axis=4), (nb * ob,)
        )

    def _shifted(self, x, run, kernel):
        """A square run as in_block depthwise convolutions, each shift's outputs permuted to
        their filters within the blocks (`KxKRun.shifted_taps`, `shifted_order`); any other
        run grouped."""
        if not run.square:
            return self._grouped(x, run, kernel)
        kh, kw = self.kernel_size
        taps = tf.reshape(kernel, (kh, kw, -1))
        y = None
        for shift in range(run.in_block):
            depthwise = tf.gather(taps, _device_index(run.shifted_taps(shift)), axis=2)
            z = self._depthwise_conv(x, depthwise[..., None])
            if shift:
                z = self._permuted(z, run, shift)
            y = z if y is None else y + z
        return y

    def _permuted(self, z, run, shift):
        """`z[..., run.shifted_order(shift)]`: a gather, or in TFLite (which runs GATHER
        outside XNNPACK) a grouped 1 x 1 convolution of a 0/1 kernel, k x k per block."""
        order = run.shifted_order(shift)
        if current_runtime() not in execution_plan.TFLITE_RUNTIMES:
            return tf.gather(z, _device_index(order), axis=-1)
        k = run.in_block
        kernel = np.zeros((1, 1, k, run.out_channels), np.float32)
        kernel[0, 0, order % k, np.arange(run.out_channels)] = 1
        return tf.nn.conv2d(z, tf.constant(kernel, self.compute_dtype), 1, "VALID")

    def _split(self, x, run, kernel):
        """One dense convolution per block."""
        ib, ob = run.in_block, run.out_block
        return tf.concat(
            [
                self._conv(x[..., b * ib : (b + 1) * ib], kernel[..., b * ob : (b + 1) * ob])
                for b in range(run.num_blocks)
            ],
            axis=-1,
        )

    def _center_taps(self, inputs, strided=False):
        """The inputs each window's center tap reads, and the strides at which a 1 x 1
        convolution of them reads those taps: (batch, out_h, out_w, M) and (1, 1) by default.

        With `strided` (and a static spatial size), the stride is left to that convolution:
        the inputs are only cut to start at the first center tap, and to end after the last
        where the strided convolution would read further, and the layer's strides come back.
        The convolution then reads the taps itself, with no strided slice (LiteRT runs one
        outside XNNPACK, which made strided 1 x 1 shortcuts 4x slower than Conv2D's)."""
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
        if strided and None not in x.shape[1:3]:
            ends = [
                length if (length - start - 1) // stride + 1 == count
                else start + (count - 1) * stride + 1
                for length, start, count, stride in zip(x.shape[1:3], starts, counts,
                                                        self.strides)
            ]
            if starts != [0, 0] or ends != list(x.shape[1:3]):
                x = x[:, starts[0] : ends[0], starts[1] : ends[1], :]
            return x, self.strides
        if self.strides == (1, 1) and starts == [0, 0] and counts == list(inputs.shape[1:3]):
            return x, (1, 1)
        (sh, sw), (h0, w0), (nh, nw) = self.strides, starts, counts
        x = x[:, h0 : h0 + (nh - 1) * sh + 1 : sh, w0 : w0 + (nw - 1) * sw + 1 : sw, :]
        return x, (1, 1)

    def _pointwise(self, inputs, how):
        """The 1 x 1 part, `how` (one of `execution_plan.POINTWISE_FORMS`), at the center
        taps."""
        live = self.kernels[-1:]
        m, n = self.pattern.in_channels, self.filters
        if how == "conv":
            x, strides = self._center_taps(inputs, strided=True)
            kernel = self._placed(live, self._pointwise_index, (1, 1, m, n))
            return tf.nn.conv2d(x, kernel, strides, "VALID")
        x, strides = self._center_taps(inputs, strided=how == "gconv")
        p, a, c = self.pattern.residue_shape
        if a * p != m:
            x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, a * p - m]])
        offset = self.pattern.offset
        if offset:
            # tf.roll(x, -offset, axis=-1) as two slices, which LiteRT's XNNPACK runs.
            x = tf.concat([x[..., offset:], x[..., :offset]], axis=-1)
        if how == "gconv":
            # Inputs residue-major, p groups of (a, c) kernels, outputs back to filter order.
            kernel = self._placed(live, self._grouped_pointwise_index, (1, 1, a, p * c))
            if p > 1:
                x = _reshape_channels(
                    tf.transpose(tf.reshape(x, [-1, a, p]), [0, 2, 1]), (p * a,), like=x)
            x = tf.nn.conv2d(x, kernel, strides, "VALID")
            y = tf.transpose(tf.reshape(x, [-1, p, c]), [0, 2, 1]) if p > 1 else x
        else:
            weights = self._placed(live, self._residue_index, (p, a, c))
            if p == 1:
                y = tf.matmul(tf.reshape(x, [-1, a]), weights[0])
            else:
                residues = tf.transpose(tf.reshape(x, [-1, a, p]), [2, 0, 1])
                y = tf.transpose(tf.matmul(residues, weights), [1, 2, 0])
        y = _reshape_channels(y, (c * p,), like=x)
        if c * p != n:
            y = y[..., :n]
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
                "fan": self.fan,
                "pointwise_layout": self.pointwise_layout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        """The layer of `get_config()`; one saved before `pointwise_layout` existed is
        `"aligned"`, the layout of its weights."""
        return cls(**{"pointwise_layout": pattern_lib.ALIGNED, **config})
