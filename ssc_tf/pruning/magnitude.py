"""`--sparsity=magnitude`: tfmot's gradual magnitude pruning, trained in a `tf_keras` process.

tensorflow-model-optimization (tfmot 0.8.1) prunes Keras 2 models only, and TensorFlow gives
Keras 2 (`tf_keras`) as `tf.keras` only when `TF_USE_LEGACY_KERAS=1` is set before it is
imported; ssc_tf stays on Keras 3. So `train`, called by `ssc_tf.train.train` in the Keras 3
process, runs `python -m ssc_tf.pruning.magnitude` with that switch in its environment,
streams its output and raises its error. The child builds the dense twin in tf_keras from
the same walk of the spec table (`TFKerasBuilder`), wraps every prunable convolution (the
first convolution and the classifier stay dense: `ssc_tf.pruning.budget`) in
`prune_low_magnitude`, and trains it on `ssc_tf.train`'s batches and step schedule with
coupled L2 SGD (`ssc_tf.optimization.CoupledL2SGD`'s update, in tf_keras).

The schedule (`schedule`) is tfmot's `PolynomialDecay` (Zhu & Gupta, "To prune, or not to
prune", 2017: sparsity rises as 1 - (1 - t)^3 from 0 to its final value):

- every prunable layer ends at the same sparsity, which keeps `budget.target(config)`
  weights in all (Zhu & Gupta prune each layer to the same final sparsity); the total is
  apportioned to the layers by size (largest remainder), so it is met exactly;
- the masks are updated once per epoch, at its last step, from the end of the first epoch
  (one epoch of dense training first: magnitudes then reflect training, not the
  initialization) to the end of the last epoch at the initial learning rate (the first
  `--lr_boundaries` epoch, else `--epochs`): the network prunes while the learning rate is
  high and recovers at the final sparsity after it decays.

The schedule is fixed when a run starts, and recorded; a resumed run keeps it, so more
`--epochs` fine-tune at the final sparsity instead of re-planning the pruning.

What the run writes under `--model_dir`, besides the layout of `ssc_tf.model_dir` (run.json,
logs/, train.lock):

    checkpoints/epoch-<n>        the Keras 3 masked dense twin (`ssc_tf.models.masked`) after
                                 epoch n: `strip_pruning`'s weights, mask = weight != 0, so
                                 `model_dir.load_model`, evaluate, export and convert_tflite
                                 read it like any pruned run
    tfmot/checkpoints/epoch-<n>  tf_keras training state: the pruned model (masks, thresholds,
                                 tfmot's pruning step), the optimizer and the epoch; resuming
                                 reads it
    tfmot/schedule.json          the run's `Schedule`
    pruning.json                 the sparsity measured on the stripped weights after the
                                 newest epoch (`measure`)
    logs/metrics/                tfmot's per-layer sparsity and thresholds (`PruningSummaries`)

The child builds and saves the Keras 3 twin itself: Keras 3 (`import keras`) works in a
TF_USE_LEGACY_KERAS process, where only `tf.keras` means tf_keras, so each epoch's Keras 3
checkpoint is saved right after its tf_keras state. A child killed between the two saves
writes the missing Keras 3 checkpoint when it resumes.
"""

import collections
import dataclasses
import json
import logging as std_logging
import os
import signal
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from ssc_tf import architectures
from ssc_tf import arguments
from ssc_tf import callbacks as callbacks_lib
from ssc_tf import config as config_lib
from ssc_tf import data
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import models
from ssc_tf import optimization
from ssc_tf.models import blocks
from ssc_tf.models import masked
from ssc_tf.models import report
from ssc_tf.pruning import budget

