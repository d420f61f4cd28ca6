"""Faults in a model_dir: damaged or deleted checkpoints, two trainers, a full disk, a bad run.json.

The checkpoint and lock tests start from a copy of the shared trained run (run_testing.py,
conftest.py's `run_copy`), and train any further epochs at one step each. Each checks that no
fault loses a finished epoch's checkpoint, and that each error is one line that names the file
and what to do.
"""

import dataclasses
import filecmp
import json
import logging
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from ssc_tf import config as config_lib
from ssc_tf import distribute
from ssc_tf import evaluate
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import train

import run_testing

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = "quickstart"  # a packaged config, by name; run_testing.config() shortens it.
_EPOCH = "epoch/.ATTRIBUTES/VARIABLE_VALUE"
_ITERATIONS = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def _train_command(model_dir, steps_per_epoch=1, **overrides):
    """`python -m ssc_tf.train` with the settings of `run_testing.config(**overrides)`: the
    quickstart flagfile, then a flag for each setting that differs from it."""
    quickstart, config = flagfile.load(QUICKSTART), run_testing.config(**overrides)
    changed = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)
               if getattr(config, field.name) != getattr(quickstart, field.name)}
    return [sys.executable, "-m", "ssc_tf.train", f"--flagfile={QUICKSTART}",
            f"--model_dir={model_dir}", f"--steps_per_epoch={steps_per_epoch}"] + [
        f"--{name}={config_lib.format_list(value) if isinstance(value, tuple) else value}"
        for name, value in changed.items()]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _train(model_dir, **overrides):
    """Trains `run_testing.config(**overrides)` into `model_dir`, one step an epoch."""
    return train.train(run_testing.config(**overrides), model_dir=str(model_dir),
                       steps_per_epoch=1, verbose=0)


