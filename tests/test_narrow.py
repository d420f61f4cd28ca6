"""The narrow dense baseline (`--sparsity=narrow`): its width multiplier, its counts against
SSC's budget, its Keras model, its comparison row, and one run end to end on digits."""

import dataclasses
import os

from ai_edge_litert import interpreter as litert_interpreter
import keras
import numpy as np
import pytest

from ssc_tf import architectures
from ssc_tf import arguments
from ssc_tf import compare
from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf import pruning
from ssc_tf.models import report
from ssc_tf.pruning import budget

import run_testing


def _narrow(name, **overrides):
    return dataclasses.replace(flagfile.load(name), sparsity=pruning.NARROW, **overrides)


def _weights(config, k):
    """Every counted weight of the dense network of `config` at multiplier k / max_width."""
    return architectures.count(
        config.model, config.num_classes, config.input_shape,
        *architectures.dense_pattern(config.model),
        width_multiplier=k / architectures.max_width(config.model)).live_params


# config: (SSC's live weights, the narrow network's weights, k of k / max_width, its widths)
NARROW_ROWS = {
    "cifar10_resnet32_2pct": (45_852, 45_585, 20, (5, 10, 20)),
    "cifar10_resnet32_10pct": (278_228, 274_130, 49, (12, 25, 49)),
    "cifar10_vgg19_2pct": (741_782, 735_047, 98, (12, 25, 49, 98)),
    "cifar10_vgg19_10pct": (2_790_080, 2_792_477, 191, (24, 48, 96, 191)),
}


@pytest.mark.parametrize("name", NARROW_ROWS)
def test_narrow_network_keeps_ssc_weights_to_within_half_a_channel_step(name):
    config = _narrow(name)
    ssc_live, narrow_live, k, widths = NARROW_ROWS[name]
    steps = architectures.max_width(config.model)
    kwargs = config.model_kwargs()
    assert kwargs["width_multiplier"] == k / steps
    counts = architectures.count(config.model, **kwargs)
    assert architectures.count(config.model, **config.pattern_kwargs()).live_params == ssc_live
    assert counts.live_params == counts.dense_params == narrow_live
    assert tuple(sorted({layer.filters for layer in architectures.conv_layers(
        config.model, config.input_shape, kwargs["width_multiplier"])})) == widths
    # One step of k gives the widest layer one channel and every other layer at most one: the
    # narrow count is within half of the step next to it, on the side of SSC's count.
    below, above = _weights(config, k - 1), _weights(config, k + 1)
    assert below < narrow_live < above
    step = (narrow_live - below) if ssc_live < narrow_live else (above - narrow_live)
    assert abs(narrow_live - ssc_live) <= step / 2
    # The bisection finds what trying every k finds.
    everyone = [_weights(config, j) for j in range(1, steps + 1)]
    assert all(a < b for a, b in zip(everyone, everyone[1:]))
    closest = min(range(1, steps + 1), key=lambda j: (abs(everyone[j - 1] - ssc_live), -j))
    assert closest == k


def test_a_full_budget_gives_the_full_network():
    config = _narrow("cifar10_resnet32_2pct", kept_fraction=1.0)
    assert config.model_kwargs()["width_multiplier"] == 1.0
    dense = budget.dense_params(config)
    assert dense == 1_855_584
    for params in (dense, dense + 1, 10 * dense):
        assert architectures.width_multiplier_for("resnet32", 10, (32, 32, 3), params) == 1.0
    assert architectures.width_multiplier_for("resnet32", 10, (32, 32, 3), 1) == 1 / 128


def test_kept_fraction_overrides_the_patterns_count():
    config = _narrow("cifar10_resnet32_2pct", kept_fraction=0.05)
    assert budget.kept_params(config) == round(0.05 * 1_855_584) == 92_779
    kwargs = config.model_kwargs()
    assert kwargs["width_multiplier"] == 28 / 128
    assert architectures.count(config.model, **kwargs).live_params == 89_159
    # Its neighbours are further from 92,779: 28 is the closest step.
    assert (_weights(config, 27), _weights(config, 29)) == (84_554, 96_635)


def test_model_kwargs_are_the_dense_twins_with_a_width_multiplier():
    config = _narrow("cifar10_resnet32_10pct")
    assert config.narrow and not (config.dense or config.masked)
    assert config.model_kwargs() == {
        "num_classes": 10, "input_shape": (32, 32, 3), "g": (1, 1, 1), "p": (None,) * 3,
        "width_multiplier": 49 / 128,
    }
    resnet50 = _narrow("imagenet_resnet50_20pct").model_kwargs()
    assert resnet50["p_1x1"] == (1,) * 6 and resnet50["width_multiplier"] == 1033 / 2048


