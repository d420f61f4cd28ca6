"""Tests of ssc_tf.compare and ssc_tf.published: table discovery, the runs' command lines,
skipping and resuming, a failed run among finished ones, the table's numbers and files, the
root's other finished seeds and earlier rows in the table, the CLI's errors, and one real run
of SSC and its dense twin on digits."""

import json
import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

from ssc_tf import compare
from ssc_tf import flagfile
from ssc_tf import published

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A digits config named like a paper table's row, and the schedule of a smoke run.
DIGITS = "digits_resnet32_10pct"
SMOKE = ["--epochs=2", "--lr_boundaries="]

# Stands in for the interpreter: `-m ssc_tf.<step> --flag=value ...` logs "<step> <model_dir>"
# to $FAKE_CALLS; train fails for the seeds of $FAKE_FAIL_SEEDS as ssc_tf.train does (one
# "Error:" line, status 1), else writes the run.json of its flags as ssc_tf.train does
# (`ssc_tf.model_dir.write_run`); evaluate writes an eval.json with the top-1 of
# $FAKE_TOP1[seed]; convert_tflite writes a 2 MB file.
FAKE_PYTHON = """#!{python}
import dataclasses, json, os, sys
step = sys.argv[2].rsplit(".", 1)[1]
args = dict(arg[2:].split("=", 1) for arg in sys.argv[3:] if "=" in arg)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(step + " " + args["model_dir"] + "\\n")
state = os.path.join(args["model_dir"], "fake.json")
if step == "train":
    from absl import flags
    from ssc_tf import experiment_flags, flagfile
    print("Epoch 1/2 ...")
    if args["seed"] in os.environ.get("FAKE_FAIL_SEEDS", "").split(","):
        sys.exit("Error: The training loss became nan at epoch 1, batch 3.")
    values = experiment_flags.define_flags(flags.FlagValues())
    for name in ("model_dir", "data_dir"):
        flags.DEFINE_string(name, None, "", flag_values=values)
    flagfile.parse_flags(["train", *sys.argv[3:]], values)
    config = experiment_flags.config_from_flags(values)
    os.makedirs(args["model_dir"], exist_ok=True)
    with open(os.path.join(args["model_dir"], "run.json"), "w") as f:
        json.dump({{"config": dataclasses.asdict(config), "data_dir": values.data_dir,
                   "mixed_precision": "none"}}, f)
    with open(state, "w") as f:
        json.dump({{"epochs": int(args["epochs"]), "seed": args["seed"]}}, f)
elif step == "evaluate":
    with open(state) as f:
        run = json.load(f)
    result = {{"epoch": run["epochs"], "top1": json.loads(os.environ["FAKE_TOP1"])[run["seed"]],
              "kept_fraction": 0.15, "live_params": 150, "dense_params": 1000,
              "macs": 1000000, "dense_macs": 4000000}}
    with open(os.path.join(args["model_dir"], "eval.json"), "w") as f:
        json.dump(result, f)
else:
    with open(args["output"], "wb") as f:
        f.write(bytes(2000000))
"""


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "ssc_tf.compare", *args], capture_output=True, text=True,
        cwd=cwd, env={**os.environ, "PYTHONPATH": ROOT}, timeout=600)


@pytest.fixture
def digits_config(tmp_path):
    """A copy of the quickstart config (digits, SSC 10 % ticket) under a table row's name."""
    path = tmp_path / f"{DIGITS}.cfg"
    with open(flagfile.resolve("quickstart"), encoding="utf-8") as f:
        path.write_text(f.read(), encoding="utf-8")
    return str(path)


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """The fake interpreter's path; its calls are read back with `calls()`."""
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    calls.touch()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_TOP1", json.dumps({"0": 0.90, "1": 0.92, "2": 0.94}))
    monkeypatch.setenv("FAKE_FAIL_SEEDS", "")
    return str(path)


def _calls(tmp_path):
    return (tmp_path / "calls.txt").read_text(encoding="utf-8").splitlines()


