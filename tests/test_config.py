"""Tests of the experiment config: ExperimentConfig's checks, the flags generated from it, the
flagfile parser, and every packaged config."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from ssc_tf import config
from ssc_tf import experiment_flags
from ssc_tf import flagfile

CONFIGS = pathlib.Path(flagfile.CONFIGS_DIR)
ROOT = pathlib.Path(__file__).resolve().parents[1]

# The supplement's tables (docs/supplement.md), transcribed independently of the flagfiles:
# file stem -> (g, p[, p_1x1]).
SSC_ROWS = {
    "cifar10_vgg19_10pct": ((1, 2, 4, 16), (1, 2, 2, 2)),
    "cifar10_vgg19_5pct": ((1, 1, 4, 16), (1, 2, 4, 16)),
    "cifar10_vgg19_2pct": ((1, 4, 8, 64), (1, 4, 8, 25)),
    "cifar100_vgg19_10pct": ((1, 1, 2, 10), (1, 2, 2, 15)),
    "cifar100_vgg19_5pct": ((1, 1, 3, 30), (1, 2, 4, 30)),
    "cifar100_vgg19_2pct": ((1, 4, 8, 64), (1, 4, 8, 25)),
    "tinyimagenet_vgg19_10pct": ((1, 1, 2, 10), (1, 2, 2, 15)),
    "tinyimagenet_vgg19_5pct": ((1, 1, 3, 35), (1, 2, 4, 35)),
    "tinyimagenet_vgg19_2pct": ((1, 4, 8, 64), (1, 4, 12, 40)),
    "cifar10_resnet32_10pct": ((2, 4, 15), (2, 4, 4)),
    "cifar10_resnet32_5pct": ((2, 8, 64), (2, 8, 32)),
    "cifar10_resnet32_2pct": ((16, 32, 64), (8, 32, 64)),
    "cifar100_resnet32_10pct": ((2, 4, 16), (2, 4, 4)),
    "cifar100_resnet32_5pct": ((2, 6, 64), (2, 16, 32)),
    "cifar100_resnet32_2pct": ((16, 32, 64), (16, 64, 64)),
    "tinyimagenet_resnet32_15pct": ((1, 2, 11), (1, 4, 10)),
    "tinyimagenet_resnet32_10pct": ((2, 4, 16), (2, 4, 8)),
    "tinyimagenet_resnet32_5pct": ((2, 10, 64), (2, 16, 32)),
    "cifar100_resnet32_ablation_a": ((1, 6, 16), (2, 6, 6)),
    "cifar100_resnet32_ablation_b": ((2, 6, 15), (2, 3, 4)),
    "cifar100_resnet32_ablation_c": ((2, 4, 16), (2, 4, 5)),
    "cifar100_resnet32_ablation_d": ((1, 4, 15), (2, 16, 16)),
    "cifar100_resnet32_ablation_e": ((2, 4, 19), (2, 4, 4)),
    "cifar100_resnet32_ablation_f": ((4, 8, 8), (4, 8, 9)),
    "imagenet_resnet50_40pct": ((1, 1, 4, 8), (1, 2, 2, 2), (1, 1, 2, 2, 2, 2)),
    "imagenet_resnet50_20pct": ((1, 1, 4, 8), (1, 2, 4, 8), (1, 1, 4, 4, 8, 8)),
}
DENSE = {
    "cifar10_vgg19_dense", "cifar10_resnet32_dense", "cifar100_vgg19_dense",
    "cifar100_resnet32_dense", "tinyimagenet_vgg19_dense", "tinyimagenet_resnet32_dense",
    "imagenet_resnet50_dense",
}
# The paper's schedules (docs/training.md), by dataset flag value: (epochs, lr_boundaries).
SCHEDULES = {
    "cifar10": (250, (100, 150, 200)),
    "cifar100": (250, (100, 150, 200)),
    "tinyimagenet": (350, (150, 250, 300)),
    "imagenet2012": (150, (50, 100)),
}
# Every flagfile spells these out instead of leaning on the flag defaults.
SCHEDULE_FLAGS = (
    "dataset", "model", "epochs", "lr_boundaries", "batch_size", "learning_rate", "lr_decay",
    "momentum", "weight_decay", "validation_split", "seed",
)
# The paper's experiments; quickstart.cfg (the README's offline job) and the digits and
# Fashion-MNIST comparisons' configs are tested on their own.
CFG_FILES = sorted(
    p for p in CONFIGS.glob("*.cfg")
    if p.stem != "quickstart" and not p.stem.startswith(("digits_", "fashion_mnist_"))
)


def _write(tmp_path, *lines, name="exp.cfg"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _cifar100_resnet32(**overrides):
    """The cifar100_resnet32_5pct flagfile's lines, with some values replaced or dropped (None)."""
    values = {
        "dataset": "cifar100", "model": "resnet32", "ticket": "5", "g": "2,6,64",
        "p": "2,16,32", "epochs": "250", "lr_boundaries": "100,150,200",
    }
    values.update(overrides)
    return [f"--{name}={value}" for name, value in values.items() if value is not None]


