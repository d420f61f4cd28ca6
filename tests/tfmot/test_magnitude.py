"""`--sparsity=magnitude` (ssc_tf.pruning.magnitude): the tf_keras twin, its pruning schedule,
a run that trains, resumes and loads as Keras 3, and the child's errors.

Runs under TF_USE_LEGACY_KERAS=1 (conftest.py), so `tf.keras` is tf_keras here.
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import architectures
from ssc_tf import callbacks
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import models
from ssc_tf import optimization
from ssc_tf.models import masked
from ssc_tf.pruning import budget
from ssc_tf.pruning import magnitude

STEPS_PER_EPOCH = 2
WRAPPER_PREFIX = "prune_low_magnitude_"


def _config(**overrides):
    """The quickstart experiment (digits, ResNet-32, the 10 % ticket's pattern) pruned by
    magnitude, shortened: the first boundary after epoch 1 ends the pruning there."""
    values = dict(sparsity="magnitude", epochs=2, lr_boundaries=(1,), batch_size=32,
                  learning_rate=0.05)
    return dataclasses.replace(flagfile.load("quickstart"), **{**values, **overrides})


@pytest.fixture(scope="module")
def sparsity():
    """tfmot's Keras API (imported here: conftest skips the tests where it is missing)."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras


def test_tf_keras_twin_has_the_keras3_dense_twins_layers(sparsity):
    config = _config()
    pruned = magnitude.build(config, magnitude.schedule(config, STEPS_PER_EPOCH))
    stripped = sparsity.strip_pruning(pruned)
    twin = models.build(config.model, **config.model_kwargs())

    assert [layer.name for layer in stripped.layers] == [layer.name for layer in twin.layers]
    wrapped = {layer.name for layer in pruned.layers if layer.name.startswith(WRAPPER_PREFIX)}
    assert wrapped == {WRAPPER_PREFIX + layer.name for layer in budget.prunable_layers(config)}
    kernels = {layer.name: int(np.prod(layer.kernel.shape)) for layer in stripped.layers
               if isinstance(layer, tf.keras.layers.Conv2D)}
    conv_layers = architectures.conv_layers(config.model, config.input_shape)
    assert kernels == {layer.name: layer.dense_params for layer in conv_layers}
    classifier = np.prod(stripped.get_layer(architectures.LOGITS_NAME).kernel.shape)
    dense = architectures.count(config.model, config.num_classes, config.input_shape,
                                *architectures.dense_pattern(config.model))
    assert sum(kernels.values()) + classifier == dense.dense_params
    for layer in twin.layers:
        shapes = [w.shape for w in layer.get_weights()]
        if isinstance(layer, masked.MaskedConv2D):
            shapes = shapes[:-1]  # the mask, which tfmot keeps in its wrapper
        assert [w.shape for w in stripped.get_layer(layer.name).get_weights()] == shapes


@pytest.mark.parametrize("kept_fraction", [None, 0.2])
def test_schedule_reaches_the_budget_at_the_first_boundary(sparsity, kept_fraction):
    config = _config(kept_fraction=kept_fraction, epochs=12, lr_boundaries=(6, 9))
    plan = magnitude.schedule(config, STEPS_PER_EPOCH)
    layers = budget.prunable_layers(config)
    target = budget.target(config)
    prunable = sum(layer.dense_params for layer in layers)

    assert (plan.begin_step, plan.end_step, plan.frequency) == (0, 6 * STEPS_PER_EPOCH,
                                                                STEPS_PER_EPOCH)
    assert sum(plan.kept.values()) == target
    for layer in layers:  # one sparsity for all, up to one weight per layer
        assert abs(plan.kept[layer.name] - target * layer.dense_params / prunable) < 1

    # Seeded: with unseeded initial weights this test failed in one of three runs of the
    # suite (2026-12-01), likely a weight tied with tfmot's threshold, which keeps ties.
    tf.keras.utils.set_random_seed(0)
    pruned = magnitude.build(config, plan)
    wrappers = [layer for layer in pruned.layers if layer.name.startswith(WRAPPER_PREFIX)]
    stripped = sparsity.strip_pruning(pruned)  # its layers are the pruned model's

    def measured_at(step):
        for wrapper in wrappers:
            wrapper.pruning_step.assign(step)
            wrapper.pruning_obj.conditional_mask_update()
            wrapper.pruning_obj.weight_mask_op()
        return magnitude.measure(stripped, config, plan)

    first = measured_at(plan.frequency)  # the end of epoch 1
    assert target < first["kept"] < prunable
    last = measured_at(plan.end_step)
    assert last["layers"] == plan.kept
    assert last["kept"] == last["target"] == target


def test_resumed_run_keeps_the_schedule_it_started_with(tmp_path):
    state_dir = str(tmp_path)
    started = magnitude._run_schedule(_config(), STEPS_PER_EPOCH, state_dir)
    checkpoints = tmp_path / model_dir_lib.CHECKPOINT_DIR
    checkpoints.mkdir()
    (checkpoints / "epoch-1.index").write_bytes(b"")
    # Without boundaries a new plan would prune until the last epoch, which the run passed.
    longer = _config(epochs=5, lr_boundaries=())
    assert magnitude.schedule(longer, STEPS_PER_EPOCH).end_step == 5 * STEPS_PER_EPOCH
    assert magnitude._run_schedule(longer, STEPS_PER_EPOCH, state_dir) == started


def test_tf_keras_optimizer_steps_as_coupled_l2_sgd():
    config = _config(weight_decay=0.1)  # the boundary after epoch 1: after step 2 here
    initial = np.array([1.0, -2.0, 0.5], np.float32)
    gradients = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    keras3, tf_keras = keras.Variable(initial), tf.Variable(initial)
    keras3_optimizer = optimization.build_optimizer(config, STEPS_PER_EPOCH)
    tf_keras_optimizer = magnitude._optimizer(config, STEPS_PER_EPOCH)
    for gradient in gradients:
        keras3_optimizer.apply_gradients([(tf.constant(gradient), keras3)])
        tf_keras_optimizer.apply_gradients([(tf.constant(gradient), tf_keras)])
        np.testing.assert_allclose(tf_keras.numpy(), keras3.numpy(), rtol=1e-6)
    assert float(tf_keras_optimizer.learning_rate) == pytest.approx(
        config.learning_rate * config.lr_decay)


def _pruning_file(model_dir):
    with open(os.path.join(model_dir, magnitude.PRUNING_FILE)) as f:
        return json.load(f)


def test_run_trains_resumes_and_loads_as_keras3(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    config = _config()
    magnitude.train(config, model_dir=model_dir, steps_per_epoch=STEPS_PER_EPOCH, verbose=0)

    measured = _pruning_file(model_dir)
    assert (measured["epoch"], measured["kept"]) == (2, budget.target(config))
    model, saved, _, epoch = model_dir_lib.load_model(model_dir)
    assert (saved, epoch) == (config, 2)
    masks = masked.masks(model)
    assert {name: int(mask.sum()) for name, mask in masks.items()} == measured["layers"]
    for layer in masked.masked_layers(model):
        np.testing.assert_array_equal(layer.kernel.numpy() != 0, masks[layer.name])

    capsys.readouterr()
    magnitude.train(dataclasses.replace(config, epochs=3), model_dir=model_dir,
                    steps_per_epoch=STEPS_PER_EPOCH, verbose=0)
    assert "after epoch 2 of 3" in capsys.readouterr().err
    model, _, _, epoch = model_dir_lib.load_model(model_dir)
    assert epoch == 3
    # The masks were final at the first boundary (after epoch 1); epoch 3 kept them.
    for name, mask in masked.masks(model).items():
        np.testing.assert_array_equal(mask, masks[name])
    state = tf.train.load_checkpoint(
        os.path.join(model_dir, magnitude.STATE_DIR, model_dir_lib.CHECKPOINT_DIR, "epoch-3"))
    assert state.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6
    assert _pruning_file(model_dir)["epoch"] == 3


def test_child_refusing_the_model_dir_raises_its_error(tmp_path):
    model_dir_lib.write_run(str(tmp_path), _config(sparsity="ssc"), None)
    with pytest.raises(ValueError, match="holds a different model") as raised:
        magnitude.train(_config(), model_dir=str(tmp_path), verbose=0)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("code, message", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "was killed by SIGKILL"),
    ("raise RuntimeError('out of memory')",
     "failed with exit status 1 (RuntimeError: out of memory)"),
])
def test_killed_or_crashed_child_gives_a_one_line_error(monkeypatch, tmp_path, code, message):
    monkeypatch.setattr(magnitude, "_command", lambda *args: [sys.executable, "-c", code])
    with pytest.raises(ValueError, match="resumes from the last checkpoint") as raised:
        magnitude.train(_config(), model_dir=str(tmp_path))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("status, kind", [
    (2, ValueError), (3, OSError), (4, callbacks.NonFiniteLossError),
])
def test_child_errors_keep_their_type(status, kind):
    error = magnitude._child_error(status, ["W some warning", "Error: the cause"])
    assert type(error) is kind
    assert str(error) == "the cause"
