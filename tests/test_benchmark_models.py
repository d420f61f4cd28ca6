"""Tests of tools/benchmark_models.py, run once on the quickstart config at tiny settings: what
it writes (JSON, Markdown, PNG) and the exact numbers in it, never how fast anything ran."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ssc_tf import convert_tflite
from ssc_tf import execution_plan
from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf import tuning
from ssc_tf.models.report import model_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark_models.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*args):
    return subprocess.run(
        [sys.executable, TOOL, *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("benchmark_models")
    paths = {name: str(directory / f"result.{name}") for name in ("json", "md", "png")}
    # --noguard --notune: the guard's timing and the tuning's would make the files vary
    # from run to run.
    result = _run("--configs=quickstart", "--batch_size=2", "--repeats=1", "--tflite=none",
                  "--noguard", "--notune", f"--output={paths['json']}",
                  f"--markdown={paths['md']}", f"--plot={paths['png']}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(paths["json"]) as f:
        report = json.load(f)
    with open(paths["md"]) as f:
        markdown = f.read()
    with open(paths["png"], "rb") as f:
        png = f.read()
    return report, markdown, png, result.stdout


def _stats(sparsity):
    config = flagfile.load("quickstart")
    if sparsity == "dense":
        config = dataclasses.replace(config, sparsity="dense", ticket=None)
    return model_stats(models.build(config.model, **config.model_kwargs()))


@pytest.mark.slow
def test_json_holds_one_record_with_every_measurement(outputs):
    report, _, _, _ = outputs
    assert report["batch_size"] == 2 and report["repeats"] == 1
    assert report["tflite"] == ["none"] and report["max_stored"] == "auto"
    assert report["tf_enable_onednn_opts"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    # The files run on this CPU, so they are planned for it by default.
    assert report["litert_cpu"] == convert_tflite.HOST and report["guard"] is False
    assert report["tune"] is False
    (record,) = report["records"]
    assert record["tflite_planned_with"] == {
        "none": tuning.host_litert_cpu() or execution_plan.DEFAULT_LITERT_CPU}
    assert record["tflite_guard"] == {"none": None} and record["tflite_tuning"] == {"none": None}
    assert (record["config"], record["model"], record["dataset"], record["ticket"]) == (
        "quickstart", "resnet32", "digits", 10)
    assert set(record["timings"]) == {"tf_b1", "tf_b2", "train_b2", "tflite_none_b1"}
    for timing in record["timings"].values():
        assert timing["dense_ms"] > 0 and timing["ssc_ms"] > 0
        assert timing["speedup"] == timing["dense_ms"] / timing["ssc_ms"]
        assert timing["fraction_of_ideal"] == timing["speedup"] / record["mac_ideal"]


@pytest.mark.slow
def test_ideals_and_counts_equal_model_stats(outputs):
    (record,) = outputs[0]["records"]
    ssc, dense = _stats("ssc"), _stats("dense")
    assert record["mac_ideal"] == ssc.dense_macs / ssc.macs
    assert record["param_ideal"] == ssc.dense_params / ssc.live_params
    assert record["kept_fraction"] == ssc.kept_fraction
    for twin, stats in (("ssc", ssc), ("dense", dense)):
        assert record["counts"][twin] == {
            "live_params": stats.live_params, "dense_params": stats.dense_params,
            "macs": stats.macs, "dense_macs": stats.dense_macs}
    # The dense twin is the SSC model's dense counterpart, layer for layer.
    assert (dense.macs, dense.live_params) == (ssc.dense_macs, ssc.dense_params)


@pytest.mark.slow
def test_ssc_tflite_file_is_smaller_than_the_dense_one(outputs):
    (record,) = outputs[0]["records"]
    sizes = record["tflite_bytes"]["none"]
    assert 0 < sizes["ssc"] < sizes["dense"]


@pytest.mark.slow
def test_markdown_has_one_row_per_config_and_is_printed(outputs):
    _, markdown, _, stdout = outputs
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    header, *body = rows
    assert header.startswith("| config | kept | MAC ideal | param ideal | TF b1 | TF b2 |")
    assert len(body) == 1 and body[0].startswith("| quickstart | 14.99 % | ")
    assert len(body[0].split(" | ")) == len(header.split(" | "))
    assert markdown in stdout
    assert ("(storing 1.25x the live weights, or more where the plan's layer times say that "
            "would be slower than dense: --max_stored=auto), planned for --litert_cpu=host.\n"
            ) in markdown


@pytest.mark.slow
def test_markdown_names_the_files_storage_budget(outputs):
    spec = importlib.util.spec_from_file_location("benchmark_models", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    report = outputs[0]
    assert tool.format_markdown(report) == outputs[1]
    assert "(no storage budget: --max_stored=inf)" in tool.format_markdown(
        {**report, "max_stored": None})
    assert "(storing at most 4x the live weights: --max_stored=4)" in tool.format_markdown(
        {**report, "max_stored": 4.0})
    assert ("planned for --litert_cpu=host, timed against the dense twin's file and moved to "
            "dense where slower (--guard).\n") in tool.format_markdown({**report, "guard": True})


@pytest.mark.slow
def test_plot_is_a_png_file(outputs):
    assert outputs[2].startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("flag, message", [
    ("--tflite=float64", "flag --tflite=['float64']: expected a comma-separated list of none"),
    ("--configs=cifar10_vgg19_dense", "flag --configs: cifar10_vgg19_dense is a dense config"),
    ("--max_stored=1", "flag --max_stored=1: Invalid value for flag --max_stored: expected "
                       "'auto' or a number >= 1.25. Received: max_stored=1.0"),
    ("--litert_cpu=arm", "flag --litert_cpu=arm: value should be one of "
                         "<host|amd_avx512_vnni|amd_avx2|x86_avx512_vnni|x86_avx2>"),
])
def test_a_bad_flag_fails_with_one_line_naming_it(flag, message):
    result = _run(flag)
    assert result.returncode != 0
    assert sum(message in line for line in result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
