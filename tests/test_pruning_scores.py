"""Tests of ssc_tf.pruning.scores: each method's scores against a hand computation on a tiny
network, and the masks of the real quickstart ResNet-32 (and VGG-19's SynFlow) against the
budget of ssc_tf.pruning.budget."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import data
from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf import pruning
from ssc_tf.models import masked
from ssc_tf.models.masked import MaskedConv2D
from ssc_tf.pruning import budget
from ssc_tf.pruning import scores
from ssc_tf.pruning import selection

# The tiny network: a 2 x 2 x C input, two 1 x 1 masked convolutions, global average pooling
# and a dense classifier.
SIZE, CHANNELS, HIDDEN, OUT, CLASSES = 2, 3, 4, 2, 3


def _tiny_model(activation=None, batch_norm=False, seed=0, kernel_scale=1.0):
    """The tiny network in float64, its weights (and batch-norm statistics) drawn from `seed`,
    the kernels of the convolutions and the classifier times `kernel_scale`."""
    inputs = keras.Input((SIZE, SIZE, CHANNELS), dtype="float64")
    x = MaskedConv2D(HIDDEN, 1, use_bias=False, activation=activation, dtype="float64",
                     name="conv_a")(inputs)
    x = MaskedConv2D(OUT, 1, use_bias=False, dtype="float64", name="conv_b")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(dtype="float64", name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float64")(x)
    outputs = keras.layers.Dense(CLASSES, dtype="float64", name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    weights = []
    for weight in model.weights:
        if weight.path.endswith("mask"):
            weights.append(np.ones(weight.shape))
        elif weight.path.endswith("moving_variance"):
            weights.append(rng.uniform(0.5, 2.0, weight.shape))
        elif weight.path.endswith("kernel"):
            weights.append(kernel_scale * rng.normal(size=weight.shape))
        else:
            weights.append(rng.normal(size=weight.shape))
    model.set_weights(weights)
    return model


def _batch(seed=1, n=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SIZE, SIZE, CHANNELS)), np.array([0, 2, 1, 2, 0][:n])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tanh_net_gradients(k1, k2, dense, bias, x, labels, temperature):
    """The loss gradient of the tiny tanh network (no batch norm) by hand, kernels (C, F)."""
    n = x.shape[0]
    h1 = np.tanh(x @ k1)
    h2 = h1 @ k2
    logits = (h2.mean(axis=(1, 2)) @ dense + bias) / temperature
    dlogits = (_softmax(logits) - np.eye(CLASSES)[labels]) / n / temperature
    dh2 = np.broadcast_to((dlogits @ dense.T)[:, None, None, :] / SIZE**2, h2.shape)
    dk2 = np.einsum("nhwi,nhwj->ij", h1, dh2)
    dpre1 = (dh2 @ k2.T) * (1 - h1**2)
    dk1 = np.einsum("nhwc,nhwi->ci", x, dpre1)
    return dk1, dk2


def _tiny_weights(model):
    k1 = model.get_layer("conv_a").kernel.numpy()[0, 0]
    k2 = model.get_layer("conv_b").kernel.numpy()[0, 0]
    dense, bias = (w.numpy() for w in model.get_layer("logits").weights)
    return k1, k2, dense, bias


def test_snip_scores_are_abs_weight_times_loss_gradient():
    model = _tiny_model("tanh")
    x, labels = _batch()
    k1, k2, dense, bias = _tiny_weights(model)
    dk1, dk2 = _tanh_net_gradients(k1, k2, dense, bias, x, labels, temperature=1.0)
    result = scores.snip_scores(model, x, labels)
    assert list(result) == ["conv_a", "conv_b"]
    np.testing.assert_allclose(result["conv_a"][0, 0], np.abs(k1 * dk1), rtol=1e-5)
    np.testing.assert_allclose(result["conv_b"][0, 0], np.abs(k2 * dk2), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, None])
def test_grasp_scores_are_minus_weight_times_hessian_gradient(temperature):
    model = _tiny_model("tanh")
    x, labels = _batch()
    if temperature is None:
        result = scores.grasp_scores(model, x, labels)
        temperature = 200.0  # The reference code's, the default.
    else:
        result = scores.grasp_scores(model, x, labels, temperature=temperature)
    k1, k2, dense, bias = _tiny_weights(model)
    g1, g2 = _tanh_net_gradients(k1, k2, dense, bias, x, labels, temperature)
    # H g by a central difference of the hand gradient along g (over both kernels).
    norm = np.sqrt((g1**2).sum() + (g2**2).sum())
    eps = 1e-5
    plus = _tanh_net_gradients(k1 + eps * g1 / norm, k2 + eps * g2 / norm, dense, bias, x,
                               labels, temperature)
    minus = _tanh_net_gradients(k1 - eps * g1 / norm, k2 - eps * g2 / norm, dense, bias, x,
                                labels, temperature)
    hg1, hg2 = ((p - m) / (2 * eps) * norm for p, m in zip(plus, minus))
    for kernel, hg, name in ((k1, hg1, "conv_a"), (k2, hg2, "conv_b")):
        expected = -kernel * hg
        np.testing.assert_allclose(result[name][0, 0], expected, rtol=1e-4,
                                   atol=1e-6 * np.abs(expected).max())


def test_snip_uses_batch_statistics_and_leaves_the_moving_ones():
    model = _tiny_model("tanh", batch_norm=True)
    x, labels = _batch()
    before = model.get_weights()
    kernels = [model.get_layer(name).kernel for name in ("conv_a", "conv_b")]

    def direct(training):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, model(x, training=training), from_logits=True))
        grads = tape.gradient(loss, kernels)
        return [np.abs(k.numpy() * g.numpy()) for k, g in zip(kernels, grads)]

    result = scores.snip_scores(model, x, labels)
    for weight, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, saved)
    inference, training = direct(False), direct(True)
    for name, expected in zip(("conv_a", "conv_b"), training):
        np.testing.assert_allclose(result[name], expected, rtol=1e-4,
                                   atol=1e-5 * expected.max())
    assert not np.allclose(result["conv_b"], inference[1], rtol=1e-2)


def _synflow_hand_flow(model, layer_masks):
    """R and |w * dR/dw| of the tiny linear network with every parameter positive, batch
    norm in inference mode: R = sum_k (sum_j |D_jk| bn_j + |b_k|), bn_j = |gamma_j| (h2_j -
    |mu_j|) / sqrt(|var_j| + eps) + |beta_j|, h2 = h1 (|K2| M2), h1 = 1 (|K1| M1)."""
    k1, k2, dense, bias = (np.abs(w) for w in _tiny_weights(model))
    k1, k2 = k1 * layer_masks["conv_a"][0, 0], k2 * layer_masks["conv_b"][0, 0]
    bn = model.get_layer("bn")
    gamma, mean, beta = (np.abs(w.numpy()) for w in (bn.gamma, bn.moving_mean, bn.beta))
    std = np.sqrt(np.abs(bn.moving_variance.numpy()) + bn.epsilon)
    h1 = k1.sum(axis=0)
    flow = (dense.T @ (gamma * (h1 @ k2 - mean) / std + beta) + bias).sum()
    q = dense.sum(axis=1) * gamma / std  # dR/dh2
    return flow, {"conv_a": (k1 * (k2 @ q)[None, :])[None, None],
                  "conv_b": (k2 * h1[:, None] * q[None, :])[None, None]}


def _synflow_hand_scores(model, layer_masks):
    return _synflow_hand_flow(model, layer_masks)[1]


def test_synflow_one_round_keeps_the_largest_hand_scores_at_every_budget():
    model = _tiny_model(batch_norm=True)
    before = model.get_weights()
    hand = _synflow_hand_scores(model, masked.masks(model))
    total = CHANNELS * HIDDEN + HIDDEN * OUT
    for kept in range(0, total + 1, 5):
        result = scores.synflow_masks(model, kept, rounds=1)
        expected = selection.keep_top(hand, kept)
        for name in expected:
            np.testing.assert_array_equal(result[name], expected[name])
    # Signs, masks and batch-norm statistics are the model's own still.
    for weight, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, saved)


def test_synflow_rounds_rescore_the_remaining_weights_on_the_schedule():
    model = _tiny_model(batch_norm=True, seed=3)
    total = CHANNELS * HIDDEN + HIDDEN * OUT
    kept, rounds = 3, 4
    layer_masks = masked.masks(model)
    for fraction in selection.synflow_fractions(kept / total, rounds):
        hand = _synflow_hand_scores(model, layer_masks)
        hand = {name: np.where(layer_masks[name], s, -np.inf) for name, s in hand.items()}
        layer_masks = selection.keep_top(hand, round(fraction * total))
    one_shot = selection.keep_top(_synflow_hand_scores(model, masked.masks(model)), kept)
    result = scores.synflow_masks(model, kept, rounds=rounds)
    for name in layer_masks:
        np.testing.assert_array_equal(result[name], layer_masks[name])
    # Iterating matters here: one round would keep other weights.
    assert any(not np.array_equal(result[n], one_shot[n]) for n in result)


def test_synflow_scores_in_float64_where_float32_overflows():
    model = _tiny_model(batch_norm=True, seed=4, kernel_scale=1e14)
    flow, hand = _synflow_hand_flow(model, masked.masks(model))
    assert np.finfo(np.float32).max < flow < np.finfo(np.float64).max
    for kept in (1, 7, 13):
        result = scores.synflow_masks(model, kept, rounds=1)
        expected = selection.keep_top(hand, kept)
        for name in expected:
            np.testing.assert_array_equal(result[name], expected[name])


def test_synflow_rejects_a_budget_out_of_range():
    with pytest.raises(ValueError, match=r"argument `kept`: expected an integer in \[0, 20\]"):
        scores.synflow_masks(_tiny_model(), 21, rounds=1)


def test_random_scores_are_the_seeds_uniform_draws_in_layer_order():
    model = _tiny_model()
    result = scores.random_scores(model, seed=7)
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(result["conv_a"], rng.random((1, 1, CHANNELS, HIDDEN)))
    np.testing.assert_array_equal(result["conv_b"], rng.random((1, 1, HIDDEN, OUT)))


def test_grasp_in_chunks_scores_the_whole_batch_a_chunk_at_a_time(monkeypatch):
    model = _tiny_model("tanh")
    x, labels = _batch()
    whole = scores.grasp_scores(model, x, labels, temperature=1.0)
    differentiated = []
    loss = scores._loss

    def counted_loss(model, images, *args):
        differentiated.append(len(images))
        return loss(model, images, *args)

    monkeypatch.setattr(scores, "_loss", counted_loss)
    chunked = scores.grasp_scores(model, x, labels, temperature=1.0, batch_size=2)
    # 5 examples in chunks of 2, 2 and 1: one pass for g, one for H g.
    assert differentiated == [2, 2, 1, 2, 2, 1]
    for name, score in whole.items():
        np.testing.assert_allclose(chunked[name], score, rtol=1e-5,
                                   atol=1e-6 * np.abs(score).max())


def test_snip_and_grasp_scores_are_deterministic():
    model = _tiny_model("tanh")
    x, labels = _batch()
    for scorer in (scores.snip_scores, scores.grasp_scores):
        first, second = scorer(model, x, labels), scorer(model, x, labels)
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])


def _labelled(labels, batch_size=3):
    labels = np.array(labels, dtype=np.int32)
    images = np.arange(labels.size, dtype=np.float32).reshape(-1, 1, 1, 1)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def test_per_class_batch_takes_the_first_examples_of_each_class_sorted_by_class():
    images, labels = scores.per_class_batch(_labelled([2, 0, 2, 1, 0, 2, 0, 1]), 3, 2)
    np.testing.assert_array_equal(images.ravel(), [1, 4, 3, 7, 0, 2])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    assert labels.dtype == np.int32 and images.shape == (6, 1, 1, 1)


def test_per_class_batch_fills_a_short_class_from_the_next_pass():
    images, labels = scores.per_class_batch(_labelled([0, 1, 0]), 2, 3)
    np.testing.assert_array_equal(images.ravel(), [0, 2, 0, 1, 1, 1])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])


def test_per_class_batch_rejects_a_missing_class_and_a_label_out_of_range():
    with pytest.raises(ValueError, match=r"`dataset`.*classes \[1, 3\] never appear"):
        scores.per_class_batch(_labelled([0, 2, 0, 2]), 4, 1)
    with pytest.raises(ValueError, match=r"`dataset`: expected labels in \[0, 2\)"):
        scores.per_class_batch(_labelled([0, 2]), 2, 1)


# The real quickstart model (digits ResNet-32, doubled widths). To stay fast on 2 CPU cores,
# SynFlow runs 3 rounds instead of 100 (100 take 15 to 50 s on 2 shared cores) and GraSP one
# example per class instead of 10; `selection` makes the count exact whatever the scores.
FAST = {"SYNFLOW_ROUNDS": 3, "GRASP_SAMPLES_PER_CLASS": 1}


@pytest.fixture(scope="module")
def quickstart():
    config = dataclasses.replace(flagfile.load("quickstart"), sparsity=pruning.RANDOM)
    keras.utils.set_random_seed(0)
    return config, models.build(config.model, **config.model_kwargs())


@pytest.fixture
def fast(monkeypatch):
    for name, value in FAST.items():
        monkeypatch.setattr(scores, name, value)


def _train_data(config):
    return data.load(config.dataset, "train", batch_size=8, seed=config.seed)


def _count(layer_masks):
    return sum(int(m.sum()) for m in layer_masks.values())


@pytest.mark.parametrize("method", pruning.MASK_METHODS)
def test_every_method_keeps_the_budget_and_leaves_the_model_unchanged(method, quickstart, fast):
    base, model = quickstart
    config = dataclasses.replace(base, sparsity=method)
    before = model.get_weights()
    result = scores.masks(config, model, _train_data(config))
    assert list(result) == [layer.name for layer in masked.masked_layers(model)]
    assert set(result) == {layer.name for layer in budget.prunable_layers(config)}
    assert _count(result) == budget.target(config) == 276084
    for layer in masked.masked_layers(model):
        assert result[layer.name].shape == tuple(layer.kernel.shape)
        assert result[layer.name].dtype == bool
    if method == pruning.SYNFLOW:
        # An overflow (R is of the order of 1e45) would score every weight inf and fill the
        # budget in layer order, emptying the last stage. Every layer of the main paths keeps
        # weights; the 1 x 1 projection shortcuts, parallel to two 3 x 3 convolutions that
        # carry about 99 % of the flow (SynFlow conserves it across such a cut), may not.
        assert all(m.any() for name, m in result.items() if "shortcut" not in name)
    after = model.get_weights()
    assert len(after) == len(before)
    for weight, saved in zip(after, before):
        np.testing.assert_array_equal(weight, saved)


def test_masks_keep_snips_highest_and_grasps_lowest_scores(quickstart, monkeypatch):
    base, model = quickstart
    rng = np.random.default_rng(0)
    fixed = {layer.name: rng.normal(size=layer.kernel.shape)
             for layer in masked.masked_layers(model)}
    seen = {}

    def scorer(method):
        def score(model, images, labels, **kwargs):
            seen[method] = images.shape, np.asarray(labels), kwargs
            return fixed
        return score

    monkeypatch.setattr(scores, "snip_scores", scorer(pruning.SNIP))
    monkeypatch.setattr(scores, "grasp_scores", scorer(pruning.GRASP))
    for method, signed in ((pruning.SNIP, fixed),
                           (pruning.GRASP, {n: -s for n, s in fixed.items()})):
        config = dataclasses.replace(base, sparsity=method, kept_fraction=0.05)
        result = scores.masks(config, model, _train_data(config))
        expected = selection.keep_top(signed, budget.target(config))
        assert all(np.array_equal(result[n], expected[n]) for n in expected)
    # SNIP scores the first batch; GraSP 10 examples of each class, at temperature 200.
    assert seen[pruning.SNIP][0] == (8, 32, 32, 3)
    shape, labels, kwargs = seen[pruning.GRASP]
    assert shape == (100, 32, 32, 3)
    assert kwargs == {"temperature": 200.0, "batch_size": scores.GRASP_BATCH_SIZE}
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 10))


def test_random_per_layer_keeps_each_layers_ssc_count(quickstart):
    base, model = quickstart
    config = dataclasses.replace(base, random_per_layer=True)
    result = scores.masks(config, model, None)
    targets = budget.layer_targets(config)
    assert {name: int(m.sum()) for name, m in result.items()} == targets
    assert _count(result) == budget.target(config)


def test_kept_fraction_sets_the_budget(quickstart):
    base, model = quickstart
    config = dataclasses.replace(base, kept_fraction=0.05)
    result = scores.masks(config, model, None)
    assert _count(result) == budget.target(config) != budget.target(base)


def test_the_same_seed_gives_the_same_masks(quickstart):
    base, model = quickstart
    first = scores.masks(base, model, None)
    again = scores.masks(base, model, None)
    other = scores.masks(dataclasses.replace(base, seed=1), model, None)
    assert all(np.array_equal(first[n], again[n]) for n in first)
    assert not all(np.array_equal(first[n], other[n]) for n in first)


def test_synflow_on_vgg19_keeps_the_budget_in_every_layer(monkeypatch):
    # One round: VGG-19's 20 M weights are slow to copy and select on 2 cores.
    monkeypatch.setattr(scores, "SYNFLOW_ROUNDS", 1)
    config = dataclasses.replace(flagfile.load("cifar10_vgg19_10pct"), sparsity=pruning.SYNFLOW)
    model = models.build(config.model, **config.model_kwargs())
    result = scores.masks(config, model, None)
    assert _count(result) == budget.target(config)
    assert all(m.any() for m in result.values())


def test_masks_reject_another_model_and_a_method_without_a_mask(quickstart):
    base, model = quickstart
    with pytest.raises(ValueError, match="argument `model`: expected the masked resnet32"):
        scores.masks(base, _tiny_model(), None)
    with pytest.raises(ValueError, match="argument `sparsity`"):
        scores.masks(dataclasses.replace(base, sparsity=pruning.SSC), model, None)
