"""The pruned runs' budget: SSC's exact kept count over the layers it sparsifies."""

import dataclasses

import pytest

from ssc_tf import architectures
from ssc_tf import config as config_lib
from ssc_tf import flagfile
from ssc_tf import pruning
from ssc_tf.pruning import budget

STEM = 3 * 3 * 3 * 32  # the quickstart's first convolution, dense
CLASSIFIER = 128 * 10  # its classifier kernel, dense


def _config(**changes):
    return dataclasses.replace(flagfile.load("quickstart"), sparsity="snip", **changes)


def test_the_budget_is_ssc_live_weights_less_the_dense_stem_and_classifier():
    config = _config()
    ssc = architectures.count(config.model, **config.pattern_kwargs())
    assert ssc.live_params == 278_228
    assert budget.target(config) == ssc.live_params - STEM - CLASSIFIER == 276_084
    layers = budget.prunable_layers(config)
    assert len(layers) == 32 and all(layer.setting for layer in layers)
    targets = budget.layer_targets(config)
    assert sum(targets.values()) == 276_084
    # 32 -> 32, 3 x 3, (g, p) = (2, 2): 9 * 16 per filter in the K x K part and 8 per filter
    # in the 1 x 1 part (docs/pattern.md).
    assert targets["stage1_block1_1_conv"] == 32 * (9 * 16 + 8)
    # The 32 -> 64 shortcut takes (None, 4): each filter reads 32 / 4 inputs.
    assert targets["stage2_block1_shortcut_conv"] == 64 * 8


def test_kept_fraction_sets_the_whole_model_total():
    dense = 1_855_584
    assert budget.target(_config(kept_fraction=0.5)) == round(0.5 * dense) - STEM - CLASSIFIER
    with pytest.raises(ValueError, match=r"`kept_fraction`: expected at least 0\.001155,"):
        budget.target(_config(kept_fraction=0.001))


def test_config_checks_the_pruning_fields():
    base = flagfile.load("quickstart")
    assert base.sparsity == pruning.SSC and not base.masked
    assert _config().masked and _config().model_kwargs()["masked"] is True
    assert _config().model_kwargs()["g"] == (1, 1, 1)
    with pytest.raises(ValueError, match=r"`kept_fraction` sets a pruned run's budget"):
        dataclasses.replace(base, kept_fraction=0.1)
    with pytest.raises(ValueError, match=r"`kept_fraction`: expected a number in \(0, 1\]"):
        _config(kept_fraction=1.5)
    with pytest.raises(ValueError, match=r"`random_per_layer` applies only to `sparsity`"):
        _config(random_per_layer=True)
    with pytest.raises(ValueError, match=r"takes no `kept_fraction`"):
        dataclasses.replace(base, sparsity="random", random_per_layer=True, kept_fraction=0.1)
    with pytest.raises(ValueError, match=r"argument `sparsity`: expected one of"):
        dataclasses.replace(base, sparsity="lottery")
    assert config_lib.ExperimentConfig(
        dataset="digits", model="resnet32", epochs=1, sparsity="dense").dense