def _stamps(model_dir, epoch):
    """{file: (inode, mtime)} of checkpoint `epoch-<epoch>`: any rewrite changes them."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in (model_dir / "checkpoints").glob(f"epoch-{epoch}.*")}


def _damage(paths, fault):
    """Truncates the data files among `paths` to half ("truncated"), or deletes them all."""
    for path in list(paths):
        if fault != "truncated":
            path.unlink()
        elif ".data-" in path.name:
            os.truncate(path, path.stat().st_size // 2)


@pytest.mark.slow
@pytest.mark.parametrize("fault, warning", [
    ("truncated", "epoch-2.data-00000-of-00001, epoch-2.index: Read less bytes than requested"),
    ("deleted", "epoch-2: its files are gone"),  # The index still names it.
    ("deleted_with_index", None),  # Nothing names it any more.
], ids=["truncated", "deleted", "deleted_with_index"])
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(run_copy, fault, warning,
                                                               caplog):
    checkpoints = run_copy / "checkpoints"
    _damage(checkpoints.glob("epoch-2.*"), fault)
    if fault == "deleted_with_index":  # Only the older checkpoint is left to find.
        (checkpoints / "checkpoint").unlink()
    older = _stamps(run_copy, 1)
    with caplog.at_level(logging.WARNING):
        # Restored from epoch 1, the run trains epoch 2 again in one step; a run that started
        # over would train two steps and save over epoch 1.
        model = _train(run_copy)
    assert model.optimizer.iterations.numpy() == run_testing.STEPS_PER_EPOCH + 1
    assert model_dir_lib.latest_checkpoint(str(run_copy)).endswith("epoch-2")
    assert (warning in caplog.text) if warning else "Skipping" not in caplog.text
    assert _stamps(run_copy, 1) == older


@pytest.mark.parametrize("fault", ["truncated", "deleted"])
def test_refuses_to_start_over_when_no_checkpoint_restores(run_copy, fault):
    checkpoints = run_copy / "checkpoints"
    _damage(checkpoints.glob("epoch-*.*"), fault)
    left = sorted(os.listdir(checkpoints))
    run_json = (run_copy / "run.json").read_text()
    with pytest.raises(ValueError, match="has held checkpoints, but none") as error:
        _train(run_copy, epochs=3)
    message = str(error.value)
    if fault == "truncated":
        assert ("epoch-2.data-00000-of-00001, epoch-2.index: Read less bytes than requested; "
                "epoch-1.data-00000-of-00001, epoch-1.index: Read less bytes") in message
    else:
        assert "epoch-2: its files are gone; epoch-1: its files are gone" in message
    assert f"move {checkpoints} away" in message and "\n" not in message
    # Nothing written: no checkpoint, the run.json of the run that had them, no lock left.
    assert sorted(os.listdir(checkpoints)) == left
    assert (run_copy / "run.json").read_text() == run_json
    assert not (run_copy / model_dir_lib.LOCK_FILE).exists()


def test_empty_checkpoint_index_names_the_file_and_the_remedy(run_copy):
    index = run_copy / "checkpoints" / "checkpoint"
    index.write_text("")
    with pytest.raises(ValueError, match=re.escape(
            f"{index}, the index of the checkpoints, names none (it is empty or damaged): "
            "delete it")):
        _train(run_copy)
    index.unlink()
    # Found by its files: the finished run, restored.
    assert (_train(run_copy).optimizer.iterations.numpy()
            == run_testing.EPOCHS * run_testing.STEPS_PER_EPOCH)


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_ones_lock_taken_over(run_copy, caplog):
    lock = run_copy / model_dir_lib.LOCK_FILE
    first = subprocess.Popen(_train_command(run_copy, epochs=3), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    holder = None
    while holder is None:
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline, "the first trainer took no lock"
        time.sleep(0.05)
        try:
            holder = json.loads(lock.read_text())
        except (FileNotFoundError, ValueError):
            pass
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    with pytest.raises(ValueError, match=re.escape(
            f"is in use: process {first.pid} on {socket.gethostname()} has trained into it "
            f"since {holder['started']} (it holds {lock})")):
        _train(run_copy, epochs=3)
    first.kill()
    first.communicate()
    assert lock.exists()  # Killed: the file stays, but the kernel freed its lock.
    with caplog.at_level(logging.WARNING):
        model = _train(run_copy)  # Finished with the shared run's last epoch.
    assert f"from process {first.pid} on {socket.gethostname()}" in caplog.text
    assert model.optimizer.iterations.numpy() == run_testing.EPOCHS * run_testing.STEPS_PER_EPOCH
    assert not lock.exists()


def test_under_multi_worker_only_the_chief_locks(run_copy, monkeypatch):
    monkeypatch.setattr(distribute, "is_chief", lambda strategy: False)
    with model_dir_lib.lock(str(run_copy)):  # As the chief does, training the same run.
        model = _train(run_copy)
        assert (run_copy / model_dir_lib.LOCK_FILE).exists()
    assert model.optimizer.iterations.numpy() == run_testing.EPOCHS * run_testing.STEPS_PER_EPOCH
    assert not (run_copy / model_dir_lib.LOCK_FILE).exists()


@pytest.mark.parametrize("recorded", [None, "float16"], ids=["before_it_was_recorded", "float16"])
def test_resume_with_another_mixed_precision_is_refused_naming_the_flag(run_copy, recorded):
    """float16 adds the loss-scale optimizer's variables, which a float32 checkpoint lacks: the
    restore would fail without naming the flag. A run.json from before the precision was
    recorded is a float32 run's, and resumes as one."""
    run_json = run_copy / model_dir_lib.RUN_FILE
    run = json.loads(run_json.read_text())
    assert run["mixed_precision"] == "none"
    if recorded:
        run["mixed_precision"] = recorded
    else:
        del run["mixed_precision"]
    run_json.write_text(json.dumps(run))
    saved, requested = recorded or "none", "none" if recorded else "float16"
    checkpoints = sorted(os.listdir(run_copy / model_dir_lib.CHECKPOINT_DIR))
    with pytest.raises(ValueError) as error:
        train.train(run_testing.config(), model_dir=str(run_copy), mixed_precision=requested,
                    steps_per_epoch=1, verbose=0)
    assert str(error.value) == (
        f"--model_dir={str(run_copy)!r} was trained with --mixed_precision={saved}, so this run "
        f"cannot resume it with --mixed_precision={requested}: use --mixed_precision={saved}, "
        f"or a new --model_dir.")
    assert sorted(os.listdir(run_copy / model_dir_lib.CHECKPOINT_DIR)) == checkpoints
    assert json.loads(run_json.read_text()).get("mixed_precision") == recorded
    if not recorded:
        _train(run_copy)  # Finished already: restores, records the precision, trains nothing.
        assert json.loads(run_json.read_text())["mixed_precision"] == "none"


