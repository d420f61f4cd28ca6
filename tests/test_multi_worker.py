"""--strategy=multi_worker: the chief rule, and two local workers training one run."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import callbacks
from ssc_tf import distribute
from ssc_tf import model_dir as model_dir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_the_chief_task_else_worker_0():
    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief(_strategy(workers, "worker", 0))
    assert not distribute.is_chief(_strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert distribute.is_chief(_strategy(with_chief, "chief", 0))
    assert not distribute.is_chief(_strategy(with_chief, "worker", 0))
    # One machine: no cluster, the one process writes.
    assert distribute.is_chief(tf.distribute.get_strategy())


def test_discarding_checkpoint_deletes_its_directory_after_each_save(tmp_path):
    epoch = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(epoch=epoch, weight=tf.Variable(1.0))
    scratch = tmp_path / "scratch"
    callback = callbacks.EpochCheckpoint(
        model_dir_lib.checkpoint_manager(checkpoint, str(scratch)), epoch, discard=True)
    for finished in range(2):
        callback.on_epoch_end(finished, {"loss": 1.0})
        assert not scratch.exists()
    assert int(epoch) == 2


# Each worker trains 3 steps an epoch (global batch 16, 8 per worker) and dumps what it ends
# with: every model variable by path, BN moving statistics included, and the step counter.
_WORKER_SCRIPT = """
import sys
import numpy as np
from ssc_tf import config, train
model_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = config.ExperimentConfig(dataset="digits", model="resnet32", ticket=10, g=(2, 4, 15),
                              p=(2, 4, 4), epochs=epochs, batch_size=16, learning_rate=0.05,
                              lr_boundaries=(), seed=0)
model = train.train(cfg, model_dir=model_dir, strategy="multi_worker", steps_per_epoch=3,
                    verbose=0)
np.savez(out, iterations=model.optimizer.iterations.numpy(),
         **{v.path: v.numpy() for v in model.variables})
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_two_workers(model_dir, tmp_path, epochs):
    """Runs the two workers of one job to the end; returns their dumps and process ids."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"  # The worker's TMPDIR, to see what it leaves.
        scratch.mkdir(exist_ok=True)
        # CPU workers also on a GPU host, whose GPUs both would take, and NCCL joins no
        # all-reduce of two processes on one GPU.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
               "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(scratch), "TF_CONFIG": json.dumps(
                   {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        out = tmp_path / f"worker{index}-{epochs}.npz"
        # A file, not a pipe: a worker blocked on a full pipe would stall the other one too.
        log = tmp_path / f"worker{index}-{epochs}.log"
        with open(log, "w") as stderr:
            workers.append((out, log, subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT, str(model_dir), str(out), str(epochs)],
                env=env, stdout=subprocess.DEVNULL, stderr=stderr)))
    deadline = time.monotonic() + 240
    outcome = "exited"
    try:
        for *_, worker in workers:
            worker.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        outcome = "killed after 240 s"
        for *_, worker in workers:
            worker.kill()
            worker.wait()
    report = f"Two-worker training {outcome}.\n" + "\n".join(
        f"--- worker {i} (exit {worker.returncode}), end of stderr:\n{log.read_text()[-3000:]}"
        for i, (_, log, worker) in enumerate(workers))
    assert all(worker.returncode == 0 for *_, worker in workers), report
    return [dict(np.load(out)) for out, *_ in workers], [worker.pid for *_, worker in workers]


def _event_pids(directory):
    """The ids of the processes that wrote the event files under `directory`."""
    # events.out.tfevents.<time>.<host>.<pid>.<n>.v2
    return {int(path.name.split(".")[-3]) for path in directory.rglob("events.out.tfevents.*")}


def _steps(directory, tag):
    """The steps at which the event files under `directory` hold `tag`."""
    steps = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return sorted(steps)


@pytest.mark.slow
def test_two_workers_train_resume_and_only_the_chief_writes(tmp_path):
    model_dir = tmp_path / "run"  # One directory for the job, as on shared storage.
    _, (chief, _) = _train_two_workers(model_dir, tmp_path, epochs=1)
    assert model_dir_lib.latest_checkpoint(str(model_dir)).endswith("epoch-1")
    # Both workers restore epoch 1 from the chief's checkpoint and train epoch 2.
    (first, second), (resumed_chief, _) = _train_two_workers(model_dir, tmp_path, epochs=2)

    assert first["iterations"] == second["iterations"] == 6
    assert first.keys() == second.keys()
    assert any("moving_variance" in name for name in first)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    reader = tf.train.load_checkpoint(model_dir_lib.latest_checkpoint(str(model_dir)))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6
    saved, _ = model_dir_lib.read_run(str(model_dir))
    assert saved.epochs == 2
    logs = model_dir / "logs"
    for part in ("train", "validation", "run"):
        assert _event_pids(logs / part) == {chief, resumed_chief}, part
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        assert _steps(logs / "train", tag) == [0, 1], tag
    assert _steps(logs / "validation", "epoch_accuracy") == [0, 1]
    # The other worker saved into its own scratch directories and deleted them.
    for directory in (tmp_path / "tmp1", model_dir):
        assert not list(directory.rglob("ssc_tf_checkpoint_*")), directory