def test_tables_are_the_budget_configs_of_one_prefix_largest_first():
    names = ["digits_resnet32_2pct", "digits_resnet32_10pct", "cifar10_vgg19_dense",
             "quickstart", "cifar100_resnet32_ablation_a", "x_12.5pct"]
    assert compare.tables(names) == {
        "digits_resnet32": ["digits_resnet32_10pct", "digits_resnet32_2pct"],
        "x": ["x_12.5pct"],
    }
    packaged = compare.tables()
    assert packaged["cifar10_resnet32"] == [
        "cifar10_resnet32_10pct", "cifar10_resnet32_5pct", "cifar10_resnet32_2pct"]
    assert packaged["tinyimagenet_resnet32"] == [
        "tinyimagenet_resnet32_15pct", "tinyimagenet_resnet32_10pct",
        "tinyimagenet_resnet32_5pct"]
    assert packaged["imagenet_resnet50"] == ["imagenet_resnet50_40pct", "imagenet_resnet50_20pct"]
    assert sorted(packaged) == sorted({compare.table_of(n) for n in flagfile.names()
                                       if n.endswith("pct")})
    assert compare.table_of("cifar100_resnet32_ablation_a") == "cifar100_resnet32_ablation_a"


def test_dry_run_prints_each_runs_three_commands_as_one_line():
    result = _cli("--configs=cifar10_resnet32", "--methods=snip,ssc,dense", "--seeds=0,1",
                  "--root=runs", "--data_dir=/data", "--train_flags=--epochs=2 --lr_boundaries=",
                  "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "python -m ssc_tf.train --flagfile=cifar10_resnet32_dense --sparsity=dense --seed=0 "
        "--model_dir=runs/cifar10_resnet32/dense/seed-0 --data_dir=/data --epochs=2 "
        "--lr_boundaries= && python -m ssc_tf.evaluate "
        "--model_dir=runs/cifar10_resnet32/dense/seed-0 && python -m ssc_tf.convert_tflite "
        "--model_dir=runs/cifar10_resnet32/dense/seed-0 "
        "--output=runs/cifar10_resnet32/dense/seed-0/model.tflite --overwrite")

    def line(flagfile, method, seed, row):
        run_dir = f"runs/{row}/{method}/seed-{seed}"
        return (f"python -m ssc_tf.train --flagfile={flagfile} --sparsity={method} "
                f"--seed={seed} --model_dir={run_dir} --data_dir=/data --epochs=2 "
                f"--lr_boundaries= && python -m ssc_tf.evaluate --model_dir={run_dir} && "
                f"python -m ssc_tf.convert_tflite --model_dir={run_dir} "
                f"--output={run_dir}/model.tflite --overwrite")

    expected = []
    for seed in (0, 1):
        expected.append(line("cifar10_resnet32_dense", "dense", seed, "cifar10_resnet32"))
        for budget in (10, 5, 2):
            for method in ("ssc", "snip"):
                name = f"cifar10_resnet32_{budget}pct"
                expected.append(line(name, method, seed, name))
    assert lines == expected


def test_the_dense_twin_of_a_flagfile_is_its_tables_dense_file_beside_it(tmp_path,
                                                                         digits_config):
    dense = tmp_path / "digits_resnet32_dense.cfg"
    dense.write_text("".join(
        line for line in open(digits_config, encoding="utf-8")
        if not line.startswith(("--ticket", "--g=", "--p="))) + "--sparsity=dense\n")
    runs = compare.plan([digits_config], methods=["dense", "ssc"], seeds=[3],
                        root="r", train_flags=SMOKE)
    assert [(r.row, r.method, r.seed, r.flagfile, r.model_dir) for r in runs] == [
        ("digits_resnet32", "dense", 3, str(dense), os.path.join("r", "digits_resnet32",
                                                                 "dense", "seed-3")),
        (DIGITS, "ssc", 3, digits_config, os.path.join("r", DIGITS, "ssc", "seed-3")),
    ]


