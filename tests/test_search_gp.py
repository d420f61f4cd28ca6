"""Tests of ssc_tf/architectures.py and ssc_tf.search_gp: counts without Keras equal the built
models', and every candidate the search lists hits its target, in the stated order."""

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssc_tf import SSCPattern
from ssc_tf import architectures
from ssc_tf import flagfile
from ssc_tf import models
from ssc_tf import search_gp
from ssc_tf.data import datasets
from ssc_tf.models.report import model_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Importing defines no flags: the module defines them only when run as a command.


def _config(name):
    return flagfile.load(name)


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "ssc_tf.search_gp", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def _kwargs(candidate, dataset):
    return dict(num_classes=datasets.get(dataset).num_classes,
                input_shape=datasets.get(dataset).input_shape, g=candidate.g, p=candidate.p,
                **({"p_1x1": candidate.p_1x1} if candidate.p_1x1 else {}))


def _totals(stats):
    return stats.live_params, stats.dense_params, stats.macs, stats.dense_macs


def _rule_key(candidate, target):
    """The ranking rule as the tool's docstring states it, written out independently."""
    return ([-round(k, 3) for k in candidate.kept_per_width],
            abs(candidate.kept_fraction - target), candidate.macs,
            candidate.g, candidate.p, candidate.p_1x1)


def test_spec_tables_give_the_width_lists():
    assert architectures.MODELS == ("vgg19", "resnet32", "resnet50")
    assert architectures.widths("vgg19") == (64, 128, 256, 512)
    assert architectures.widths("resnet32") == (32, 64, 128)
    assert architectures.widths("resnet50") == (64, 128, 256, 512)
    assert architectures.widths_1x1("resnet50") == (64, 128, 256, 512, 1024, 2048)
    assert architectures.widths_1x1("vgg19") == architectures.widths_1x1("resnet32") == ()
    with pytest.raises(ValueError, match=r"`model`.*Received: model='resnet18'"):
        architectures.widths("resnet18")


def test_walks_give_the_networks_nodes():
    vgg = architectures.network("vgg19", (32, 32, 3))
    pools = [n for n in vgg.nodes if isinstance(n, architectures.Pool)]
    assert [(n.name, n.output_size) for n in pools] == [
        ("block1_pool", (16, 16)), ("block2_pool", (8, 8)), ("block3_pool", (4, 4)),
        ("block4_pool", (2, 2))]
    assert vgg.nodes[0].conv.setting is None and vgg.nodes[1].conv.setting == (
        architectures.GP, 64)
    assert (vgg.classifier.name, vgg.classifier.pool_name, vgg.classifier.in_features) == (
        "logits", "pool", 512)

    resnet32 = architectures.network("resnet32", (32, 32, 3))
    blocks_ = [n for n in resnet32.nodes if isinstance(n, architectures.ResidualBlock)]
    assert len(blocks_) == 15 and {b.kind for b in blocks_} == {architectures.BASIC}
    assert [b.name for b in blocks_ if b.shortcut] == ["stage2_block1", "stage3_block1"]
    shortcut = blocks_[5].shortcut
    assert (shortcut.conv.name, shortcut.relu, shortcut.conv.kernel_size, shortcut.conv.strides,
            shortcut.conv.in_channels, shortcut.conv.filters, shortcut.conv.output_size,
            shortcut.conv.setting) == ("stage2_block1_shortcut_conv", False, 1, 2, 32, 64,
                                       (16, 16), (architectures.GP, 64))
    assert (blocks_[5].add_name, blocks_[5].out_name) == ("stage2_block1_add",
                                                          "stage2_block1_out")

    resnet50 = architectures.network("resnet50", (224, 224, 3))
    stem, stem_pool, first = resnet50.nodes[:3]
    assert (stem.conv.name, stem.conv.kernel_size, stem.conv.strides, stem.conv.output_size,
            stem.conv.setting) == ("stem_conv", 7, 2, (112, 112), None)
    assert (stem_pool.name, stem_pool.output_size) == ("stem_pool", (56, 56))
    assert [(n.conv.name, n.conv.kernel_size, n.conv.setting) for n in first.layers] == [
        ("stage1_block1_1_conv", 1, (architectures.P_1X1, 64)),
        ("stage1_block1_2_conv", 3, (architectures.GP, 64)),
        ("stage1_block1_3_conv", 1, (architectures.P_1X1, 256))]
    assert first.kind == architectures.BOTTLENECK and first.shortcut.conv.setting == (
        architectures.P_1X1, 256)
    assert resnet50.classifier.in_features == 2048
    assert resnet50.conv_layers[-1].output_size == (7, 7)