def test_one_flagfile_per_experiment():
    stems = {path.stem for path in CFG_FILES}
    assert len(CFG_FILES) == 33
    assert stems == set(SSC_ROWS) | DENSE
    by_model = {m: sum(f"_{m}_" in s for s in stems) for m in ("vgg19", "resnet32", "resnet50")}
    assert by_model == {"vgg19": 9 + 3, "resnet32": 9 + 6 + 3, "resnet50": 2 + 1}


@pytest.mark.parametrize("path", CFG_FILES, ids=lambda p: p.stem)
def test_flagfile_loads_with_spec_values(path):
    cfg = flagfile.load(path)
    dataset, model = path.stem.split("_")[:2]
    assert cfg.dataset == {"imagenet": "imagenet2012"}.get(dataset, dataset)
    assert cfg.model == model
    assert (cfg.epochs, cfg.lr_boundaries) == SCHEDULES[cfg.dataset]
    assert (cfg.batch_size, cfg.learning_rate, cfg.lr_decay) == (128, 0.1, 0.1)
    assert (cfg.momentum, cfg.weight_decay, cfg.validation_split, cfg.seed) == (0.9, 1e-4, 0.0, 0)
    if path.stem in DENSE:
        assert cfg.dense and cfg.ticket is None
        assert (cfg.g, cfg.p, cfg.p_1x1) == ((), (), ())
        return
    row = SSC_ROWS[path.stem]
    assert not cfg.dense
    assert (cfg.g, cfg.p) == row[:2]
    assert cfg.p_1x1 == (row[2] if model == "resnet50" else ())
    match = re.search(r"_(\d+)pct$", path.stem)
    assert cfg.ticket == (float(match.group(1)) if match else 10.0)  # Ablations: 10 % ticket.


