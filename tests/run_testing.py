"""The one trained run the tests share (conftest.py's `trained_run` and `run_copy` fixtures).

It is the quickstart experiment (digits, SSC ResNet-32 with the CIFAR-10 10 % ticket's pattern)
shortened to EPOCHS epochs of STEPS_PER_EPOCH batches of 16, at a rate small enough that the
weights stay near their initialization while the batch-norm statistics settle: the model's
probabilities are soft and, at its seed 0, its predictions spread over 4 classes, so a file
converted to compute something else would disagree with it (a few steps at the quickstart's
rate give a model that puts probability ~1 on one class for every image). The rate drops
tenfold after epoch 1, so a run's schedule shows in its TensorBoard logs.
"""

import collections
import dataclasses

from ssc_tf import flagfile

EPOCHS = 2
STEPS_PER_EPOCH = 15
LEARNING_RATE = 1e-3
LR_DECAY_AT = 1

TrainedRun = collections.namedtuple("TrainedRun", "model_dir config model")


def config(**overrides):
    """The shared run's ExperimentConfig, with `overrides` applied."""
    schedule = dict(epochs=EPOCHS, batch_size=16, learning_rate=LEARNING_RATE,
                    lr_boundaries=(LR_DECAY_AT,))
    return dataclasses.replace(flagfile.load("quickstart"), **{**schedule, **overrides})