def test_the_narrow_walk_keeps_every_layer_setting_and_projection_of_the_table():
    for model, shape in (("resnet32", (32, 32, 3)), ("resnet50", (224, 224, 3))):
        full = architectures.conv_layers(model, shape)
        # At the smallest multiplier the stem and the stage it feeds have one channel each,
        # yet every projection of the table stays.
        narrow = architectures.conv_layers(model, shape, 1 / architectures.max_width(model))
        assert [(l.name, l.kernel_size, l.strides, l.output_size, l.setting) for l in narrow] \
            == [(l.name, l.kernel_size, l.strides, l.output_size, l.setting) for l in full]
        assert [l.filters for l in narrow] == [
            architectures.scaled_width(l.filters, 1 / architectures.max_width(model))
            for l in full]
        assert narrow[0].in_channels == 3
    stem, first = architectures.conv_layers("resnet32", (32, 32, 3), 0.3)[:2]
    assert stem.filters == first.filters == first.in_channels == 10  # 32 x 0.3 = 9.6
    assert architectures.scaled_width(64, 0.5 / 64) == 1  # 0.5 rounds up
    assert architectures.scaled_width(3, 0.1) == 1  # never below one channel


@pytest.mark.parametrize("name", ["cifar10_resnet32_2pct", "cifar10_vgg19_2pct"])
def test_built_narrow_model_counts_as_the_walk_and_is_plain_conv2d(name):
    config = _narrow(name)
    model = models.build(config.model, **config.model_kwargs())
    stats = report.model_stats(model)
    assert architectures.Counts(stats.live_params, stats.dense_params, stats.macs,
                                stats.dense_macs) == architectures.count(
        config.model, **config.model_kwargs())
    assert stats.live_params == NARROW_ROWS[name][1]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(type(layer) is keras.layers.Conv2D for layer in convs)
    assert model.get_layer(architectures.LOGITS_NAME).kernel.shape == (
        NARROW_ROWS[name][3][-1], 10)


