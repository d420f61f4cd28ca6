"""`tf.distribute` strategies by name, and the checks training needs from them.

`default` is TensorFlow's default strategy (one device, no replication); `one_device` pins the
first GPU, else the CPU; `mirrored` replicates over this machine's GPUs (or its logical CPU
devices); `multi_worker` replicates over the machines named by the `TF_CONFIG` environment
variable (see `MultiWorkerMirroredStrategy`), every worker running the same command.

Under `multi_worker` every worker trains, and only the chief (`is_chief`) writes the run's
files; the workers share one `--model_dir`, from which every worker resumes.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


def get_strategy(name):
    """Creates the strategy `name`, one of `STRATEGIES`.

    Raises:
        ValueError: `name` is unknown, or `multi_worker` without a valid `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Invalid value for flag --strategy: expected one of {STRATEGIES}. "
            f"Received: strategy={name!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    _check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise ValueError(
            "--strategy=multi_worker reads the cluster from the TF_CONFIG environment "
            f"variable, which is not set. Set it on every worker, e.g. {example}"
        )
    try:
        spec = json.loads(raw)
        spec["cluster"]["worker"], spec["task"]["type"], spec["task"]["index"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster spec ({e!r}); expected e.g. {example}. "
            f"Received: TF_CONFIG={raw!r}"
        ) from None


def is_chief(strategy):
    """Whether this process writes the run's files (run.json, checkpoints, TensorBoard).

    Every process of a `multi_worker` job trains; the chief is the task of type "chief", or
    worker 0 in a cluster without one (`MultiWorkerMirroredStrategy`'s rule). A strategy on
    one machine has no cluster: its one process is the chief.
    """
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def check_workers_agree(strategy, epoch, checkpoint_dir):
    """Raises `ValueError` unless every worker resumes after the same epoch.

    A worker that finds another checkpoint than the others (a `--model_dir` on a disk the
    workers do not share) would run other steps, and the collectives would wait forever.

    Args:
        strategy: the `tf.distribute` strategy; every worker must call this function.
        epoch: int, the number of finished epochs this worker restored.
        checkpoint_dir: str, where the worker looked, for the message.
    """
    local = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([epoch], tf.int64))
    epochs = [int(e) for e in strategy.gather(local, axis=0).numpy()]
    if len(set(epochs)) > 1:
        raise ValueError(
            f"The workers resume after different epochs ({epochs}, one per replica; this one "
            f"looked in {checkpoint_dir!r}): with --strategy=multi_worker, --model_dir must be "
            "a directory every worker reads (a shared file system or a bucket)."
        )


def check_batch_size(batch_size, strategy):
    """Raises `ValueError` unless the global batch splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"Flag --batch_size={batch_size} must be divisible by the number of replicas "
            f"({replicas}), so each replica gets the same share; use a multiple of {replicas}."
        )
