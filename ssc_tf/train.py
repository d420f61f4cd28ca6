"""Trains one experiment: `python -m ssc_tf.train --flagfile=<config> --model_dir=DIR`.

The flagfile sets the experiment (dataset, model, per-width (g, p), schedule; see
`ssc_tf.config`): a packaged config's name (`ssc_tf.flagfile.names()`) or a file's path; flags
after it override the file. This module adds where the data and the
run live and how to run it: `--data_dir`, `--model_dir`, `--strategy`, `--mixed_precision`,
`--jit_compile`, `--steps_per_execution`, `--steps_per_epoch`.

The batches come from `ssc_tf.data` as uint8 pixels and are normalized in the training and
evaluation steps, on the replicas' devices (`_normalizing_steps`); the model, its checkpoints
and what `ssc_tf.export` writes are those of host-side normalization.

The run resumes by itself: started again with the same `--model_dir` (after a crash, a kill,
or with a larger `--epochs`), it restores the newest epoch checkpoint that reads back,
optimizer and learning-rate schedule included, and goes on from there; it refuses to start
over in a `--model_dir` whose checkpoints are all damaged. One trainer at a time: a second one
on the same `--model_dir` is refused. See `ssc_tf.model_dir` for what it writes.
`python -m ssc_tf.train --helpfull` lists every flag.

`--strategy=multi_worker` trains on several machines: start the same command on each, with
its own `TF_CONFIG` (see `ssc_tf.distribute`) and the same `--model_dir` on storage every
worker reads (a shared file system or a bucket). Keras 3.15's `fit` fails under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585), so that strategy trains with a loop
of its own that runs the model's `train_step` and `test_step` and calls the same callbacks
with the same logs; the steps, checkpoints and TensorBoard logs are those of `fit`. Only the
chief (`ssc_tf.distribute.is_chief`) writes and locks `--model_dir`; every worker resumes
from it. `--jit_compile` is ignored there, and under `mirrored` with more than one replica:
Keras compiles the whole distributed step with XLA, which cannot place the replicas'
variables across devices (keras-team/keras#19005) nor compile the step's all-reduces
(gradients, batch-norm statistics) on CPU.

A run trains in one `--mixed_precision` from start to end: run.json records it, and resuming
with another is refused.
"""

import contextlib
import logging as std_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import callbacks as callbacks_lib
from ssc_tf import data
from ssc_tf import distribute
from ssc_tf import execution_plan
from ssc_tf import experiment_flags
from ssc_tf import flagfile
from ssc_tf import layers
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import models
from ssc_tf import optimization
from ssc_tf import pruning
from ssc_tf import tuning
from ssc_tf.data import pipeline
from ssc_tf.models import masked
from ssc_tf.pruning import magnitude
from ssc_tf.pruning import scores