@pytest.mark.parametrize("path", CFG_FILES, ids=lambda p: p.stem)
def test_flagfile_names_its_row_and_spells_out_the_schedule(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert any("validation_split" in line for line in lines if line.startswith("#"))
    names = [line[2:].split("=")[0] for line in lines if line.startswith("--")]
    assert len(names) == len(set(names))
    assert set(SCHEDULE_FLAGS) <= set(names)


def test_flagfile_header_carries_paper_top1():
    header = (CONFIGS / "cifar100_resnet32_5pct.cfg").read_text().splitlines()[0]
    assert "ResNet-32" in header and "CIFAR-100" in header and "67.3" in header
    header = (CONFIGS / "cifar100_resnet32_ablation_e.cfg").read_text().splitlines()[0]
    assert "70.69" in header


def test_quickstart_is_the_cifar10_resnet32_10pct_pattern_on_bundled_digits():
    quick = flagfile.load(CONFIGS / "quickstart.cfg")
    paper = flagfile.load(CONFIGS / "cifar10_resnet32_10pct.cfg")
    assert quick.dataset == "digits"
    assert quick.model_kwargs() == paper.model_kwargs()  # digits: 10 classes, 32x32x3 too.
    assert quick.epochs <= 20 and quick.lr_boundaries


@pytest.mark.parametrize("ticket", [10, 2])
@pytest.mark.parametrize("table, examples, epochs, boundaries", [
    ("digits_resnet32", None, 8, (4, 6)),
    ("digits_300_resnet32", 300, 20, (10, 15)),
])
def test_digits_comparison_configs_take_the_cifar10_resnet32_patterns(
        ticket, table, examples, epochs, boundaries):
    digits = flagfile.load(f"{table}_{ticket}pct")
    paper = flagfile.load(f"cifar10_resnet32_{ticket}pct")
    assert digits.dataset == "digits" and digits.ticket == ticket
    assert digits.model_kwargs() == paper.model_kwargs()
    assert (digits.train_examples, digits.epochs, digits.lr_boundaries) == (
        examples, epochs, boundaries)


def test_fashion_mnist_configs_are_the_cifar10_resnet32_patterns_and_their_dense_twin():
    dense = flagfile.load("fashion_mnist_resnet32_dense")
    assert (dense.dataset, dense.sparsity) == ("fashion_mnist", "dense")
    assert dense.model_kwargs() == flagfile.load("cifar10_resnet32_dense").model_kwargs()
    for ticket in (10, 2):
        sparse = flagfile.load(f"fashion_mnist_resnet32_{ticket}pct")
        paper = flagfile.load(f"cifar10_resnet32_{ticket}pct")
        assert sparse.model_kwargs() == paper.model_kwargs()
        # One protocol: the same schedule and data as the dense twin.
        assert dataclasses.replace(sparse, ticket=None, g=(), p=(), sparsity="dense") == dense
    assert (dense.train_examples, dense.epochs, dense.batch_size, dense.validation_split) == (
        8000, 6, 64, 0.02)


def test_model_kwargs_sparse_and_dense():
    kwargs = flagfile.load(CONFIGS / "tinyimagenet_vgg19_2pct.cfg").model_kwargs()
    assert kwargs == {
        "num_classes": 200, "input_shape": (64, 64, 3),
        "g": (1, 4, 8, 64), "p": (1, 4, 12, 40), "pointwise_layout": "joined", "fan": "dense",
    }
    kwargs = flagfile.load(CONFIGS / "imagenet_resnet50_20pct.cfg").model_kwargs()
    assert kwargs["p_1x1"] == (1, 1, 4, 4, 8, 8)
    assert (kwargs["num_classes"], kwargs["input_shape"]) == (1000, (224, 224, 3))
    kwargs = flagfile.load(CONFIGS / "cifar10_resnet32_dense.cfg").model_kwargs()
    assert kwargs == {
        "num_classes": 10, "input_shape": (32, 32, 3), "g": (1, 1, 1), "p": (None,) * 3,
    }
    kwargs = flagfile.load(CONFIGS / "imagenet_resnet50_dense.cfg").model_kwargs()
    assert (kwargs["g"], kwargs["p"], kwargs["p_1x1"]) == ((1,) * 4, (None,) * 4, (1,) * 6)


def test_dense_ignores_given_g_and_p(tmp_path):
    cfg = flagfile.load(_write(tmp_path, *_cifar100_resnet32(ticket=None), "--sparsity=dense"))
    assert cfg.g == (2, 6, 64)
    assert cfg.model_kwargs()["g"] == (1, 1, 1)
    assert cfg.model_kwargs()["p"] == (None, None, None)


def test_none_parses_to_none(tmp_path):
    cfg = flagfile.load(_write(tmp_path, *_cifar100_resnet32(g="none,2,NONE", p="2,none,3")))
    assert (cfg.g, cfg.p) == ((None, 2, None), (2, None, 3))


def test_defaults_fill_unset_flags(tmp_path):
    cfg = flagfile.load(_write(tmp_path, *_cifar100_resnet32(lr_boundaries=None)))
    assert (cfg.batch_size, cfg.learning_rate, cfg.momentum, cfg.weight_decay) == (
        128, 0.1, 0.9, 1e-4)
    assert (cfg.lr_boundaries, cfg.validation_split, cfg.seed, cfg.p_1x1) == ((), 0.0, 0, ())


def test_misspelled_key_is_named_with_file_and_suggestion(tmp_path):
    path = _write(tmp_path, *_cifar100_resnet32(), "--weight_decy=1e-4")
    with pytest.raises(ValueError, match="unknown flag --weight_decy") as info:
        flagfile.load(path)
    message = str(info.value)
    assert f"{path}:8" in message
    assert "Did you mean --weight_decay?" in message
    assert "p_1x1" in message  # The list of known flags.


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.cfg"):
        flagfile.load(tmp_path / "nope.cfg")


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (["--model=resnet32", "# a comment", "", "--model=vgg19"], r":4: .*already set on line 1"),
        (["g=1,2,3"], r"expected a flag '--name=value'"),
        (["--model=vgg16"], r"--model=vgg16.*vgg19\|resnet32\|resnet50"),
        (["--dataset=mnist"], r"--dataset=mnist.*cifar10"),
        (["--epochs=lots"], r"--epochs=lots"),
    ],
)
def test_bad_lines_raise_naming_flag_and_file(tmp_path, lines, pattern):
    path = _write(tmp_path, *lines)
    with pytest.raises(ValueError, match=pattern) as info:
        flagfile.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"g": "2,6"}, r"--g: model 'resnet32' needs 3 values, one per width \(32, 64, 128\)"),
        ({"p": "2,16,32,4"}, r"--p: model 'resnet32' needs 3 values.*Received 4"),
        ({"g": "0,6,64"}, r"--g: expected integers >= 1 or 'none'"),
        ({"p": "2,x,32"}, r"--p: expected a comma-separated list"),
        ({"g": None}, r"Flag --g is required unless --sparsity=dense"),
        ({"g": "2,none,64", "p": "2,none,32"}, r"--g and --p: at width 64 .* no kernel"),
        ({"p_1x1": "1,1,2,2,2,2"}, r"--p_1x1 applies only to --model=resnet50"),
        ({"ticket": None}, r"--ticket is required unless --sparsity=dense"),
        ({"ticket": "0"}, r"--ticket: expected a number in \(0, 100\]"),
        ({"model": None}, r"--model is required: one of \('vgg19', 'resnet32', 'resnet50'\)"),
        ({"dataset": None}, r"--dataset is required"),
        ({"epochs": None}, r"--epochs is required"),
        ({"lr_boundaries": "100,150,250"}, r"--lr_boundaries: .*epochs=250"),
        ({"lr_boundaries": "150,100"}, r"--lr_boundaries: expected strictly increasing"),
        ({"batch_size": "0"}, r"--batch_size: expected an integer >= 1"),
        ({"validation_split": "1.0"}, r"--validation_split: expected a number in \[0, 1\)"),
        ({"train_examples": "0"}, r"--train_examples: expected an integer >= 1"),
        ({"momentum": "1"}, r"--momentum"),
        ({"lr_decay": "0"}, r"--lr_decay"),
        ({"seed": "-1"}, r"--seed"),
    ],
)
def test_invalid_values_raise_naming_flag(tmp_path, overrides, pattern):
    path = _write(tmp_path, *_cifar100_resnet32(**overrides))
    with pytest.raises(ValueError, match=pattern):
        flagfile.load(path)


