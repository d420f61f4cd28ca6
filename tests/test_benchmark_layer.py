"""Tests of tools/benchmark_layer.py: which forms each regime times, and on a GPU until the GPU
has run them; that each TFLite runtime's table times a file converted as
`ssc_tf.convert_tflite` converts a model for that runtime, computing the layer's function; and
how a run or a merge changes the cost table. Never how fast anything ran."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from cli_testing import own_lines
from ssc_tf import convert_tflite
from ssc_tf import execution_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tool measures CPU runtimes and exits where a GPU is visible: hide any.
_TOOL_ENV = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
TOOL = os.path.join(ROOT, "tools", "benchmark_layer.py")
# The float TFLite section of the default LiteRT CPU.
VNNI_FLOAT = execution_plan.section(execution_plan.TFLITE, "amd_avx512_vnni")
# Large enough kernels (at least 1024 weights each) for dynamic-range quantization to store
# them in int8: the converter leaves smaller ones float.
SHAPE = execution_plan.LayerShape(in_channels=32, filters=32, kernel_size=3, strides=1,
                                  input_size=(8, 8), g=2, p=2)


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("benchmark_layer", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def layers(tool):
    return tool._layers(SHAPE)


def test_each_tflite_runtime_times_the_quantization_planned_with_its_table(tool):
    assert tool._QUANTIZATION == {
        execution_plan.TFLITE: "none",
        execution_plan.TFLITE_DYNAMIC: "dynamic",
        execution_plan.TFLITE_INT8: "int8",
    }
    for runtime, quantization in tool._QUANTIZATION.items():
        assert convert_tflite.PLANNED_RUNTIME[quantization] == runtime


@pytest.mark.parametrize("runtime, ops, dtypes", [
    (execution_plan.TFLITE, ["ADD", "CONV_2D"], {"float32"}),
    # int8 weights, float activations: no QUANTIZE of the input.
    (execution_plan.TFLITE_DYNAMIC, ["ADD", "CONV_2D"], {"float32", "int8"}),
    # int8 weights and activations (int32 biases), float input and output.
    (execution_plan.TFLITE_INT8, ["ADD", "CONV_2D", "DEQUANTIZE", "QUANTIZE"],
     {"float32", "int32", "int8"}),
])
def test_tflite_file_is_quantized_for_its_runtime(tool, layers, runtime, ops, dtypes):
    flatbuffer = tool._tflite_file(layers["grouped+conv"], SHAPE, runtime)
    assert convert_tflite.op_names(flatbuffer) == ops
    interpreter = Interpreter(model_content=flatbuffer)
    assert {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()} == dtypes


@pytest.mark.parametrize("form", ["grouped+bmm", "split+gconv", execution_plan.DENSE])
def test_float_tflite_file_computes_the_layer(tool, layers, form):
    interpreter = tool._tflite_interpreter(layers[form], SHAPE, execution_plan.TFLITE)
    interpreter.invoke()
    outputs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    # The tool feeds ones. Every form holds the same weights: all equal the Keras layer of
    # the whole-layer dense form.
    inputs = np.ones((1, *SHAPE.input_size, SHAPE.in_channels), np.float32)
    expected = layers[execution_plan.DENSE](inputs).numpy()
    assert np.abs(expected).max() > 1
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-4)


def test_eigen_train_times_only_forms_with_a_gradient_there(tool):
    # Without oneDNN, TF's CPU grouped convolution has no gradient: SHAPE's blocks of 16
    # inputs leave out `grouped` and its p = 2 leaves out `gconv`. The dense twin is timed
    # in every regime.
    times = tool.measure_tf(SHAPE, execution_plan.CPU_EIGEN, batch_size=2, repeats=1)
    every = {tool.BASELINE, *execution_plan.candidates(SHAPE)}
    assert set(times[execution_plan.SMALL_BATCH]) == every
    assert set(times[execution_plan.LARGE_BATCH]) == every
    assert set(times[execution_plan.TRAIN]) == {
        tool.BASELINE, execution_plan.DENSE, "split+bmm", "split+conv"}
    assert all(ms > 0 for regime in times.values() for ms in regime.values())


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


@pytest.mark.parametrize("runtime, synced", [
    (execution_plan.GPU, True), (execution_plan.CPU_ONEDNN, False)])
def test_gpu_calls_are_timed_until_the_gpu_has_run_them(tool, monkeypatch, runtime, synced):
    # Faked on this CPU: the device sync, and the timing, which records the sync it was given.
    syncs, timed_with = [], []
    monkeypatch.setattr(tf.test.experimental, "sync_devices", lambda: syncs.append(1))

    def interleaved_ms(fns, repeats, *args, sync=None, **kwargs):
        timed_with.append(sync)
        return {name: 1.0 for name in fns}

    monkeypatch.setattr(tool.timing, "interleaved_ms", interleaved_ms)
    # No K x K part, p = 1: every form has a gradient on every CPU.
    shape = execution_plan.LayerShape(in_channels=8, filters=8, kernel_size=1, strides=1,
                                      input_size=(4, 4), g=None, p=1)
    times = tool.measure_tf(shape, runtime, batch_size=2, repeats=1)
    assert set(times) == set(execution_plan.REGIMES)
    expected = tf.test.experimental.sync_devices if synced else None
    assert timed_with == [expected] * len(execution_plan.REGIMES)
    # And once after each regime's untimed first calls of each form, whose failure a GPU
    # reports only then.
    forms = len(execution_plan.candidates(shape)) + 1
    assert len(syncs) == (len(execution_plan.REGIMES) * forms if synced else 0)
