"""Tests of tools/gpu_check.sh on a machine without a GPU: its arguments, its refusal to run
without a GPU, and its --cpu run, whose files must have the structure of a GPU run's. Never how
fast anything ran."""

import json
import os
import subprocess
import sys

import pytest

from cli_testing import own_lines
from ssc_tf import execution_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_check.sh")
# The configs whose training steps the check times, against their dense twins.
TRAIN_CONFIGS = {"cifar10_resnet32_10pct", "imagenet_resnet50_40pct"}


def _run(*args):
    """The script run with this Python, any GPU hidden."""
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PY": sys.executable, "CUDA_VISIBLE_DEVICES": ""})


def test_a_bad_argument_is_named_with_the_allowed_ones_in_one_line():
    for bad in ("--gpu", "--output_dir="):
        result = _run(bad)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"gpu_check: invalid argument '{bad}': expected --cpu, --output_dir=DIR or --help"]


def test_help_describes_every_flag():
    result = _run("--help")
    assert result.returncode == 0
    assert "Usage: tools/gpu_check.sh [--cpu] [--output_dir=DIR]" in result.stdout
    assert "\n--cpu runs on this machine's CPU" in result.stdout
    assert "Into --output_dir:" in result.stdout


def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    result = _run(f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 1
    [line] = own_lines(result.stderr)
    assert line.startswith("gpu_check: TensorFlow sees no GPU (")
    assert line.endswith("tools/gpu_check.sh --cpu runs the CPU-runnable parts")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_run_writes_the_files_of_a_gpu_run(tmp_path):
    output_dir = tmp_path / "out"
    with open(execution_plan.COSTS_FILE, "rb") as f:
        package_costs = f.read()
    result = _run("--cpu", f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("do not merge or send them.")
    # The package's table is never written; a --cpu run leaves nothing to send.
    with open(execution_plan.COSTS_FILE, "rb") as f:
        assert f.read() == package_costs
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "benchmark_layer.json", "execution_costs_cpu.json", "tests.log",
        "train_cifar10_resnet32_10pct_none.json", "train_imagenet_resnet50_40pct_none.json"]
    assert not (tmp_path / "out.tar.gz").exists()

    # The tests are collected, not run: every named one resolves.
    tests_log = (output_dir / "tests.log").read_text()
    assert " tests collected " in tests_log
    assert not [line for line in tests_log.splitlines() if line.startswith("ERROR")]
    for name in ("test_every_form_matches_dense_forward_and_gradients",
                 "test_planned_form_matches_dense_at_every_config_shape",
                 "test_distribute_precision.py", "test_optimization.py"):
        assert name in tests_log

    for config in TRAIN_CONFIGS:
        train = json.loads((output_dir / f"train_{config}_none.json").read_text())
        assert (train["config"], train["mixed_precision"], train["batch_size"]) == (
            config, "none", 1)
        assert train["gpus"] == [] and "tensor_float_32" in train
        assert [row["model"] for row in train["rows"]] == ["dense", "ssc"]
        dense, ssc = train["rows"]
        assert ssc["live_params"] < dense["live_params"] and ssc["macs"] < dense["macs"]
        assert dense["step_ms"] > 0 and ssc["step_ms"] > 0

    # A cost table of one section, the CPU runtime's, as a GPU run's holds the `gpu` one.
    costs = json.loads((output_dir / "execution_costs_cpu.json").read_text())
    [section] = set(costs) - {"shapes", "measured_on"}
    assert section in (execution_plan.CPU_ONEDNN, execution_plan.CPU_EIGEN)
    assert set(costs["measured_on"]) == {section}
    measured_on = costs["measured_on"][section]
    assert (measured_on["runtime"], measured_on["gpus"]) == (section, [])
    assert set(measured_on["configs"]) == TRAIN_CONFIGS
    assert set(costs[section]) == set(execution_plan.REGIMES)
    [key] = costs["shapes"]
    fields = costs["shapes"][key]
    shape = execution_plan.LayerShape(**{**fields, "input_size": tuple(fields["input_size"])})
    assert shape.key == key
    for regime, times in costs[section].items():
        assert set(times) == {key}
        assert set(times[key]) == {execution_plan.DENSE_TWIN, *execution_plan.candidates(shape)}
        assert all(ms > 0 for ms in times[key].values())