@pytest.mark.parametrize(
    "p_1x1, pattern",
    [
        (None, r"--p_1x1 is required for --model=resnet50"),
        ("1,1,2,2,2", r"--p_1x1: model 'resnet50' needs 6 values.*1024, 2048"),
        ("1,1,2,2,2,none", r"--p_1x1: expected a comma-separated list of integers\."),
    ],
)
def test_resnet50_p_1x1_checks(tmp_path, p_1x1, pattern):
    lines = ["--dataset=imagenet2012", "--model=resnet50", "--ticket=40", "--g=1,1,4,8",
             "--p=1,2,2,2", "--epochs=150"]
    if p_1x1 is not None:
        lines.append(f"--p_1x1={p_1x1}")
    with pytest.raises(ValueError, match=pattern):
        flagfile.load(_write(tmp_path, *lines))


def test_dense_ignores_the_ssc_flags_of_a_config(tmp_path):
    # --sparsity=dense on an SSC config trains its dense twin: the comparison's dense row.
    cfg = flagfile.load(_write(tmp_path, *_cifar100_resnet32(), "--sparsity=dense"))
    assert cfg.dense and cfg.ticket == 5
    assert cfg.model_kwargs()["g"] == (1, 1, 1) and cfg.model_kwargs()["p"] == (None,) * 3