def test_a_1x1_convolution_takes_p_only():
    layers = {l.name: l for l in architectures.conv_layers("resnet32", (32, 32, 3))}
    settings = architectures.settings_of("resnet32", (2, 1, 64), (2, None, 32))
    assert architectures.layer_gp(layers["stage3_block1_shortcut_conv"], settings) == (None, 32)
    assert architectures.layer_gp(layers["stage3_block1_1_conv"], settings) == (64, 32)
    # A dense width's shortcut is dense; the stem always is.
    assert architectures.layer_gp(layers["stage2_block1_shortcut_conv"], settings) == (1, None)
    assert architectures.layer_gp(layers["stem_conv"], settings) == (1, None)
    with pytest.raises(ValueError, match=r"`p` of model 'resnet32': width 128 has a 1 x 1 "
                                         r"convolution \(stage3_block1_shortcut_conv\)"):
        architectures.count("resnet32", 10, (32, 32, 3), (2, 1, 64), (2, None, None))


def test_architectures_config_and_flagfiles_start_no_tensorflow_nor_read_a_widths_module():
    code = ("import sys; import ssc_tf.architectures, ssc_tf.config, ssc_tf.flagfile; "
            "print(sorted({'tensorflow', 'keras', 'ssc_tf.widths'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_candidate_is_within_tolerance_and_counted_exactly():
    target, tolerance = 0.08, 0.004
    candidates = search_gp.search("resnet32", target, tolerance, dataset="cifar100", top=15)
    assert len(candidates) == 15
    for c in candidates:
        assert abs(c.kept_fraction - target) <= tolerance
        fast = architectures.count("resnet32", **_kwargs(c, "cifar100"))
        assert (c.live_params, c.dense_params, c.macs, c.dense_macs) == _totals(fast)


def test_search_counts_the_shortcuts_as_p_only():
    candidate = search_gp.search("resnet32", 0.08, dataset="cifar100", g_range=(2, 64), top=1)[0]
    g, p = candidate.g[1], candidate.p[1]
    # Width 64: nine 3 x 3 convolutions 64 -> 64, one 32 -> 64 (stride 2), the 1 x 1 shortcut.
    live = (9 * SSCPattern(64, 64, 3, g, p).live_params + SSCPattern(32, 64, 3, g, p).live_params
            + SSCPattern(32, 64, 1, None, p).live_params)
    dense = 9 * 9 * 64 * 64 + 9 * 32 * 64 + 32 * 64
    assert candidate.kept_per_width[1] == live / dense


@pytest.mark.slow
@pytest.mark.parametrize("model,dataset,target", [
    ("resnet32", "cifar100", 0.05),
    ("vgg19", "cifar10", 0.1),
])
def test_best_candidate_equals_the_keras_models_counts(model, dataset, target):
    for c in search_gp.search(model, target, dataset=dataset, top=1):
        stats = model_stats(models.build(model, **_kwargs(c, dataset)))
        assert (c.live_params, c.dense_params, c.macs, c.dense_macs) == _totals(stats)
        assert abs(stats.kept_fraction - target) <= 0.005


def _brute_force(target, tolerance, monotone, values):
    """Every setting of resnet32 over `values` counted with architectures.count, ranked."""
    layers = architectures.conv_layers("resnet32", (32, 32, 3))
    found = []
    for g in itertools.product(values, repeat=3):
        for p in itertools.product(values, repeat=3):
            if monotone and (list(g) != sorted(g) or list(p) != sorted(p)):
                continue
            counts = architectures.count("resnet32", 10, (32, 32, 3), g, p)
            if abs(counts.kept_fraction - target) > tolerance:
                continue
            settings = architectures.settings_of("resnet32", g, p)
            kept = tuple(
                sum(architectures.live_params(l.in_channels, l.filters, l.kernel_size,
                                              *architectures.layer_gp(l, settings))
                    for l in layers if l.setting == (architectures.GP, w))
                / sum(l.dense_params for l in layers if l.setting == (architectures.GP, w))
                for w in architectures.widths("resnet32")
            )
            found.append(search_gp.Candidate(
                model="resnet32", g=g, p=p, p_1x1=(), widths=("32", "64", "128"),
                kept_per_width=kept, **dataclasses.asdict(counts)))
    return sorted(found, key=lambda c: _rule_key(c, target))


@pytest.mark.parametrize("monotone", [True, False])
def test_ranking_is_the_stated_rule_over_the_whole_space(monotone):
    target, tolerance = 0.3, 0.03
    expected = _brute_force(target, tolerance, monotone, values=(2, 3, 4))
    assert len(expected) >= 50
    found = search_gp.search("resnet32", target, tolerance, g_range=(2, 4), p_range=(2, 4),
                             monotone=monotone, top=1000)
    assert found == expected
    keys = [_rule_key(c, target) for c in found]
    assert keys == sorted(keys)


def test_ranking_prunes_early_widths_least():
    candidates = search_gp.search("vgg19", 0.05, top=20)
    keys = [_rule_key(c, 0.05) for c in candidates]
    assert keys == sorted(keys)
    best = candidates[0].kept_per_width
    assert best[0] == best[1] == 1.0 and best[2] > best[3]


def test_monotone_keeps_g_and_p_non_decreasing_with_the_width():
    for c in search_gp.search("resnet50", 0.3, top=10):
        assert list(c.g) == sorted(c.g) and list(c.p) == sorted(c.p)
        assert list(c.p_1x1) == sorted(c.p_1x1)


def test_dense_stages_keep_the_first_widths_dense():
    for c in search_gp.search("vgg19", 0.08, dense_stages=2, g_range=(2, 64), top=10):
        assert c.g[:2] == (1, 1) and c.kept_per_width[:2] == (1.0, 1.0)
        assert all(g > 1 for g in c.g[2:])
    # resnet50's ranking order starts 1x1:64, 3x3:64, 1x1:256; monotone, a dense 1x1:256
    # makes 1x1:128 dense too.
    for c in search_gp.search("resnet50", 0.3, dense_stages=3, top=5):
        assert c.widths[:3] == ("1x1:64", "3x3:64", "1x1:256")
        assert c.p_1x1[:3] == (1, 1, 1) and c.g[0] == 1
        assert c.kept_per_width[:3] == (1.0, 1.0, 1.0)


def test_ranges_are_respected():
    candidates = search_gp.search("resnet32", 0.09, 0.01, g_range=(4, 16), p_range=(3, 8),
                                  monotone=False, top=50)
    assert len(candidates) == 50
    for c in candidates:
        assert all(4 <= g <= 16 for g in c.g) and all(3 <= p <= 8 for p in c.p)
    assert search_gp.grid_values((7, 20)) == (7, 8, 9, 10, 11, 12, 15, 16, 19, 20)


def test_known_paper_setting_is_found():
    config = _config("cifar100_resnet32_5pct.cfg")
    exact = architectures.count(config.model, **config.model_kwargs()).kept_fraction
    assert round(exact, 4) == 0.0804
    candidates = search_gp.search("resnet32", exact, 0.0, dataset="cifar100", g_range=(2, 64),
                                  p_range=(2, 64), top=100)
    assert all(c.kept_fraction == exact for c in candidates)
    assert (config.g, config.p) in [(c.g, c.p) for c in candidates]


def test_written_flagfile_round_trips_with_the_predicted_fraction(tmp_path):
    path = tmp_path / "searched.cfg"
    result = _run("--model=resnet32", "--dataset=cifar100", "--target=0.05", "--top=3",
                  "--rank=2", f"--write_flagfile={path}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    chosen = report["candidates"][1]
    assert report["written_flagfile"]["rank"] == 2
    config = flagfile.load(path)
    assert (list(config.g), list(config.p)) == (chosen["g"], chosen["p"])
    assert config.ticket == 5 and not config.dense
    stats = model_stats(models.build(config.model, **config.model_kwargs()))
    assert stats.kept_fraction == chosen["kept_fraction"]
    assert (stats.live_params, stats.macs) == (chosen["live_params"], chosen["macs"])
    paper = _config("cifar100_resnet32_5pct.cfg")
    for name in search_gp.SCHEDULE:
        assert getattr(config, name) == getattr(paper, name), name


def test_written_flagfile_keeps_the_base_flagfiles_train_examples(tmp_path):
    path = tmp_path / "digits.cfg"
    base = os.path.join(flagfile.CONFIGS_DIR, "digits_300_resnet32_10pct.cfg")
    result = _run("--model=resnet32", "--dataset=digits", "--target=0.1",
                  f"--base_flagfile={base}",
                  f"--write_flagfile={path}")
    assert result.returncode == 0, result.stderr
    config = flagfile.load(path)
    assert (config.dataset, config.train_examples, config.batch_size) == ("digits", 300, 32)


def test_written_resnet50_flagfile_keeps_the_predicted_fraction(tmp_path):
    path = tmp_path / "r50.cfg"
    base = os.path.join(flagfile.CONFIGS_DIR, "imagenet_resnet50_20pct.cfg")
    result = _run("--model=resnet50", "--target=0.3", f"--base_flagfile={base}",
                  f"--write_flagfile={path}", "--json")
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout)["candidates"][0]
    config = flagfile.load(path)
    assert list(config.p_1x1) == chosen["p_1x1"] and config.ticket == 30
    assert config.epochs == 150
    counts = architectures.count(config.model, **config.model_kwargs())
    assert counts.kept_fraction == chosen["kept_fraction"]
    assert (counts.macs, counts.live_params) == (chosen["macs"], chosen["live_params"])


def test_table_prints_exact_fractions_and_counts():
    result = _run("--model=resnet32", "--dataset=cifar100", "--target=0.0798", "--top=3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("resnet32: kept fraction 0.0798 +- 0.005")
    assert len(lines) == 2 + 3 and lines[2].split()[0] == "1"
    best = search_gp.search("resnet32", 0.0798, dataset="cifar100", top=1)[0]
    assert f"{best.live_params:,}" in lines[2] and f"{best.kept_fraction:.6g}" in lines[2]


# A search of a few candidates, over in a moment.
_SMALL_SEARCH = ["--model=resnet32", "--target=0.3", "--tolerance=0.03", "--g_range=2,4",
                 "--p_range=2,4"]


# How the command line's messages spell a range flag's allowed values.
_RANGE = "expected two integers MIN,MAX with 1 <= MIN <= MAX"


@pytest.mark.parametrize("args,message", [
    (["--model=vgg20", "--target=0.05"], "--model"),
    (["--model=vgg19", "--target=1.5"],
     "Error: Invalid value for flag --target: expected a number in (0, 1]. "
     "Received: target=1.5"),
    (["--model=vgg19", "--target=0.05", "--tolerance=1"],
     "Invalid value for flag --tolerance: expected a number in [0, 1). Received: tolerance=1.0"),
    (["--model=vgg19", "--target=0.05", "--g_range=8,4"],
     f"Invalid value for flag --g_range: {_RANGE}. Received: g_range=8,4"),
    (["--model=vgg19", "--target=0.05", "--g_range=0,4"],
     f"Invalid value for flag --g_range: {_RANGE}. Received: g_range=0,4"),
    (["--model=vgg19", "--target=0.05", "--p_range=2,4,8"],
     f"Invalid value for flag --p_range: {_RANGE}. Received: p_range=2,4,8"),
    (["--model=vgg19", "--target=0.05", "--p_range=x"],
     f"Invalid value for flag --p_range: {_RANGE}. Received: p_range=x"),
    (["--model=vgg19", "--target=0.05", "--dense_stages=5"],
     "Invalid value for flag --dense_stages: expected an integer in [0, 4] (model 'vgg19' has 4 "
     "widths: 64, 128, 256, 512). Received: dense_stages=5"),
    (["--model=vgg19", "--target=0.05", "--g_range=128,256"],
     "Invalid values for flags --g_range and --p_range: they leave width 64 no valid"),
    (["--model=vgg19", "--target=0.05", "--top=0"],
     "Invalid value for flag --top: expected an integer >= 1. Received: top=0"),
    (["--model=vgg19", "--target=0.05", "--rank=0"],
     "Invalid value for flag --rank: expected an integer >= 1. Received: rank=0"),
    (["--model=resnet32", "--target=0.001", "--tolerance=0.0001"],
     "the nearest found keeps 0.01969"),
    (_SMALL_SEARCH + ["--write_flagfile=x.cfg", "--rank=99"], "--rank: only 52 candidates"),
    (_SMALL_SEARCH + ["--write_flagfile=TMP"], "--write_flagfile: cannot write '{tmp}' (Is a "
                                               "directory). Pass a file path"),
    (_SMALL_SEARCH + ["--write_flagfile=TMP/missing/x.cfg"],
     "--write_flagfile: cannot write '{tmp}/missing/x.cfg' (No such file or directory)"),
    (_SMALL_SEARCH + ["--write_flagfile=TMP/file/x.cfg"],
     "--write_flagfile: cannot write '{tmp}/file/x.cfg' (Not a directory)"),
])
def test_bad_input_fails_with_one_line_naming_the_flag(args, message, tmp_path):
    (tmp_path / "file").write_text("")
    result = _run(*[a.replace("=x.cfg", f"={tmp_path}/x.cfg").replace("=TMP", f"={tmp_path}")
                    for a in args])
    message = message.format(tmp=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
    if "--model=vgg20" not in args:
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(model="alexnet", target=0.1),
     "Invalid value for argument `model`: expected one of ('vgg19', 'resnet32', 'resnet50'). "
     "Received: model='alexnet'"),
    (dict(model="vgg19", target=0.1, dataset="mnist"),
     "Invalid value for argument `dataset`: expected one of ('cifar10', "),
    (dict(model="vgg19", target=0), "argument `target`: expected a number in (0, 1]. "
                                    "Received: target=0"),
    (dict(model="vgg19", target=1.5), "argument `target`: expected a number in (0, 1]"),
    (dict(model="vgg19", target="0.1"), "argument `target`: expected a number in (0, 1]"),
    (dict(model="vgg19", target=True), "argument `target`: expected a number in (0, 1]"),
    (dict(model="vgg19", target=0.1, tolerance=-1),
     "argument `tolerance`: expected a number in [0, 1). Received: tolerance=-1"),
    (dict(model="vgg19", target=0.1, tolerance=1),
     "argument `tolerance`: expected a number in [0, 1)"),
    (dict(model="vgg19", target=0.1, g_range=(8, 4)),
     "Invalid value for argument `g_range`: expected two integers MIN,MAX with "
     "1 <= MIN <= MAX. Received: g_range=8,4"),
    (dict(model="vgg19", target=0.1, g_range=(0, 4)), "argument `g_range`"),
    (dict(model="vgg19", target=0.1, p_range=(2.0, 4)), "argument `p_range`"),
    (dict(model="vgg19", target=0.1, p_range=(2, 4, 8)), "argument `p_range`"),
    (dict(model="vgg19", target=0.1, p_range=4), "argument `p_range`"),
    (dict(model="vgg19", target=0.1, p_range=(True, 4)), "argument `p_range`"),
    (dict(model="vgg19", target=0.1, g_range=(128, 256)),
     "Invalid values for arguments `g_range` and `p_range`: they leave width 64 no valid"),
    (dict(model="vgg19", target=0.1, dense_stages=5),
     "Invalid value for argument `dense_stages`: expected an integer in [0, 4] (model 'vgg19' "
     "has 4 widths: 64, 128, 256, 512). Received: dense_stages=5"),
    (dict(model="vgg19", target=0.1, dense_stages=-1), "argument `dense_stages`"),
    (dict(model="vgg19", target=0.1, dense_stages=1.0), "argument `dense_stages`"),
    (dict(model="vgg19", target=0.1, top=0),
     "Invalid value for argument `top`: expected an integer >= 1. Received: top=0"),
    (dict(model="vgg19", target=0.1, top=2.0), "argument `top`"),
    (dict(model="vgg19", target=0.1, top=True), "argument `top`"),
])
def test_search_raises_value_errors_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError) as error:
        search_gp.search(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_search_takes_numpy_integers_and_lists_as_ranges():
    found = search_gp.search("resnet32", 0.3, 0.03, g_range=[np.int64(2), np.int64(4)],
                             p_range=(2, np.int32(4)), dense_stages=np.int64(0),
                             top=np.int64(3))
    assert found == search_gp.search("resnet32", 0.3, 0.03, g_range=(2, 4), p_range=(2, 4),
                                     top=3)