# The child's directory of tf_keras training state under --model_dir, and its files.
STATE_DIR = "tfmot"
SCHEDULE_FILE = "schedule.json"
PRUNING_FILE = "pruning.json"
# tfmot's exponent in PolynomialDecay (Zhu & Gupta's cubic schedule).
POWER = 3
# The exit status of the child for each error that `train` raises again in the parent.
_EXIT_STATUS = {ValueError: 2, OSError: 3, callbacks_lib.NonFiniteLossError: 4}
_ERROR_PREFIX = "Error: "
# The child's stderr lines kept to explain a crash.
_TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When tfmot prunes, and how many weights each prunable layer keeps in the end.

    Steps count training batches from 1 (tfmot's pruning step): the masks are updated at
    `begin_step + i * frequency` up to `end_step`, each layer's sparsity following
    `PolynomialDecay` from 0 to `1 - kept[name] / weights of that layer`.

    Attributes:
        begin_step: int >= 0, where the polynomial starts.
        end_step: int, the step of the last mask update, at the final sparsity.
        frequency: int >= 1, steps between mask updates.
        kept: `{layer name: weights kept at end_step}` of every prunable layer.
    """

    begin_step: int
    end_step: int
    frequency: int
    kept: dict

    def final_sparsity(self, layer):
        """The sparsity of `layer` (an `architectures.ConvLayer`) after `end_step`."""
        return 1 - self.kept[layer.name] / layer.dense_params


def schedule(config, steps_per_epoch):
    """The `Schedule` of `config` for `steps_per_epoch` training batches per epoch.

    `budget.target(config)` weights in all, apportioned to the prunable layers by their size
    (one sparsity for all, up to one weight per layer); masks updated at the end of every
    epoch up to the first `lr_boundaries` epoch (or `epochs` without boundaries).

    Raises:
        ValueError: `steps_per_epoch` < 1, or `kept_fraction` leaves a layer no weight.
    """
    arguments.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    layers = budget.prunable_layers(config)
    target = budget.target(config)
    total = sum(layer.dense_params for layer in layers)
    # Largest remainder, in integers: each layer its floor share, then one more to the
    # layers with the largest remainders until the total is met.
    shares = [divmod(target * layer.dense_params, total) for layer in layers]
    kept = [share for share, _ in shares]
    by_remainder = sorted(range(len(layers)), key=lambda i: shares[i][1], reverse=True)
    for i in by_remainder[: target - sum(kept)]:
        kept[i] += 1
    if min(kept) < 1:
        raise arguments.invalid(
            "kept_fraction", f"a budget that keeps at least one weight in each of the "
            f"{len(layers)} prunable layers", config.kept_fraction)
    epochs = config.lr_boundaries[0] if config.lr_boundaries else config.epochs
    return Schedule(
        begin_step=0, end_step=epochs * steps_per_epoch, frequency=steps_per_epoch,
        kept={layer.name: k for layer, k in zip(layers, kept)},
    )


def _sparsity():
    """tfmot's Keras API, imported only where it is used: importing tfmot sets
    TF_USE_LEGACY_KERAS=1 in the importing process' environment."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras


class TFKerasBuilder(blocks.Builder):
    """The dense twin in tf_keras, each prunable convolution in tfmot's `prune_low_magnitude`.

    Reads the same `architectures.network` walk as the Keras 3 builders, so the layers keep
    their names (a wrapper is `prune_low_magnitude_<name>`; `strip_pruning` gives back the
    layer) and shapes. Build it with the dense twin's settings (`architectures.dense_pattern`).

    Args:
        plan: the run's `Schedule`.
    """

    def __init__(self, plan):
        import tf_keras

        super().__init__(tf_keras)
        self.plan = plan

    def conv(self, layer, g, p):
        conv = self.dense_conv(layer)
        if layer.setting is None:
            return conv
        sparsity = _sparsity()
        return sparsity.prune_low_magnitude(conv, pruning_schedule=sparsity.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=self.plan.final_sparsity(layer),
            begin_step=self.plan.begin_step, end_step=self.plan.end_step, power=POWER,
            frequency=self.plan.frequency,
        ))


def build(config, plan):
    """The pruned tf_keras model of `config` under `plan` (a `Schedule`), not compiled."""
    return TFKerasBuilder(plan).model(
        architectures.network(config.model, config.input_shape),
        architectures.settings_of(config.model, *architectures.dense_pattern(config.model)),
        config.num_classes,
    )


def measure(stripped, config, plan):
    """The sparsity of `strip_pruning`'s model `stripped`, as pruning.json records it.

    Returns:
        A dict: `kept` (nonzero weights of the prunable layers), `target`
        (`budget.target(config)`), `prunable` (their dense weights), `layers` (`{name:
        nonzero weights}`), `kept_fraction` (of every counted weight of the model:
        convolutions and classifier kernel, as `architectures.count` counts them) and the
        `schedule`.
    """
    layers = {
        layer.name: int(np.count_nonzero(stripped.get_layer(layer.name).kernel.numpy()))
        for layer in budget.prunable_layers(config)
    }
    counts = architectures.count(
        config.model, config.num_classes, config.input_shape,
        *architectures.dense_pattern(config.model))
    prunable = sum(layer.dense_params for layer in budget.prunable_layers(config))
    kept = sum(layers.values())
    return {
        "kept": kept,
        "target": budget.target(config),
        "prunable": prunable,
        "layers": layers,
        "kept_fraction": (counts.dense_params - prunable + kept) / counts.dense_params,
        "schedule": dataclasses.asdict(plan),
    }


