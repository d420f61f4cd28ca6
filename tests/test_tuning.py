"""Tests of ssc_tf.tuning: which forms each regime times, and on a GPU until the GPU has run
them; that each TFLite runtime times a file converted as `ssc_tf.convert_tflite` converts a
model for it, computing the layer's function; and how `tune` measures, caches, budgets and
names this machine's times, which the plan then reads. Never how fast anything ran."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from ssc_tf import convert_tflite
from ssc_tf import execution_plan
from ssc_tf import layers as layers_lib
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import quantization
from ssc_tf import timing
from ssc_tf import tuning

# Large enough kernels (at least 1024 weights each) for dynamic-range quantization to store
# them in int8: the converter leaves smaller ones float.
SHAPE = execution_plan.LayerShape(in_channels=32, filters=32, kernel_size=3, strides=1,
                                  input_size=(8, 8), g=2, p=2)
TUNED_FLOAT = execution_plan.section(execution_plan.TFLITE, execution_plan.TUNED)
INTEL = timing.Cpu("intel", "6", "Intel(R) Xeon(R) Platinum 8488C",
                   ("avx2", "avx512f", "avx512_vnni", "amx_tile"))
AMD_ZEN4 = timing.Cpu("amd", "25", "AMD EPYC 9R14", ("avx2", "avx512f", "avx512_vnni"))


@pytest.fixture(scope="module")
def layers():
    return tuning.layers(SHAPE)


def test_each_tflite_runtime_times_the_quantization_planned_with_its_table():
    assert quantization.MEASURED == {
        execution_plan.TFLITE: "none",
        execution_plan.TFLITE_DYNAMIC: "dynamic",
        execution_plan.TFLITE_INT8: "int8",
    }
    for runtime, name in quantization.MEASURED.items():
        assert quantization.PLANNED_RUNTIME[name] == runtime


@pytest.mark.parametrize("runtime, ops, dtypes", [
    (execution_plan.TFLITE, ["ADD", "CONV_2D"], {"float32"}),
    # int8 weights, float activations: no QUANTIZE of the input.
    (execution_plan.TFLITE_DYNAMIC, ["ADD", "CONV_2D"], {"float32", "int8"}),
    # int8 weights and activations (int32 biases), float input and output.
    (execution_plan.TFLITE_INT8, ["ADD", "CONV_2D", "DEQUANTIZE", "QUANTIZE"],
     {"float32", "int32", "int8"}),
])
def test_tflite_file_is_quantized_for_its_runtime(layers, runtime, ops, dtypes):
    flatbuffer = tuning.tflite_file(layers["grouped+conv"], SHAPE, runtime)
    assert convert_tflite.op_names(flatbuffer) == ops
    interpreter = Interpreter(model_content=flatbuffer)
    assert {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()} == dtypes


@pytest.mark.parametrize("form", ["grouped+bmm", "split+gconv", execution_plan.DENSE])
def test_float_tflite_file_computes_the_layer(layers, form):
    interpreter = tuning.tflite_interpreter(layers[form], SHAPE, execution_plan.TFLITE)
    interpreter.invoke()
    outputs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    # The interpreter is fed ones. Every form holds the same weights: all equal the Keras
    # layer of the whole-layer dense form.
    inputs = np.ones((1, *SHAPE.input_size, SHAPE.in_channels), np.float32)
    expected = layers[execution_plan.DENSE](inputs).numpy()
    assert np.abs(expected).max() > 1
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-4)


def test_eigen_train_times_only_forms_with_a_gradient_there():
    # Without oneDNN, TF's CPU grouped convolution has no gradient: SHAPE's blocks of 16
    # inputs leave out `grouped` and its p = 2 leaves out `gconv`. The dense twin is timed
    # in every regime.
    times = tuning.measure_tf(SHAPE, execution_plan.CPU_EIGEN, batch_size=2, repeats=1)
    every = {tuning.BASELINE, *execution_plan.candidates(SHAPE)}
    assert set(times[execution_plan.SMALL_BATCH]) == every
    assert set(times[execution_plan.LARGE_BATCH]) == every
    assert set(times[execution_plan.TRAIN]) == {
        tuning.BASELINE, execution_plan.DENSE, "split+bmm", "split+conv"}
    assert all(ms > 0 for regime in times.values() for ms in regime.values())


def _fake_timing(monkeypatch):
    """Fakes `timing.interleaved_ms`: every call 1 ms; returns the list of (sync, first
    argument's shape) it was called with."""
    calls = []

    def interleaved_ms(fns, repeats, x, sync=None, **kwargs):
        calls.append((sync, None if x is None else tuple(x.shape)))
        return {name: 1.0 for name in fns}

    monkeypatch.setattr(tuning.timing, "interleaved_ms", interleaved_ms)
    return calls


# No K x K part, p = 1: every form has a gradient on every CPU.
POINTWISE = execution_plan.LayerShape(in_channels=8, filters=8, kernel_size=1, strides=1,
                                      input_size=(4, 4), g=None, p=1)


@pytest.mark.parametrize("runtime, synced", [
    (execution_plan.GPU, True), (execution_plan.CPU_ONEDNN, False)])
def test_gpu_calls_are_timed_until_the_gpu_has_run_them(monkeypatch, runtime, synced):
    # Faked on this CPU: the device sync, and the timing, which records the sync it was given.
    syncs = []
    monkeypatch.setattr(tf.test.experimental, "sync_devices", lambda: syncs.append(1))
    calls = _fake_timing(monkeypatch)
    times = tuning.measure_tf(POINTWISE, runtime, batch_size=2, repeats=1)
    assert set(times) == set(execution_plan.REGIMES)
    expected = tf.test.experimental.sync_devices if synced else None
    assert [sync for sync, _ in calls] == [expected] * len(execution_plan.REGIMES)
    # And once after each regime's untimed first calls of each form, whose failure a GPU
    # reports only then.
    forms = len(execution_plan.candidates(POINTWISE)) + 1
    assert len(syncs) == (len(execution_plan.REGIMES) * forms if synced else 0)


def test_measure_tf_times_the_regimes_asked_at_their_batch(monkeypatch):
    calls = _fake_timing(monkeypatch)
    times = tuning.measure_tf(POINTWISE, execution_plan.CPU_EIGEN, batch_size=3, repeats=1,
                              regimes=(execution_plan.SMALL_BATCH, execution_plan.TRAIN))
    assert list(times) == [execution_plan.SMALL_BATCH, execution_plan.TRAIN]
    assert [shape for _, shape in calls] == [(1, 4, 4, 8), (3, 4, 4, 8)]


def _shape(filters):
    return execution_plan.LayerShape(in_channels=16, filters=filters, kernel_size=3,
                                     strides=1, input_size=(8, 8), g=4, p=4)


class FakeMeasure:
    """Stands for `measure_tflite`: `grouped+gconv` fastest (which stores as few weights as
    `grouped+bmm`, the plan's choice without times), or raises on the shape `fail`."""

    def __init__(self, fail=None):
        self.measured, self.fail = [], fail

    def __call__(self, shape, regimes):
        if shape.key == self.fail:
            raise KeyboardInterrupt
        self.measured.append((shape.key, regimes))
        return {regime: {"conv2d": 2.0, "dense": 2.0, "grouped+bmm": 3.0, "grouped+gconv": 1.0}
                for regime in regimes}


def test_tune_measures_each_shape_once_and_the_plan_reads_its_times(tmp_path):
    path = str(tmp_path / "costs.json")
    shapes = [_shape(16), _shape(32), _shape(16)]
    lines, measure = [], FakeMeasure()
    first = tuning.tune(shapes, execution_plan.TFLITE, path=path, measure=measure,
                        log=lines.append)
    keys = [_shape(16).key, _shape(32).key]
    assert measure.measured == [(key, (execution_plan.SMALL_BATCH,)) for key in keys]
    assert (first.path, first.section, first.measured, first.cached, first.left) == (
        path, TUNED_FLOAT, keys, [], [])
    assert [line.split("] ")[1].split(" (")[0] for line in lines] == keys
    table = execution_plan.load_costs(path)
    assert sorted(table["shapes"]) == sorted(keys)
    assert table["measured_on"][TUNED_FLOAT]["tuned"] is True
    assert table["measured_on"][TUNED_FLOAT]["repeats"] == tuning.TUNE_REPEATS
    for shape in shapes:
        assert execution_plan.choose(shape, execution_plan.TFLITE, execution_plan.SMALL_BATCH,
                                     path, execution_plan.TUNED).name == "grouped+gconv"
    # A second tuning of the same shapes reads the file: nothing is measured.
    again = tuning.tune(shapes, execution_plan.TFLITE, path=path, measure=FakeMeasure(
        fail=keys[0]), log=lines.append)
    assert (again.measured, again.cached, again.left) == ([], keys, [])
    # Another runtime's section of the same file is measured anew.
    measure = FakeMeasure()
    int8 = tuning.tune(shapes[:1], execution_plan.TFLITE_INT8, path=path, measure=measure,
                       log=lines.append)
    assert int8.measured == keys[:1] and measure.measured
    # The plan, which read the file before, reads it again now that it has grown.
    assert list(execution_plan.measured(execution_plan.TFLITE_INT8, execution_plan.SMALL_BATCH,
                                        path, execution_plan.TUNED)) == keys[:1]


def test_tune_stops_at_its_budget_and_the_rest_take_the_nearest_shape(tmp_path):
    path = str(tmp_path / "costs.json")
    lines = []
    result = tuning.tune([_shape(16), _shape(32), _shape(64)], execution_plan.TFLITE,
                         path=path, measure=FakeMeasure(), budget_seconds=0, log=lines.append)
    # At least one shape is measured, whatever the budget.
    assert result.measured == [_shape(16).key]
    assert result.left == [_shape(32).key, _shape(64).key]
    assert "the 0 s budget is spent; 2 shapes take the nearest measured shape's times" in (
        lines[-1])
    assert execution_plan.choose(_shape(64), execution_plan.TFLITE, execution_plan.SMALL_BATCH,
                                 path, execution_plan.TUNED).name == "grouped+gconv"


def test_an_interrupted_tuning_keeps_the_shapes_it_measured(tmp_path):
    path = str(tmp_path / "costs.json")
    with pytest.raises(KeyboardInterrupt):
        tuning.tune([_shape(16), _shape(32)], execution_plan.TFLITE, path=path,
                    measure=FakeMeasure(fail=_shape(32).key), log=lambda line: None)
    table = execution_plan.load_costs(path)
    assert list(table[TUNED_FLOAT][execution_plan.SMALL_BATCH]) == [_shape(16).key]
    rest = FakeMeasure()
    result = tuning.tune([_shape(16), _shape(32)], execution_plan.TFLITE, path=path,
                         measure=rest, log=lambda line: None)
    assert (result.cached, result.measured) == ([_shape(16).key], [_shape(32).key])


def test_tensorflow_times_are_taken_only_in_this_process_runtime(tmp_path):
    here = layers_lib.current_runtime()
    other = next(r for r in execution_plan.TF_RUNTIMES if r != here)
    with pytest.raises(ValueError) as error:
        tuning.tune([_shape(16)], other, path=str(tmp_path / "costs.json"),
                    measure=FakeMeasure())
    assert str(error.value) == (
        f"Invalid value for argument `runtime`: expected a TFLite runtime or this process's, "
        f"{here!r}. Received: runtime={other!r}")
    measure = FakeMeasure()
    result = tuning.tune([_shape(16)], here, path=str(tmp_path / "costs.json"),
                         measure=measure, log=lambda line: None)
    assert result.section == here
    assert measure.measured == [(_shape(16).key, execution_plan.REGIMES)]


def test_a_shape_in_which_no_form_ran_is_not_kept(tmp_path):
    path = str(tmp_path / "costs.json")

    def measure(shape, regimes):
        return {regime: {} if shape.key == _shape(32).key else {"dense": 1.0}
                for regime in regimes}

    lines = []
    result = tuning.tune([_shape(16), _shape(32)], execution_plan.TFLITE, path=path,
                         measure=measure, log=lines.append)
    assert (result.measured, result.left) == ([_shape(16).key], [_shape(32).key])
    assert f"  {_shape(32).key}: no form ran in ['small_batch']; not kept" in lines
    assert list(execution_plan.load_costs(path)[TUNED_FLOAT][execution_plan.SMALL_BATCH]) == [
        _shape(16).key]


def test_two_tunings_into_one_cache_keep_both_their_shapes(tmp_path):
    path = str(tmp_path / "costs.json")
    measure = FakeMeasure()

    def measure_while_another_process_tunes(shape, regimes):
        # Another process writes its shape into the same file meanwhile.
        tuning.tune([_shape(64)], execution_plan.TFLITE, path=path, measure=FakeMeasure(),
                    log=lambda line: None)
        return measure(shape, regimes)

    tuning.tune([_shape(16)], execution_plan.TFLITE, path=path,
                measure=measure_while_another_process_tunes, log=lambda line: None)
    assert sorted(execution_plan.load_costs(path)[TUNED_FLOAT][execution_plan.SMALL_BATCH]) == (
        sorted([_shape(16).key, _shape(64).key]))
    assert os.listdir(tmp_path) == ["costs.json"]  # no temporary file left


def test_layers_are_timed_in_float32_under_a_mixed_precision_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        built = tuning.layers(POINTWISE)
    finally:
        keras.config.set_dtype_policy(previous)
    assert {layer.compute_dtype for layer in built.values()} == {"float32"}


def test_a_gpu_is_not_tuned_here(monkeypatch):
    inputs = keras.Input((8, 8, 16))
    model = keras.Model(inputs, layers_lib.SSCConv2D(16, 3, g=4, p=4)(inputs))
    monkeypatch.setattr(tuning, "fits_host", lambda runtime, path=None: False)
    monkeypatch.setattr(tuning, "tune", lambda *args: pytest.fail("tuned a GPU"))
    assert tuning.for_host(model, execution_plan.GPU) is None


def test_real_tuning_times_every_candidate_form_and_the_dense_twin(tmp_path):
    shape = execution_plan.LayerShape(in_channels=8, filters=8, kernel_size=3, strides=1,
                                      input_size=(4, 4), g=2, p=2)
    result = tuning.tune([shape], execution_plan.TFLITE, path=str(tmp_path / "costs.json"),
                         repeats=1, log=lambda line: None)
    with open(result.path, encoding="utf-8") as f:
        times = json.load(f)[TUNED_FLOAT][execution_plan.SMALL_BATCH][shape.key]
    assert set(times) == {tuning.BASELINE, *execution_plan.candidates(shape)}
    assert all(ms > 0 for ms in times.values())


def test_cache_path_names_the_cpu_and_library_versions(monkeypatch, tmp_path):
    monkeypatch.setattr(timing, "cpu", lambda cpuinfo=None: INTEL)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import ai_edge_litert
    assert tuning.cache_path() == os.path.join(
        str(tmp_path), "ssc_tf",
        f"intel_family6_avx512_vnni_amx-intel_r_xeon_r_platinum_8488c-tf{tf.__version__}"
        f"-litert{ai_edge_litert.__version__}.json")
    assert tuning.cache_path("/elsewhere").startswith("/elsewhere/ssc_tf/intel_family6_")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tuning.cache_path().startswith(os.path.expanduser("~/.cache/ssc_tf/"))


@pytest.mark.parametrize("cpu, fits", [(AMD_ZEN4, True), (INTEL, False), (None, False)],
                         ids=["amd_vnni", "intel_vnni", "unknown"])
def test_a_packaged_section_fits_a_host_of_its_vendor_and_int8_instructions(
        monkeypatch, tmp_path, cpu, fits):
    monkeypatch.setattr(timing, "cpu", lambda cpuinfo=None: cpu)
    path = str(tmp_path / "costs.json")
    model_dir_lib.write_json(path, {"shapes": {}, "measured_on": {
        execution_plan.CPU_ONEDNN: {"cpu_vendor": "amd",
                                    "cpu_features": ["avx2", "avx512f", "avx512_vnni"]},
        execution_plan.GPU: {"gpus": ["NVIDIA A100"]}}})
    assert tuning.fits_host(execution_plan.CPU_ONEDNN, path) is fits
    assert tuning.fits_host(execution_plan.TFLITE_INT8) is fits
    assert tuning.fits_host(execution_plan.CPU_EIGEN, path) is False  # no section
    assert tuning.fits_host(execution_plan.GPU, path) is True


def test_a_cache_that_cannot_be_written_is_named_in_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError) as error:
        tuning.tune([_shape(16)], execution_plan.TFLITE, path=str(blocker / "ssc_tf" / "c.json"),
                    measure=FakeMeasure())
    assert str(error.value) == (
        f"The tuning cache {str(blocker / 'ssc_tf')!r} cannot be written (Not a directory): "
        "set $XDG_CACHE_HOME to a writable directory, or plan without tuning (`tune`=False).")
    # A directory without write permission (faked: the tests may run as root, whom no
    # permission stops) is refused before anything is measured.
    monkeypatch.setattr(tuning.os, "access", lambda path, mode: False)
    measure = FakeMeasure()
    with pytest.raises(ValueError, match=r"cannot be written \(Permission denied\)"):
        tuning.tune([_shape(16)], execution_plan.TFLITE, path=str(tmp_path / "c.json"),
                    measure=measure)
    assert not measure.measured


def test_a_tuned_table_without_a_tensorflow_regime_plans_it_with_the_packages_times(tmp_path):
    path = str(tmp_path / "costs.json")
    runtime = layers_lib.current_runtime()
    if runtime == execution_plan.GPU:
        pytest.skip("the package has no GPU times to fall back on")
    tuning.tune([_shape(16)], runtime, (execution_plan.LARGE_BATCH,), path=path,
                measure=FakeMeasure(), log=lambda line: None)
    assert execution_plan.choose(_shape(16), runtime, execution_plan.LARGE_BATCH,
                                 path).name == "grouped+gconv"
    packaged = {regime: execution_plan.choose(_shape(16), runtime, regime)
                for regime in (execution_plan.SMALL_BATCH, execution_plan.TRAIN)}
    # Not what a runtime without any times runs, so the test tells the two apart.
    assert set(packaged.values()) != {execution_plan.parse(execution_plan.UNMEASURED_FORM)}
    for regime, form in packaged.items():
        assert execution_plan.choose(_shape(16), runtime, regime, path) == form