MIXED_PRECISION = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def train(config, *, model_dir, data_dir=None, strategy="default", mixed_precision="none",
          jit_compile=False, steps_per_execution=1, steps_per_epoch=None, verbose="auto",
          tune=False):
    """Trains `config` into `model_dir`, resuming from its newest checkpoint that restores.

    Validation runs after every epoch on the held-out `validation_split` of the training
    data, or on the test split when `config.validation_split` is 0 (the paper's runs).

    Args:
        config: the `ExperimentConfig`.
        model_dir: str, the run's directory (see `ssc_tf.model_dir`).
        data_dir: str or None, where the dataset lives (see `--data_dir`).
        strategy: one of `ssc_tf.distribute.STRATEGIES`. Under "multi_worker" every worker
            calls `train` with the same arguments and only the chief writes `model_dir`.
        mixed_precision: one of `MIXED_PRECISION`.
        jit_compile: bool, XLA-compile the train and test steps (ignored, with a warning,
            under "multi_worker" and under any strategy of more than one replica).
        steps_per_execution: int >= 1, batches per call into TensorFlow (Keras'
            `steps_per_execution`); 1 under "multi_worker" and for `magnitude`.
        steps_per_epoch: int or None, cap on training batches per epoch.
        verbose: Keras' `fit` verbosity ("auto": a progress bar on a terminal).
        tune: bool, where the package has no times of this process's runtime measured on
            this kind of CPU (`ssc_tf.tuning.fits_host`), time the model's SSC layer shapes
            here first, in training steps and at the large batch (`ssc_tf.tuning.tune`,
            cached per CPU model and library versions), and plan the layers with those times.
            Off by default: on an Intel Xeon the tuned forms trained ResNet-32 10 % 3 %
            faster than the package's, within the noise (docs/execution_plan.md).

    Mask methods (`config.sparsity` in `pruning.MASK_METHODS`) compute their mask on the
    freshly initialized dense twin before the first epoch (`ssc_tf.pruning.scores`); it is
    saved with every checkpoint. `magnitude` trains in tfmot's own `tf_keras` process
    (`ssc_tf.pruning.magnitude`), into the same model_dir layout.

    `steps_per_execution` batches run per call into TensorFlow. The callbacks then see every
    Nth batch: a NaN loss stops the run after the call it fell in, which still checkpoints
    nothing of its epoch. The steps, the epoch logs and the checkpoints are those of one
    batch per call, so a resumed run may use another value, as it may another `jit_compile`.

    Returns:
        The trained Keras model, compiled, with the newest weights (for `magnitude`, the
        masked dense twin of its newest checkpoint, not compiled).

    Raises:
        ValueError: a bad setting (dataset without its data_dir, batch size not divisible by
            the replicas, `steps_per_execution` above 1 under "multi_worker" or for
            `magnitude`, a model_dir that holds another model, a run of another
            `mixed_precision` or a damaged run.json, whose checkpoints all fail to restore,
            or that another trainer holds, multi_worker workers that resume after different
            epochs, ...); the message names it.
        OSError: a checkpoint could not be saved (a full disk); the message says what to do.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    arguments.check_int("steps_per_execution", steps_per_execution, minimum=1)
    arguments.check_bool("tune", tune)
    if config.sparsity == pruning.MAGNITUDE:
        # tfmot prunes Keras 2 models only: the run trains in a tf_keras process of its own,
        # whose pruning step (`UpdatePruningStep`) counts the batches its callback sees.
        settings = (strategy, mixed_precision, jit_compile, steps_per_execution)
        if settings != ("default", "none", False, 1):
            raise ValueError(
                f"--sparsity={pruning.MAGNITUDE} trains in tfmot's own process on one device "
                f"in float32, one batch per step: leave --strategy, --mixed_precision, "
                f"--jit_compile and --steps_per_execution at their defaults. Received: "
                f"strategy={strategy!r}, mixed_precision={mixed_precision!r}, jit_compile="
                f"{jit_compile}, steps_per_execution={steps_per_execution}"
            )
        magnitude.train(config, model_dir=model_dir, data_dir=data_dir,
                        steps_per_epoch=steps_per_epoch, verbose=verbose)
        return model_dir_lib.load_model(model_dir)[0]
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"Invalid value for flag --mixed_precision: expected one of "
            f"{tuple(MIXED_PRECISION)}. Received: mixed_precision={mixed_precision!r}"
        )
    if strategy == "multi_worker" and steps_per_execution > 1:
        raise ValueError(
            "--strategy=multi_worker runs one batch per call into TensorFlow (its own loop, "
            "not Keras' fit): leave --steps_per_execution at 1. Received: "
            f"steps_per_execution={steps_per_execution}"
        )
    if data.needs_data_dir(config.dataset) and not data_dir:
        # data.load says where the files go; fail before touching the model_dir.
        data.load(config.dataset, "train", batch_size=config.batch_size, data_dir=data_dir)
    if tf.io.gfile.exists(os.path.join(model_dir, model_dir_lib.RUN_FILE)):
        saved, _ = model_dir_lib.read_run(model_dir)
        model_dir_lib.check_resume(model_dir, saved, config)
        model_dir_lib.check_mixed_precision(model_dir, mixed_precision)

    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    tf_strategy = distribute.get_strategy(strategy)
    distribute.check_batch_size(config.batch_size, tf_strategy)
    if jit_compile and (strategy == "multi_worker" or tf_strategy.num_replicas_in_sync > 1):
        # Keras compiles the whole distributed step, the replicas' variables and all-reduces
        # included, which XLA cannot place across devices (keras-team/keras#19005) nor
        # compile on CPU (b/194942685); Keras' own automatic XLA is off under tf.distribute
        # for that reason. Ignored rather than refused, as under multi_worker: the same
        # command then trains with XLA on a machine of one GPU and without on one of eight.
        logging.warning("--jit_compile is ignored under --strategy=%s with %d replicas.",
                        strategy, tf_strategy.num_replicas_in_sync)
        jit_compile = False
    if tune and (strategy == "multi_worker" or tf_strategy.num_replicas_in_sync > 1):
        # The plan reads the tuned table through a context variable, which the threads that
        # trace each replica's step do not inherit.
        logging.warning("--tune is ignored under --strategy=%s with %d replicas.",
                        strategy, tf_strategy.num_replicas_in_sync)
        tune = False
    # Under multi_worker every worker runs this function; only the chief writes model_dir,
    # so only the chief locks it.
    chief = distribute.is_chief(tf_strategy)
    with model_dir_lib.lock(model_dir) if chief else contextlib.nullcontext():
        train_data, eval_data = data.experiment_batches(
            config, data_dir=data_dir, steps_per_epoch=steps_per_epoch,
            normalize_on=pipeline.DEVICE, num_workers=_num_workers(tf_strategy))
        with tf_strategy.scope():
            model = compiled_model(config, int(train_data.cardinality()), jit_compile,
                                    steps_per_execution)
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
        restored = model_dir_lib.restore_newest(checkpoint, model_dir)
        initial_epoch = int(epoch.numpy()) if restored else 0  # int(epoch) fails if distributed.
        if restored:
            logging.info("Resuming %s after epoch %d of %d.", restored, initial_epoch,
                         config.epochs)
        elif config.sparsity in pruning.MASK_METHODS:
            # At initialization, from the seeded weights and batches; then saved and restored
            # with the checkpoints like any weight.
            layer_masks = scores.masks(
                config, model, train_data.map(lambda *batch: _normalized(batch, config.dataset)))
            masked.set_masks(model, layer_masks)
            logging.info("%s mask: %d of the prunable layers' %d weights kept.", config.sparsity,
                         sum(int(m.sum()) for m in layer_masks.values()),
                         sum(m.size for m in layer_masks.values()))
        checkpoint_dir = os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR)
        if strategy == "multi_worker":
            distribute.check_workers_agree(tf_strategy, initial_epoch, checkpoint_dir)
        # Written only now that the model, the data and the checkpoint loaded: a run that
        # failed before would leave a run.json that refuses the corrected command.
        if chief:
            model_dir_lib.write_run(model_dir, config, data_dir, mixed_precision)
        if initial_epoch >= config.epochs:
            logging.info("%s already finished its %d epochs.", model_dir, config.epochs)
            return model

        # Saving reads the distributed variables with collectives, so every worker saves;
        # the others into a directory of their own, deleted after each save (see
        # EpochCheckpoint).
        scratch_dir = None if chief else tempfile.mkdtemp(prefix="ssc_tf_checkpoint_")
        manager = model_dir_lib.checkpoint_manager(checkpoint, scratch_dir or checkpoint_dir)
        stop_on_nan = callbacks_lib.StopOnNonFiniteLoss()
        callbacks = [stop_on_nan, callbacks_lib.EpochCheckpoint(manager, epoch, discard=not chief)]
        if chief:
            log_dir = os.path.join(model_dir, model_dir_lib.LOG_DIR)
            callbacks += [
                keras.callbacks.TensorBoard(log_dir=log_dir),
                callbacks_lib.RunSummaries(os.path.join(log_dir, "run"), initial_epoch),
            ]
        tuned = (tuning.for_host(model, layers.current_runtime(),
                                 (execution_plan.TRAIN, execution_plan.LARGE_BATCH))
                 if tune else None)
        try:
            # The layers plan their forms when the steps are traced, inside `fit`.
            with _normalizing_steps(model, config.dataset), \
                    execution_plan.cost_table(tuned and tuned.path):
                if strategy == "multi_worker":
                    _fit_multi_worker(
                        model, tf_strategy, train_data, eval_data, epochs=config.epochs,
                        initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
                else:
                    model.fit(
                        train_data, validation_data=eval_data, epochs=config.epochs,
                        initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # The training split shuffles itself, seeded.
        finally:
            if scratch_dir and tf.io.gfile.exists(scratch_dir):
                tf.io.gfile.rmtree(scratch_dir)
    if stop_on_nan.error is not None:
        raise stop_on_nan.error
    return model


def compiled_model(config, steps, jit_compile=False, steps_per_execution=1):
    """The model of `config`, compiled, its optimizer built (call under the strategy's scope).

    Args:
        config: the `ExperimentConfig`.
        steps: int, training steps per epoch (the learning-rate schedule counts steps).
        jit_compile: bool, XLA-compile the train and test steps.
        steps_per_execution: int, batches per call into TensorFlow.
    """
    model = models.build(config.model, **config.model_kwargs())
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if config.num_classes > 10:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
    model.compile(
        optimizer=optimization.build_optimizer(
            config, steps, loss_scale=model.dtype_policy.name == "mixed_float16"),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def _normalized(batch, dataset):
    """An `(images, labels)` batch of pixels with its images normalized for `dataset`."""
    images, labels = batch
    return data.normalize(images, dataset), labels


@contextlib.contextmanager
def _normalizing_steps(model, dataset):
    """Normalizes each batch in `model`'s training and evaluation steps while it lasts.

    `fit` and `_fit_multi_worker` run `model.train_step` and `model.test_step` on each
    replica's share of a batch, on the replica's device; wrapped here, they normalize the
    uint8 pixels of `normalize_on="device"` batches there, rather than tf.data on the host
    (a quarter of the bytes to copy to an accelerator). The wrappers live on the instance
    only: the model's variables, checkpoints and exported graphs are untouched. On exit the
    class's steps come back, and the functions Keras traced with the wrappers are dropped, so
    the model takes normalized images again (`evaluate`, `predict`, the returned model).

    Args:
        model: the compiled Keras model, before `fit` traced its steps.
        dataset: str, whose normalization statistics to use (`ssc_tf.data.normalize`).
    """
    def normalizing(step):
        return lambda batch: step(_normalized(batch, dataset))

    model.train_step = normalizing(model.train_step)
    model.test_step = normalizing(model.test_step)
    try:
        yield
    finally:
        del model.train_step, model.test_step
        model.train_function = model.test_function = None


def _num_workers(strategy):
    """The input pipelines of `strategy`: one per worker (and chief) of its cluster; 1 on one
    machine."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _fit_multi_worker(model, strategy, train_data, eval_data, *, epochs, initial_epoch,
                      callbacks, verbose):
    """`model.fit`'s epoch loop, written out for `MultiWorkerMirroredStrategy`.

    Keras 3.15's `fit` fails under that strategy (keras-team/keras#20585), so this loop does
    what `fit` does with the same pieces: the compiled model's own `train_step` and
    `test_step` under `strategy.run` (its loss averaged over the global batch, `model.losses`,
    the optimizer and the compiled metrics), and the callbacks called in `fit`'s order with
    `fit`'s logs: the running metrics after each batch, the metrics and their `val_` twins
    after each epoch.

    Each dataset carries the `AutoShardPolicy` that `ssc_tf.data.experiment_batches` chose
    for its source (`pipeline.auto_shard_policy`): FILE where the split is read from at least
    as many files as there are workers (ImageNet's TFDS shards), so each worker decodes only
    its own files; else DATA (the cached datasets, read from arrays or from one file), under
    which every worker reads the whole pipeline, in order, and keeps its share of each global
    batch, so the batches are those of `fit` on one machine. Either way every worker takes
    the same number of steps (under FILE, tf.distribute hands a worker whose files ran out
    empty batches to the epoch's end). The logs are reduced over all workers, so every worker
    takes the same decisions (`stop_training`) at the same step.

    One batch per call: `--steps_per_execution` above 1 is refused with this strategy.

    Args:
        model: the compiled Keras model, built under `strategy`'s scope.
        strategy: the `tf.distribute.MultiWorkerMirroredStrategy`.
        train_data: `tf.data.Dataset` of global `(images, labels)` batches, one epoch, with
            its auto-shard policy (`ssc_tf.data.experiment_batches`).
        eval_data: the same for validation after each epoch.
        epochs: int, the epoch to stop after.
        initial_epoch: int, the epoch to start at.
        callbacks: list of `keras.callbacks.Callback`.
        verbose: `fit`'s verbosity.
    """
    train_batches = strategy.experimental_distribute_dataset(train_data)
    eval_batches = strategy.experimental_distribute_dataset(eval_data)
    # What `fit` builds from a reduced first batch (which this strategy cannot reduce): the
    # compiled loss and metrics' state, from the batch's spec.
    with strategy.scope():
        model._symbolic_build(data_batch=train_data.element_spec)

    def step_function(step):
        def run(batch):
            strategy.run(step, args=(batch,))
            return model.get_metrics_result()

        return tf.function(run, reduce_retracing=True)

    train_function = step_function(model.train_step)
    test_function = step_function(model.test_step)
    callbacks = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=int(train_data.cardinality()))
    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step, batch in enumerate(train_batches):
            callbacks.on_train_batch_begin(step)
            callbacks.on_train_batch_end(step, train_function(batch))
            if model.stop_training:
                break
        epoch_logs = dict(model.get_metrics_result())
        callbacks.on_test_begin()
        model.reset_metrics()
        for step, batch in enumerate(eval_batches):
            callbacks.on_test_batch_begin(step)
            callbacks.on_test_batch_end(step, test_function(batch))
        val_logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        callbacks.on_test_end(val_logs)
        epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=epoch_logs)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow's INFO lines (one per checkpoint shard) would bury the progress bar.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    FLAGS = flags.FLAGS
    if not FLAGS.model_dir:
        raise app.UsageError("Flag --model_dir is required: the directory of the run.")
    try:
        config = experiment_flags.config_from_flags(FLAGS)
        train(
            config, model_dir=FLAGS.model_dir, data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision,
            jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution,
            steps_per_epoch=FLAGS.steps_per_epoch, tune=FLAGS.tune)
    except (ValueError, OSError, callbacks_lib.NonFiniteLossError) as e:
        sys.exit(f"Error: {e}")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    experiment_flags.define_flags()
    flags.DEFINE_string(
        "data_dir", None,
        "Where the dataset lives: the TFDS data directory for cifar10/cifar100 (optional, TFDS' "
        "default otherwise) and imagenet2012 (required; ILSVRC2012 tars under "
        "<data_dir>/downloads/manual/), the unpacked tiny-imagenet-200/ folder for tinyimagenet "
        "(required), the folder of the four IDX files for fashion_mnist (optional: Debian's "
        "/usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`, else "
        "TFDS). Unused for digits.")
    flags.DEFINE_string(
        "model_dir", None,
        "Directory of the run: run.json, checkpoints/, logs/ (TensorBoard), train.lock while "
        "it trains. A run started again with the same --model_dir resumes from its last "
        "finished epoch; a second trainer on it is refused.")
    flags.DEFINE_enum(
        "strategy", "default", list(distribute.STRATEGIES),
        "tf.distribute strategy: default (TF's default, one device), one_device (first GPU, "
        "else CPU), mirrored (all GPUs of this machine, or its logical CPU devices), "
        "multi_worker (the machines of TF_CONFIG, every worker running the same command with "
        "the same --model_dir on shared storage; only the chief writes it).")
    flags.DEFINE_enum(
        "mixed_precision", "none", list(MIXED_PRECISION),
        "Compute dtype: none (float32), float16 (mixed_float16 with loss scaling; GPUs) or "
        "bfloat16 (mixed_bfloat16; TPUs and recent CPUs). Variables stay float32.")
    flags.DEFINE_bool(
        "jit_compile", False,
        "Compile the train and test steps with XLA (ignored under --strategy=multi_worker, "
        "and under --strategy=mirrored with more than one replica).")
    flags.DEFINE_integer(
        "steps_per_execution", 1,
        "Training and evaluation batches run per call into TensorFlow (Keras' "
        "steps_per_execution). Above 1, an accelerator waits less on the host between small "
        "steps, but the progress bar and the per-batch callbacks see only every Nth batch: a "
        "NaN loss stops the run at the end of the N batches it fell in. Steps, epoch logs and "
        "checkpoints are those of 1, so a resumed run may change it. 1 with "
        "--strategy=multi_worker and --sparsity=magnitude.", lower_bound=1)
    flags.DEFINE_bool(
        "tune", False,
        "Where the package has no times of this machine's runtime measured on its kind of "
        "CPU (its TensorFlow tables come from AMD EPYC CPUs): first time the model's SSC layer "
        "shapes in each form here, in training steps at batch 128 (about 40 s for ResNet-32 "
        "on 2 cores), cached in ~/.cache/ssc_tf ($XDG_CACHE_HOME), and plan with those times.")
    flags.DEFINE_integer(
        "steps_per_epoch", None,
        "Train on at most this many batches per epoch (smoke runs); default: the whole "
        "training split.", lower_bound=1)


def run():
    """The `python -m ssc_tf.train` and `ssc-train` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
