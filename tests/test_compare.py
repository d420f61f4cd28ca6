"""Tests of ssc_tf.compare and ssc_tf.published: table discovery, the runs' command lines,
skipping and resuming, a failed run among finished ones, the table's numbers and files, the
CLI's errors, and one real run of SSC and its dense twin on digits."""

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
# "Error:" line, status 1); evaluate writes an eval.json with the top-1 of $FAKE_TOP1[seed];
# convert_tflite writes a 2 MB file.
FAKE_PYTHON = """#!{python}
import json, os, sys
step = sys.argv[2].rsplit(".", 1)[1]
args = dict(arg[2:].split("=", 1) for arg in sys.argv[3:] if "=" in arg)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(step + " " + args["model_dir"] + "\\n")
state = os.path.join(args["model_dir"], "fake.json")
if step == "train":
    print("Epoch 1/2 ...")
    if args["seed"] in os.environ.get("FAKE_FAIL_SEEDS", "").split(","):
        sys.exit("Error: The training loss became nan at epoch 1, batch 3.")
    os.makedirs(args["model_dir"], exist_ok=True)
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