@pytest.mark.parametrize("contents", [
    "",
    '{"config": {"dataset": "digits"',
    '["not", "a", "run"]',
    '{"config": {"dataset": "digits", "layers": 3}, "data_dir": null}',
], ids=["empty", "truncated", "foreign", "unknown_field"])
def test_unreadable_run_json_names_the_file_and_the_remedy(tmp_path, contents):
    run_json = tmp_path / "run.json"
    run_json.write_text(contents)
    for call in (lambda: train.train(run_testing.config(), model_dir=str(tmp_path)),
                 lambda: evaluate.evaluate(str(tmp_path))):
        with pytest.raises(ValueError, match=(
                rf"^{re.escape(str(run_json))} is not a run file that `python -m ssc_tf.train` "
                r"wrote \(.+\)\. If it was damaged, delete it")) as error:
            call()
        assert "\n" not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_resume_refuses_another_network_and_warns_of_a_changed_schedule(tmp_path, caplog):
    saved = run_testing.config()
    with caplog.at_level(logging.WARNING):
        model_dir_lib.check_resume(str(tmp_path), saved, saved)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        model_dir_lib.check_resume(str(tmp_path), saved, dataclasses.replace(
            saved, epochs=saved.epochs + 2, learning_rate=0.02))
    (record,) = caplog.records
    assert record.getMessage() == (
        f"--model_dir={tmp_path} was started with other flags (--epochs: saved "
        f"{saved.epochs}, requested {saved.epochs + 2}; --learning_rate: saved "
        f"{saved.learning_rate!r}, requested 0.02): the epochs still to run use the new values.")
    with pytest.raises(ValueError, match=r"holds a different model.*\(--g: saved"):
        model_dir_lib.check_resume(str(tmp_path), saved, dataclasses.replace(saved, g=(1, 2, 4)))
    # The dense twin ignores the pattern flags: a comparison's --train_flags may change them.
    dense = dataclasses.replace(saved, sparsity="dense")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model_dir_lib.check_resume(str(tmp_path), dense, dataclasses.replace(
            dense, g=(1, 2, 4), pointwise_layout="aligned"))
    assert not caplog.records
    with pytest.raises(ValueError, match=r"holds a different model.*\(--sparsity: saved"):
        model_dir_lib.check_resume(str(tmp_path), dense, saved)


def test_resume_refuses_to_add_or_remove_every_learning_rate_boundary(tmp_path):
    saved = dataclasses.replace(run_testing.config(), epochs=4, lr_boundaries=(2,))
    # Other boundaries keep the optimizer's checkpoint: allowed.
    model_dir_lib.check_resume(str(tmp_path), saved, dataclasses.replace(
        saved, lr_boundaries=(1, 3)))
    for before, after in (((2,), ()), ((), (2,))):
        with pytest.raises(ValueError) as error:
            model_dir_lib.check_resume(str(tmp_path), dataclasses.replace(
                saved, lr_boundaries=before), dataclasses.replace(saved, lr_boundaries=after))
        assert str(error.value).startswith(
            f"--model_dir={str(tmp_path)!r} trained with --lr_boundaries="
            f"{','.join(map(str, before))}, so this run cannot resume it with "
            f"--lr_boundaries={','.join(map(str, after))}: ")


