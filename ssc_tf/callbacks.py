"""Keras callbacks of a training run: epoch checkpoints, the NaN stop, and run summaries."""

import math

import keras
import numpy as np
import tensorflow as tf

from ssc_tf import model_dir as model_dir_lib
from ssc_tf.layers import SSCConv2D
from ssc_tf.models import report


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN/inf batch loss and remembers where.

    Unlike `keras.callbacks.TerminateOnNaN`, the caller can tell the run failed:
    `error` holds a `NonFiniteLossError` naming the epoch and batch, which `train` raises.

    With `steps_per_execution` N > 1, Keras calls back once per N batches, with the logs of
    the last: the loss there is the epoch's running mean, which a NaN or inf in any of the N
    keeps, so the run stops after the call it fell in, and the error names that call's
    batches. The epoch ends with that loss, so `EpochCheckpoint` does not save it.
    """

    def __init__(self):
        super().__init__()
        self.error = None
        self._epoch = 0
        self._first_batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._first_batch = batch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            batches = (f"batch {batch + 1}" if batch == self._first_batch else
                       f"one of batches {self._first_batch + 1} to {batch + 1} (run in one "
                       "call of --steps_per_execution)")
            self.error = NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self._epoch + 1}, "
                f"{batches}; training stopped and that epoch was not checkpointed. Lower "
                "--learning_rate, or check the data; rerunning the same command resumes "
                "from the last checkpoint."
            )
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves `manager`'s checkpoint after each epoch that ended with a finite loss.

    The checkpoint of epoch n is `epoch-<n>` (`ssc_tf.model_dir.save_checkpoint`), so a
    resumed run never saves over an earlier epoch's; a failed save raises `OSError`.

    Under `MultiWorkerMirroredStrategy` every worker must save, since saving reads the
    distributed variables with collectives, but only the chief keeps its checkpoints: the
    others pass `discard=True` and a manager of a scratch directory, which this callback
    deletes after each save.

    Args:
        manager: `tf.train.CheckpointManager` of a checkpoint holding `epoch`.
        epoch: int64 `tf.Variable`, set to the number of finished epochs before each save.
        discard: bool, delete `manager.directory` after each save.
    """

    def __init__(self, manager, epoch, *, discard=False):
        super().__init__()
        self._manager = manager
        self._epoch = epoch
        self._discard = discard

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return
        self._epoch.assign(epoch + 1)
        model_dir_lib.save_checkpoint(self._manager, epoch + 1)
        if self._discard:
            tf.io.gfile.rmtree(self._manager.directory)


def pattern_image(layer):
    """A picture of an SSC layer's pattern, uint8 (filters, in_channels, 1).

    Row n, column m shows kernel (m, n): white where the whole K x K kernel is live, grey where
    only its center tap is (the 1 x 1 part), black where it is empty.
    """
    mask = layer.pattern.kernel_mask()
    full = mask.reshape(-1, *mask.shape[2:]).all(axis=0)
    any_live = mask.any(axis=(0, 1))
    image = np.where(full, 255, np.where(any_live, 128, 0)).astype(np.uint8)
    return image.T[..., None]


class RunSummaries(keras.callbacks.Callback):
    """Writes, once per run, the model's parameter/MAC counts and each SSC layer's pattern.

    Scalars `params/live`, `params/dense`, `params/kept_fraction`, `macs/live`, `macs/dense`
    and one image per `SSCConv2D` (`pattern/<layer name>`, see `pattern_image`), at the step of
    the run's first epoch.

    Args:
        log_dir: directory of the summary writer (e.g. `<model_dir>/logs/run`).
        initial_epoch: the step to write at.
    """

    def __init__(self, log_dir, initial_epoch=0):
        super().__init__()
        self._log_dir = log_dir
        self._step = initial_epoch

    def on_train_begin(self, logs=None):
        stats = report.model_stats(self.model)
        writer = tf.summary.create_file_writer(self._log_dir)
        with writer.as_default(step=self._step):
            tf.summary.scalar("params/live", stats.live_params)
            tf.summary.scalar("params/dense", stats.dense_params)
            tf.summary.scalar("params/kept_fraction", stats.kept_fraction)
            tf.summary.scalar("macs/live", stats.macs)
            tf.summary.scalar("macs/dense", stats.dense_macs)
            for layer in self.model.layers:
                if isinstance(layer, SSCConv2D):
                    tf.summary.image(f"pattern/{layer.name}", pattern_image(layer)[None])
        writer.close()
