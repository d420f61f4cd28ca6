"""Tests of tools/benchmark_serving.py: the three SavedModels compute one function, the
repeats rule, the table, the JSON the CLI writes; never how fast anything ran."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ssc_tf import execution_plan
from ssc_tf import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark_serving.py")


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark_serving", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_repeats_shrink_beyond_8_images_to_at_least_5():
    tool = _tool()
    assert [tool.repeats_at(batch, 30) for batch in (1, 8, 16, 48, 128)] == [30, 30, 15, 5, 5]
    assert tool.repeats_at(1, 5) == 5


def test_the_table_gives_each_savedmodels_ms_and_speed_up_over_the_dense_twin():
    row = {"batch": 1, "repeats": 30, "exported_ms": 4.0, "one_graph_ms": 5.0, "dense_ms": 4.4,
           "max_abs_diff": 0.0}
    assert _tool().format_table([row]).splitlines() == [
        "| batch | dense twin ms | exported ms | speed-up | one graph ms | speed-up |",
        "|---|---|---|---|---|---|",
        "| 1 | 4.40 | 4.00 | 1.10x | 5.00 | 0.88x |"]


def test_bad_batches_fail_in_one_line():
    done = _run("--model_dir=nowhere", "--batches=1,x")
    assert done.returncode != 0
    assert "--batches must be comma-separated integers >= 1" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_three_savedmodels_serve_the_same_probabilities(trained_run, tmp_path):
    output = tmp_path / "serving.json"
    done = _run(f"--model_dir={trained_run.model_dir}", "--batches=1,9", "--repeats=5",
                "--noguard", f"--output={output}")
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert [row["batch"] for row in result["rows"]] == [1, 9]
    for row in result["rows"]:
        assert row["repeats"] == 5 and row["max_abs_diff"] < 1e-5
        assert all(row[f"{name}_ms"] > 0 for name in ("exported", "one_graph", "dense"))
    # Exported without the guard: both plans untimed, the switch at its default.
    assert result["guard"] is None
    assert result["small_batch_max"] == execution_plan.SMALL_BATCH_MAX
    assert set(result["forms"]) == {execution_plan.SMALL_BATCH, execution_plan.LARGE_BATCH}
    assert set(result["bytes"]) == {"exported", "one_graph", "dense"}
    assert "| batch | dense twin ms |" in done.stdout
    assert export.format_guard({"guard": None}, False) in done.stdout
