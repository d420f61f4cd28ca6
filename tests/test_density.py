"""Tests of the model counts and ssc_tf.density: exact per-layer counts, every config builds
with the counts of the walk of its spec table."""

import glob
import json
import os
import subprocess
import sys

import pytest

from cli_testing import own_lines
from spec_oracle import spec_live_params
from ssc_tf import architectures
from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf.models import blocks
from ssc_tf.models.report import model_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(flagfile.CONFIGS_DIR, "*.cfg")))


def _density(*args):
    return subprocess.run(
        [sys.executable, "-m", "ssc_tf.density", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )


def _density_json(flagfile):
    result = _density(f"--flagfile={flagfile}", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_density_json_counts_equal_the_spec_oracle():
    report = _density_json("cifar100_resnet32_5pct")
    assert report["model"] == "resnet32" and report["ticket"] == 5
    layers = report["layers"]
    assert len(layers) == 33
    for layer in layers:
        assert set(layer) >= {"name", "in_channels", "out_channels", "kernel_size", "g", "p",
                              "live_params", "dense_params"}
        k = layer["kernel_size"][0]
        g = None if layer["g"] == 1 and layer["p"] is None else layer["g"]
        expected = (k * k * layer["in_channels"] * layer["out_channels"] if g == 1 or (
            g is None and layer["p"] is None) else spec_live_params(
            layer["in_channels"], layer["out_channels"], k, layer["g"], layer["p"]))
        assert layer["live_params"] == expected, layer["name"]
        assert layer["dense_params"] == k * k * layer["in_channels"] * layer["out_channels"]
    classifier = 128 * 100
    assert report["live_params"] == sum(l["live_params"] for l in layers) + classifier
    assert report["dense_params"] == sum(l["dense_params"] for l in layers) + classifier
    # The projection shortcuts take p only (no K x K part).
    shortcuts = {l["name"]: (l["g"], l["p"]) for l in layers if l["kernel_size"] == [1, 1]}
    assert shortcuts == {"stage2_block1_shortcut_conv": (None, 16),
                         "stage3_block1_shortcut_conv": (None, 32)}
    # The paper's "5 %" row keeps 8.04 % with the joined pattern: reported, never forced.
    assert round(100 * report["live_params"] / report["dense_params"], 2) == 8.04


def test_resnet32_10pct_row_keeps_about_15_percent():
    config = flagfile.load("cifar10_resnet32_10pct")
    stats = model_stats(models.build(config.model, **config.model_kwargs()))
    assert 0.14 < stats.kept_fraction < 0.155  # the supplement's (g, p) keep about 14-15 %


def test_a_1x1_p_above_its_inputs_is_taken_as_the_input_count():
    # The CIFAR-100 2 % ticket sets p = 64 at width 64, whose 32 -> 64 shortcut has 32 inputs:
    # p = 32 there, one kernel per filter (p = 64 would leave filters 32-63 without one).
    config = flagfile.load("cifar100_resnet32_2pct")
    model = models.build(config.model, **config.model_kwargs())
    shortcut = model.get_layer("stage2_block1_shortcut_conv")
    assert (shortcut.g, shortcut.p, shortcut.live_params) == (None, 32, 64)
    assert model.get_layer("stage3_block1_shortcut_conv").p == 64  # 64 inputs: p = 64 fits.
    fast = architectures.count(config.model, **config.model_kwargs())
    assert fast.live_params == model_stats(model).live_params


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_builds_its_model_with_the_counts_of_its_spec_table(path):
    config = flagfile.load(path)
    model = models.build(config.model, **config.model_kwargs())
    stats = model_stats(model)
    assert model.output_shape == (None, config.num_classes)
    # The TF-free counter reads the same walk: equal totals, and layer by layer.
    fast = architectures.count(config.model, **config.model_kwargs())
    assert (fast.live_params, fast.dense_params, fast.macs, fast.dense_macs) == (
        stats.live_params, stats.dense_params, stats.macs, stats.dense_macs)
    kwargs = config.model_kwargs()
    settings = architectures.settings_of(config.model, kwargs["g"], kwargs["p"],
                                         kwargs.get("p_1x1", ()))
    walked = {l.name: l for l in architectures.conv_layers(config.model, config.input_shape)}
    assert sorted(walked) == sorted(c.name for c in stats.layers)
    for built in stats.layers:
        layer = walked[built.name]
        g, p = architectures.layer_gp(layer, settings)
        assert (layer.in_channels, layer.filters, (layer.kernel_size,) * 2,
                (layer.strides,) * 2, layer.output_size, layer.dense_params) == (
            built.in_channels, built.out_channels, built.kernel_size, built.strides,
            built.output_size, built.dense_params), built.name
        assert (built.g, built.p) == ((1, None) if blocks.is_dense(layer.kernel_size, g, p)
                                      else (g, p)), built.name
        assert built.live_params == architectures.live_params(
            layer.in_channels, layer.filters, layer.kernel_size, g, p), built.name
    if config.dense:
        assert stats.live_params == stats.dense_params
    else:
        # The exact fraction is reported as it is: the supplement's (g, p) do not give the
        # label exactly (cifar10_vgg19_5pct keeps 10.2 %), but every SSC config is sparse.
        assert stats.live_params < stats.dense_params / 2
        assert stats.macs < stats.dense_macs


_RESNET32 = ["--dataset=cifar10", "--model=resnet32", "--epochs=1", "--ticket=5"]


@pytest.mark.parametrize("args, message", [
    (_RESNET32 + ["--g=2,4", "--p=2,4,4"],
     "Invalid value for flag --g: model 'resnet32' needs 3 values, one per width"),
    (_RESNET32 + ["--g=2,x,4", "--p=2,4,4"],
     "Invalid value for flag --g: expected a comma-separated list of integers or 'none'"),
    (["--dataset=cifar10", "--model=resnet32"], "Flag --epochs is required: an integer >= 1."),
    (["--all", "--configs_dir=EMPTY"], "Invalid value for flag --configs_dir: --all found no"),
    (["--all", "--configs_dir=BROKEN"], "broken.cfg:1: unknown flag --widths."),
    ([], "Pass --flagfile=<config name or file> (or flags), or --all."),
    (["extra"], "Unexpected arguments: ['extra']"),
    # Accepted by the config, refused by the layer: this one starts TensorFlow. Width 64's
    # first 3 x 3 conv (32 inputs) gives 31 of filters 32-63 neither a block nor an input of
    # their 1 x 1 class.
    pytest.param(_RESNET32 + ["--g=2,64,2", "--p=2,64,2"],
                 "g=64, p=64 leave 31 of 64 filters without any kernel",
                 marks=pytest.mark.slow),
], ids=["g_count", "g_not_integers", "epochs_missing", "no_configs", "broken_config",
        "no_flags", "extra_argument", "no_kernel"])
def test_bad_flags_fail_with_one_line_naming_the_flag(args, message, tmp_path):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BROKEN").mkdir()
    (tmp_path / "BROKEN" / "broken.cfg").write_text("--widths=1\n")
    result = _density(*[arg.replace("=EMPTY", f"={tmp_path / 'EMPTY'}")
                        .replace("=BROKEN", f"={tmp_path / 'BROKEN'}") for arg in args])
    assert result.returncode == 1
    assert result.stdout == ""
    lines = own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in result.stderr