@pytest.mark.parametrize("call, message", [
    (lambda: architectures.network("resnet32", (32, 32, 3), 0),
     "Invalid value for argument `width_multiplier`: expected a number in (0, 1]. "
     "Received: width_multiplier=0"),
    (lambda: models.build("resnet32", num_classes=10, input_shape=(32, 32, 3), g=(1, 1, 1),
                          p=(None,) * 3, width_multiplier=1.5),
     "Invalid value for argument `width_multiplier`: expected a number in (0, 1]. "
     "Received: width_multiplier=1.5"),
    (lambda: architectures.width_multiplier_for("resnet32", 10, (32, 32, 3), 0),
     "Invalid value for argument `params`: expected an integer >= 1. Received: params=0"),
    (lambda: _narrow("cifar10_resnet32_2pct", kept_fraction=1.5),
     "Invalid value for argument `kept_fraction`: expected a number in (0, 1]. "
     "Received: kept_fraction=1.5"),
    (lambda: dataclasses.replace(flagfile.load("cifar10_resnet32_dense"), kept_fraction=0.1),
     "Argument `kept_fraction` sets a pruned run's budget (or a narrow one's), with "
     "`sparsity` one of ('narrow', 'random', 'snip', 'grasp', 'synflow', 'magnitude'). "
     "Received: kept_fraction=0.1, sparsity='dense'"),
])
def test_a_bad_value_fails_with_one_line_naming_it(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    assert str(raised.value) == message


def test_a_bad_flag_is_named_as_a_flag():
    with arguments.as_flags(), pytest.raises(ValueError) as raised:
        _narrow("cifar10_resnet32_2pct", kept_fraction=0.0)
    assert str(raised.value) == ("Invalid value for flag --kept_fraction: expected a number in "
                                 "(0, 1]. Received: kept_fraction=0.0")


def test_a_run_dir_holds_one_narrow_network():
    from ssc_tf import model_dir as model_dir_lib

    saved = _narrow("quickstart")
    assert model_dir_lib.model_differences(saved, dataclasses.replace(saved, epochs=20)) == []
    assert model_dir_lib.model_differences(
        saved, dataclasses.replace(saved, kept_fraction=0.05)) == [
            "--kept_fraction: saved None, requested 0.05"]
    assert model_dir_lib.model_differences(
        saved, dataclasses.replace(saved, sparsity=pruning.DENSE)) == [
            "--sparsity: saved 'narrow', requested 'dense'"]


def test_compare_row_counts_narrow_against_the_full_twin_and_runs_its_own_macs():
    row = "cifar10_resnet32_2pct"
    runs = [compare.Run(row=row, table="cifar10_resnet32", method=method, seed=0,
                        flagfile=row, model_dir=f"r/{row}/{method}/seed-0")
            for method in (pruning.NARROW, pruning.RANDOM)]
    # eval.json of a narrow run counts the narrow network against itself.
    narrow_eval = {"top1": 0.9, "kept_fraction": 1.0, "live_params": 45_585,
                   "dense_params": 45_585, "macs": 6_845_640, "dense_macs": 6_845_640}
    random_eval = {"top1": 0.9, "kept_fraction": 45_852 / 1_855_584, "live_params": 45_852,
                   "dense_params": 1_855_584, "macs": 12_000_000, "dense_macs": 275_612_928}
    outcomes = {run.model_dir: {"status": "finished", "eval": result, "step": None,
                                "error": None, "log": None, "seconds": 1.0}
                for run, result in zip(runs, (narrow_eval, random_eval))}
    narrow, random = compare.summarize(runs, outcomes, {})
    assert (narrow["live_params"], narrow["dense_params"]) == (45_585, 1_855_584)
    assert narrow["kept_fraction"] == pytest.approx(45_585 / 1_855_584)
    assert (narrow["macs_run"], narrow["macs_run_kind"]) == (6_845_640, "narrow")
    assert (random["macs_run"], random["macs_run_kind"]) == (275_612_928, "dense")
    assert random["kept_fraction"] == pytest.approx(45_852 / 1_855_584)
    assert "narrow runs its own dense MACs" in compare.NOTES["macs"]
    runs = compare.plan([row], methods=["narrow", "ssc"], seeds=[0], root="r")
    assert [(run.row, run.method) for run in runs] == [(row, "ssc"), (row, "narrow")]


@pytest.mark.slow
def test_a_narrow_run_trains_resumes_evaluates_exports_converts_and_is_timed(tmp_path):
    from ssc_tf import convert_tflite
    from ssc_tf import evaluate
    from ssc_tf import export
    from ssc_tf import model_dir as model_dir_lib
    from ssc_tf import train

    model_dir = str(tmp_path / "run")
    config = run_testing.config(sparsity=pruning.NARROW, epochs=1, lr_boundaries=())
    expected = architectures.count(config.model, **config.model_kwargs())
    assert expected.live_params == NARROW_ROWS["cifar10_resnet32_10pct"][1]  # quickstart's
    model = train.train(config, model_dir=model_dir,
                        steps_per_epoch=run_testing.STEPS_PER_EPOCH, verbose=0)
    assert report.model_stats(model).live_params == expected.live_params
    kernel = model.get_layer("stage3_block5_2_conv").get_weights()[0]
    assert kernel.shape == (3, 3, 49, 49)

    resumed = train.train(dataclasses.replace(config, epochs=2), model_dir=model_dir,
                          steps_per_epoch=run_testing.STEPS_PER_EPOCH, verbose=0)
    assert model_dir_lib.latest_checkpoint(model_dir).endswith("epoch-2")
    assert not np.array_equal(resumed.get_layer("stage3_block5_2_conv").get_weights()[0], kernel)
    with pytest.raises(ValueError, match="holds a different model"):
        train.train(dataclasses.replace(config, epochs=3, kept_fraction=0.05),
                    model_dir=model_dir, steps_per_epoch=1, verbose=0)

    result = evaluate.evaluate(model_dir)
    assert result["epoch"] == 2
    assert (result["live_params"], result["macs"]) == (expected.live_params, expected.macs)

    info = export.export(model_dir, str(tmp_path / "serving" / "digits_narrow"))
    assert info["live_params"] == expected.live_params

    run = compare.Run(row="quickstart", table="quickstart", method=pruning.NARROW, seed=0,
                      flagfile="quickstart", model_dir=model_dir)
    convert_tflite.convert(model_dir, run.tflite)
    interpreter = litert_interpreter.Interpreter(model_path=run.tflite)
    interpreter.allocate_tensors()
    (inputs,) = interpreter.get_input_details()
    assert tuple(inputs["shape"]) == (1, 32, 32, 3)
    timed = compare._latencies(run, repeats=2)
    assert timed["tf_latency_ms"] > 0 and timed["tflite_latency_ms"] > 0
    assert timed["tflite_bytes"] == os.path.getsize(run.tflite)


def test_density_reads_the_narrow_network_against_the_full_dense_twin():
    from ssc_tf import density

    config = _narrow("cifar10_resnet32_2pct")
    stats = density._stats(config)
    report_json = density.report_json(config, stats)
    assert (report_json["live_params"], report_json["dense_params"]) == (45_585, 45_585)
    assert report_json["dense_twin_params"] == 1_855_584
    assert report_json["kept_fraction"] == pytest.approx(45_585 / 1_855_584)
    assert report_json["dense_twin_macs"] == 275_612_928
    summary = density.layer_table(config, stats).splitlines()[-1]
    assert summary == ("kept fraction 2.46 % of the dense twin's 1,855,584 (paper's label: "
                       "2 %); MACs 0.0248 of dense (275,612,928)")