def test_finished_runs_are_skipped_and_the_others_resume(tmp_path, digits_config,
                                                         fake_python):
    root = tmp_path / "root"
    runs = compare.plan([digits_config], methods=["ssc"], seeds=[0, 1, 2, 3],
                        root=str(root), train_flags=SMOKE)
    finished, unfinished, untrained, unconverted = (r.model_dir for r in runs)
    for model_dir, epoch in ((finished, 2), (unfinished, 1), (unconverted, 2)):
        os.makedirs(model_dir)
        with open(os.path.join(model_dir, "eval.json"), "w") as f:
            json.dump({"epoch": epoch, "top1": 0.5}, f)
        with open(os.path.join(model_dir, "fake.json"), "w") as f:
            json.dump({"epochs": 2, "seed": "0"}, f)
    with open(os.path.join(finished, "model.tflite"), "wb") as f:
        f.write(b"tflite")
    with open(os.path.join(unfinished, "model.tflite"), "wb") as f:
        f.write(b"tflite")
    progress = []
    outcomes = compare.execute(runs, python=fake_python, out=progress.append)
    assert _calls(tmp_path) == [
        f"train {unfinished}", f"evaluate {unfinished}", f"convert_tflite {unfinished}",
        f"train {untrained}", f"evaluate {untrained}", f"convert_tflite {untrained}",
        f"convert_tflite {unconverted}",
    ]
    assert progress[0] == f"[1/4] skip {DIGITS}/ssc/seed-0: finished (eval.json at epoch 2)"
    assert progress[1] == f"[2/4] start {DIGITS}/ssc/seed-1"
    assert re.fullmatch(rf"\[2/4\] done {DIGITS}/ssc/seed-1: top-1 92\.00 % in \d+ s",
                        progress[2])
    assert [o["status"] for o in outcomes.values()] == ["skipped", "finished", "finished",
                                                        "finished"]
    # Run again, everything is finished: nothing is called.
    compare.execute(runs, python=fake_python, out=progress.append)
    assert len(_calls(tmp_path)) == 7
    assert all(" skip " in line for line in progress[-4:])


def _run(row, method, seed, table="cifar10_resnet32"):
    return compare.Run(row=row, table=table, method=method, seed=seed, flagfile=row,
                       model_dir=f"r/{row}/{method}/seed-{seed}")


def _finished(top1, rate=None):
    return {"status": "finished", "step": None, "error": None, "log": None, "seconds": 1.0,
            "images_per_second": rate,
            "eval": {"top1": top1, "kept_fraction": 0.1499, "live_params": 150,
                     "dense_params": 1000, "macs": 1_000_000, "dense_macs": 4_000_000}}


def test_rows_give_mean_and_sample_std_over_seeds_and_the_macs_each_method_runs():
    row = "cifar10_resnet32_10pct"
    runs = [_run(row, method, seed) for seed in (0, 1, 2) for method in ("ssc", "snip")]
    top1 = {("ssc", 0): 0.93, ("ssc", 1): 0.94, ("ssc", 2): 0.95,
            ("snip", 0): 0.90, ("snip", 1): 0.91, ("snip", 2): 0.95}
    outcomes = {r.model_dir: _finished(top1[r.method, r.seed], rate=100.0 * (r.seed + 1))
                for r in runs}
    outcomes[runs[0].model_dir]["images_per_second"] = None
    measured = {(row, "ssc"): {"seed": 0, "tf_latency_ms": 2.0, "tflite_latency_ms": 1.0,
                               "tflite_bytes": 123, "error": None}}
    ssc, snip = compare.summarize(runs, outcomes, measured)
    assert (ssc["method"], ssc["n"], ssc["seeds"]) == ("ssc", 3, [0, 1, 2])
    assert ssc["top1_mean"] == pytest.approx(94.0)
    assert ssc["top1_std"] == pytest.approx(1.0)  # sample std of 93, 94, 95
    assert snip["top1_mean"] == pytest.approx(92.0)
    assert snip["top1_std"] == pytest.approx(((4 + 1 + 9) / 2) ** 0.5)
    assert ssc["published_top1"] == 93.3 and snip["published_top1"] is None
    assert (ssc["macs_run"], ssc["macs_run_kind"]) == (1_000_000, "sparse")
    assert (snip["macs_run"], snip["macs_run_kind"]) == (4_000_000, "dense")
    assert ssc["kept_fraction"] == pytest.approx(0.1499)
    assert ssc["images_per_second"] == pytest.approx(250.0)  # seeds 1 and 2 tell: 200, 300
    assert (ssc["tf_latency_ms"], ssc["tflite_latency_ms"], ssc["tflite_bytes"]) == (2.0, 1.0,
                                                                                      123)
    assert snip["tf_latency_ms"] is None and snip["failed"] == []


