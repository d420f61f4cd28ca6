"""The masks of the pruning baselines at initialization: random, SNIP, GraSP and SynFlow.

`masks(config, model, train_data)` scores every weight of the `MaskedConv2D` layers of a
freshly initialized masked model (`ssc_tf.models.masked`) by the method `config.sparsity`
names and keeps the budget of `ssc_tf.pruning.budget`, exactly, with the global threshold
of `ssc_tf.pruning.selection` (ties to the earlier layer, then the lower flat index):

- random: uniform scores drawn from `config.seed`; with `config.random_per_layer`, each layer
  keeps the SSC pattern's count for that layer instead.
- SNIP (Lee et al. 2019): the connection sensitivity |w * dL/dw|, L the cross-entropy loss of
  one training batch; the largest are kept.
- GraSP (Wang et al. 2020): -w * (H g), g the gradient and H the Hessian of the loss of a
  batch of `GRASP_SAMPLES_PER_CLASS` training examples of each class, the logits divided by
  the temperature `GRASP_TEMPERATURE` (the values of its reference code), differentiated in
  chunks of at most `GRASP_BATCH_SIZE` examples; the lowest are kept (removing the highest
  preserves the gradient flow best).
- SynFlow (Tanaka et al. 2020): data-free and iterative: `SYNFLOW_ROUNDS` rounds on the
  exponential schedule of `selection.synflow_fractions`, each scoring the weights still kept
  by |w * dR/dw| on the network with every parameter made positive, R the sum of its output
  on an all-ones input, and pruning to that round's fraction.

The model is never changed: every score is computed on a copy (`_copy`), so the model's
weights, masks and batch-norm statistics are what they were, and the scores do not depend
on the global mixed-precision policy.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import pruning
from ssc_tf.models import masked
from ssc_tf.pruning import budget
from ssc_tf.pruning import selection

# GraSP's reference code (Wang et al. 2020): its temperature and its batch (num_iters=1).
GRASP_TEMPERATURE = 200.0
GRASP_SAMPLES_PER_CLASS = 10
# The examples GraSP differentiates at once: ten classes of GRASP_SAMPLES_PER_CLASS, so
# CIFAR-10's batch is one chunk, and ImageNet's 10,000 examples, whose double
# backpropagation in one graph would not fit a GPU, are 100 chunks (the reference code too
# splits its batch, in two).
GRASP_BATCH_SIZE = 100
# SynFlow's pruning iterations at initialization (Tanaka et al. 2020).
SYNFLOW_ROUNDS = 100


def masks(config, model, train_data):
    """The mask of each masked layer of `model` by the method of `config.sparsity`.

    Args:
        config: an `ExperimentConfig` whose `sparsity` is one of `pruning.MASK_METHODS`.
        model: its masked model, `ssc_tf.models.build(config.model,
            **config.model_kwargs())`, at initialization; left unchanged.
        train_data: a `tf.data.Dataset` of (images, labels) batches of the training split
            (`ssc_tf.data.load(config.dataset, "train", ...)`): SNIP scores its first batch,
            GraSP `per_class_batch` of it; random and SynFlow do not read it.

    Returns:
        `{layer name: bool numpy array of the kernel's shape}` for every `MaskedConv2D` of
        `model`, in forward order, for `masked.set_masks`, with `budget.target(config)`
        True entries in all (with `random_per_layer`, `budget.layer_targets(config)` in each
        layer).

    Raises:
        ValueError: `config.sparsity` is not a mask method, `model`'s masked layers are not
            the prunable layers of `config`, or (GraSP) `train_data` lacks a class.
    """
    method = arguments.check_choice("sparsity", config.sparsity, pruning.MASK_METHODS)
    names = {layer.name for layer in masked.masked_layers(model)}
    expected = {layer.name for layer in budget.prunable_layers(config)}
    if names != expected:
        raise ValueError(
            f"Invalid value for argument `model`: expected the masked {config.model} of "
            f"`config`, with a MaskedConv2D for each of its {len(expected)} prunable layers. "
            f"Received a model with {len(names)}, {len(names - expected)} of them not prunable"
        )
    kept = budget.target(config)
    if method == pruning.RANDOM:
        scores = random_scores(model, config.seed)
        if config.random_per_layer:
            return selection.keep_top_per_layer(scores, budget.layer_targets(config))
        return selection.keep_top(scores, kept)
    if method == pruning.SYNFLOW:
        return synflow_masks(model, kept, rounds=SYNFLOW_ROUNDS)
    if method == pruning.SNIP:
        images, labels = next(iter(train_data))
        return selection.keep_top(snip_scores(model, images, labels), kept)
    images, labels = per_class_batch(train_data, config.num_classes, GRASP_SAMPLES_PER_CLASS)
    scores = grasp_scores(model, images, labels, temperature=GRASP_TEMPERATURE,
                          batch_size=GRASP_BATCH_SIZE)
    return selection.keep_top({name: -score for name, score in scores.items()}, kept)


def random_scores(model, seed):
    """Uniform random scores in [0, 1) for the weights of the masked layers of `model`.

    Args:
        model: a model with `MaskedConv2D` layers.
        seed: int >= 0, the seed of numpy's `default_rng`; the layers draw in forward order.

    Returns:
        `{layer name: float64 numpy array of the kernel's shape}`.
    """
    arguments.check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    return {
        layer.name: rng.random(tuple(layer.kernel.shape))
        for layer in masked.masked_layers(model)
    }


def snip_scores(model, images, labels):
    """SNIP's connection sensitivity |w * dL/dw| of the weights of the masked layers.

    L is the mean sparse cross-entropy of the logits of `images`, batch norm in training mode
    (batch statistics), on a float32 copy of `model`.
    Lee et al. 2019 differentiate with respect to the mask c of each weight: at
    initialization (c = 1) dL/dc = w * dL/dw.

    Args:
        model: a model with `MaskedConv2D` layers, returning logits.
        images: a batch of model inputs.
        labels: their integer class labels.

    Returns:
        `{layer name: float32 numpy array of the kernel's shape}`, in forward order.
    """
    copy = _copy(model, "float32")
    kernels = [layer.kernel for layer in masked.masked_layers(copy)]
    with tf.GradientTape() as tape:
        loss = _loss(copy, images, labels, temperature=1.0)
    grads = tape.gradient(loss, kernels)
    return _by_layer(copy, [keras.ops.abs(k * g) for k, g in zip(kernels, grads)])


def grasp_scores(model, images, labels, temperature=GRASP_TEMPERATURE, batch_size=None):
    """GraSP's scores -w * (H g) of the weights of the masked layers.

    g is the gradient and H the Hessian of L, the mean sparse cross-entropy of the logits of
    `images` divided by `temperature`, batch norm in training mode (the reference code's
    `net.train()`), on a float32 copy of `model`. Both are taken over the masked layers'
    kernels, the weights pruned here, as in Tanaka et al.'s port of GraSP (the original code
    takes every convolution and linear layer, all of which it prunes). H g is a double
    backpropagation: z = sum(grad L * stop_gradient(g)), H g = grad z. GraSP removes the
    highest scores (Wang et al. 2020): `masks` keeps the lowest.

    With `batch_size`, the examples are split into near-equal consecutive chunks of at most
    that many, as the reference code splits its batch in two: L is the mean of the chunks'
    losses weighted by their examples, a first pass sums g over the chunks and a second H g,
    so no graph holds more than `batch_size` examples. The scores are those of the whole
    batch, except that batch norm normalizes each chunk by its own statistics.

    Args:
        model: a model with `MaskedConv2D` layers, returning logits.
        images: a batch of model inputs; the reference takes `per_class_batch`.
        labels: their integer class labels.
        temperature: float > 0, what the logits are divided by. Defaults to the reference
            code's 200.
        batch_size: int >= 1 or None, the most examples differentiated at once; None
            differentiates them all at once.

    Returns:
        `{layer name: float32 numpy array of the kernel's shape}`, in forward order.
    """
    arguments.check_range("temperature", temperature, 0, None, low_open=True)
    total = len(images)
    if batch_size is not None:
        arguments.check_int("batch_size", batch_size, minimum=1)
    pieces = 1 if batch_size is None else math.ceil(total / batch_size)
    chunks = np.array_split(np.arange(total), pieces)
    copy = _copy(model, "float32")
    kernels = [layer.kernel for layer in masked.masked_layers(copy)]

    def chunk_loss(chunk):
        # Weighted by the chunk's share, so the chunks' losses sum to the batch's mean.
        return len(chunk) / total * _loss(copy, tf.gather(images, chunk),
                                          tf.gather(labels, chunk), temperature)

    grads = [tf.zeros_like(k) for k in kernels]
    for chunk in chunks:
        with tf.GradientTape() as tape:
            loss = chunk_loss(chunk)
        grads = [g + c for g, c in zip(grads, tape.gradient(loss, kernels))]
    hessian_grads = [tf.zeros_like(k) for k in kernels]
    for chunk in chunks:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = chunk_loss(chunk)
            z = tf.add_n([tf.reduce_sum(c * g)
                          for c, g in zip(inner.gradient(loss, kernels), grads)])
        hessian_grads = [
            h + c for h, c in zip(hessian_grads, outer.gradient(
                z, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO))]
    return _by_layer(copy, [-k * hg for k, hg in zip(kernels, hessian_grads)])


def synflow_masks(model, kept, rounds=SYNFLOW_ROUNDS):
    """SynFlow's masks of the masked layers of `model`, keeping `kept` weights in all.

    Tanaka et al. 2020, Algorithm 1, as their reference code runs it: every parameter and
    batch-norm statistic is replaced by its absolute value, batch norm runs in inference
    mode, and R is the sum of the logits of one all-ones input. Each round scores the
    weights still kept by |w * dR/dw| (a pruned weight's is -inf, so it stays pruned) and
    keeps the largest, globally, down to `selection.synflow_fractions` of all of them; the
    last round keeps exactly `kept`.

    R is a product over the layers, so it grows with depth: at initialization that of the
    doubled ResNet-32 on 32 x 32 inputs is of the order of 1e45, beyond float32's 3.4e38
    (VGG-19's, about 5e27, is not), and would overflow (the reference code's `model.double()`
    is commented out). Scoring runs on a float64 copy of `model` instead (float64 reaches
    1.8e308); the model itself, signs included, is never changed, so there is nothing to
    restore.

    Args:
        model: a model with `MaskedConv2D` layers; each round starts from the masks it holds
            (at initialization, all ones).
        kept: int in [0, the masked layers' weights], the weights to keep.
        rounds: int >= 1, the rounds of the schedule. Defaults to the paper's 100.

    Returns:
        `{layer name: bool numpy array of the kernel's shape}`, in forward order, with
        `kept` True entries in all.

    Raises:
        ValueError: `kept` or `rounds` is out of range.
    """
    copy = _copy(model, "float64", absolute=True)
    layers = masked.masked_layers(copy)
    total = sum(int(np.prod(layer.kernel.shape)) for layer in layers)
    if not arguments.is_int(kept) or not 0 <= kept <= total:
        raise arguments.invalid(
            "kept", f"an integer in [0, {total}], the masked layers' weights", repr(kept)
        )
    fractions = selection.synflow_fractions(kept / total, rounds)
    kernels = [layer.kernel for layer in layers]
    ones = tf.ones((1,) + tuple(copy.inputs[0].shape[1:]), dtype="float64")

    @tf.function
    def saliences():
        with tf.GradientTape() as tape:
            flow = tf.reduce_sum(copy(ones, training=False))
        grads = tape.gradient(flow, kernels)
        return [tf.abs(k * g) for k, g in zip(kernels, grads)]

    layer_masks = masked.masks(copy)
    for fraction in fractions:
        scores = _by_layer(copy, saliences())
        scores = {name: np.where(layer_masks[name], s, -np.inf) for name, s in scores.items()}
        layer_masks = selection.keep_top(scores, int(round(fraction * total)))
        masked.set_masks(copy, layer_masks)
    return layer_masks


def per_class_batch(dataset, num_classes, per_class):
    """A batch of `per_class` examples of each class, as GraSP's reference code gathers it.

    Reads the finite `dataset` in order and takes the first `per_class` examples of each
    class; a class still short at the end is filled from the next pass (a training split
    reshuffles and re-augments each pass), so where a pass holds fewer, an example may come
    twice.

    Args:
        dataset: a `tf.data.Dataset` of (images, labels) batches, labels integers.
        num_classes: int >= 1, the classes; labels lie in [0, num_classes).
        per_class: int >= 1, the examples of each class.

    Returns:
        (images, labels) numpy arrays of `num_classes * per_class` examples, sorted by class.

    Raises:
        ValueError: a label is out of range, or a class never appears in a whole pass.
    """
    arguments.check_int("num_classes", num_classes, minimum=1)
    arguments.check_int("per_class", per_class, minimum=1)
    examples = [[] for _ in range(num_classes)]
    label_dtype = None
    while True:
        added = 0
        for images, labels in dataset.as_numpy_iterator():
            label_dtype = labels.dtype
            for image, label in zip(images, labels):
                if not 0 <= label < num_classes:
                    raise arguments.invalid(
                        "dataset", f"labels in [0, {num_classes})", f"a label {label}"
                    )
                if len(examples[label]) < per_class:
                    examples[label].append(image)
                    added += 1
            if all(len(found) == per_class for found in examples):
                return (
                    np.stack([image for found in examples for image in found]),
                    np.repeat(np.arange(num_classes), per_class).astype(label_dtype),
                )
        if not added:
            missing = [c for c, found in enumerate(examples) if len(found) < per_class]
            raise arguments.invalid(
                "dataset", f"examples of every class in [0, {num_classes})",
                f"a dataset in a whole pass of which classes {missing} never appear",
            )


def _copy(model, dtype, absolute=False):
    """A copy of `model` computing in `dtype`, with its weights (and masks), absolute if
    `absolute`; calling it never touches `model`'s variables."""
    config = model.get_config()
    for layer in config["layers"]:
        layer_config = layer["config"]
        layer_config["dtype"] = dtype
        # Every weight is set at once: building with zeros draws no random numbers, which
        # would take seconds for VGG-19 and move the seeded global generator of the run.
        for key in layer_config:
            if key.endswith("_initializer"):
                layer_config[key] = "zeros"
    copy = model.__class__.from_config(config)
    copy.set_weights([np.abs(w) if absolute else w for w in model.get_weights()])
    return copy


def _loss(model, images, labels, temperature):
    logits = model(images, training=True)
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
        labels, logits / temperature, from_logits=True))


def _by_layer(model, tensors):
    return {
        layer.name: keras.ops.convert_to_numpy(tensor)
        for layer, tensor in zip(masked.masked_layers(model), tensors)
    }
