"""The paper's optimizer: SGD with momentum, coupled L2 weight decay, step decay by epoch.

The paper trains with PyTorch's `SGD(momentum=0.9, weight_decay=1e-4)` (docs/training.md), whose
weight decay is *coupled*: `weight_decay * w` is added to each gradient before the momentum
update, for every trainable variable (kernels, biases, batch-norm scales and offsets). Keras'
own `SGD(weight_decay=...)` is decoupled (it shrinks the weights outside the momentum), so it
trains a different model; `CoupledL2SGD` reproduces the coupled form exactly. It equals adding
`weight_decay / 2 * sum(w ** 2)` to the loss, without that term showing up in the logged loss.

Training in float16 wraps it in `ReplicaLossScaleOptimizer`, Keras' dynamic loss scaling with
the overflow check taken over all replicas.
"""

import keras
import tensorflow as tf

from ssc_tf.config import ExperimentConfig


@keras.saving.register_keras_serializable(package="ssc_tf")
class CoupledL2SGD(keras.optimizers.SGD):
    """SGD with momentum whose weight decay enters the gradient, as `torch.optim.SGD`.

    Each step applies `g <- g + l2 * w` to every trainable variable, then the usual Keras
    momentum update `v <- momentum * v - lr * g; w <- w + v` (the same trajectory as PyTorch's
    `v <- momentum * v + g; w <- w - lr * v` at a constant learning rate).

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: float in [0, 1).
        l2: float >= 0, the coupled weight-decay coefficient (the paper's 1e-4).
        **kwargs: the other arguments of `keras.optimizers.SGD` (not `weight_decay`: that is
            the decoupled form).

    Example:

    >>> optimizer = CoupledL2SGD(learning_rate=0.1, momentum=0.9, l2=1e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, l2=0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledL2SGD takes its weight decay as `l2` (added to the gradient); "
                f"`weight_decay` is Keras' decoupled form. Received: "
                f"weight_decay={kwargs['weight_decay']}"
            )
        if l2 < 0:
            raise ValueError(f"Argument `l2` must be >= 0. Received: l2={l2}")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        # Here, not in `apply`: under a multi-replica strategy `apply` sees each replica's
        # gradient, which are summed after it, and the decay would count once per replica.
        if self.l2:
            gradient = gradient + self.l2 * keras.ops.cast(variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="ssc_tf")
class ReplicaLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """`keras.optimizers.LossScaleOptimizer` whose step is skipped if any replica overflows.

    Keras 3.15 checks each replica's own gradients for inf/NaN, before the replicas' sum,
    and keeps replica 0's verdict (its comment assumes the gradients summed already): an
    overflow on another replica passes, its inf reaches every replica's weights through the
    sum, and the loss scale does not drop. Here the replicas' verdicts are all-reduced
    first, so every replica (and every worker) skips the same steps, and no branch of the
    step waits on a collective that another replica does not run. Its variables, and so its
    checkpoints, are those of Keras' optimizer.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap.
        **kwargs: the other arguments of `keras.optimizers.LossScaleOptimizer`.

    Example:

    >>> optimizer = ReplicaLossScaleOptimizer(CoupledL2SGD(learning_rate=0.1))
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        # A float sum, which every all-reduce implementation (NCCL included) supports.
        overflows = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(overflows, 0.0)


def step_boundaries(config: ExperimentConfig, steps_per_epoch: int):
    """The step schedule of `config` as optimizer steps: `(boundaries, values)`.

    `values[i] = learning_rate * lr_decay ** i` holds after the i-th boundary. Boundaries are
    epochs in the config and optimizer steps here, so the schedule follows the optimizer's
    step counter, which checkpoints save and restore with the optimizer. Keras evaluates the
    schedule at the step's 0-based index and `PiecewiseConstantDecay` switches *after* a
    boundary, so epoch `b` starts at step `b * steps_per_epoch` and its boundary is one step
    earlier. Any Keras' `PiecewiseConstantDecay(boundaries, values)` (Keras 3 here, tf_keras
    for tfmot) is the schedule.

    Args:
        config: the experiment (`learning_rate`, `lr_boundaries`, `lr_decay`).
        steps_per_epoch: int >= 1, optimizer steps in one epoch.
    """
    if steps_per_epoch < 1:
        raise ValueError(
            f"Argument `steps_per_epoch` must be >= 1. Received: steps_per_epoch={steps_per_epoch}"
        )
    values = [
        config.learning_rate * config.lr_decay**i for i in range(len(config.lr_boundaries) + 1)
    ]
    return [epoch * steps_per_epoch - 1 for epoch in config.lr_boundaries], values


def learning_rate_schedule(config: ExperimentConfig, steps_per_epoch: int):
    """The step schedule of `config` (`step_boundaries`) for Keras 3.

    Returns:
        A float for a schedule without boundaries, else a `PiecewiseConstantDecay`.
    """
    boundaries, values = step_boundaries(config, steps_per_epoch)
    if not boundaries:
        return config.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_optimizer(config: ExperimentConfig, steps_per_epoch: int, *, loss_scale=False):
    """The paper's optimizer for `config`: `CoupledL2SGD` on `learning_rate_schedule`, in a
    `ReplicaLossScaleOptimizer` if `loss_scale` (training in float16)."""
    optimizer = CoupledL2SGD(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        l2=config.weight_decay,
    )
    if loss_scale:
        # Else Keras' compile wraps it in its own LossScaleOptimizer, whose check lets one
        # replica's overflow through.
        return ReplicaLossScaleOptimizer(optimizer, name="loss_scale_optimizer")
    return optimizer