def train(config, *, model_dir, data_dir=None, steps_per_epoch=None, verbose="auto"):
    """Trains `config` (`sparsity` 'magnitude') into `model_dir` in a tf_keras process.

    Runs `python -m ssc_tf.pruning.magnitude` with TF_USE_LEGACY_KERAS=1, its progress on
    this process' stdout and its log on stderr, and waits for it. It resumes, locks and
    writes `model_dir` as `ssc_tf.train.train` does (see the module docstring for the files).

    Args:
        config: the `ExperimentConfig`, `sparsity` 'magnitude'.
        model_dir: str, the run's directory.
        data_dir: str or None, where the dataset lives.
        steps_per_epoch: int or None, cap on training batches per epoch.
        verbose: tf_keras' `fit` verbosity ("auto", 0, 1 or 2).

    Raises:
        ValueError: the child's own `ValueError` (a model_dir that holds another model or
            that another trainer holds, ...), or it crashed or was killed; one line that
            names the error.
        OSError: the child could not save a checkpoint.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    command = _command(config, model_dir, data_dir, steps_per_epoch, verbose)
    tail = collections.deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as child:
        for line in child.stderr:
            if not line.startswith(_ERROR_PREFIX):  # raised below instead
                sys.stderr.write(line)
            tail.append(line.rstrip())
    if child.returncode:
        raise _child_error(child.returncode, [line for line in tail if line.strip()])


def _command(config, model_dir, data_dir, steps_per_epoch, verbose):
    """The child's command line."""
    command = [
        sys.executable, "-m", "ssc_tf.pruning.magnitude",
        f"--config={json.dumps(dataclasses.asdict(config))}", f"--model_dir={model_dir}",
        f"--verbose={verbose}",
    ]
    if data_dir is not None:
        command.append(f"--data_dir={data_dir}")
    if steps_per_epoch is not None:
        command.append(f"--steps_per_epoch={steps_per_epoch}")
    return command


def _child_error(status, lines):
    """The exception that `train` raises for the child's exit `status` and last stderr `lines`."""
    errors = [line[len(_ERROR_PREFIX):] for line in lines if line.startswith(_ERROR_PREFIX)]
    kinds = {code: kind for kind, code in _EXIT_STATUS.items()}
    if errors and status in kinds:
        return kinds[status](errors[-1])
    what = "python -m ssc_tf.pruning.magnitude"
    if status < 0:
        cause = f"{what} was killed by {signal.Signals(-status).name}"
    else:
        last = lines[-1] if lines else "no output"
        cause = f"{what} failed with exit status {status} ({last})"
    return ValueError(
        f"The tfmot training process of --sparsity=magnitude stopped: {cause}. Its log is "
        "above; rerunning the same command resumes from the last checkpoint."
    )