def test_direct_construction_validates():
    # A library call names arguments, as Keras does; the flag readers name flags.
    with pytest.raises(ValueError, match=r"argument `model`: expected one of .*model='resnet18'"):
        config.ExperimentConfig(dataset="cifar10", model="resnet18", epochs=1, sparsity="dense")
    with pytest.raises(ValueError, match=r"^Argument `ticket` is required unless `sparsity`=dense"):
        config.ExperimentConfig(dataset="cifar10", model="vgg19", epochs=1, g=[1, 2, 4, 16],
                                p=[1, 2, 2, 2])
    cfg = config.ExperimentConfig(dataset="digits", model="vgg19", epochs=2, g=[1, 2, 4, 16],
                                  p=[1, 2, 2, 2], ticket=10)
    assert cfg.g == (1, 2, 4, 16)  # Lists become tuples: the config stays hashable.
    assert cfg.model_kwargs()["num_classes"] == 10
    assert hash(cfg) == hash(dataclasses.replace(cfg))


def test_define_flags_once_and_from_flags_with_overrides():
    fv = experiment_flags.define_flags(flags.FlagValues())
    assert experiment_flags.define_flags(fv) is fv
    assert sorted(fv) == sorted(
        ["dataset", "model", "g", "p", "p_1x1", "pointwise_layout", "fan", "sparsity",
         "kept_fraction", "random_per_layer", "ticket", "epochs", "batch_size",
         "learning_rate", "lr_boundaries", "lr_decay", "momentum", "weight_decay",
         "validation_split", "train_examples", "seed"]
    )
    assert all(fv[name].help for name in fv)
    # The CLI path: absl reads --flagfile itself; later flags override the file.
    fv(["train", f"--flagfile={CONFIGS / 'cifar10_vgg19_10pct.cfg'}", "--epochs=3",
        "--lr_boundaries=1,2", "--batch_size=8"])
    cfg = experiment_flags.config_from_flags(fv)
    assert (cfg.epochs, cfg.lr_boundaries, cfg.batch_size) == (3, (1, 2), 8)
    assert (cfg.g, cfg.p, cfg.ticket) == ((1, 2, 4, 16), (1, 2, 2, 2), 10.0)


def test_load_flagfile_leaves_global_flags_alone():
    before = set(flags.FLAGS)
    flagfile.load(CONFIGS / "cifar10_vgg19_10pct.cfg")
    assert set(flags.FLAGS) == before


