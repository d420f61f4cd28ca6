"""Tests of tools/benchmark_layer.py: how a run or a merge changes the cost table, and its flags'
refusals (its measurements are `ssc_tf.tuning`'s, tested in test_tuning.py). Never how fast
anything ran."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cli_testing import own_lines
from ssc_tf import execution_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tool measures CPU runtimes and exits where a GPU is visible: hide any.
_TOOL_ENV = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
TOOL = os.path.join(ROOT, "tools", "benchmark_layer.py")
# The float TFLite section of the default LiteRT CPU.
VNNI_FLOAT = execution_plan.section(execution_plan.TFLITE, "amd_avx512_vnni")
# The shape the records below vary (by their filters).
SHAPE = execution_plan.LayerShape(in_channels=32, filters=32, kernel_size=3, strides=1,
                                  input_size=(8, 8), g=2, p=2)


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("benchmark_layer", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(key, ms):
    fields = {**SHAPE.as_dict(), "filters": int(key)}
    shape = execution_plan.LayerShape(**{**fields, "input_size": tuple(fields["input_size"])})
    return shape.key, {"shape": fields, "times": {execution_plan.SMALL_BATCH: {"dense": ms}}}


def test_a_full_run_replaces_its_runtime_section_and_a_partial_one_what_it_measured(tool):
    stale, stale_record = _record(16, 1.0)
    kept, kept_record = _record(24, 2.0)
    new, new_record = _record(32, 3.0)
    table = {
        "shapes": {stale: stale_record["shape"], kept: kept_record["shape"]},
        execution_plan.CPU_EIGEN: {execution_plan.SMALL_BATCH: {stale: {"dense": 1.0}}},
        VNNI_FLOAT: {execution_plan.SMALL_BATCH: {kept: {"dense": 2.0}}},
        "measured_on": {execution_plan.CPU_EIGEN: {"configs": ["a"], "date": "old"}},
    }
    result = {"runtime": execution_plan.CPU_EIGEN, "section": execution_plan.CPU_EIGEN,
              "configs": ["b"], "date": "new", "records": [new_record], "summary": {}}

    full = tool.updated_costs(table, result, partial=False)
    assert full[execution_plan.CPU_EIGEN] == {
        execution_plan.SMALL_BATCH: {new: {"dense": 3.0}}}
    assert full[VNNI_FLOAT] == table[VNNI_FLOAT]
    # The stale shape's record goes; the one TFLite still times stays.
    assert set(full["shapes"]) == {kept, new}
    assert full["measured_on"][execution_plan.CPU_EIGEN] == {
        "runtime": execution_plan.CPU_EIGEN, "section": execution_plan.CPU_EIGEN,
        "configs": ["b"], "date": "new"}

    added = tool.updated_costs(table, result, partial=True)
    assert added[execution_plan.CPU_EIGEN] == {
        execution_plan.SMALL_BATCH: {stale: {"dense": 1.0}, new: {"dense": 3.0}}}
    assert set(added["shapes"]) == {stale, kept, new}
    assert added["measured_on"][execution_plan.CPU_EIGEN] == {
        "configs": ["a", "b"], "date": "old",
        "added": [{"runtime": execution_plan.CPU_EIGEN, "section": execution_plan.CPU_EIGEN,
                   "configs": ["b"], "date": "new", "shapes": 1}]}
    # The table passed in is not changed.
    assert set(table["shapes"]) == {stale, kept}
    assert table[execution_plan.CPU_EIGEN] == {
        execution_plan.SMALL_BATCH: {stale: {"dense": 1.0}}}

    # --shapes: the stale shape measured again replaces just its times.
    again = tool.updated_costs(table, {**result, "records": [_record(16, 4.0)[1]]}, partial=True)
    assert again[execution_plan.CPU_EIGEN] == {
        execution_plan.SMALL_BATCH: {stale: {"dense": 4.0}}}


def test_litert_times_go_to_the_section_of_the_cpu_that_measured_them(tool):
    kept, kept_record = _record(24, 2.0)
    new, new_record = _record(32, 3.0)
    table = {"shapes": {kept: kept_record["shape"]},
             VNNI_FLOAT: {execution_plan.SMALL_BATCH: {kept: {"dense": 2.0}}}}
    avx2_float = execution_plan.section(execution_plan.TFLITE, "amd_avx2")
    result = {"runtime": execution_plan.TFLITE, "section": avx2_float, "configs": ["b"],
              "records": [new_record], "summary": {}}
    updated = tool.updated_costs(table, result, partial=False)
    assert updated[avx2_float] == {execution_plan.SMALL_BATCH: {new: {"dense": 3.0}}}
    assert updated[VNNI_FLOAT] == table[VNNI_FLOAT]
    assert set(updated["shapes"]) == {kept, new}


def test_shapes_flag_names_a_key_no_config_has_in_one_line():
    result = subprocess.run(
        [sys.executable, TOOL, "--configs=quickstart", "--shapes=32x32 k3 s1 32x32 g9 p9"],
        capture_output=True, text=True, cwd=ROOT, env=_TOOL_ENV)
    assert result.returncode == 1
    [line] = own_lines(result.stderr)
    assert line.startswith("--shapes: '32x32 k3 s1 32x32 g9 p9' is not an SSC layer shape of "
                           "--configs (a key as this tool prints it, such as '")


@pytest.mark.parametrize("flag", ["--write_costs", "--only_missing"])
def test_litert_run_on_a_cpu_of_no_measured_kind_refuses_to_touch_the_table_in_one_line(flag):
    # An Intel host with AVX-512 VNNI, whose kind the table has no times of (its sections
    # were measured on AMD CPUs).
    script = ("import runpy, sys; from ssc_tf import timing; "
              "timing.cpu = lambda cpuinfo='': timing.Cpu('intel', '6', 'Xeon', "
              "('avx2', 'avx512f', 'avx512_vnni')); "
              f"sys.argv = [{TOOL!r}, '--runtime=tflite_int8', '--configs=quickstart', "
              f"{flag!r}]; runpy.run_path({TOOL!r}, run_name='__main__')")
    with open(execution_plan.COSTS_FILE, "rb") as f:
        before = f.read()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env=_TOOL_ENV)
    assert result.returncode == 1
    [line] = own_lines(result.stderr)
    assert line == (f"--runtime=tflite_int8: the cost table has LiteRT times only of the CPUs "
                    f"{execution_plan.LITERT_CPUS}, and this one is none of them; measure "
                    "without --write_costs and --only_missing")
    with open(execution_plan.COSTS_FILE, "rb") as f:
        assert f.read() == before


def test_merge_brings_the_other_tables_sections_and_keeps_the_rest(tool):
    kept, kept_record = _record(24, 2.0)
    replaced, replaced_record = _record(16, 1.0)
    new, new_record = _record(32, 3.0)
    table = {
        "shapes": {kept: kept_record["shape"], replaced: replaced_record["shape"]},
        execution_plan.CPU_EIGEN: {execution_plan.SMALL_BATCH: {kept: {"dense": 2.0}}},
        execution_plan.GPU: {execution_plan.SMALL_BATCH: {replaced: {"dense": 1.0}}},
        "measured_on": {execution_plan.CPU_EIGEN: {"date": "cpu"},
                        execution_plan.GPU: {"date": "old gpu"}},
    }
    # As tools/gpu_check.sh writes it: one section, its shapes and its measurement.
    gpu = {"shapes": {new: new_record["shape"]},
           execution_plan.GPU: {execution_plan.TRAIN: {new: {"dense": 3.0}}},
           "measured_on": {execution_plan.GPU: {"date": "new gpu"}}}
    merged = tool.merged_costs(table, gpu)
    assert merged[execution_plan.GPU] == gpu[execution_plan.GPU]
    assert merged[execution_plan.CPU_EIGEN] == table[execution_plan.CPU_EIGEN]
    assert merged["measured_on"] == {execution_plan.CPU_EIGEN: {"date": "cpu"},
                                     execution_plan.GPU: {"date": "new gpu"}}
    # The old GPU section's shape leaves with it.
    assert merged["shapes"] == {kept: kept_record["shape"], new: new_record["shape"]}
    assert table[execution_plan.GPU] == {execution_plan.SMALL_BATCH: {replaced: {"dense": 1.0}}}


def test_merge_costs_flag_writes_the_sections_and_names_a_file_without_any(tmp_path):
    new, new_record = _record(32, 3.0)
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({
        "shapes": {new: new_record["shape"]},
        execution_plan.GPU: {execution_plan.TRAIN: {new: {"dense": 3.0}}},
        "measured_on": {execution_plan.GPU: {"date": "new"}}}))
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"shapes": {}, "measured_on": {}}))
    result = subprocess.run(
        [sys.executable, TOOL, f"--merge_costs={gpu}", f"--costs_file={costs}"],
        capture_output=True, text=True, cwd=ROOT, env=_TOOL_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(costs.read_text()) == json.loads(gpu.read_text())

    result = subprocess.run(
        [sys.executable, TOOL, f"--merge_costs={tmp_path / 'missing.json'}",
         f"--costs_file={costs}"], capture_output=True, text=True, cwd=ROOT, env=_TOOL_ENV)
    assert result.returncode == 1
    [line] = own_lines(result.stderr)
    assert line == (f"--merge_costs: {str(tmp_path / 'missing.json')!r} is no cost table with a "
                    f"section of {execution_plan.SECTIONS} (a file that --write_costs "
                    "--costs_file wrote)")
