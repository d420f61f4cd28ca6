"""Tests of ssc_tf.models.folding: batch norm folded into the SSC layer before it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import data
from ssc_tf import models
from ssc_tf import serving
from ssc_tf.layers import SSCConv2D
from ssc_tf.models import folding
from ssc_tf.models import masked


def _batch_norms(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def _randomize_batch_norms(model, seed=0):
    """Moving statistics and affine weights far from their initial identity map."""
    rng = np.random.default_rng(seed)
    for layer in _batch_norms(model):
        n = layer.moving_mean.shape[0]
        values = {"gamma": rng.uniform(0.5, 2, n), "beta": rng.normal(0, 0.5, n),
                  "moving_mean": rng.normal(0, 0.5, n), "moving_variance": rng.uniform(0.2, 3, n)}
        layer.set_weights([values[w.name] for w in layer.weights])


@pytest.mark.parametrize("name, g, p, num_conv2d", [
    ("resnet32", (2, 4, 15), (2, 4, 4), 1),  # The stem.
    # g = p = 1 at width 64: the stem and the layer after it are standard Conv2Ds.
    ("vgg19", (1, 2, 4, 16), (1, 2, 4, 8), 2),
])
def test_folded_model_computes_the_inference_model(name, g, p, num_conv2d):
    model = models.build(name, num_classes=10, input_shape=(32, 32, 3), g=g, p=p)
    _randomize_batch_norms(model)
    before = [w.numpy().copy() for w in model.weights]
    inputs = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    folded = folding.fold_batch_norm(model)
    expected = model(inputs, training=False).numpy()
    np.testing.assert_allclose(folded(inputs).numpy(), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    convs = [layer for layer in folded.layers
             if isinstance(layer, (SSCConv2D, keras.layers.Conv2D))]
    assert sum(type(layer) is keras.layers.Conv2D for layer in convs) == num_conv2d
    assert all(layer.use_bias for layer in convs) and not _batch_norms(folded)
    # Every convolution lost its batch norm's 4 vectors and gained a bias: 3 fewer per filter.
    removed = sum(3 * layer.filters for layer in convs)
    assert folded.count_params() == model.count_params() - removed
    # The source model is untouched.
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def _small_model(use_bias, center=True, scale=True, second_reader=False):
    inputs = keras.Input((6, 6, 8))
    conv = SSCConv2D(12, 3, g=2, p=3, padding="same", use_bias=use_bias, name="ssc")
    x = conv(inputs)
    y = keras.layers.BatchNormalization(center=center, scale=scale, name="bn")(x)
    outputs = keras.layers.Add()([x, y]) if second_reader else y
    model = keras.Model(inputs, outputs)
    if use_bias:
        conv.bias.assign(np.linspace(-1, 1, 12).astype(np.float32))
    _randomize_batch_norms(model, seed=2)
    return model


@pytest.mark.parametrize("use_bias, center, scale", [
    (False, True, True), (True, True, True), (True, False, True), (False, True, False),
])
def test_bias_and_batch_norm_options_fold_exactly(use_bias, center, scale):
    model = _small_model(use_bias, center, scale)
    inputs = np.random.default_rng(3).normal(size=(2, 6, 6, 8)).astype(np.float32)
    folded = folding.fold_batch_norm(model)
    assert not _batch_norms(folded)
    np.testing.assert_allclose(folded(inputs).numpy(), model(inputs, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    # Folding rescales each filter's weights: filter j's live weights times gamma_j / sigma_j.
    bn = model.get_layer("bn")
    gamma = bn.gamma.numpy() if scale else np.ones(12)
    factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    np.testing.assert_allclose(folded.get_layer("ssc").dense_kernel().numpy(),
                               model.get_layer("ssc").dense_kernel().numpy() * factor,
                               rtol=1e-6, atol=1e-7)


def test_a_convolution_read_by_another_layer_too_is_not_folded():
    model = _small_model(use_bias=False, second_reader=True)
    folded = folding.fold_batch_norm(model)
    assert len(_batch_norms(folded)) == 1 and not folded.get_layer("ssc").use_bias
    inputs = np.random.default_rng(4).normal(size=(2, 6, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(folded(inputs).numpy(), model(inputs, training=False).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_masked_convolutions_keep_their_batch_norm():
    # A pruning baseline's MaskedConv2D multiplies its kernel by a mask: not folded.
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(1, 1, 1), p=(None, None, None), masked=True)
    _randomize_batch_norms(model)
    folded = folding.fold_batch_norm(model)
    num_masked = sum(isinstance(layer, masked.MaskedConv2D) for layer in model.layers)
    assert num_masked and len(_batch_norms(folded)) == num_masked
    inputs = np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype(np.float32)
    expected = model(inputs, training=False).numpy()
    np.testing.assert_allclose(folded(inputs).numpy(), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_serving_signatures_run_the_folded_model():
    keras.utils.set_random_seed(6)
    model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
                         g=(2, 4, 15), p=(2, 4, 4))
    _randomize_batch_norms(model, seed=6)
    pixels = np.random.default_rng(7).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    inputs = data.normalize(pixels, "cifar10")
    # The random batch norms grow the logits to ~1e4, where float32 rounding alone moves
    # near-tied probabilities by 1e-3: scale the classifier to logits of a few units.
    classifier = model.get_layer("logits")
    scale = 3 / np.abs(model(inputs, training=False).numpy()).max()
    classifier.set_weights([w * scale for w in classifier.get_weights()])
    logits = model(inputs, training=False).numpy()
    serving_model = serving.ServingModel(model, "cifar10")
    graph = serving_model.probabilities.get_concrete_function().graph
    assert not [op.name for op in graph.get_operations() if "batchnorm" in op.name]
    # Unfolded, the graph does run batch norms: the check above can fail.
    assert [op.name for op in tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((None, 32, 32, 3))).graph.get_operations() if "batchnorm" in op.name]
    expected = tf.nn.softmax(logits).numpy()
    assert expected.max() < 0.99  # Not one-hot: the comparison below can fail.
    np.testing.assert_allclose(serving_model.probabilities(pixels).numpy(), expected, atol=1e-5)