def _train_pruned(config, model_dir, data_dir, steps_per_epoch, verbose):
    """The child's training run: `train`'s behaviour, in this TF_USE_LEGACY_KERAS process."""
    import tf_keras

    sparsity = _sparsity()
    if tf.io.gfile.exists(os.path.join(model_dir, model_dir_lib.RUN_FILE)):
        saved, _ = model_dir_lib.read_run(model_dir)
        model_dir_lib.check_resume(model_dir, saved, config)
    tf_keras.utils.set_random_seed(config.seed)
    train_data, eval_data = data.experiment_batches(
        config, data_dir=data_dir, steps_per_epoch=steps_per_epoch)
    steps = int(train_data.cardinality())
    state_dir = os.path.join(model_dir, STATE_DIR)
    with model_dir_lib.lock(model_dir):
        plan = _run_schedule(config, steps, state_dir)
        model = _compiled_model(config, plan, steps)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
        restored = model_dir_lib.restore_newest(checkpoint, state_dir)
        twin = _Keras3Twin(config, plan, model_dir)
        if restored:
            logging.info("Resuming %s after epoch %d of %d.", restored, int(epoch.numpy()),
                         config.epochs)
        elif twin.saved_epoch() is not None:
            raise ValueError(
                f"--model_dir={model_dir!r} holds Keras checkpoints under "
                f"{model_dir_lib.CHECKPOINT_DIR}/ but no tfmot training state under "
                f"{STATE_DIR}/{model_dir_lib.CHECKPOINT_DIR}/, so this run does not start "
                f"over from epoch 0 by itself. To do so, move {model_dir_lib.CHECKPOINT_DIR}/ "
                f"away; or train into a new --model_dir."
            )
        initial_epoch = int(epoch.numpy())
        model_dir_lib.write_run(model_dir, config, data_dir)
        # strip_pruning's model is made of the pruned model's own layers (each wrapper's
        # inner layer), so it follows the training without stripping again.
        stripped = sparsity.strip_pruning(model)
        if restored and twin.saved_epoch() != initial_epoch:
            twin.save(stripped, initial_epoch)
        if initial_epoch >= config.epochs:
            logging.info("%s already finished its %d epochs.", model_dir, config.epochs)
            return
        manager = model_dir_lib.checkpoint_manager(
            checkpoint, os.path.join(state_dir, model_dir_lib.CHECKPOINT_DIR))

        def on_epoch_end(index, logs):
            loss = float((logs or {}).get("loss", 0.0))
            if not np.isfinite(loss):
                raise callbacks_lib.NonFiniteLossError(
                    f"The training loss became {loss} in epoch {index + 1}; training stopped "
                    "and that epoch was not checkpointed. Lower --learning_rate, or check the "
                    "data; rerunning the same command resumes from the last checkpoint."
                )
            epoch.assign(index + 1)
            model_dir_lib.save_checkpoint(manager, index + 1)
            twin.save(stripped, index + 1)

        # UpdatePruningStep first: its epoch end applies the masks to the weights that the
        # checkpoints then save.
        callbacks = [
            sparsity.UpdatePruningStep(),
            tf_keras.callbacks.TerminateOnNaN(),
            tf_keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end),
            sparsity.PruningSummaries(log_dir=os.path.join(model_dir, model_dir_lib.LOG_DIR)),
        ]
        model.fit(train_data, validation_data=eval_data, epochs=config.epochs,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)


def _run_schedule(config, steps_per_epoch, state_dir):
    """The run's `Schedule`: the one recorded in `state_dir` where the run has tfmot
    checkpoints, else `schedule(config, steps_per_epoch)`, recorded now.

    Raises:
        ValueError: the recorded schedule does not read back.
    """
    path = os.path.join(state_dir, SCHEDULE_FILE)
    checkpoint_dir = os.path.join(state_dir, model_dir_lib.CHECKPOINT_DIR)
    planned = schedule(config, steps_per_epoch)
    if not (tf.io.gfile.exists(path) and tf.io.gfile.isdir(checkpoint_dir)
            and tf.io.gfile.listdir(checkpoint_dir)):
        tf.io.gfile.makedirs(state_dir)
        model_dir_lib.write_json(path, dataclasses.asdict(planned))
        return planned
    try:
        with tf.io.gfile.GFile(path) as f:
            recorded = Schedule(**json.load(f))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{path}, the pruning schedule of the run, does not read back ({e}). Delete it "
            "and rerun: the schedule is then planned again from the flags."
        ) from None
    if recorded != planned:
        logging.info("Keeping the pruning schedule that the run started with (%s): masks "
                     "updated every %d steps up to step %d.", path, recorded.frequency,
                     recorded.end_step)
    return recorded


