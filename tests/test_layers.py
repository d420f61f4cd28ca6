"""Tests of SSCConv2D: every execution form == the dense oracle == Keras layers, counts,
serialization, errors."""

import contextlib
import itertools
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import SSCConv2D
from ssc_tf import execution_plan
from ssc_tf.pattern import SSCPattern

from layer_testing import (
    ATOL, GROUPED_GRADIENTS, outputs_and_gradients, pair, random_inputs, same_weights,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# (in_channels, filters, g, p): g and p dividing the channels or not, 3 input channels, N != M,
# g larger than M (filters beyond M get 1x1 kernels only) and g larger than N.
CHANNEL_CASES = [
    (8, 8, 2, 2),
    (128, 128, 19, 15),
    (3, 16, 2, 1),
    (12, 20, 4, 3),
    (6, 10, 8, 1),
    (16, 6, 8, 2),
    (10, 14, 3, None),
    (9, 13, None, 4),
]
GEOMETRY = list(itertools.product((1, 3, 5), (1, 2), ("same", "valid")))
# The fast tier checks each channel case at one geometry, chosen so that every kernel size,
# stride and padding meets several channel kinds (square runs, many runs with residue padding,
# p = 1, non-dividing g and p, no K x K or no 1 x 1 part); the slow tier, every pair.
FAST_GEOMETRY = [
    (3, 2, "same"), (3, 1, "same"), (5, 1, "valid"), (5, 2, "same"),
    (1, 1, "same"), (1, 2, "valid"), (3, 2, "valid"), (1, 2, "same"),
]
FORM_CASES = [
    pytest.param(*geometry, *channels,
                 marks=() if geometry == fast else pytest.mark.slow)
    for channels, fast in zip(CHANNEL_CASES, FAST_GEOMETRY) for geometry in GEOMETRY
]


def _assert_forms_match_dense(forms, m, n, g, p, kernel_size, strides, padding, gradients=True,
                              **layer_kwargs):
    # Odd spatial sizes with stride 2 exercise the 'same' padding split; batch alternates 1/3.
    batch = 1 if (kernel_size + strides) % 2 else 3
    in_shape = (batch, 9, 8, m)
    layers = same_weights(
        ("dense",) + tuple(forms), n, in_shape, kernel_size=kernel_size, g=g, p=p,
        strides=strides, padding=padding, **layer_kwargs,
    )
    x = random_inputs(in_shape)
    out_shape = layers["dense"].compute_output_shape(in_shape)
    upstream = random_inputs(out_shape, seed=3)
    y_r, grads_r = outputs_and_gradients(layers["dense"], x, upstream)
    assert y_r.shape == out_shape
    for form in forms:
        if not gradients:
            np.testing.assert_allclose(layers[form](x), y_r, atol=ATOL, rtol=1e-4, err_msg=form)
            continue
        y_s, grads_s = outputs_and_gradients(layers[form], x, upstream)
        np.testing.assert_allclose(y_s, y_r, atol=ATOL, rtol=1e-4, err_msg=form)
        for g_s, g_r in zip(grads_s, grads_r):
            np.testing.assert_allclose(g_s, g_r, atol=ATOL * 10, rtol=1e-4, err_msg=form)


NON_GROUPED = [f for f in execution_plan.FORMS[1:] if not execution_plan.parse(f).grouped]
GROUPED = [f for f in execution_plan.FORMS if execution_plan.parse(f).grouped]


@pytest.mark.parametrize("kernel_size,strides,padding,m,n,g,p", FORM_CASES)
def test_every_form_matches_dense_forward_and_gradients(
    m, n, g, p, kernel_size, strides, padding
):
    _assert_forms_match_dense(
        NON_GROUPED + ["auto"], m, n, g, p, kernel_size, strides, padding
    )
    _assert_forms_match_dense(
        GROUPED, m, n, g, p, kernel_size, strides, padding, gradients=GROUPED_GRADIENTS
    )


@pytest.mark.parametrize("m,n,g,p,layout,offset", [
    (32, 32, 16, 8, "joined", 2),   # a square run, as in ResNet-32 2 %'s first stage
    (30, 64, 5, 7, "joined", 6),    # residue padding (7 does not divide 30), more filters
    (32, 32, 16, 8, "aligned", 0),
])
def test_every_form_matches_dense_under_each_pointwise_layout(m, n, g, p, layout, offset):
    """The bmm and gconv forms rotate the inputs by the offset before reading them
    residue-major: each form against the dense oracle, forward and gradients."""
    assert SSCPattern(m, n, 3, g, p, layout).offset == offset
    _assert_forms_match_dense(NON_GROUPED + ["auto"], m, n, g, p, 3, 2, "same",
                              pointwise_layout=layout)
    _assert_forms_match_dense(GROUPED, m, n, g, p, 3, 1, "same", gradients=GROUPED_GRADIENTS,
                              pointwise_layout=layout)


@pytest.mark.skipif(GROUPED_GRADIENTS, reason="oneDNN is on: the tests above check the grouped "
                                              "forms' gradients in this process")
def test_grouped_gradients_under_onednn():
    """Without oneDNN TF's CPU grouped convolution has no gradient: the fast tier's form cases
    run again in a process with oneDNN on, where TF implements it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
         f"{__file__}::test_every_form_matches_dense_forward_and_gradients"],
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}, cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "skipped" not in result.stdout and f"{len(CHANNEL_CASES)} passed" in result.stdout


@pytest.mark.parametrize("form", [f"{kxk}+bmm" for kxk in execution_plan.KXK_FORMS])
def test_every_form_runs_in_a_graph_with_a_bias_and_no_pointwise_part(form):
    """Grappler fuses a convolution with its BiasAdd, and without oneDNN TF cannot run that
    fusion for a grouped convolution: a pattern whose 1 x 1 part holds no live weight (p = M
    in the aligned layout) must still run in a tf.function. With no 1 x 1 weight the 1 x 1
    forms build nothing, so one name per K x K form covers them all."""
    layer = SSCConv2D(64, 3, g=32, p=64, padding="same", bias_initializer="ones",
                      implementation=form, pointwise_layout="aligned")
    dense = SSCConv2D(64, 3, g=32, p=64, padding="same", bias_initializer="ones",
                      implementation="dense", pointwise_layout="aligned")
    x = random_inputs((2, 8, 8, 64))
    layer.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(layer.get_weights())
    assert layer.pattern.num_pointwise_kernels == 0
    np.testing.assert_allclose(tf.function(layer)(x), dense(x), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("kxk", ["depthwise", "shifted"])
def test_depthwise_forms_need_equal_strides(kxk):
    with pytest.raises(ValueError, match="`implementation`.*equal strides"):
        SSCConv2D(8, 3, g=2, p=2, strides=(2, 1), implementation=f"{kxk}+conv")


@pytest.mark.parametrize("m,n,g", [(8, 8, 2), (12, 12, 4), (10, 12, 3)])
def test_shifted_form_traced_for_tflite_permutes_by_convolution(m, n, g):
    """Traced for TFLite, `shifted` permutes each shift's outputs with a grouped 1 x 1
    convolution of a 0/1 kernel (LiteRT runs GATHER outside XNNPACK), elsewhere with a
    gather; both compute the dense oracle's function. 10 -> 12 with g = 3 has a square run
    (4 -> 4) and one that runs grouped (3 -> 4)."""
    layers = same_weights(("dense", "shifted+gconv"), n, (2, 7, 7, m), kernel_size=3, g=g, p=3,
                          padding="same")
    square = [r for r in layers["dense"].pattern.runs if r.square]
    x = random_inputs((2, 7, 7, m))
    ops = {}
    for runtime in (None, execution_plan.TFLITE):
        with execution_plan.target_runtime(runtime) if runtime else contextlib.nullcontext():
            traced = tf.function(layers["shifted+gconv"]).get_concrete_function(
                tf.TensorSpec(x.shape))
        ops[runtime] = [op.type for op in traced.graph.get_operations()]
        assert ops[runtime].count("DepthwiseConv2dNative") == sum(r.in_block for r in square)
        np.testing.assert_allclose(traced(x), layers["dense"](x), atol=ATOL, rtol=1e-4)
    permutations = sum(r.in_block - 1 for r in square)
    assert permutations
    tf_ops, tflite_ops = ops[None], ops[execution_plan.TFLITE]
    assert tflite_ops.count("Conv2D") - tf_ops.count("Conv2D") == permutations
    assert tf_ops.count("GatherV2") - tflite_ops.count("GatherV2") == permutations


@pytest.mark.parametrize("batch,regime", [
    (1, execution_plan.SMALL_BATCH),
    (execution_plan.SMALL_BATCH_MAX, execution_plan.SMALL_BATCH),
    (execution_plan.SMALL_BATCH_MAX + 1, execution_plan.LARGE_BATCH),
    (None, execution_plan.LARGE_BATCH),
])
def test_inference_runs_the_form_of_its_batch_regime(monkeypatch, batch, regime):
    """A batch known to be small runs the small-batch form; a larger or unknown one (a serving
    signature) the large-batch form."""
    forms = {execution_plan.SMALL_BATCH: "depthwise+conv", execution_plan.LARGE_BATCH: "split+bmm"}
    chosen = []

    def choose(shape, runtime, regime, **kwargs):
        chosen.append(regime)
        return execution_plan.parse(forms[regime])

    monkeypatch.setattr(execution_plan, "choose", choose)
    layer, dense = pair(64, (None, 16, 16, 64), kernel_size=3, g=4, p=4, padding="same")
    traced = tf.function(layer, input_signature=[tf.TensorSpec((batch, 16, 16, 64))])
    graph = traced.get_concrete_function().graph
    assert chosen == [regime]
    op_types = {op.type for op in graph.get_operations()}
    assert ("DepthwiseConv2dNative" in op_types) == (regime == execution_plan.SMALL_BATCH)
    x = random_inputs((batch or 3, 16, 16, 64))
    np.testing.assert_allclose(traced(x), dense(x), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("kernel_size", [2, (2, 4)])
def test_even_kernels_match_dense(kernel_size):
    in_shape = (2, 7, 8, 12)
    forms = ("dense", "auto") + execution_plan.FORMS[1:]
    for strides in (1, 2):
        layers = same_weights(
            forms, 10, in_shape, kernel_size=kernel_size, g=4, p=3, strides=strides,
            padding="same",
        )
        x = random_inputs(in_shape)
        for form in forms[1:]:
            np.testing.assert_allclose(layers[form](x), layers["dense"](x), atol=ATOL,
                                       err_msg=form)


def _copy_keras_layer_into_ssc(keras_layer, dense_kernel, ssc, x):
    keras_out = keras_layer(x)
    ssc.build(x.shape)
    ssc.set_dense_kernel(dense_kernel(keras_layer.kernel.numpy()))
    ssc.bias.assign(keras_layer.bias.numpy())
    return keras_out, ssc(x)


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid")])
def test_g1_equals_conv2d(strides, padding):
    x = random_inputs((2, 9, 9, 24))
    conv = keras.layers.Conv2D(
        32, 3, strides=strides, padding=padding, bias_initializer="random_normal"
    )
    expected, got = _copy_keras_layer_into_ssc(
        conv, lambda k: k, SSCConv2D(32, 3, g=1, p=3, strides=strides, padding=padding), x
    )
    np.testing.assert_allclose(got, expected, atol=ATOL)


def _grouped_to_dense(kernel, in_channels, groups):
    kh, kw, per_group, filters = kernel.shape
    dense = np.zeros((kh, kw, in_channels, filters), kernel.dtype)
    out_per_group = filters // groups
    for n in range(filters):
        b = n // out_per_group
        dense[:, :, b * per_group : (b + 1) * per_group, n] = kernel[:, :, :, n]
    return dense


@pytest.mark.parametrize("m,n,g", [(16, 32, 4), (24, 24, 8), (12, 36, 12)])
def test_p_none_with_dividing_g_equals_grouped_conv2d(m, n, g):
    x = random_inputs((2, 8, 8, m))
    conv = keras.layers.Conv2D(n, 3, padding="same", groups=g, bias_initializer="random_normal")
    expected, got = _copy_keras_layer_into_ssc(
        conv, lambda k: _grouped_to_dense(k, m, g), SSCConv2D(n, 3, g=g, p=None, padding="same"), x
    )
    np.testing.assert_allclose(got, expected, atol=ATOL)


def _depthwise_to_dense(kernel):
    kh, kw, channels, _ = kernel.shape
    dense = np.zeros((kh, kw, channels, channels), kernel.dtype)
    for c in range(channels):
        dense[:, :, c, c] = kernel[:, :, c, 0]
    return dense


@pytest.mark.parametrize("strides", [1, 2])
def test_g_equals_channels_matches_depthwise(strides):
    x = random_inputs((2, 8, 8, 16))
    conv = keras.layers.DepthwiseConv2D(
        5, strides=strides, padding="same", bias_initializer="random_normal"
    )
    expected, got = _copy_keras_layer_into_ssc(
        conv, _depthwise_to_dense,
        SSCConv2D(16, 5, g=16, p=None, strides=strides, padding="same"), x,
    )
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "same"), (2, "valid")])
def test_no_kxk_part_p1_equals_pointwise_conv2d(strides, padding):
    x = random_inputs((2, 9, 9, 12))
    conv = keras.layers.Conv2D(
        20, 1, strides=strides, padding=padding, bias_initializer="random_normal"
    )
    expected, got = _copy_keras_layer_into_ssc(
        conv, lambda k: k, SSCConv2D(20, 1, g=None, p=1, strides=strides, padding=padding), x
    )
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_no_kxk_part_with_p_sees_only_inputs_of_its_residue():
    layer = SSCConv2D(6, 1, g=None, p=3, use_bias=False)
    layer.build((1, 1, 1, 9))
    layer.set_dense_kernel(np.ones((1, 1, 9, 6), "float32"))
    x = np.arange(9, dtype="float32").reshape(1, 1, 1, 9)
    # Filter n sums inputs m with m % 3 == n % 3: {0,3,6}=9, {1,4,7}=12, {2,5,8}=15.
    np.testing.assert_allclose(layer(x)[0, 0, 0], [9, 12, 15, 9, 12, 15])


@pytest.mark.parametrize("m,n,g,p", [(512, 512, 16, 2), (128, 128, 19, 15), (3, 64, 2, 1)])
def test_only_live_weights_are_variables(m, n, g, p):
    layer = SSCConv2D(n, 3, g=g, p=p)
    layer.build((None, 8, 8, m))
    mask = layer.pattern.kernel_mask()
    assert layer.live_params == int(mask.sum())
    assert layer.count_params() == int(mask.sum()) + n
    assert layer.dense_params == mask.size


def test_dense_kernel_round_trips_through_set_dense_kernel():
    layer = SSCConv2D(14, 3, g=3, p=4)
    layer.build((None, 6, 6, 10))
    kernel = random_inputs((3, 3, 10, 14))
    layer.set_dense_kernel(kernel)
    mask = layer.pattern.kernel_mask()
    np.testing.assert_array_equal(layer.dense_kernel().numpy(), np.where(mask, kernel, 0))


@pytest.mark.parametrize("m, n, k, g, p, layout", [
    (64, 128, 3, 15, 4, "joined"),   # two runs of unequal blocks
    (7, 10, 5, 4, 3, "aligned"),     # uneven blocks, filters left without a K x K part
    (5, 9, 2, 2, 2, "joined"),       # an even window: the 1 x 1 part's center tap
    (32, 64, 1, None, 4, "joined"),  # no K x K part
    (10, 7, 3, 3, None, "joined"),   # no 1 x 1 part
])
def test_dense_positions_computed_in_the_graph_are_the_patterns(m, n, k, g, p, layout):
    layer = SSCConv2D(n, k, g=g, p=p, pointwise_layout=layout)
    layer.build((None, 9, 9, m))
    np.testing.assert_array_equal(layer._dense_positions().numpy(),
                                  layer.pattern.dense_index())


def test_macs_and_output_shape():
    layer = SSCConv2D(128, 3, g=16, p=4, strides=2, padding="same")
    assert layer.compute_output_shape((None, 9, 8, 64)) == (None, 5, 4, 128)
    layer.build((None, 9, 8, 64))
    assert layer.macs((None, 9, 8, 64)) == 20 * layer.live_params
    assert layer.dense_macs((9, 8)) == 20 * 9 * 64 * 128


@pytest.mark.parametrize("fan, fan_in", [("dense", 9 * 512), ("live", 32 * 9 + 240)])
def test_he_normal_scales_by_the_dense_or_the_live_fan_in(fan, fan_in):
    # 512 -> 512, g 16, p 2: each filter reads 32 inputs through 3 x 3 kernels and 240 through
    # 1 x 1 kernels (528 live taps), where a dense kernel reads 4,608.
    keras.utils.set_random_seed(0)
    layer = SSCConv2D(512, 3, g=16, p=2, padding="same", use_bias=False, fan=fan)
    layer.build((None, 4, 4, 512))
    live = np.concatenate([w.ravel() for w in layer.get_weights()])
    assert np.std(live) == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.03)
    # Each output sums 528 live taps: with the live fan-in its variance is ~2x the input's, as
    # He et al. intend without a normalization; with the dense one, 528 / 4608 of that (the
    # masked dense kernel's), which the batch norm after every SSC layer of the models undoes.
    y = layer(random_inputs((8, 4, 4, 512)), training=False).numpy()
    assert np.var(y[:, 1:-1, 1:-1]) == pytest.approx(2.0 * 528 / fan_in, rel=0.15)


def test_seeded_initializer_is_deterministic():
    def weights():
        layer = SSCConv2D(40, 3, g=3, p=4, kernel_initializer=keras.initializers.GlorotUniform(7))
        layer.build((None, 5, 5, 30))
        return layer.get_weights()

    for a, b in zip(weights(), weights()):
        np.testing.assert_array_equal(a, b)


def test_non_variance_scaling_initializer_is_applied_as_is():
    layer = SSCConv2D(8, 3, g=2, p=2, kernel_initializer="ones")
    layer.build((None, 5, 5, 8))
    assert all((w == 1).all() for w in layer.get_weights()[:-1])


def test_config_round_trip():
    layer = SSCConv2D(
        24, (3, 5), g=5, p=7, strides=(2, 1), padding="SAME", activation="relu",
        kernel_regularizer=keras.regularizers.L2(1e-4), implementation="split+bmm", fan="live",
    )
    config = layer.get_config()
    clone = SSCConv2D.from_config(config)
    assert clone.get_config() == config
    assert (clone.g, clone.p, clone.padding, clone.kernel_size, clone.fan,
            clone.pointwise_layout) == (5, 7, "same", (3, 5), "live", "joined")


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((8, 8, 16))
    x = SSCConv2D(32, 3, g=5, p=3, padding="same", activation="relu")(inputs)
    outputs = SSCConv2D(10, 3, g=None, p=2, strides=2)(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[1], SSCConv2D)
    x = random_inputs((2, 8, 8, 16))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_a_keras_file_saved_before_pointwise_layout_loads_as_aligned(tmp_path):
    """A .keras file written before the joined layout holds no `pointwise_layout`: its weights
    belong to the aligned layout, and it must load as that, never silently as joined."""
    inputs = keras.Input((8, 8, 32))
    outputs = SSCConv2D(32, 3, g=16, p=8, padding="same", pointwise_layout="aligned")(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "old.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layer_config = next(
        layer["config"] for layer in config["config"]["layers"]
        if layer["class_name"] == "SSCConv2D"
    )
    del layer_config["pointwise_layout"]
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    loaded = keras.models.load_model(path)
    assert loaded.layers[1].pointwise_layout == "aligned"
    x = random_inputs((2, 8, 8, 32))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    joined = SSCConv2D.from_config({**layer_config, "pointwise_layout": "joined"})
    joined.build(x.shape)
    assert joined.pattern.num_pointwise_kernels != loaded.layers[1].pattern.num_pointwise_kernels


def test_tf_checkpoint_restores_every_kernel(tmp_path):
    """tf.train.Checkpoint (training's checkpoints) must see the kernels, not just the bias."""

    def model():
        inputs = keras.Input((8, 8, 16))
        x = SSCConv2D(32, 3, g=5, p=3, padding="same")(inputs)
        return keras.Model(inputs, SSCConv2D(20, 3, g=None, p=2)(x))

    keras.utils.set_random_seed(1)
    saved = model()
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(2)
    restored = model()
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    names = [v.path.split("/")[-1] for v in restored.weights]
    assert names.count("kxk_kernel_0") == 1 and names.count("pointwise_kernel") == 2
    for a, b in zip(saved.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("form", ["auto"] + [
    f"grouped+{pointwise}" for pointwise in execution_plan.POINTWISE_FORMS])
@pytest.mark.parametrize("kernel_size,padding", [(3, "same"), (1, "valid"), (2, "same")])
def test_unknown_spatial_size_matches_static_call(form, kernel_size, padding):
    """A graph traced for any spatial size finds the center taps at run time (a strided
    slice); a static size lets the 1 x 1 `conv` form stride its convolution instead. The
    K x K forms do not depend on the size."""
    inputs = keras.Input((None, None, 12))
    layer = SSCConv2D(10, kernel_size, g=4, p=3, strides=2, padding=padding,
                      implementation=form)
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, 10)
    dense = SSCConv2D(10, kernel_size, g=4, p=3, strides=2, padding=padding,
                      implementation="dense")
    dense.build((None, None, None, 12))
    dense.set_weights(layer.get_weights())
    dynamic = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 12))])
    for size in [(9, 7), (8, 8)]:
        x = random_inputs((2, *size, 12))
        np.testing.assert_allclose(dynamic(x), dense(x), atol=ATOL, rtol=1e-4)
        np.testing.assert_allclose(tf.function(layer)(x), dense(x), atol=ATOL, rtol=1e-4)


