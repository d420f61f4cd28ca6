"""Trains one experiment: `python -m ssc_tf.train --flagfile=configs/<name>.cfg --model_dir=DIR`.

The flagfile sets the experiment (dataset, model, per-width (g, p), schedule; see
`ssc_tf.config`); flags after it override the file. This module adds where the data and the
run live and how to run it: `--data_dir`, `--model_dir`, `--strategy`, `--mixed_precision`,
`--jit_compile`, `--steps_per_epoch`.

The run resumes by itself: started again with the same `--model_dir` (after a crash, a kill,
or with a larger `--epochs`), it restores the newest epoch checkpoint, optimizer and
learning-rate schedule included, and goes on from there. See `ssc_tf.model_dir` for what it
writes. `python -m ssc_tf.train --helpfull` lists every flag.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from ssc_tf import callbacks as callbacks_lib
from ssc_tf import config as config_lib
from ssc_tf import data
from ssc_tf import distribute
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import models
from ssc_tf import optimization

MIXED_PRECISION = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def train(config, *, model_dir, data_dir=None, strategy="default", mixed_precision="none",
          jit_compile=False, steps_per_epoch=None, verbose="auto"):
    """Trains `config` into `model_dir`, resuming from its newest checkpoint if any.

    Validation runs after every epoch on the held-out `validation_split` of the training
    data, or on the test split when `config.validation_split` is 0 (the paper's runs).

    Args:
        config: the `ExperimentConfig`.
        model_dir: str, the run's directory (see `ssc_tf.model_dir`).
        data_dir: str or None, where the dataset lives (see `--data_dir`).
        strategy: one of `ssc_tf.distribute.STRATEGIES`.
        mixed_precision: one of `MIXED_PRECISION`.
        jit_compile: bool, XLA-compile the train and test steps.
        steps_per_epoch: int or None, cap on training batches per epoch.
        verbose: Keras' `fit` verbosity ("auto": a progress bar on a terminal).

    Returns:
        The trained Keras model, compiled, with the newest weights.

    Raises:
        ValueError: a bad setting (dataset without its data_dir, batch size not divisible by
            the replicas, a model_dir that holds another model, ...); the message names it.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"Invalid value for flag --mixed_precision: expected one of "
            f"{tuple(MIXED_PRECISION)}. Received: mixed_precision={mixed_precision!r}"
        )
    if strategy == "multi_worker":
        raise ValueError(
            "--strategy=multi_worker: Keras 3.15's Model.fit cannot train under "
            "MultiWorkerMirroredStrategy yet (keras-team/keras#20585: it reduces nested "
            "per-replica batches and scalar logs along axis 0, which that strategy rejects). "
            "Use --strategy=mirrored on one machine with several GPUs."
        )
    if data.needs_data_dir(config.dataset) and not data_dir:
        # data.load says where the files go; fail before touching the model_dir.
        data.load(config.dataset, "train", batch_size=config.batch_size, data_dir=data_dir)
    if tf.io.gfile.exists(os.path.join(model_dir, model_dir_lib.RUN_FILE)):
        saved, _ = model_dir_lib.read_run(model_dir)
        model_dir_lib.check_same_model(model_dir, saved, config)

    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    tf_strategy = distribute.get_strategy(strategy)
    distribute.check_batch_size(config.batch_size, tf_strategy)
    model_dir_lib.write_run(model_dir, config, data_dir)

    train_data = data.load(
        config.dataset, "train", batch_size=config.batch_size, data_dir=data_dir,
        validation_split=config.validation_split, seed=config.seed)
    if steps_per_epoch is not None:
        train_data = train_data.take(steps_per_epoch)
    steps = int(train_data.cardinality())
    if steps < 1:
        raise ValueError(
            f"The training split of {config.dataset!r} holds fewer than --batch_size="
            f"{config.batch_size} examples, so an epoch has no step; lower --batch_size."
        )
    eval_split = "validation" if config.validation_split else "test"
    eval_data = data.load(
        config.dataset, eval_split, batch_size=config.batch_size, data_dir=data_dir,
        validation_split=config.validation_split, seed=config.seed)

    with tf_strategy.scope():
        model = models.build(config.model, **config.model_kwargs())
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if config.num_classes > 10:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
        model.compile(
            optimizer=optimization.build_optimizer(config, steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics,
            jit_compile=jit_compile,
        )
        model.optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = model_dir_lib.checkpoint_manager(
        checkpoint, os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))
    if latest:
        checkpoint.restore(latest).assert_consumed()
        logging.info("Resuming %s after epoch %d of %d.", latest, int(epoch), config.epochs)
    initial_epoch = int(epoch.numpy())
    if initial_epoch >= config.epochs:
        logging.info("%s already finished its %d epochs.", model_dir, config.epochs)
        return model

    log_dir = os.path.join(model_dir, model_dir_lib.LOG_DIR)
    stop_on_nan = callbacks_lib.StopOnNonFiniteLoss()
    callbacks = [
        stop_on_nan,
        callbacks_lib.EpochCheckpoint(manager, epoch),
        keras.callbacks.TensorBoard(log_dir=log_dir),
        callbacks_lib.RunSummaries(os.path.join(log_dir, "run"), initial_epoch),
    ]
    model.fit(
        train_data, validation_data=eval_data, epochs=config.epochs,
        initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
        shuffle=False)  # The training split shuffles itself, seeded.
    if stop_on_nan.error is not None:
        raise stop_on_nan.error
    return model


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow's INFO lines (one per checkpoint shard) would bury the progress bar.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    FLAGS = flags.FLAGS
    if not FLAGS.model_dir:
        raise app.UsageError("Flag --model_dir is required: the directory of the run.")
    try:
        config = config_lib.ExperimentConfig.from_flags(FLAGS)
        train(
            config, model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision,
            jit_compile=FLAGS.jit_compile, steps_per_epoch=FLAGS.steps_per_epoch)
    except (ValueError, FileNotFoundError, callbacks_lib.NonFiniteLossError) as e:
        sys.exit(f"Error: {e}")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    config_lib.define_flags()
    flags.DEFINE_string(
        "data_dir", None,
        "Where the dataset lives: the TFDS data directory for cifar10/cifar100 (optional, TFDS' "
        "default otherwise) and imagenet2012 (required; ILSVRC2012 tars under "
        "<data_dir>/downloads/manual/), the unpacked tiny-imagenet-200/ folder for tinyimagenet "
        "(required). Unused for digits.")
    flags.DEFINE_string(
        "model_dir", None,
        "Directory of the run: run.json, checkpoints/, logs/ (TensorBoard). A run started again "
        "with the same --model_dir resumes from its last finished epoch.")
    flags.DEFINE_enum(
        "strategy", "default", list(distribute.STRATEGIES),
        "tf.distribute strategy: default (TF's default, one device), one_device (first GPU, "
        "else CPU), mirrored (all GPUs of this machine, or its logical CPU devices), "
        "multi_worker (refused for now: Keras 3.15's fit fails under "
        "MultiWorkerMirroredStrategy, keras-team/keras#20585).")
    flags.DEFINE_enum(
        "mixed_precision", "none", list(MIXED_PRECISION),
        "Compute dtype: none (float32), float16 (mixed_float16 with loss scaling; GPUs) or "
        "bfloat16 (mixed_bfloat16; TPUs and recent CPUs). Variables stay float32.")
    flags.DEFINE_bool(
        "jit_compile", False, "Compile the train and test steps with XLA.")
    flags.DEFINE_integer(
        "steps_per_epoch", None,
        "Train on at most this many batches per epoch (smoke runs); default: the whole "
        "training split.", lower_bound=1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
