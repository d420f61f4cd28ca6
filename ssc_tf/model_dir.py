"""What training writes under `--model_dir`, and how evaluation and export read it back.

    <model_dir>/run.json          the experiment config, data_dir and mixed precision of the run
    <model_dir>/checkpoints/      tf.train checkpoints, one per finished epoch (the last two kept)
    <model_dir>/logs/             TensorBoard: train/, validation/, run/ (counts, SSC patterns)
    <model_dir>/train.lock        while a trainer runs: its process id, host and start time
    <model_dir>/eval.json         `python -m ssc_tf.evaluate` results

Each checkpoint holds the model's variables, the optimizer's (its step counter drives the
learning-rate schedule) and the number of finished epochs, so a restarted run resumes the
schedule where it stopped. Checkpoint `epoch-<n>` is the one saved after epoch n, so a run
that resumes never saves over an earlier epoch's. A checkpoint becomes the latest only once
completely written (`tf.train.CheckpointManager` updates its index last, and deletes old
checkpoints only after a save succeeded), so a run killed while saving, or stopped by a full
disk, resumes from the epoch before. A checkpoint that does not read back (truncated, or
deleted) is skipped for the next older one (`restore_newest`).

run.json is written once the model, the data and the checkpoint have loaded, so a run that
fails before it trains leaves none (or the previous one) behind.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import itertools
import json
import os
import re
import socket

from absl import logging
import tensorflow as tf

from ssc_tf import pattern
from ssc_tf import pruning
from ssc_tf.config import ExperimentConfig

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
LOCK_FILE = "train.lock"
EVAL_FILE = "eval.json"
# The `--mixed_precision` of a float32 run; a run.json written before the precision was
# recorded reads as one.
FLOAT32 = "none"

# The config fields that define the network; a model_dir holds one network for good, while
# the schedule may change between runs (e.g. more --epochs to train on).
_MODEL_FIELDS = (
    "dataset", "model", "sparsity", "g", "p", "p_1x1", "pointwise_layout", "kept_fraction",
    "random_per_layer",
)
# The dense twin's: it ignores the pattern flags (`ExperimentConfig.model_kwargs`), so a dense
# run resumes under any of them (`compare --train_flags=--pointwise_layout=aligned`).
_DENSE_MODEL_FIELDS = ("dataset", "model", "sparsity")
_CHECKPOINTS_KEPT = 2
_CHECKPOINT_NAME = "epoch"
# The files of checkpoint `epoch-<n>`; not the `<prefix>_temp` folder of a save that did not
# finish.
_CHECKPOINT_FILE = re.compile(rf"{_CHECKPOINT_NAME}-(\d+)\.(?:index|data-\d+-of-\d+)")
_CHECKPOINT_PREFIX = re.compile(rf"{_CHECKPOINT_NAME}-(\d+)")
_INDEX_FILE = "checkpoint"
# TensorFlow's decoration of an op's error: `{{function_node ...}}` and `[Op:SaveV2]`.
_OP_DECORATION = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]")


_TMP_COUNTER = itertools.count()


def write_atomically(path, contents, *, overwrite=True):
    """Writes `contents` (str or bytes) to `path` through a temporary file renamed into place,
    so a crash leaves the old file or the new one, never part of one. The temporary file's name
    is this process's and call's own, so two processes writing one file (two tunings sharing
    a cache) never remove each other's.

    Raises:
        tf.errors.AlreadyExistsError: `path` exists and `overwrite` is False (nothing is
            written, and the temporary file is removed).
    """
    tmp = f"{path}.tmp-{os.getpid()}-{next(_TMP_COUNTER)}"
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


def write_run(model_dir, config, data_dir, mixed_precision=FLOAT32):
    """Records the run's config, data_dir and `--mixed_precision` (a key of
    `ssc_tf.train.MIXED_PRECISION`) in `<model_dir>/run.json`, atomically."""
    tf.io.gfile.makedirs(model_dir)
    write_json(
        os.path.join(model_dir, RUN_FILE),
        {"config": dataclasses.asdict(config), "data_dir": data_dir,
         "mixed_precision": mixed_precision},
    )


def read_run(model_dir):
    """Reads `<model_dir>/run.json`.

    Returns:
        `(config, data_dir)`: the `ExperimentConfig` and the data_dir training used.

    Raises:
        FileNotFoundError: `model_dir` holds no run.json (no training run wrote it).
        ValueError: its run.json is not one that training wrote (damaged, or another
            program's); the message names it and what to do.
    """
    config, data_dir, _ = _read_run(model_dir)
    return config, data_dir


def _read_run(model_dir):
    """`read_run`'s `(config, data_dir)` and the run's `--mixed_precision`, raising as it."""
    path = os.path.join(model_dir, RUN_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"--model_dir={model_dir!r} holds no {RUN_FILE}: it is not a directory that "
            "`python -m ssc_tf.train --model_dir=...` wrote."
        )
    try:
        with tf.io.gfile.GFile(path) as f:
            run = json.load(f)
        saved = run["config"]
        if "dense" in saved:  # written before --sparsity replaced --dense
            saved["sparsity"] = "dense" if saved.pop("dense") else "ssc"
        # Written before the joined 1 x 1 layout: its pattern (and a pruned run's budget) was
        # the aligned one. The dense twin has none.
        saved.setdefault(
            "pointwise_layout",
            pattern.JOINED if saved.get("sparsity") == "dense" else pattern.ALIGNED)
        mixed_precision = run.get("mixed_precision", FLOAT32)
        if not isinstance(mixed_precision, str):
            raise TypeError(f"mixed_precision={mixed_precision!r}")
        return ExperimentConfig(**saved), run["data_dir"], mixed_precision
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a run file that `python -m ssc_tf.train` wrote "
            f"({type(e).__name__}: {_one_line(e)}). If it was damaged, delete it and run "
            "`python -m ssc_tf.train` with the run's own flags and --model_dir: it writes the "
            "file again once the checkpoint restores."
        ) from None


def _differences(saved, config, names):
    return [
        f"--{name}: saved {getattr(saved, name)!r}, requested {getattr(config, name)!r}"
        for name in names
        if getattr(saved, name) != getattr(config, name)
    ]


def model_differences(saved, config):
    """The flags in which two `ExperimentConfig`s build different networks.

    Returns:
        A list of "--flag: saved X, requested Y" strings, empty for the same network.
    """
    dense = saved.sparsity == config.sparsity == pruning.DENSE
    return _differences(saved, config, _DENSE_MODEL_FIELDS if dense else _MODEL_FIELDS)


def schedule_differences(saved, config):
    """The other flags in which two `ExperimentConfig`s differ: the schedule, the data, the
    seed. Same form as `model_differences`."""
    names = [f.name for f in dataclasses.fields(saved) if f.name not in _MODEL_FIELDS]
    return _differences(saved, config, names)


def check_resume(model_dir, saved, config):
    """Checks that a run of `config` can resume the run `saved` in `model_dir`.

    Raises `ValueError` if `config` builds another network, or adds learning-rate boundaries
    to a run without any or removes all of a run's: the optimizer holds its learning rate in a
    variable only without boundaries (`optimization.learning_rate_schedule`), so its checkpoint
    would not restore. Any other changed schedule is allowed (more --epochs to train on, other
    boundaries), and logged as a warning that names each changed flag: the epochs still to run
    use the new values, and the run file keeps the new flags.
    """
    differing = model_differences(saved, config)
    if differing:
        raise ValueError(
            f"--model_dir={model_dir!r} holds a different model, so this run cannot resume "
            f"into it ({'; '.join(differing)}). Use a new --model_dir, or the saved flags."
        )
    if bool(saved.lr_boundaries) != bool(config.lr_boundaries):
        raise ValueError(
            f"--model_dir={model_dir!r} trained with --lr_boundaries="
            f"{','.join(map(str, saved.lr_boundaries))}, so this run cannot resume it with "
            f"--lr_boundaries={','.join(map(str, config.lr_boundaries))}: a run without "
            "boundaries keeps its learning rate in the optimizer's checkpoint, one with them "
            "does not. Keep some boundaries (any epochs) or none, as the run did, or use a new "
            "--model_dir."
        )
    changed = schedule_differences(saved, config)
    if changed:
        logging.warning(
            "--model_dir=%s was started with other flags (%s): the epochs still to run use "
            "the new values.", model_dir, "; ".join(changed))


def check_mixed_precision(model_dir, mixed_precision):
    """Raises `ValueError` unless the run in `model_dir` trained with `mixed_precision`.

    float16 wraps the optimizer in a loss-scale optimizer, whose variables a float32 (or
    bfloat16) checkpoint lacks, so that change would fail in the checkpoint without naming
    the flag; every change is refused, so that run.json states the one precision that the
    whole run trained in.

    Args:
        model_dir: str, a directory holding a run.json.
        mixed_precision: str, the `--mixed_precision` this run asks for.

    Raises:
        ValueError: another precision, or a run.json that `read_run` refuses; one line.
    """
    saved = _read_run(model_dir)[2]
    if saved != mixed_precision:
        raise ValueError(
            f"--model_dir={model_dir!r} was trained with --mixed_precision={saved}, so this "
            f"run cannot resume it with --mixed_precision={mixed_precision}: use "
            f"--mixed_precision={saved}, or a new --model_dir."
        )


@contextlib.contextmanager
def lock(model_dir):
    """Holds `<model_dir>/train.lock` while the `with` block trains into `model_dir`.

    One trainer at a time: the lock is an exclusive `fcntl.flock` on that file, which holds
    this process' id, host and start time for the message a second trainer gets. The kernel
    frees the lock when the process ends, even by `kill -9`, so a crashed run leaves only the
    file, which the next trainer takes over (logging whose it was); a clean exit removes it.

    A `model_dir` that cannot be locked (a bucket such as gs://..., or a file system without
    locks) is used unlocked, with a warning.

    Raises:
        ValueError: another process holds the lock; the message names it.
    """
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, LOCK_FILE)
    fd = _acquire(path, model_dir)
    try:
        yield
    finally:
        if fd is not None:
            _release(path, fd)


def _acquire(path, model_dir):
    """Locks `path` and writes this process into it; returns its descriptor, or None."""
    if "://" in path:
        logging.warning(
            "--model_dir=%s cannot be locked (not a local or network file system): make sure "
            "no other trainer writes it.", model_dir)
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            who = (f"process {holder['pid']} on {holder['host']} has trained into it since "
                   f"{holder['started']}" if holder else "another process is starting there")
            raise ValueError(
                f"--model_dir={model_dir!r} is in use: {who} (it holds {path}). Wait for that "
                "run to finish or stop it; one model_dir takes one trainer at a time."
            ) from None
        except OSError as e:
            os.close(fd)
            logging.warning(
                "Cannot lock %s (%s): make sure no other trainer writes --model_dir=%s.",
                path, e.strerror, model_dir)
            return None
        # The holder before may have removed the file between the open and the lock: this
        # lock is then on a file nobody else sees, so start again.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    previous = _lock_holder(fd)
    if previous:
        logging.warning(
            "Taking over %s from process %s on %s (started %s), which ended without "
            "releasing it.", path, previous["pid"], previous["host"], previous["started"])
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _lock_holder(fd):
    """The `{pid, host, started}` a lock file holds, or None (empty, or being written)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return holder if {"pid", "host", "started"} <= holder.keys() else None
    except (ValueError, AttributeError):
        return None


def _release(path, fd):
    """Removes the lock file (while still holding it, unless someone replaced it) and unlocks."""
    try:
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.remove(path)
    finally:
        os.close(fd)


def checkpoint_manager(checkpoint, directory):
    """The manager that saves `checkpoint` under `directory`, keeping the last two."""
    return tf.train.CheckpointManager(
        checkpoint, directory, max_to_keep=_CHECKPOINTS_KEPT, checkpoint_name=_CHECKPOINT_NAME
    )


def save_checkpoint(manager, epoch):
    """Saves `manager`'s checkpoint as `epoch-<epoch>`, the one of that finished epoch.

    Returns:
        The path saved.

    Raises:
        OSError: the save failed (a full disk, ...); the message names the directory and what
            to do. The checkpoints saved before are intact.
    """
    try:
        return manager.save(checkpoint_number=epoch)
    except tf.errors.OpError as e:
        raise OSError(
            f"Could not save the checkpoint of epoch {epoch} under {manager.directory} "
            f"({_one_line(e)}). Free space there (or fix the cause) and rerun the same "
            "command: it resumes from the last checkpoint saved."
        ) from e


def restore_newest(checkpoint, model_dir, *, partial=False):
    """Restores `checkpoint` from the newest checkpoint of `model_dir` that reads back.

    The checkpoints are tried from the newest epoch to the oldest, those the index names and
    those whose files are there; one that does not read back (a file truncated by a full disk,
    or deleted) is skipped with a warning that names its files.

    Args:
        checkpoint: `tf.train.Checkpoint` with every variable created.
        model_dir: str, a directory written by `ssc_tf.train`.
        partial: bool, restore only what `checkpoint` holds (e.g. the model without its
            optimizer) rather than require every saved value to have its variable.

    Returns:
        The path of the checkpoint restored, or None where `model_dir` holds no checkpoint
        file at all.

    Raises:
        ValueError: checkpoints/ holds checkpoint files but none of them restores, or the
            newest that reads back does not fit `checkpoint`; the message says what is there
            and what to do. A run that had checkpoints never starts over by itself.
    """
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    files = sorted(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else []
    try:
        state = tf.train.get_checkpoint_state(directory)
    except ValueError:  # The index names no newest checkpoint, e.g. an empty file.
        raise ValueError(
            f"{os.path.join(directory, _INDEX_FILE)}, the index of the checkpoints, names none "
            "(it is empty or damaged): delete it, and the next run finds the checkpoints by "
            "their files."
        ) from None
    named = [os.path.basename(p) for p in state.all_model_checkpoint_paths] if state else []
    epochs = {int(m[1]) for m in map(_CHECKPOINT_FILE.fullmatch, files) if m}
    epochs |= {int(m[1]) for m in map(_CHECKPOINT_PREFIX.fullmatch, named) if m}
    skipped = []
    for epoch in sorted(epochs, reverse=True):
        path = os.path.join(directory, f"{_CHECKPOINT_NAME}-{epoch}")
        try:
            status = checkpoint.restore(path)
            if partial:
                status.expect_partial().assert_existing_objects_matched()
            else:
                status.assert_consumed()
        except (tf.errors.OpError, IndexError) as e:
            own = [name for name in files if name.startswith(f"{_CHECKPOINT_NAME}-{epoch}.")]
            skipped.append(f"{', '.join(own)}: {_one_line(e)}" if own else
                           f"{_CHECKPOINT_NAME}-{epoch}: its files are gone")
            logging.warning("Skipping checkpoint %s, which does not restore (%s).",
                            path, skipped[-1])
            continue
        except (AssertionError, ValueError) as e:
            raise ValueError(
                f"{path} does not fit the model and optimizer that this run builds "
                f"({_one_line(e)}). Use the run's own flags, or a new --model_dir."
            ) from None
        return path
    if skipped or _INDEX_FILE in files:
        found = "; ".join(skipped) or f"it holds only {', '.join(files)}"
        raise ValueError(
            f"--model_dir={model_dir!r} has held checkpoints, but none under {directory} "
            f"restores ({found}), so this run does not start over from epoch 0 by itself. To "
            f"do so, move {directory} away; or train into a new --model_dir."
        )
    return None


def latest_checkpoint(model_dir):
    """Path of the checkpoint that the index of `model_dir`'s checkpoints names newest.

    Raises:
        FileNotFoundError: there is none; the message says what to run.
    """
    path = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    if path is None:
        raise _no_checkpoint(model_dir)
    return path


def _no_checkpoint(model_dir):
    return FileNotFoundError(
        f"--model_dir={model_dir!r} holds no checkpoint under {CHECKPOINT_DIR}/: train "
        "at least one epoch there first (python -m ssc_tf.train --model_dir=...)."
    )


def _one_line(error):
    """The first line of `error`'s message, without TensorFlow's op decoration."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return _OP_DECORATION.sub("", lines[0])


def load_model(model_dir):
    """Rebuilds the trained model of `model_dir` with its newest weights that restore.

    Returns:
        `(model, config, data_dir, epoch)`: the Keras model (float32, not compiled), the run's
        `ExperimentConfig`, its data_dir and the number of epochs the weights were trained.

    Raises:
        FileNotFoundError: no run.json or no checkpoint in `model_dir`.
        ValueError: an unreadable run.json, or checkpoints of which none restores.
    """
    from ssc_tf import models

    config, data_dir = read_run(model_dir)
    model = models.build(config.model, **config.model_kwargs())
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    # Every model variable must come from the checkpoint; its optimizer slots are not needed.
    checkpoint = tf.train.Checkpoint(model=model, epoch=epoch)
    if restore_newest(checkpoint, model_dir, partial=True) is None:
        raise _no_checkpoint(model_dir)
    return model, config, data_dir, int(epoch.numpy())