def test_a_failed_run_is_reported_and_the_others_go_on_into_the_tables_files(
        tmp_path, digits_config, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_SEEDS", "1")
    root = tmp_path / "root"
    runs = compare.plan([digits_config], methods=["ssc"], seeds=[0, 1, 2], root=str(root),
                        train_flags=SMOKE)
    progress = []
    result = compare.compare(runs, root=str(root), repeats=1, python=fake_python,
                             out=progress.append)
    failed_dir = runs[1].model_dir
    error = "Error: The training loss became nan at epoch 1, batch 3."
    log = os.path.join(failed_dir, "train.log")
    assert f"[2/3] failed {DIGITS}/ssc/seed-1 (train): {error} (log: {log})" in progress
    assert _calls(tmp_path)[-3:] == [f"{step} {runs[2].model_dir}"
                                     for step in ("train", "evaluate", "convert_tflite")]
    with open(log, encoding="utf-8") as f:
        assert f.readline().startswith(f"$ {shlex.quote(fake_python)} -m ssc_tf.train ")
    (row,) = result["rows"]
    assert (row["n"], row["top1"]) == (2, [pytest.approx(90.0), pytest.approx(94.0)])
    assert row["top1_std"] == pytest.approx(8 ** 0.5)
    assert row["failed"] == [{"seed": 1, "step": "train", "error": error, "log": log}]
    # The fake run dirs hold no model to time: the row says why, and keeps the file's size.
    assert row["measure_error"].startswith("--model_dir=")
    assert row["tflite_bytes"] == 2_000_000

    with open(root / "compare.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert [r["status"] for r in written["runs"]] == ["finished", "failed", "finished"]
    assert written["settings"]["train_flags"] == SMOKE
    assert written["published_source"] == published.SOURCE
    markdown = (root / "compare.md").read_text(encoding="utf-8")
    assert "| config | method | top-1 % (n) | paper top-1 % | kept | MACs run (M) | train img/s " \
           "| TF b1 ms | LiteRT b1 ms | TFLite MB |" in markdown
    assert (f"| {DIGITS} | ssc | 92.00 ± 2.83 (2 of 3) | — | 15.00 % | 1.0 (sparse) | — | — | "
            "— | 2.00 |") in markdown
    assert f"- {DIGITS}/ssc/seed-1 (train): {error} (log: {log})" in markdown
    assert "a mask removes weights, not multiplications" in markdown
    if result["outputs"]["compare.png"]:
        assert (root / "compare.png").read_bytes().startswith(PNG_SIGNATURE)


def _compare(root, config, python, methods=("ssc",), seeds=(0,), train_flags=SMOKE):
    """One `ssc-compare` command on `root` with the fake interpreter: (result, progress)."""
    runs = compare.plan([config], methods=methods, seeds=seeds, root=str(root),
                        train_flags=train_flags)
    progress = []
    result = compare.compare(runs, root=str(root), repeats=1, python=python,
                             out=progress.append)
    return result, progress


def test_a_later_seed_joins_the_finished_seeds_of_its_row(tmp_path, digits_config,
                                                          fake_python):
    root = tmp_path / "root"
    _compare(root, digits_config, fake_python, methods=["dense", "ssc"], seeds=[0, 1])
    calls = len(_calls(tmp_path))
    result, progress = _compare(root, digits_config, fake_python, methods=["dense", "ssc"],
                                seeds=[2])
    dense_dir, ssc_dir = (os.path.join(root, row, method)
                          for row, method in (("digits_resnet32", "dense"), (DIGITS, "ssc")))
    assert _calls(tmp_path)[calls:] == [
        f"{step} {os.path.join(folder, 'seed-2')}" for folder in (dense_dir, ssc_dir)
        for step in ("train", "evaluate", "convert_tflite")]
    assert progress[:6] == [
        "[1/6] start digits_resnet32/dense/seed-2", progress[1],
        f"[2/6] start {DIGITS}/ssc/seed-2", progress[3],
        "[3/6] skip digits_resnet32/dense/seed-0: finished (eval.json at epoch 2)",
        "[4/6] skip digits_resnet32/dense/seed-1: finished (eval.json at epoch 2)"]
    assert not any("not tabulated" in line for line in progress)
    dense, ssc = result["rows"]
    for row, method in ((dense, "dense"), (ssc, "ssc")):
        assert (row["method"], row["n"], row["seeds"], row["carried_from"]) == (
            method, 3, [0, 1, 2], None)
        assert row["top1"] == [pytest.approx(90.0), pytest.approx(92.0), pytest.approx(94.0)]
        assert row["top1_std"] == pytest.approx(2.0)
        assert row["measured_seed"] == 0
    assert [(r["config"], r["seed"], r["status"]) for r in result["runs"]] == [
        ("digits_resnet32", 2, "finished"), (DIGITS, 2, "finished"),
        ("digits_resnet32", 0, "skipped"), ("digits_resnet32", 1, "skipped"),
        (DIGITS, 0, "skipped"), (DIGITS, 1, "skipped")]
    assert result["settings"]["seeds"] == [2]
    assert result["runs"][2]["model_dir"] == os.path.join(dense_dir, "seed-0")
    markdown = (root / "compare.md").read_text(encoding="utf-8")
    assert f"| {DIGITS} | ssc | 92.00 ± 2.00 (3) | — | 15.00 % | 1.0 (sparse) |" in markdown
    assert "Carried over" not in markdown


def _epoch_2_of_3(model_dir):
    """Makes a run of --epochs=3 look evaluated after its epoch 2."""
    with open(os.path.join(model_dir, "eval.json"), encoding="utf-8") as f:
        result = json.load(f)
    with open(os.path.join(model_dir, "eval.json"), "w", encoding="utf-8") as f:
        json.dump({**result, "epoch": 2}, f)


@pytest.mark.parametrize("first_flags, tamper, line", [
    (["--weight_decay=0.0005"], None, "finished, but trained with other flags than this "
     "command's (--weight_decay: saved 0.0005, requested 0.0001)"),
    (["--epochs=3", "--lr_boundaries=2"], _epoch_2_of_3, "finished, but trained with other "
     "flags than this command's (--epochs: saved 3, requested 2; --lr_boundaries: saved (2,), "
     "requested ())"),
    ([], lambda model_dir: os.remove(os.path.join(model_dir, "run.json")), "finished, but it "
     "holds no run.json, so whether it trained with this command's flags cannot be told"),
    (["--epochs=3", "--lr_boundaries=2"], None, None),  # unfinished at --epochs=2: left alone
], ids=["other_train_flag", "other_epochs", "no_run_json", "unfinished"])
def test_another_seeds_run_of_other_flags_is_not_tabulated(tmp_path, digits_config,
                                                           fake_python, first_flags, tamper,
                                                           line):
    root = tmp_path / "root"
    earlier, _ = _compare(root, digits_config, fake_python, seeds=[0],
                          train_flags=[*SMOKE, *first_flags])
    (first,) = earlier["runs"]
    if tamper:
        tamper(first["model_dir"])
    calls = len(_calls(tmp_path))
    result, progress = _compare(root, digits_config, fake_python, seeds=[1])
    assert len(_calls(tmp_path)) == calls + 3  # seed 1 only
    expected = [] if line is None else [f"{DIGITS}/ssc/seed-0 not tabulated: {line}"]
    assert [line for line in progress if "seed-0" in line] == expected
    (row,) = result["rows"]
    assert (row["seeds"], row["top1"]) == ([1], [pytest.approx(92.0)])
    assert [r["seed"] for r in result["runs"]] == [1]


def test_rows_of_earlier_commands_are_carried_until_a_command_replaces_them(
        tmp_path, digits_config, fake_python):
    root = tmp_path / "root"
    path = root / "compare.json"
    first, _ = _compare(root, digits_config, fake_python, methods=["ssc"])
    # The table as written before rows held `carried_from`: it is carried all the same.
    previous = json.loads(path.read_text(encoding="utf-8"))
    for record in previous["rows"] + previous["runs"]:
        del record["carried_from"]
    path.write_text(json.dumps(previous), encoding="utf-8")
    first_date = previous["environment"]["date"]

    second, progress = _compare(root, digits_config, fake_python, methods=["random"])
    written = json.loads(path.read_text(encoding="utf-8"))
    ssc, random = written["rows"]
    assert ssc == {**previous["rows"][0], "carried_from": first_date}
    assert (random["method"], random["n"], random["carried_from"]) == ("random", 1, None)
    assert [(r["method"], r["status"], r["carried_from"]) for r in written["runs"]] == [
        ("random", "finished", None), ("ssc", "finished", first_date)]
    assert {**written["runs"][1], "carried_from": None} == {**previous["runs"][0],
                                                            "carried_from": None}
    assert not any("compare.json" in line for line in progress)
    markdown = (root / "compare.md").read_text(encoding="utf-8")
    assert f"| {DIGITS} | ssc | 90.00 (1) | — | 15.00 % | 1.0 (sparse) |" in markdown
    assert f"| {DIGITS} | random | 90.00 (1) | — | 15.00 % | 4.0 (dense) |" in markdown
    assert markdown.count(f"| {DIGITS} |") == 2
    assert (f"- Carried over: rows that earlier commands on this root tabulated and this one "
            f"did not produce, copied unchanged from the previous table (carried_from: the "
            f"date of the table that tabulated them, whose process measured their "
            f"latencies): {DIGITS}/ssc ({first_date[:10]}).") in markdown

    calls = len(_calls(tmp_path))
    third, _ = _compare(root, digits_config, fake_python, methods=["ssc"])
    assert len(_calls(tmp_path)) == calls  # ssc seed 0 is finished: skipped
    ssc, random = third["rows"]
    assert (ssc["method"], ssc["carried_from"], ssc["top1"]) == ("ssc", None,
                                                                [pytest.approx(90.0)])
    assert random == {**second["rows"][1], "carried_from": second["environment"]["date"]}
    assert [(r["method"], r["status"], r["carried_from"]) for r in third["runs"]] == [
        ("ssc", "skipped", None), ("random", "finished", second["environment"]["date"])]
    markdown = (root / "compare.md").read_text(encoding="utf-8")
    assert markdown.count(f"| {DIGITS} |") == 2
    assert f"latencies): {DIGITS}/random ({second['environment']['date'][:10]})." in markdown


@pytest.mark.parametrize("contents, reason", [
    ("{not json", "Expecting property name enclosed in double quotes: line 1 column 2 "
     "(char 1)"),
    ("[]", "not the layout this version writes: environment.date, and rows and runs with its "
     "fields"),
    (json.dumps({"environment": {"date": "2025-01-01"}, "rows": [{"config": "x"}],
                 "runs": []}),
     "not the layout this version writes: environment.date, and rows and runs with its "
     "fields"),
], ids=["invalid_json", "a_list", "rows_of_another_layout"])
def test_a_previous_table_that_does_not_read_is_ignored_with_one_line(
        tmp_path, digits_config, fake_python, contents, reason):
    root = tmp_path / "root"
    root.mkdir()
    (root / "compare.json").write_text(contents, encoding="utf-8")
    result, progress = _compare(root, digits_config, fake_python)
    assert [line for line in progress if "compare.json" in line] == [
        f"{root / 'compare.json'} ignored, its rows not carried over: it does not read as a "
        f"table of ssc-compare ({reason})"]
    written = json.loads((root / "compare.json").read_text(encoding="utf-8"))
    assert [(row["config"], row["method"], row["n"], row["carried_from"])
            for row in written["rows"]] == [(DIGITS, "ssc", 1, None)]
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert (root / "compare.md").read_text(encoding="utf-8").count(f"| {DIGITS} |") == 1


def test_images_per_second_is_an_epochs_images_over_the_median_epoch_time(tmp_path):
    import tensorflow as tf

    def write(split, name, events):
        os.makedirs(tmp_path / "logs" / split, exist_ok=True)
        with tf.io.TFRecordWriter(str(tmp_path / "logs" / split / name)) as writer:
            for tag, step, wall_time in events:
                summary = tf.compat.v1.Summary(
                    value=[tf.compat.v1.Summary.Value(tag=tag, simple_value=1.0)])
                writer.write(tf.compat.v1.Event(
                    wall_time=wall_time, step=step, summary=summary).SerializeToString())

    # Epochs 0-3 in one process (3, 2 and 3 s apart), epoch 4 after a restart, alone.
    write("train", "events.out.tfevents.1.host.1.0.v2",
          [("epoch_loss", e, t) for e, t in enumerate((100.0, 103.0, 105.0, 108.0))]
          + [("epoch_accuracy", 0, 50.0)])
    write("train", "events.out.tfevents.2.host.2.0.v2", [("epoch_loss", 4, 500.0)])
    write("validation", "events.out.tfevents.1.host.1.2.v2",
          [("evaluation_loss_vs_iterations", 10 * (e + 1), 99.0 + 3 * e) for e in range(5)]
          + [("epoch_loss", 0, 100.0)])
    assert compare.images_per_second(str(tmp_path), batch_size=8) == pytest.approx(10 * 8 / 3)
    assert compare.images_per_second(str(tmp_path / "nothing"), batch_size=8) is None


def test_published_top1_is_what_each_configs_header_cites():
    cited = {}
    for name in flagfile.names():
        with open(flagfile.resolve(name), encoding="utf-8") as f:
            match = re.search(r"paper top-1 ([\d.]+) %", f.readline())
        if match:
            cited[name, "ssc"] = float(match[1])
    assert published.TOP1 == cited
    assert published.top1("cifar100_resnet32_2pct", "ssc") == 63.0


@pytest.mark.parametrize("flags, message", [
    (["--configs=cifar10_resnet33"], "Error: Invalid value for flag --configs: "
     "'cifar10_resnet33' is neither a packaged config, a table ("),
    (["--configs=cifar10_vgg19_dense"], "flag --configs: expected SSC configs or tables"),
    (["--configs=cifar10_resnet32", "--methods=ssc,prune"], "Error: Invalid value for flag "
     "--methods: expected a comma-separated list of ssc, dense, narrow, random, snip, grasp, "
     "synflow, magnitude. Received: methods='ssc,prune'"),
    (["--configs=cifar10_resnet32", "--seeds=0,x"], "flag --seeds: expected a comma-separated "
     "list of integers in [0, 2**32)"),
    (["--configs=cifar10_resnet32", "--train_flags=--seed=4"], "flag --train_flags: expected "
     "flags of `python -m ssc_tf.train`"),
    (["--configs=cifar10_resnet32", "--train_flags=--epochs=2"], "flag --lr_boundaries: "
     "expected strictly increasing integer epochs in [1, epochs=2)"),
    (["--configs=cifar10_resnet32", "--repeats=0"], "flag --repeats=0: 0 is not a positive "
     "integer"),
    (["--root="], "Error: Flag --configs is required"),
])
def test_a_bad_flag_fails_with_one_line_naming_it(flags, message):
    result = _cli("--root=runs", *flags, "--dry_run")
    assert result.returncode != 0
    assert sum(message in line for line in result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


@pytest.mark.slow
def test_cli_trains_evaluates_converts_and_times_ssc_and_its_dense_twin(tmp_path,
                                                                        digits_config):
    # No digits_resnet32_dense.cfg beside the config: the dense twin is the config itself
    # with --sparsity=dense, which ignores its ticket, g and p.
    result = _cli(f"--configs={digits_config}", "--methods=ssc,dense", "--seeds=0",
                  f"--root={tmp_path / 'root'}", "--repeats=2",
                  "--train_flags=--epochs=1 --steps_per_epoch=1 --batch_size=8 "
                  "--lr_boundaries=")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/2] done digits_resnet32/dense/seed-0: top-1 " in result.stdout
    assert f"[2/2] done {DIGITS}/ssc/seed-0: top-1 " in result.stdout
    with open(tmp_path / "root" / "compare.json", encoding="utf-8") as f:
        dense_row, ssc_row = json.load(f)["rows"]
    assert (dense_row["config"], dense_row["method"], dense_row["n"]) == (
        "digits_resnet32", "dense", 1)
    assert (ssc_row["config"], ssc_row["method"], ssc_row["n"]) == (DIGITS, "ssc", 1)
    assert dense_row["kept_fraction"] == 1.0
    assert round(100 * ssc_row["kept_fraction"], 2) == 14.99  # docs/supplement.md
    assert dense_row["macs_run_kind"] == "dense" and ssc_row["macs_run_kind"] == "sparse"
    assert ssc_row["macs_run"] < dense_row["macs_run"]
    assert ssc_row["tflite_bytes"] < dense_row["tflite_bytes"]
    for row in (dense_row, ssc_row):
        assert row["tf_latency_ms"] > 0 and row["tflite_latency_ms"] > 0
        assert row["images_per_second"] is None  # one epoch: no epoch-to-epoch time
        assert os.path.isfile(tmp_path / "root" / row["config"] / row["method"] / "seed-0"
                              / "model.tflite")
    assert (tmp_path / "root" / "compare.md").read_text().count("| digits_resnet32") == 2
