"""The paper's optimizer: coupled L2 SGD and the step schedule by epoch."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from ssc_tf.config import ExperimentConfig
from ssc_tf import optimization

ROOT = pathlib.Path(__file__).resolve().parents[1]

def _config(**kwargs):
    base = dict(dataset="digits", model="resnet32", sparsity="dense", epochs=6,
                learning_rate=0.1, lr_boundaries=(2, 4), lr_decay=0.1, momentum=0.0)
    return ExperimentConfig(**{**base, **kwargs})


def test_schedule_decays_at_the_first_step_of_each_boundary_epoch():
    schedule = optimization.learning_rate_schedule(_config(), steps_per_epoch=3)
    rates = [float(schedule(step)) for step in range(18)]
    np.testing.assert_allclose(rates, [0.1] * 6 + [0.01] * 6 + [0.001] * 6, rtol=1e-6)


def test_schedule_without_boundaries_is_constant():
    assert optimization.learning_rate_schedule(
        _config(lr_boundaries=()), steps_per_epoch=5) == 0.1


def test_schedule_rejects_empty_epochs():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optimization.learning_rate_schedule(_config(), steps_per_epoch=0)


def test_optimizer_uses_the_rate_of_the_current_epoch():
    optimizer = optimization.build_optimizer(_config(weight_decay=0.0), steps_per_epoch=3)
    w = keras.Variable(np.zeros(1, np.float32))
    steps = []
    for _ in range(18):
        before = float(w.numpy()[0])
        optimizer.apply([keras.ops.ones(1)], [w])
        steps.append(before - float(w.numpy()[0]))
    # float32 steps off a weight near -0.6: about 1e-7 absolute error each.
    np.testing.assert_allclose(steps, [0.1] * 6 + [0.01] * 6 + [0.001] * 6, rtol=1e-3)


def test_coupled_l2_matches_torch_sgd_update():
    """w' follows torch.optim.SGD(lr, momentum, weight_decay): v = m v + g + wd w; w -= lr v."""
    lr, momentum, l2 = 0.1, 0.9, 0.01
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = rng.normal(size=(5, 4, 3)).astype(np.float32)
    w = keras.Variable(w0)
    optimizer = optimization.CoupledL2SGD(learning_rate=lr, momentum=momentum, l2=l2)
    expected, velocity = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
        velocity = momentum * velocity + g + l2 * expected
        expected = expected - lr * velocity
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_optimizer_takes_the_config_schedule_momentum_and_weight_decay():
    optimizer = optimization.build_optimizer(
        _config(momentum=0.8, weight_decay=5e-4), steps_per_epoch=3)
    assert isinstance(optimizer, optimization.CoupledL2SGD)
    assert optimizer.momentum == pytest.approx(0.8)
    assert optimizer.l2 == pytest.approx(5e-4)
    assert optimizer.weight_decay is None


def test_config_round_trip():
    optimizer = optimization.CoupledL2SGD(learning_rate=0.05, momentum=0.9, l2=1e-4)
    restored = optimization.CoupledL2SGD.from_config(optimizer.get_config())
    assert restored.l2 == pytest.approx(1e-4)
    assert restored.momentum == pytest.approx(0.9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_decay=1e-4), "decoupled"),
    (dict(l2=-1.0), "l2"),
])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimization.CoupledL2SGD(learning_rate=0.1, **kwargs)


_TWO_REPLICAS_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ssc_tf import optimization
for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["cpu:0", "cpu:1"])):
    with strategy.scope():
        w = tf.Variable([1.0, 2.0])
        optimizer = optimization.CoupledL2SGD(learning_rate=0.1, l2=1.0)
        optimizer.build([w])

    @tf.function
    def step():
        strategy.run(lambda: optimizer.apply([tf.zeros([2])], [w]))

    step()
    print(strategy.num_replicas_in_sync, [round(float(x), 6) for x in w.numpy()])
"""


def test_coupled_l2_counts_once_whatever_the_replicas():
    result = subprocess.run([sys.executable, "-c", _TWO_REPLICAS_SCRIPT],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    # w <- w - lr * l2 * w with a zero loss gradient, on one replica and on two.
    assert result.stdout.splitlines() == ["1 [0.9, 1.8]", "2 [0.9, 1.8]"]