@pytest.mark.slow
def test_a_run_resumed_with_other_boundaries_restores_and_trains_on(tmp_path):
    model_dir = tmp_path / "run"
    _train(model_dir, epochs=2, lr_boundaries=(1,))
    model = _train(model_dir, epochs=3, lr_boundaries=(2,))
    assert int(model.optimizer.iterations.numpy()) == 3  # one step an epoch
    with pytest.raises(ValueError, match=r"cannot resume it with --lr_boundaries=: "):
        _train(model_dir, epochs=4, lr_boundaries=())


@pytest.mark.parametrize("sparsity,layout", [("ssc", "aligned"), ("random", "aligned"),
                                             ("dense", "joined")])
def test_a_run_json_from_before_pointwise_layout_reads_as_aligned(tmp_path, sparsity, layout):
    """Its pattern (and a pruned run's budget) was the aligned one: resuming it with today's
    default must be refused naming the flag, never restore into the joined pattern."""
    saved = dataclasses.replace(run_testing.config(), sparsity=sparsity)
    fields = dataclasses.asdict(saved)
    del fields["pointwise_layout"]
    (tmp_path / "run.json").write_text(json.dumps({"config": fields, "data_dir": None}))
    read, _ = model_dir_lib.read_run(str(tmp_path))
    assert read.pointwise_layout == layout
    if layout == "aligned":
        with pytest.raises(ValueError, match=r"\(--pointwise_layout: saved 'aligned', "
                                             r"requested 'joined'\)\. Use a new --model_dir"):
            model_dir_lib.check_resume(str(tmp_path), read, saved)
    else:
        model_dir_lib.check_resume(str(tmp_path), read, saved)


def test_failed_start_leaves_no_run_json(tmp_path):
    model_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="batch_size=4096"):
        _train(model_dir, g=(1, 2, 4), batch_size=4096)
    # Neither run.json, which would refuse the corrected command as another model, nor lock.
    assert os.listdir(model_dir) == []


def _unshare_mount(tmp_path):
    """The `unshare` command line that may mount a tmpfs here, or None where none may."""
    probe = tmp_path / "probe"
    probe.mkdir()
    for unshare in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        try:
            mounted = subprocess.run(
                [*unshare, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                capture_output=True, timeout=30)
        except FileNotFoundError:
            return None
        if mounted.returncode == 0:
            return unshare
    return None


@pytest.mark.slow
def test_full_disk_while_saving_is_one_line_and_keeps_the_saved_epoch(trained_run, tmp_path):
    unshare = _unshare_mount(tmp_path)
    if unshare is None:
        pytest.skip("mounting a tmpfs is not permitted here (unshare --mount failed)")
    model_dir = tmp_path / "run"
    shutil.copytree(trained_run.model_dir, model_dir,
                    ignore=shutil.ignore_patterns("checkpoints"))
    checkpoints = model_dir / "checkpoints"
    checkpoints.mkdir()
    saved = sorted(pathlib.Path(trained_run.model_dir, "checkpoints").glob("epoch-1.*"))
    after = tmp_path / "after"  # The tmpfs' files, copied before its namespace ends.
    # Room for epoch 1's checkpoint and half of epoch 2's.
    size = sum(path.stat().st_size for path in saved) * 3 // 2
    script = " && ".join([
        shlex.join(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(checkpoints)]),
        shlex.join(["cp", *map(str, saved), str(checkpoints)]),
        f"{{ {shlex.join(_train_command(model_dir))}; rc=$?; "
        f"{shlex.join(['cp', '-r', str(checkpoints), str(after)])}; exit $rc; }}",
    ])
    result = subprocess.run([*unshare, "sh", "-c", script], env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: Could not save the checkpoint of epoch 2 under {checkpoints}")
    assert "No space left on device" in last and "Free space there" in last
    for path in saved:
        assert filecmp.cmp(path, after / path.name, shallow=False), path.name
    reader = tf.train.load_checkpoint(str(after / "epoch-1"))
    assert (reader.get_tensor(_EPOCH) == 1
            and reader.get_tensor(_ITERATIONS) == run_testing.STEPS_PER_EPOCH)
    assert not (model_dir / model_dir_lib.LOCK_FILE).exists()