def test_flags_are_generated_from_the_config_fields():
    fv = experiment_flags.define_flags(flags.FlagValues())
    fields = {f.name: f for f in dataclasses.fields(config.ExperimentConfig)}
    assert sorted(fv) == sorted(fields)
    for name, field in fields.items():
        assert fv[name].help.endswith(field.metadata["help"])  # enums prefix their choices
    assert fv["model"].parser.enum_values == list(config.MODELS)
    assert fv["batch_size"].default == 128 and fv["g"].default == []


def test_a_config_name_stands_for_its_packaged_flagfile(tmp_path, monkeypatch):
    assert "cifar100_resnet32_5pct" in flagfile.names() and len(flagfile.names()) == 41
    by_name = flagfile.load("cifar100_resnet32_5pct")
    assert by_name == flagfile.load(CONFIGS / "cifar100_resnet32_5pct.cfg")
    assert flagfile.load("cifar100_resnet32_5pct.cfg") == by_name
    # A file in the working directory wins over a packaged config of the same name.
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, *_cifar100_resnet32(seed="7"), name="cifar100_resnet32_5pct.cfg")
    assert flagfile.load("cifar100_resnet32_5pct.cfg").seed == 7
    with pytest.raises(FileNotFoundError, match=r"'cifar100_resnet32_5pc' is neither a file nor "
                       r"the name of a packaged config\. Did you mean 'cifar100_resnet32_5pct'"):
        flagfile.load("cifar100_resnet32_5pc")


def test_command_lines_take_a_config_name_as_flagfile():
    fv = experiment_flags.define_flags(flags.FlagValues())
    flagfile.parse_flags(["train", "--flagfile=quickstart", "--epochs=1", "--lr_boundaries="],
                         flag_values=fv)
    cfg = experiment_flags.config_from_flags(fv)
    assert (cfg.dataset, cfg.epochs) == ("digits", 1)
    fv = experiment_flags.define_flags(flags.FlagValues())
    flagfile.parse_flags(["train", "--flagfile", "cifar10_vgg19_2pct", "--epochs=3",
                          "--lr_boundaries="],
                         flag_values=fv)
    cfg = experiment_flags.config_from_flags(fv)
    assert (cfg.dataset, cfg.ticket, cfg.epochs) == ("cifar10", 2, 3)
    fv = experiment_flags.define_flags(flags.FlagValues())
    with pytest.raises(flags.IllegalFlagValueError, match="'nope' is neither a file"):
        flagfile.parse_flags(["train", "--flagfile=nope"], flag_values=fv)


# The design's command, `python -m ssc_tf.train --flagfile=configs/cifar100_resnet32_5pct.cfg`,
# from the repository root, where configs/ links to ssc_tf/configs/.
DESIGN_SPELLINGS = ("configs/cifar100_resnet32_5pct.cfg", "./configs/cifar100_resnet32_5pct.cfg")


@pytest.mark.parametrize("spelling", DESIGN_SPELLINGS)
def test_the_designs_configs_spelling_parses_from_the_repository_root(spelling, monkeypatch):
    monkeypatch.chdir(ROOT)
    fv = experiment_flags.define_flags(flags.FlagValues())
    flagfile.parse_flags(["train", f"--flagfile={spelling}"], flag_values=fv)
    cfg = experiment_flags.config_from_flags(fv)
    assert cfg == flagfile.load(CONFIGS / "cifar100_resnet32_5pct.cfg")
    assert (cfg.dataset, cfg.model, cfg.ticket) == ("cifar100", "resnet32", 5)
    assert (cfg.g, cfg.p) == ((2, 6, 64), (2, 16, 32))


@pytest.mark.slow
def test_the_designs_train_command_checks_its_flags_from_the_repository_root():
    # The command line itself, up to absl's --only_check_args (about 6 s each: TF's import).
    for spelling in DESIGN_SPELLINGS:
        done = subprocess.run(
            [sys.executable, "-m", "ssc_tf.train", f"--flagfile={spelling}", "--only_check_args"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{spelling}: {done.stderr[-2000:]}"
