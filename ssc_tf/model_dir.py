"""What training writes under `--model_dir`, and how evaluation and export read it back.

    <model_dir>/run.json          the experiment config and data_dir of the run (written first)
    <model_dir>/checkpoints/      tf.train checkpoints, one per finished epoch (the last two kept)
    <model_dir>/logs/             TensorBoard: train/, validation/, run/ (counts, SSC patterns)
    <model_dir>/eval.json         `python -m ssc_tf.evaluate` results

Each checkpoint holds the model's variables, the optimizer's (its step counter drives the
learning-rate schedule) and the number of finished epochs, so a restarted run resumes the
schedule where it stopped. A checkpoint becomes the latest only once completely written
(`tf.train.CheckpointManager` updates its index last), so a run killed while saving resumes
from the epoch before.
"""

import dataclasses
import json
import os

import tensorflow as tf

from ssc_tf.config import ExperimentConfig

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EVAL_FILE = "eval.json"

# The config fields that define the network; a model_dir holds one network for good, while
# the schedule may change between runs (e.g. more --epochs to train on).
_MODEL_FIELDS = ("dataset", "model", "dense", "g", "p", "p_1x1")
_CHECKPOINTS_KEPT = 2


def write_atomically(path, contents, *, overwrite=True):
    """Writes `contents` (str or bytes) to `path` through a temporary file renamed into place,
    so a crash leaves the old file or the new one, never part of one.

    Raises:
        tf.errors.AlreadyExistsError: `path` exists and `overwrite` is False (nothing is
            written, and the temporary file is removed).
    """
    tmp = f"{path}.tmp"
    try:
        with tf.io.gfile.GFile(tmp, "wb" if isinstance(contents, bytes) else "w") as f:
            f.write(contents)
        tf.io.gfile.rename(tmp, path, overwrite=overwrite)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_json(path, value):
    """Writes `value` as JSON to `path` atomically (`write_atomically`)."""
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_run(model_dir, config, data_dir):
    """Records the run's config and data_dir in `<model_dir>/run.json`."""
    tf.io.gfile.makedirs(model_dir)
    write_json(
        os.path.join(model_dir, RUN_FILE),
        {"config": dataclasses.asdict(config), "data_dir": data_dir},
    )


def read_run(model_dir):
    """Reads `<model_dir>/run.json`.

    Returns:
        `(config, data_dir)`: the `ExperimentConfig` and the data_dir training used.

    Raises:
        FileNotFoundError: `model_dir` holds no run.json (no training run wrote it).
    """
    path = os.path.join(model_dir, RUN_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"--model_dir={model_dir!r} holds no {RUN_FILE}: it is not a directory that "
            "`python -m ssc_tf.train --model_dir=...` wrote."
        )
    with tf.io.gfile.GFile(path) as f:
        run = json.load(f)
    return ExperimentConfig(**run["config"]), run["data_dir"]


def model_differences(saved, config):
    """The flags in which two `ExperimentConfig`s build different networks.

    Returns:
        A list of "--flag: saved X, requested Y" strings, empty for the same network.
    """
    return [
        f"--{name}: saved {getattr(saved, name)!r}, requested {getattr(config, name)!r}"
        for name in _MODEL_FIELDS
        if getattr(saved, name) != getattr(config, name)
    ]


def check_same_model(model_dir, saved, config):
    """Raises `ValueError` if `config` builds another network than the saved `saved`."""
    differing = model_differences(saved, config)
    if differing:
        raise ValueError(
            f"--model_dir={model_dir!r} holds a different model, so this run cannot resume "
            f"into it ({'; '.join(differing)}). Use a new --model_dir, or the saved flags."
        )


def checkpoint_manager(checkpoint, directory):
    """The manager that saves `checkpoint` under `directory`, keeping the last two."""
    return tf.train.CheckpointManager(
        checkpoint, directory, max_to_keep=_CHECKPOINTS_KEPT, checkpoint_name="epoch"
    )


def latest_checkpoint(model_dir):
    """Path of the newest complete checkpoint in `model_dir`.

    Raises:
        FileNotFoundError: there is none; the message says what to run.
    """
    path = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    if path is None:
        raise FileNotFoundError(
            f"--model_dir={model_dir!r} holds no checkpoint under {CHECKPOINT_DIR}/: train "
            "at least one epoch there first (python -m ssc_tf.train --model_dir=...)."
        )
    return path


def load_model(model_dir):
    """Rebuilds the trained model of `model_dir` with its newest weights.

    Returns:
        `(model, config, data_dir, epoch)`: the Keras model (float32, not compiled), the run's
        `ExperimentConfig`, its data_dir and the number of epochs the weights were trained.

    Raises:
        FileNotFoundError: no run.json or no checkpoint in `model_dir`.
    """
    from ssc_tf import models

    config, data_dir = read_run(model_dir)
    path = latest_checkpoint(model_dir)
    model = models.build(config.model, **config.model_kwargs())
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    status = tf.train.Checkpoint(model=model, epoch=epoch).restore(path)
    # Every model variable must come from the checkpoint; its optimizer slots are not needed.
    status.expect_partial().assert_existing_objects_matched()
    return model, config, data_dir, int(epoch.numpy())
