"""Tests of ssc_tf.device_bundle: the bundle a phone times, its run.sh driven by a stand-in for
LiteRT's benchmark_model, its results read back as a cost table, and convert_tflite --costs
planning with them; the errors of each step."""

import json
import os
import stat
import subprocess
import sys

import keras
import pytest

from cli_testing import own_lines
from ssc_tf import convert_tflite
from ssc_tf import device_bundle
from ssc_tf import execution_plan
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import tuning
from ssc_tf.data import datasets
from ssc_tf.layers import SSCConv2D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = execution_plan.section(execution_plan.TFLITE, execution_plan.TUNED)
# benchmark_model's summary line, as BenchmarkLoggingListener::OnBenchmarkEnd writes it.
SUMMARY = ("INFO: Inference timings in us: Init: 2412, First inference: 1196, "
           "Warmup (avg): 547.2, Inference (avg): {us}")


def _model():
    """One SSC layer (16 -> 16, g = p = 4) after a Conv2D, on the digits' input."""
    inputs = keras.Input(datasets.get("digits").input_shape)
    x = SSCConv2D(16, 3, g=4, p=4, padding="same")(keras.layers.Conv2D(16, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model = _model()
    directory = str(tmp_path_factory.mktemp("bundle") / "bundle")
    return model, directory, device_bundle.write(model, "none", directory)


def _fake_benchmark_model(path, fastest):
    """A stand-in for benchmark_model: 100 us for a --graph whose name holds `fastest`, else
    500 us, printed as the tool prints its summary, after a line of its own log."""
    path.write_text(
        "#!/bin/sh\n"
        'echo "INFO: Num threads: [1]"\n'
        'case "$1" in\n'
        f'  *{fastest}*) us=100 ;;\n'
        "  *) us=500 ;;\n"
        "esac\n"
        f'echo "{SUMMARY.format(us="$us")}"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_bundle_holds_every_form_of_each_shape_and_the_dense_conv(bundle):
    model, directory, manifest = bundle
    (shape,) = tuning.planned_layers(model)[1]
    assert manifest["runtime"] == execution_plan.TFLITE and manifest["quantization"] == "none"
    forms = [entry["form"] for entry in manifest["files"].values()]
    assert forms == [tuning.BASELINE, *execution_plan.candidates(shape)]
    assert {json.dumps(entry["shape"]) for entry in manifest["files"].values()} == {
        json.dumps(shape.as_dict())}
    assert sorted(os.listdir(directory)) == sorted(
        [*manifest["files"], device_bundle.MANIFEST, device_bundle.SCRIPT])
    with open(os.path.join(directory, device_bundle.MANIFEST)) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))
    first = next(iter(manifest["files"]))  # the dense Conv2D, one op
    with open(os.path.join(directory, first), "rb") as f:
        assert convert_tflite.op_names(f.read()) == ["CONV_2D"]
    assert not [name for name in os.listdir(os.path.dirname(directory)) if name.startswith(".")]


def test_round_trip_run_sh_results_cost_table_and_the_planned_file(bundle, tmp_path):
    model, directory, manifest = bundle
    _fake_benchmark_model(tmp_path / "benchmark_model", "grouped-gconv")
    # As on the phone: run.sh by its path, the tool by a path relative to where it is run.
    ran = subprocess.run(["sh", os.path.join(directory, device_bundle.SCRIPT),
                          "./benchmark_model"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    table = device_bundle.read_results(directory, ran.stdout)
    (shape,) = tuning.planned_layers(model)[1]
    times = table[SECTION][execution_plan.SMALL_BATCH][shape.key]
    assert times == {entry["form"]: 0.1 if entry["form"] == "grouped+gconv" else 0.5
                     for entry in manifest["files"].values()}
    costs = str(tmp_path / "phone.json")
    model_dir_lib.write_json(costs, table)
    conversion = convert_tflite.plan_and_convert(model, "digits", "none", costs=costs)
    # Planned with the device's times (`grouped+bmm` stores as few weights and would be the
    # plan's choice without them), neither tuned nor guarded here.
    assert [form.name for form in conversion.forms.values()] == ["grouped+gconv"]
    assert (conversion.litert_cpu, conversion.host_cpu, conversion.guard, conversion.tuning) == (
        execution_plan.TUNED, None, None, None)


def test_a_file_benchmark_model_could_not_run_leaves_its_form_out(bundle):
    _, directory, manifest = bundle
    names = list(manifest["files"])
    results = "\n".join([f"{device_bundle.FILE_MARKER}{names[0]}", SUMMARY.format(us=250),
                         f"{device_bundle.FILE_MARKER}{names[1]}",
                         "ERROR: Failed to apply XNNPACK delegate"])
    table = device_bundle.read_results(directory, results)
    (times,) = table[SECTION][execution_plan.SMALL_BATCH].values()
    assert times == {manifest["files"][names[0]]["form"]: 0.25}
    assert table["measured_on"][SECTION]["files"] == 1


@pytest.mark.parametrize("results, message", [
    ("", "--results holds no time of any file"),
    (f"{device_bundle.FILE_MARKER}999_dense.tflite\n", "--results names '999_dense.tflite', "
     "which the bundle's manifest.json does not list: the results of another bundle?"),
])
def test_results_that_do_not_fit_the_bundle_are_refused(bundle, results, message):
    _, directory, _ = bundle
    with pytest.raises(ValueError) as error:
        device_bundle.read_results(directory, results)
    assert str(error.value).startswith(message)


def test_write_refuses_an_existing_directory_and_a_model_without_ssc_layers(bundle, tmp_path):
    model, directory, _ = bundle
    with pytest.raises(ValueError, match=r"^Invalid value for argument `bundle_dir`: expected "
                       r"a directory that does not exist yet"):
        device_bundle.write(model, "none", directory)
    inputs = keras.Input((8, 8, 3))
    dense = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="no SSC layers"):
        device_bundle.write(dense, "none", str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="bundle_dir"):
        device_bundle.read_results(str(tmp_path), "")


def test_costs_are_checked_in_one_line_before_converting(tmp_path):
    table = str(tmp_path / "int8_only.json")
    model_dir_lib.write_json(table, {"shapes": {}, execution_plan.section(
        execution_plan.TFLITE_INT8, execution_plan.TUNED): {"small_batch": {"k": {}}}})
    model = _model()
    with pytest.raises(ValueError) as error:
        convert_tflite.plan_and_convert(model, "digits", "none", costs=table)
    assert str(error.value) == (
        "Invalid value for argument `costs`: expected a cost table with tflite@tuned times, "
        f"for this quantization. Received: costs={table!r}, which has none")
    with pytest.raises(ValueError, match=r"^Pass one of `costs` and `litert_cpu`"):
        convert_tflite.plan_and_convert(model, "digits", "int8", costs=table,
                                        litert_cpu="amd_avx2")
    for name, contents in (("no", None), ("list.json", "[1, 2]"), ("bare.json", "{}")):
        if contents is not None:
            (tmp_path / name).write_text(contents)
        with pytest.raises(ValueError, match=r"^Invalid value for argument `costs`: expected "
                           r"a cost table \(JSON\)"):
            convert_tflite.plan_and_convert(model, "digits", "none", costs=str(tmp_path / name))


def test_cli_reads_results_back_and_names_a_missing_flag(bundle, tmp_path):
    _, directory, manifest = bundle
    results = tmp_path / "results.txt"
    name = next(iter(manifest["files"]))
    results.write_text(f"{device_bundle.FILE_MARKER}{name}\n{SUMMARY.format(us=1234.5)}\n")
    costs = tmp_path / "costs.json"
    env = {**os.environ, "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "ssc_tf.device_bundle", f"--bundle_dir={directory}"]
    done = subprocess.run(command + [f"--results={results}", f"--costs={costs}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Wrote {costs}: {SECTION}, 1 layer shapes." in done.stdout
    (times,) = json.loads(costs.read_text())[SECTION][execution_plan.SMALL_BATCH].values()
    assert times == {manifest["files"][name]["form"]: 1.2345}
    missing = subprocess.run(command + [f"--results={results}"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode != 0
    assert own_lines(missing.stderr)[-1].endswith(
        "Flag --costs is required with --results: the cost table to write.")