def _compiled_model(config, plan, steps_per_epoch):
    """The pruned tf_keras model, compiled as `ssc_tf.train` compiles the Keras 3 one, with
    its optimizer built (a checkpoint restores into existing variables)."""
    import tf_keras

    model = build(config, plan)
    metrics = [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if config.num_classes > 10:
        metrics.append(tf_keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def _optimizer(config, steps_per_epoch):
    """`optimization.CoupledL2SGD` in tf_keras: `l2 * w` added to each gradient before the
    momentum update, on `optimization.step_boundaries`' schedule."""
    import tf_keras

    l2 = config.weight_decay

    class CoupledL2SGD(tf_keras.optimizers.SGD):
        def update_step(self, gradient, variable):
            gradient = gradient + l2 * tf.cast(variable, gradient.dtype)
            return super().update_step(gradient, variable)

    boundaries, values = optimization.step_boundaries(config, steps_per_epoch)
    learning_rate = (
        tf_keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if boundaries else config.learning_rate
    )
    # Not XLA: `ssc_tf.train` compiles nothing unless --jit_compile.
    return CoupledL2SGD(learning_rate=learning_rate, momentum=config.momentum,
                        jit_compile=False)


class _Keras3Twin:
    """The Keras 3 masked dense twin of the run, saved as `checkpoints/epoch-<n>`.

    Args:
        config: the run's `ExperimentConfig`.
        plan: its `Schedule` (recorded in pruning.json).
        model_dir: the run's directory.
    """

    def __init__(self, config, plan, model_dir):
        self._config = config
        self._plan = plan
        self._model_dir = model_dir
        self.model = models.build(config.model, **config.model_kwargs())
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._manager = model_dir_lib.checkpoint_manager(
            tf.train.Checkpoint(model=self.model, epoch=self._epoch),
            os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))

    def saved_epoch(self):
        """The epoch of the newest checkpoint the index names, or None."""
        latest = self._manager.latest_checkpoint
        return None if latest is None else int(latest.rsplit("-", 1)[1])

    def save(self, stripped, epoch):
        """Saves `stripped` (`strip_pruning`'s model) after `epoch` as the Keras 3 twin, its
        mask `weight != 0`, and records its sparsity in pruning.json and logs/run."""
        layer_masks = {}
        for layer in self.model.layers:
            weights = stripped.get_layer(layer.name).get_weights()
            if isinstance(layer, masked.MaskedConv2D):
                layer.kernel.assign(weights[0])
                layer_masks[layer.name] = weights[0] != 0
            elif weights:
                layer.set_weights(weights)
        masked.set_masks(self.model, layer_masks)
        self._epoch.assign(epoch)
        model_dir_lib.save_checkpoint(self._manager, epoch)
        measured = measure(stripped, self._config, self._plan)
        model_dir_lib.write_json(
            os.path.join(self._model_dir, PRUNING_FILE), {"epoch": epoch, **measured})
        stats = report.model_stats(self.model)
        log_dir = os.path.join(self._model_dir, model_dir_lib.LOG_DIR, "run")
        writer = tf.summary.create_file_writer(log_dir)
        with writer.as_default(step=epoch):
            tf.summary.scalar("params/live", stats.live_params)
            tf.summary.scalar("params/dense", stats.dense_params)
            tf.summary.scalar("params/kept_fraction", stats.kept_fraction)
        writer.close()
        logging.info("Epoch %d: %d of the prunable layers' %d weights kept (target %d).",
                     epoch, measured["kept"], measured["prunable"], measured["target"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise app.UsageError(
            "Run with TF_USE_LEGACY_KERAS=1 in the environment (tfmot prunes tf_keras "
            "models); `ssc_tf.pruning.magnitude.train` sets it.")
    # TensorFlow's INFO lines (one per checkpoint shard) would bury the progress bar.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    FLAGS = flags.FLAGS
    verbose = int(FLAGS.verbose) if FLAGS.verbose.isdigit() else FLAGS.verbose
    try:
        config = config_lib.ExperimentConfig(**json.loads(FLAGS.config))
        _train_pruned(config, FLAGS.model_dir, FLAGS.data_dir, FLAGS.steps_per_epoch, verbose)
    except tuple(_EXIT_STATUS) as e:
        status = next(code for kind, code in _EXIT_STATUS.items() if isinstance(e, kind))
        print(f"{_ERROR_PREFIX}{e}", file=sys.stderr)
        sys.exit(status)


def _define_flags():
    """The child's flags, defined only when it runs."""
    flags.DEFINE_string("config", None, "The ExperimentConfig, as JSON of its fields.",
                        required=True)
    flags.DEFINE_string("model_dir", None, "Directory of the run.", required=True)
    flags.DEFINE_string("data_dir", None, "Where the dataset lives.")
    flags.DEFINE_integer("steps_per_epoch", None, "Cap on training batches per epoch.",
                         lower_bound=1)
    flags.DEFINE_string("verbose", "auto", "tf_keras' fit verbosity: auto, 0, 1 or 2.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