def test_mixed_precision_runs_in_float16():
    layer = SSCConv2D(16, 3, g=4, p=3, padding="same", dtype="mixed_float16")
    y = layer(random_inputs((2, 6, 6, 8)))
    assert y.dtype == tf.float16
    assert all(v.dtype == "float32" for v in layer.weights)


@pytest.mark.parametrize("kwargs,message", [
    (dict(filters=0, kernel_size=3, g=1, p=1), "`filters`.*Received: filters=0"),
    (dict(filters=8, kernel_size=0, g=1, p=1), "`kernel_size`.*Received: kernel_size=0"),
    (dict(filters=8, kernel_size=3, g=0, p=1), "`g`.*Received: g=0"),
    (dict(filters=8, kernel_size=3, g=2, p=-2), "`p`.*Received: p=-2"),
    (dict(filters=8, kernel_size=3, g=None, p=None), "at least one"),
    (dict(filters=8, kernel_size=3, g=2, p=2, padding="full"), "`padding`.*Received"),
    (dict(filters=8, kernel_size=3, g=2, p=2, strides=(1, 0)), "`strides`"),
    (dict(filters=8, kernel_size=3, g=2, p=2, implementation="fast"), "`implementation`"),
    (dict(filters=8, kernel_size=3, g=2, p=2, fan="sparse"),
     r"^Invalid value for argument `fan`: expected one of \('dense', 'live'\). Received: "
     r"fan='sparse'$"),
    (dict(filters=8, kernel_size=3, g=2, p=2, pointwise_layout="residue"),
     r"^Invalid value for argument `pointwise_layout`: expected one of \('joined', "
     r"'aligned'\). Received: pointwise_layout='residue'$"),
])
def test_bad_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSCConv2D(**kwargs)


def test_g_too_large_raises_at_build_naming_g_and_p():
    layer = SSCConv2D(16, 3, g=8, p=None)
    with pytest.raises(ValueError, match="g=8, p=None leave 8 of 16 filters without any kernel"):
        layer.build((None, 8, 8, 4))


def test_set_dense_kernel_checks_shape():
    layer = SSCConv2D(8, 3, g=2, p=2)
    layer.build((None, 5, 5, 4))
    with pytest.raises(ValueError, match=r"expected shape \(3, 3, 4, 8\)"):
        layer.set_dense_kernel(np.zeros((3, 3, 8, 4)))


def test_pattern_before_build_raises_clear_error():
    with pytest.raises(ValueError, match="no pattern yet"):
        SSCConv2D(8, 3, g=2, p=2).live_params
