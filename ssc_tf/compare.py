r"""SSC against the paper's pruning baselines: train, evaluate, convert and time every run, and
tabulate them.

    python -m ssc_tf.compare --configs=cifar10_resnet32 --root=runs/compare
    ssc-compare --configs=digits_resnet32 --methods=ssc,dense --seeds=0 --root=/tmp/smoke \
        --train_flags="--epochs=2 --lr_boundaries= --steps_per_epoch=1"
    ssc-compare --configs=cifar100_resnet32 --root=runs/compare --dry_run   # for a cluster

`--configs` takes packaged config names, paper table names and flagfile paths. A table
`<table>` stands for its budget configs `<table>_<n>pct` (largest budget first; `tables()`
reads them from `ssc_tf.flagfile.names()`); any other config is a table of its own.

Each run trains one config with one `--sparsity` method (`ssc_tf.pruning.METHODS`) and one
seed into `<root>/<config>/<method>/seed-<seed>`:

    python -m ssc_tf.train --flagfile=<config> --sparsity=<method> --seed=<seed> \
        --model_dir=<dir> [--data_dir=...] <--train_flags>
    python -m ssc_tf.evaluate --model_dir=<dir>                     # writes <dir>/eval.json
    python -m ssc_tf.convert_tflite --model_dir=<dir> --output=<dir>/model.tflite --overwrite

each in a process of its own, its output appended to `<dir>/<step>.log`. The dense twin does
not depend on the budget: it trains once per table, into `<root>/<table>/dense/seed-<seed>`,
from the table's packaged `<table>_dense` config where there is one (beside a flagfile path:
`<table>_dense.cfg` in its folder), else from the table's first config with
`--sparsity=dense`. A run whose eval.json holds the epochs its config trains, and whose
model.tflite is there, is skipped, so a rerun resumes: an unfinished run resumes training
from its last checkpoint (`ssc_tf.train`), a finished one only converts if its file is
missing. A run that fails is reported as failed with its one-line error, and the others go
on. `--dry_run` prints each run's three commands as one shell line (`python` standing for the
interpreter) and runs nothing: run them anywhere, then run `ssc-compare` without
`--dry_run` on the same `--root` to tabulate them on one machine.

The table (`<root>/compare.json`, `<root>/compare.md`, and `<root>/compare.png` where
matplotlib is installed) is the root's, not only the command's, so that one root can be
tabulated over several commands (`--seeds=0,1`, later `--seeds=2`; or one `--methods` after
another):

- each row holds the seeds the command names and the root's other finished seeds of that
  row: the `seed-<seed>` folders beside its runs that are finished (as a run is skipped:
  eval.json at the epochs of the command's config, and model.tflite) and whose run.json
  holds the config the command trains for that seed (`other_seeds`). A finished folder
  trained with other flags, or without run.json, is left out with one progress line naming
  why; an unfinished one is left alone (neither trained nor tabulated);
- the rows of the previous `<root>/compare.json` that the command produces no row for are
  carried over unchanged, rows and runs, their `carried_from` the date of the table that
  tabulated them (`carry_over`); compare.md lists them. A row the command produces replaces
  the previous one; a previous compare.json that does not read is ignored with one
  progress line.

It has one row per (config, method), over the finished seeds:

- top-1 on the test split (eval.json), mean and sample standard deviation, and their number;
- the paper's top-1 where it reports one (`ssc_tf.published`);
- the kept fraction of the restored model (`ssc_tf.models.report.model_stats`: SSC's live
  weights, or the mask's ones, over the convolutions and the classifier kernel; the narrow
  network's weights over the full dense twin's, `ssc_tf.pruning.budget.dense_params`);
- the MACs it runs per image: SSC its sparse MACs; the narrow network its own dense MACs,
  fewer since its layers are narrower; dense and the pruned methods the dense twin's MACs,
  since a mask removes weights, not multiplications (ssc_tf.models.masked);
- training images per second, from the TensorBoard logs (`images_per_second` says how);
- TF latency and LiteRT float32 latency (one thread) at batch 1, and the TFLite file's size,
  measured on the model of the row's lowest finished seed by the process that wrote the
  table (for a carried row, the earlier table's).
"""

import dataclasses
import difflib
import glob
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from ssc_tf import arguments
from ssc_tf import experiment_flags
from ssc_tf import flagfile
from ssc_tf import pruning
from ssc_tf import published
from ssc_tf import timing
from ssc_tf.pruning import budget

JSON_FILE = "compare.json"
MARKDOWN_FILE = "compare.md"
PLOT_FILE = "compare.png"
TFLITE_FILE = "model.tflite"
EVAL_FILE = "eval.json"  # ssc_tf.model_dir.EVAL_FILE, which imports TensorFlow.
TRAIN, EVALUATE, CONVERT = "train", "evaluate", "convert_tflite"
# The flags that compare sets on every training command itself.
OWN_TRAIN_FLAGS = ("flagfile", "sparsity", "seed", "model_dir", "data_dir")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_REPEATS = 50

_BUDGET = re.compile(r"(?P<table>.+)_(?P<percent>\d+(?:\.\d+)?)pct")
# The folder of a run of seed <seed>, as `plan` names it.
_SEED_DIR = re.compile(r"seed-(0|[1-9][0-9]*)")
_DENSE_SUFFIX = "_dense"
_WARMUP = 5
# The tags Keras' TensorBoard callback writes: each epoch's training loss at its end, and the
# validation loss at the optimizer's iteration count.
_EPOCH_TAG = "epoch_loss"
_ITERATIONS_TAG = "evaluation_loss_vs_iterations"
# The eval.json count of the MACs a method runs, and its label: SSC's sparse MACs, the narrow
# network's own (dense, and fewer); the other methods run the full dense twin's.
_MACS_RUN = {pruning.SSC: ("macs", "sparse"), pruning.NARROW: ("macs", pruning.NARROW)}
_DENSE_MACS_RUN = ("dense_macs", "dense")

NOTES = {
    "top1": "top-1 on the test split (eval.json), mean ± sample standard deviation over the "
            "finished seeds (n of them)",
    "kept": "kept: live weights over the dense weights of the convolutions and the classifier "
            "kernel, counted on the restored model (SSC's pattern, or the mask's ones; narrow: "
            "its weights over the full dense twin's)",
    "macs": "MACs run per image: SSC runs its sparse MACs; narrow runs its own dense MACs, "
            "fewer since its layers are narrower; dense and the pruned methods "
            f"({', '.join(pruning.PRUNED_METHODS)}) run the dense MACs, since a mask removes "
            "weights, not multiplications",
    "images_per_second": "train img/s: the images of one training epoch (its steps, from the "
                         "validation logs' optimizer iterations, times --batch_size) over the "
                         "median wall time between consecutive epoch ends of one training "
                         "process in logs/train; that time also holds the epoch's validation "
                         "pass and checkpoint, and each process' first epoch (tracing) is left "
                         "out, so a run needs 2 epochs in one process",
    "latency": "latency at batch 1, median of --repeats calls by the process that wrote this "
               "table, on the model of each row's lowest finished seed: TF is the restored "
               "Keras model (masks baked into plain kernels, as export and TFLite write it) "
               "in a tf.function on TensorFlow's default threads; LiteRT is the float32 "
               "TFLite file of convert_tflite, on 1 thread",
    "carried_from": "carried over: rows that earlier commands on this root tabulated and this "
                    "one did not produce, copied unchanged from the previous table "
                    "(carried_from: the date of the table that tabulated them, whose process "
                    "measured their latencies)",
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the comparison.

    Attributes:
        row: the table row's config: a config's name, or its table's for the dense twin.
        table: the table the row belongs to.
        method: the `--sparsity` method, one of `ssc_tf.pruning.METHODS`.
        seed: the `--seed`.
        flagfile: the `--flagfile` it trains (a config's name or a flagfile's path).
        model_dir: the run's `--model_dir`.
        train_flags: tuple of str, the extra flags of `ssc_tf.train`.
        data_dir: str or None, the `--data_dir`.
    """

    row: str
    table: str
    method: str
    seed: int
    flagfile: str
    model_dir: str
    train_flags: tuple = ()
    data_dir: str | None = None

    @property
    def name(self):
        """`<row>/<method>/seed-<seed>`, as progress lines and the table name the run."""
        return f"{self.row}/{self.method}/seed-{self.seed}"

    @property
    def tflite(self):
        """The run's float32 TFLite file."""
        return os.path.join(self.model_dir, TFLITE_FILE)

    def commands(self, python="python"):
        """The run's `(step, argv)` pairs: train, evaluate, convert_tflite, in order."""
        train = [python, "-m", f"ssc_tf.{TRAIN}", f"--flagfile={self.flagfile}",
                 f"--sparsity={self.method}", f"--seed={self.seed}",
                 f"--model_dir={self.model_dir}"]
        if self.data_dir:
            train.append(f"--data_dir={self.data_dir}")
        return [
            (TRAIN, train + list(self.train_flags)),
            (EVALUATE, [python, "-m", f"ssc_tf.{EVALUATE}", f"--model_dir={self.model_dir}"]),
            (CONVERT, [python, "-m", f"ssc_tf.{CONVERT}", f"--model_dir={self.model_dir}",
                       f"--output={self.tflite}", "--overwrite"]),
        ]

    def command_line(self, python="python"):
        """The run's three commands as one shell line, joined by `&&`."""
        return " && ".join(shlex.join(argv) for _, argv in self.commands(python))

    def config(self):
        """The `ExperimentConfig` that the run's `ssc_tf.train` command trains.

        Raises:
            ValueError: its flags do not make a valid config; the message names the run.
        """
        flag_values = experiment_flags.define_flags(flags.FlagValues())
        argv = ["compare", f"--flagfile={flagfile.resolve(self.flagfile)}",
                f"--sparsity={self.method}", f"--seed={self.seed}", *self.train_flags]
        try:
            # known_only: the flags of ssc_tf.train that are not the config's stay unread.
            flag_values(argv, known_only=True)
            return experiment_flags.config_from_flags(flag_values)
        except (flags.Error, ValueError) as error:
            raise ValueError(
                f"run {self.name} (--flagfile={self.flagfile} --sparsity={self.method} and "
                f"--train_flags) does not make a valid config: {error}"
            ) from None


def tables(names=None):
    """The paper tables among config names: `{table: its budget configs}`.

    A table is the prefix of the configs named `<table>_<n>pct`; its configs are listed
    largest budget first.

    Args:
        names: config names; default: the packaged configs (`ssc_tf.flagfile.names()`).

    Example:

    >>> tables()["cifar10_resnet32"]
    ['cifar10_resnet32_10pct', 'cifar10_resnet32_5pct', 'cifar10_resnet32_2pct']
    """
    found = {}
    for name in flagfile.names() if names is None else names:
        match = _BUDGET.fullmatch(name)
        if match:
            found.setdefault(match["table"], []).append((float(match["percent"]), name))
    return {table: [name for _, name in sorted(budgets, key=lambda b: -b[0])]
            for table, budgets in sorted(found.items())}


def table_of(name):
    """The table of config `name`: its prefix for `<table>_<n>pct`, else `name` itself."""
    match = _BUDGET.fullmatch(name)
    return match["table"] if match else name


def plan(configs, *, methods=pruning.METHODS, seeds=DEFAULT_SEEDS, root, train_flags=(),
         data_dir=None):
    """The runs of a comparison, seed by seed, so that every row has a seed early.

    Within a seed: table by table, the dense twin first, then each config with each of the
    other methods in `ssc_tf.pruning.METHODS` order.

    Args:
        configs: list of str: packaged config names, table names (`tables()`) or flagfile
            paths; their configs must be SSC configs.
        methods: `--sparsity` methods to run, a subset of `ssc_tf.pruning.METHODS`.
        seeds: list of int >= 0.
        root: str, the directory of the runs.
        train_flags: list of str, extra `ssc_tf.train` flags for every run; none of
            `OWN_TRAIN_FLAGS`.
        data_dir: str or None, the `--data_dir` of every run.

    Returns:
        A list of `Run`.

    Raises:
        ValueError: an argument is not allowed, or a run's flags make no valid config; the
            message names the argument.
    """
    methods = _check_methods(methods)
    seeds = _check_seeds(seeds)
    train_flags = _check_train_flags(train_flags)
    if not configs:
        raise arguments.invalid("configs", _CONFIGS_EXPECTED, "''")
    by_table = {}
    for entry in dict.fromkeys(configs):
        for name, value in _expand(entry):
            by_table.setdefault(table_of(name), {})[name] = value
    runs = []
    for seed in seeds:
        for table, members in by_table.items():
            common = dict(table=table, seed=seed, train_flags=train_flags, data_dir=data_dir)
            if pruning.DENSE in methods:
                runs.append(Run(row=table, method=pruning.DENSE,
                                flagfile=_dense_flagfile(table, next(iter(members.values()))),
                                model_dir=os.path.join(root, table, pruning.DENSE,
                                                       f"seed-{seed}"), **common))
            for name, value in members.items():
                for method in methods:
                    if method != pruning.DENSE:
                        runs.append(Run(row=name, method=method, flagfile=value,
                                        model_dir=os.path.join(root, name, method,
                                                               f"seed-{seed}"), **common))
    for run in runs:
        run.config()
    return runs


_CONFIGS_EXPECTED = "comma-separated packaged config names, table names or flagfile paths"


def _expand(entry):
    """`(name, --flagfile value)` of each config that a `--configs` entry stands for."""
    names = flagfile.names()
    if entry in names:
        found = [(entry, entry)]
    elif entry in tables(names):
        found = [(name, name) for name in tables(names)[entry]]
    elif os.path.isfile(entry):
        base = os.path.basename(entry)
        found = [(base[: -len(flagfile.SUFFIX)] if base.endswith(flagfile.SUFFIX) else base,
                  entry)]
    else:
        close = difflib.get_close_matches(entry, names + list(tables(names)), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Invalid value for {arguments.kind()} {arguments.spelled('configs')}: {entry!r} is "
            f"neither a packaged config, a table ({', '.join(tables(names))}) nor a flagfile."
            f"{hint}")
    for name, value in found:
        if flagfile.load(value).dense:
            raise arguments.invalid(
                "configs", "SSC configs or tables (each trains its dense twin as "
                f"--methods={pruning.DENSE}); {name} is a dense config", repr(entry))
    return found


def _dense_flagfile(table, first):
    """The `--flagfile` of a table's dense run: its `<table>_dense` config, else `first`."""
    if os.path.isfile(first):
        sibling = os.path.join(os.path.dirname(first), table + _DENSE_SUFFIX + flagfile.SUFFIX)
        return sibling if os.path.isfile(sibling) else first
    try:
        flagfile.resolve(table + _DENSE_SUFFIX)
    except FileNotFoundError:
        return first
    return table + _DENSE_SUFFIX


def _check_methods(methods):
    methods = list(methods)
    if not methods or not set(methods) <= set(pruning.METHODS):
        raise arguments.invalid(
            "methods", f"a comma-separated list of {', '.join(pruning.METHODS)}",
            repr(",".join(methods)))
    return [m for m in pruning.METHODS if m in methods]


def _check_seeds(seeds):
    try:
        values = [int(s) for s in seeds]
    except ValueError:
        values = []
    if not values or not all(0 <= s < 2**32 for s in values):
        raise arguments.invalid(
            "seeds", "a comma-separated list of integers in [0, 2**32)",
            repr(",".join(map(str, seeds))))
    return list(dict.fromkeys(values))


def _check_train_flags(train_flags):
    train_flags = tuple(train_flags)
    for arg in train_flags:
        name = arg.lstrip("-").split("=", 1)[0]
        if not arg.startswith("-") or name in OWN_TRAIN_FLAGS:
            raise arguments.invalid(
                "train_flags", "flags of `python -m ssc_tf.train` ('--name=value'), other than "
                f"{', '.join('--' + f for f in OWN_TRAIN_FLAGS)}, which compare sets itself",
                repr(shlex.join(train_flags)))
    return train_flags


def execute(runs, *, python=sys.executable, out=print):
    """Trains, evaluates and converts every run not yet finished, one after the other.

    Args:
        runs: list of `Run` (`plan`).
        python: the interpreter of the commands.
        out: callable taking one progress line per run started, finished, skipped or failed.

    Returns:
        `{model_dir: outcome}`, an outcome a dict: `status` ("finished", "skipped" or
        "failed"), `eval` (eval.json's contents, or None), `step`, `error` and `log` (where
        it failed, else None), `seconds` (time spent on it now).
    """
    outcomes = {}
    for i, run in enumerate(runs):
        where = f"[{i + 1}/{len(runs)}]"
        result = _read_eval(run.model_dir)
        trained = _trained(run, result)
        if trained and os.path.isfile(run.tflite):
            out(f"{where} skip {run.name}: finished ({EVAL_FILE} at epoch {result['epoch']})")
            outcomes[run.model_dir] = _outcome("skipped", result)
            continue
        out(f"{where} start {run.name}")
        start = time.perf_counter()
        failure = None
        for step, argv in run.commands(python):
            if trained and step != CONVERT:
                continue
            failure = _call(step, argv, run.model_dir)
            if failure:
                break
        seconds = time.perf_counter() - start
        result = _read_eval(run.model_dir)
        if failure:
            out(f"{where} failed {run.name} ({failure['step']}): {failure['error']} "
                f"(log: {failure['log']})")
            outcomes[run.model_dir] = _outcome("failed", result, seconds, **failure)
        else:
            out(f"{where} done {run.name}: top-1 {100 * result['top1']:.2f} % in "
                f"{seconds:.0f} s")
            outcomes[run.model_dir] = _outcome("finished", result, seconds)
    return outcomes


def _trained(run, result):
    """Whether `result`, `run`'s eval.json (or None), is of the epochs its config trains."""
    return result is not None and result.get("epoch") == run.config().epochs


def other_seeds(runs, *, root, out=print):
    """The root's other finished runs of the rows of `runs`: those of the seeds they do not
    name.

    The runs of a row (config, method) are the `seed-<seed>` folders of
    `<root>/<row>/<method>`. One of a seed that `runs` do not name is tabulated when it is
    finished as `execute` judges it (its eval.json at the epochs of the row's config, and its
    TFLite file there) and its run.json holds the config that the row's runs train for that
    seed (`ssc_tf.model_dir.model_differences` and `schedule_differences`; the data_dir is
    not compared, as runs may train on other machines). A finished one trained otherwise, or
    whose run.json is missing or does not read, is left out with one progress line saying
    why; an unfinished one is left alone.

    Args:
        runs: list of `Run` (`plan`).
        root: str, `plan`'s root.
        out: callable taking the progress lines.

    Returns:
        A list of `Run`, each a run of `runs` of its row with its seed and `model_dir`
        replaced; row by row, seeds ascending.
    """
    by_row = {}
    for run in runs:
        by_row.setdefault((run.row, run.method), []).append(run)
    found = []
    for (row, method), members in by_row.items():
        folder = os.path.join(root, row, method)
        named = {run.seed for run in members}
        for seed in [seed for seed in _seed_folders(folder) if seed not in named]:
            other = dataclasses.replace(members[0], seed=seed,
                                        model_dir=os.path.join(folder, f"seed-{seed}"))
            if not (_trained(other, _read_eval(other.model_dir))
                    and os.path.isfile(other.tflite)):
                continue
            why = _trained_otherwise(other)
            if why:
                out(f"{other.name} not tabulated: {why}")
            else:
                found.append(other)
    return found


def _seed_folders(folder):
    """The seeds of the `seed-<seed>` folders in `folder` (the seeds `plan` takes), ascending."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    seeds = (int(match[1]) for match in map(_SEED_DIR.fullmatch, names) if match)
    return sorted(seed for seed in seeds if seed < 2**32
                  and os.path.isdir(os.path.join(folder, f"seed-{seed}")))


def _trained_otherwise(run):
    """Why finished `run`'s run.json is not of the config that `run` trains; None if it is."""
    from ssc_tf import model_dir as model_dir_lib

    try:
        saved, _ = model_dir_lib.read_run(run.model_dir)
    except FileNotFoundError:
        return (f"finished, but it holds no {model_dir_lib.RUN_FILE}, so whether it trained "
                "with this command's flags cannot be told")
    except ValueError as error:
        return str(error)
    config = run.config()
    differing = (model_dir_lib.model_differences(saved, config)
                 + model_dir_lib.schedule_differences(saved, config))
    if differing:
        return (f"finished, but trained with other flags than this command's "
                f"({'; '.join(differing)})")
    return None


def _outcome(status, result, seconds=0.0, step=None, error=None, log=None):
    return {"status": status, "eval": result, "step": step, "error": error, "log": log,
            "seconds": seconds}


def _read_eval(model_dir):
    try:
        with open(os.path.join(model_dir, EVAL_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _call(step, argv, model_dir):
    """Runs one step, its output appended to `<model_dir>/<step>.log`; None, or its failure."""
    os.makedirs(model_dir, exist_ok=True)
    log = os.path.join(model_dir, f"{step}.log")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        start = f.tell()
        status = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
    if status == 0:
        return None
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        return {"step": step, "error": error_line(f.read(), status), "log": log}


def error_line(output, status):
    """The one line that says why a command failed, from its output.

    The CLIs end on one `Error: ...` line; absl names a bad flag on its `FATAL Flags parsing
    error` line; a traceback ends on the exception's line.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for prefix in ("Error:", "FATAL Flags parsing error"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1]
    return lines[-1] if lines else f"exit status {status}, no output"


def measure(runs, outcomes, *, repeats=DEFAULT_REPEATS, out=print):
    """Measures what the eval.json files do not hold: throughput per run, latency per row.

    Each finished run gets `images_per_second` in its outcome (`images_per_second`). Each
    row (config, method) is timed on its finished run of the lowest seed with a TFLite file:
    TF at batch 1 on the restored model, masks baked (`ssc_tf.models.masked.bake`), and the
    TFLite file in LiteRT on one thread.

    Args:
        runs: list of `Run`.
        outcomes: `execute`'s result; updated in place.
        repeats: int >= 1, timed calls of each latency (the median is reported).
        out: callable taking one progress line per row measured.

    Returns:
        `{(row, method): {"seed", "tf_latency_ms", "tflite_latency_ms", "tflite_bytes",
        "error"}}`, for the rows with a finished run.
    """
    import tensorflow as tf

    measured = {}
    for run in sorted(runs, key=lambda run: run.seed):
        outcome = outcomes[run.model_dir]
        if outcome["status"] == "failed":
            continue
        outcome["images_per_second"] = images_per_second(
            run.model_dir, run.config().batch_size)
        key = (run.row, run.method)
        if key in measured or not os.path.isfile(run.tflite):
            continue
        try:
            measured[key] = {"seed": run.seed, **_latencies(run, repeats), "error": None}
        except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
            measured[key] = {"seed": run.seed, "tf_latency_ms": None, "tflite_latency_ms": None,
                             "tflite_bytes": os.path.getsize(run.tflite),
                             "error": error_line(str(error), 1)}
            out(f"measure {run.row}/{run.method} on seed-{run.seed}: failed: "
                f"{measured[key]['error']}")
            continue
        out(f"measure {run.row}/{run.method} on seed-{run.seed}: TF b1 "
            f"{measured[key]['tf_latency_ms']:.2f} ms, LiteRT b1 "
            f"{measured[key]['tflite_latency_ms']:.2f} ms")
    return measured


def _latencies(run, repeats):
    """TF and LiteRT batch-1 medians (ms) of a finished run, and its TFLite file's size."""
    from ai_edge_litert.interpreter import Interpreter
    import numpy as np
    import tensorflow as tf

    from ssc_tf import model_dir as model_dir_lib
    from ssc_tf.models import masked

    model, config, _, _ = model_dir_lib.load_model(run.model_dir)
    model = masked.bake(model)
    rng = np.random.default_rng(run.seed)
    images = tf.constant(rng.standard_normal((1, *config.input_shape)), tf.float32)
    infer = tf.function(lambda x: model(x, training=False))
    interpreter = Interpreter(model_path=run.tflite, num_threads=1)
    (inputs,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inputs["index"], (1, *config.input_shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(
        inputs["index"], rng.uniform(0, 255, (1, *config.input_shape)).astype(np.float32))
    latencies = timing.interleaved_ms({
        # .numpy() waits for the result: on a GPU the ops only start asynchronously.
        "tf_latency_ms": lambda: infer(images).numpy(),
        "tflite_latency_ms": interpreter.invoke,
    }, repeats, warmup=_WARMUP)
    return {**latencies, "tflite_bytes": os.path.getsize(run.tflite)}


def images_per_second(model_dir, batch_size):
    """Training images per second of a run, from its TensorBoard logs; None if they cannot
    tell.

    Keras' TensorBoard callback writes `epoch_loss` to logs/train at each epoch's end, and
    `evaluation_loss_vs_iterations` to logs/validation at the optimizer's iteration count
    after each epoch's validation. An epoch's steps are the gap between consecutive iteration
    counts; its wall time is the gap between two consecutive epoch ends in one events file
    (one training process), which also spans that epoch's validation pass and checkpoint, as
    Keras' own `write_steps_per_second` epoch rate does. The rate is the steps times
    `batch_size` (every training batch is full: `ssc_tf.data` drops the remainder) over the
    median epoch time.
    """
    epoch_seconds = []
    for path in _events(model_dir, "train"):
        ends = {event.step: event.wall_time for event in _tagged(path, _EPOCH_TAG)}
        epoch_seconds += [ends[e] - ends[e - 1] for e in sorted(ends) if e - 1 in ends]
    iterations = sorted({event.step for path in _events(model_dir, "validation")
                         for event in _tagged(path, _ITERATIONS_TAG)})
    if not epoch_seconds or not iterations:
        return None
    steps = statistics.median(
        [iterations[0]] + [b - a for a, b in zip(iterations, iterations[1:])])
    return steps * batch_size / statistics.median(epoch_seconds)


def _events(model_dir, split):
    return sorted(glob.glob(os.path.join(model_dir, "logs", split, "events.out.tfevents.*")))


def _tagged(path, tag):
    """The events of `path` that hold a value of `tag`, up to where the file is cut off (a
    process killed while writing it)."""
    import tensorflow as tf

    events = []
    try:
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(value.tag == tag for value in event.summary.value):
                events.append(event)
    except tf.errors.DataLossError:
        pass
    return events


def summarize(runs, outcomes, measured):
    """The table: one row per (config, method), over its finished seeds.

    Args:
        runs: list of `Run`.
        outcomes: `execute`'s result (with `measure`'s `images_per_second`, where measured).
        measured: `measure`'s result.

    Returns:
        A list of dicts, in the order of the rows' first runs in `runs`: `config` (the row's
        config, the table for the dense twin), `table`, `method`, `seeds` (ascending), `n`
        (finished seeds), `top1` (percent per finished seed, in the order of `seeds`),
        `top1_mean`, `top1_std` (sample standard deviation;
        None below 2 seeds), `published_top1`, `kept_fraction`, `live_params`,
        `dense_params` (the full dense twin's, for narrow too), `macs_run` and
        `macs_run_kind` ("sparse" for SSC, "narrow" for narrow, else "dense"),
        `images_per_second` (mean over the runs that tell), `tf_latency_ms`,
        `tflite_latency_ms`, `tflite_bytes`, `measured_seed`, `measure_error`, `failed`
        (`{seed, step, error, log}` per failed run), and `carried_from` (None: a row of
        these runs; `carry_over` sets it on the rows of an earlier table).
    """
    rows = {}
    for run in runs:
        rows.setdefault((run.row, run.method), []).append(run)
    table = []
    for (row, method), members in rows.items():
        members = sorted(members, key=lambda run: run.seed)
        done = [(r, outcomes[r.model_dir]) for r in members
                if outcomes[r.model_dir]["status"] != "failed"]
        results = [o["eval"] for _, o in done]
        top1 = [100 * e["top1"] for e in results]
        rates = [o["images_per_second"] for _, o in done if o.get("images_per_second")]
        timing = measured.get((row, method), {})
        macs_key, macs_kind = _MACS_RUN.get(method, _DENSE_MACS_RUN)
        live, dense, kept = _weights(method, members[0], results)
        table.append({
            "config": row,
            "table": members[0].table,
            "method": method,
            "seeds": [r.seed for r in members],
            "n": len(top1),
            "top1": top1,
            "top1_mean": statistics.mean(top1) if top1 else None,
            "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
            "published_top1": published.top1(row, method),
            "kept_fraction": kept,
            "live_params": live,
            "dense_params": dense,
            "macs_run": _mean(e[macs_key] for e in results),
            "macs_run_kind": macs_kind,
            "images_per_second": statistics.mean(rates) if rates else None,
            "tf_latency_ms": timing.get("tf_latency_ms"),
            "tflite_latency_ms": timing.get("tflite_latency_ms"),
            "tflite_bytes": timing.get("tflite_bytes"),
            "measured_seed": timing.get("seed"),
            "measure_error": timing.get("error"),
            "failed": [_failure(r, outcomes[r.model_dir]) for r in members
                       if outcomes[r.model_dir]["status"] == "failed"],
            "carried_from": None,
        })
    return table


def carry_over(previous, rows, records, *, out=print):
    """This command's rows and run records, and the previous table's that it does not replace.

    A row of the previous table is carried over unchanged, with its run records, where `rows`
    hold no row of its (config, method); each gets `carried_from`: the date of the table that
    tabulated it (the previous table's, unless that one carried it already).

    Args:
        previous: str, the path of the previous compare.json; a missing one carries nothing,
            and one that does not read (not JSON, or not the layout of `compare`'s result
            with rows of `rows`' fields) carries nothing, with one progress line.
        rows: `summarize`'s rows.
        records: the run records of `rows`.
        out: callable taking the progress lines.

    Returns:
        `(rows, records)`: the rows in the order of `plan`'s runs (table by table, the dense
        twin first, then config by config, in `ssc_tf.pruning.METHODS` order); `records`,
        then the carried ones.
    """
    table = _previous_table(previous, set(rows[0]), out)
    if table is None:
        return rows, records
    date, old_rows, old_records = table
    produced = {(row["config"], row["method"]) for row in rows}
    carried = [{**row, "carried_from": row.get("carried_from") or date} for row in old_rows
               if (row["config"], row["method"]) not in produced]
    kept = {(row["config"], row["method"]) for row in carried}
    carried_records = [{**record, "carried_from": record.get("carried_from") or date}
                       for record in old_records if (record["config"], record["method"]) in kept]
    return _plan_order(carried + rows), records + carried_records


def _previous_table(path, keys, out):
    """`(date, rows, records)` of the table at `path`, or None where there is none or it does
    not read (one progress line)."""
    try:
        with open(path, encoding="utf-8") as f:
            return _table_parts(json.load(f), keys)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        out(f"{path} ignored, its rows not carried over: it does not read as a table of "
            f"ssc-compare ({error})")
        return None


def _table_parts(table, keys):
    """`(date, rows, records)` of a result of `compare` whose rows hold `keys` (with or
    without `carried_from`).

    Raises:
        ValueError: `table` has another layout.
    """
    try:
        date, rows, records = table["environment"]["date"], table["rows"], table["runs"]
        fits = (isinstance(date, str) and isinstance(rows, list) and isinstance(records, list)
                and all(isinstance(row, dict) and set(row) | {"carried_from"} == keys
                        and row["method"] in pruning.METHODS
                        and _strings(row, "config", "table") for row in rows)
                and all(isinstance(record, dict) and _strings(record, "config", "method")
                        for record in records))
    except (KeyError, TypeError):
        fits = False
    if not fits:
        raise ValueError("not the layout this version writes: environment.date, and rows and "
                         "runs with its fields")
    return date, rows, records


def _strings(record, *names):
    """Whether `record`'s `names` are str, and its `carried_from`, if any, a str or None."""
    return (all(isinstance(record.get(name), str) for name in names)
            and isinstance(record.get("carried_from"), (str, type(None))))


def _plan_order(rows):
    """`rows` in the order of `plan`'s runs, tables and configs in their order in `rows`."""
    tables = list(dict.fromkeys(row["table"] for row in rows))
    configs = list(dict.fromkeys(row["config"] for row in rows))
    return sorted(rows, key=lambda row: (
        tables.index(row["table"]), row["method"] != pruning.DENSE,
        configs.index(row["config"]), pruning.METHODS.index(row["method"])))


def _weights(method, run, results):
    """`(live_params, dense_params, kept_fraction)` of a row, means over its eval.json files.

    A narrow run's eval.json counts the narrow network against itself (kept 1); its row
    counts it against the full dense twin of `run`'s config, as every other row does.
    """
    live = _mean(e["live_params"] for e in results)
    if method != pruning.NARROW:
        return (live, _mean(e["dense_params"] for e in results),
                _mean(e["kept_fraction"] for e in results))
    dense = budget.dense_params(run.config())
    return live, dense, None if live is None else live / dense


def _failure(run, outcome):
    return {"seed": run.seed, "step": outcome["step"], "error": outcome["error"],
            "log": outcome["log"]}


def _mean(values):
    values = list(values)
    return statistics.mean(values) if values else None


def format_markdown(result):
    """The table of `result` (`compare`'s) as Markdown: a caption, the rows, the notes (the
    carried rows among them), the failures."""
    header = ["config", "method", "top-1 % (n)", "paper top-1 %", "kept", "MACs run (M)",
              "train img/s", "TF b1 ms", "LiteRT b1 ms", "TFLite MB"]
    env = result["environment"]
    lines = [
        f"SSC against the pruning baselines, `ssc-compare` on {env['date'][:10]} "
        f"({env['cpu_count']} CPUs, {timing.machine(env)}, TF {env['tensorflow']}). "
        + "; ".join(result["notes"][key] for key in ("top1", "kept", "macs")) + ". "
        + f"Paper: {published.SOURCE}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in result["rows"]:
        lines.append("| " + " | ".join([
            row["config"], row["method"], _top1_cell(row),
            _number(row["published_top1"], "{:.2f}"),
            _number(row["kept_fraction"], "{:.2f} %", 100),
            _number(row["macs_run"], "{:,.1f} (" + row["macs_run_kind"] + ")", 1e-6),
            _number(row["images_per_second"], "{:,.0f}"),
            _number(row["tf_latency_ms"], "{:.2f}"),
            _number(row["tflite_latency_ms"], "{:.2f}"),
            _number(row["tflite_bytes"], "{:.2f}", 1e-6),
        ]) + " |")
    notes = result["notes"]
    lines += ["", f"- {_sentence(notes['images_per_second'])}.",
              f"- {_sentence(notes['latency'])} ({result['settings']['repeats']} calls)."]
    carried = [row for row in result["rows"] if row["carried_from"]]
    if carried:
        lines.append(f"- {_sentence(notes['carried_from'])}: " + ", ".join(
            f"{row['config']}/{row['method']} ({row['carried_from'][:10]})" for row in carried)
            + ".")
    failures = [(row, failed) for row in result["rows"] for failed in row["failed"]]
    unmeasured = [row for row in result["rows"] if row["measure_error"]]
    if failures or unmeasured:
        lines += ["", "Failed:", ""]
        lines += [f"- {row['config']}/{row['method']}/seed-{f['seed']} ({f['step']}): "
                  f"{f['error']} (log: {f['log']})" for row, f in failures]
        lines += [f"- {row['config']}/{row['method']} latency (seed-{row['measured_seed']}): "
                  f"{row['measure_error']}" for row in unmeasured]
    return "\n".join(lines) + "\n"


def _top1_cell(row):
    if not row["n"]:
        return "failed"
    of = f"{row['n']} of {len(row['seeds'])}" if row["failed"] else str(row["n"])
    std = f" ± {row['top1_std']:.2f}" if row["top1_std"] is not None else ""
    return f"{row['top1_mean']:.2f}{std} ({of})"


def _number(value, spec, scale=1):
    return "—" if value is None else spec.format(value * scale)


def _sentence(note):
    return note[:1].upper() + note[1:]


def plot_png(result):
    """Top-1 against the kept fraction, one line per method, one panel per table: PNG bytes.

    Error bars are the sample standard deviations over the seeds; the dense twin is its
    table's point at the kept fraction 1, with a dashed line across; the paper's SSC top-1
    are stars at the SSC rows' kept fractions.

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib import ticker
    from matplotlib.figure import Figure

    rows = [row for row in result["rows"] if row["n"]]
    panels = list(dict.fromkeys(row["table"] for row in result["rows"]))
    figure = Figure(figsize=(5.5 * len(panels), 4.5), layout="constrained")
    for axes, table in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        mine = [row for row in rows if row["table"] == table]
        for method in pruning.METHODS:
            points = sorted((row["kept_fraction"], row["top1_mean"], row["top1_std"] or 0.0)
                            for row in mine if row["method"] == method)
            if not points:
                continue
            kept, top1, std = zip(*points)
            drawn = axes.errorbar(kept, top1, yerr=std, marker="o", capsize=3, label=method)
            if method == pruning.DENSE:
                axes.axhline(top1[0], linestyle="--", linewidth=0.8,
                             color=drawn.lines[0].get_color())
        paper = sorted((row["kept_fraction"], row["published_top1"]) for row in mine
                       if row["published_top1"] is not None)
        if paper:
            axes.scatter(*zip(*paper), marker="*", s=120, c="k", zorder=3,
                         label="ssc (paper)")
        axes.set(xscale="log", xlabel="kept fraction of the dense weights",
                 ylabel="top-1 (%)", title=table)
        # Labels at 1, 2 and 5 of each decade: a label at every minor tick overlaps.
        axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def compare(runs, *, root, repeats=DEFAULT_REPEATS, python=sys.executable, out=print):
    """Runs every run not yet finished, measures them and writes the root's table under `root`.

    The table holds `runs` and the root's other finished seeds of their rows (`other_seeds`),
    and the rows of the previous table under `root` that these do not replace (`carry_over`).

    Args:
        runs: list of `Run` (`plan`).
        root: str, where to write compare.json, compare.md and compare.png (`plan`'s root).
        repeats: int >= 1, timed calls of each latency.
        python: the interpreter of the commands.
        out: callable taking the progress lines.

    Returns:
        The result written to `<root>/compare.json`: `environment`, `settings` (this
        command's), `notes`, `published_source`, `rows` (`summarize`, and the carried ones),
        `runs` (one record per run tabulated, `carried_from` set on the carried ones),
        `outputs` (the files written; the plot's is None without matplotlib).
    """
    from ssc_tf import model_dir as model_dir_lib

    tabulated = runs + other_seeds(runs, root=root, out=out)
    outcomes = execute(tabulated, python=python, out=out)
    measured = measure(tabulated, outcomes, repeats=repeats, out=out)
    paths = {name: os.path.join(root, name) for name in (JSON_FILE, MARKDOWN_FILE, PLOT_FILE)}
    rows, records = carry_over(
        paths[JSON_FILE], summarize(tabulated, outcomes, measured),
        [{"config": run.row, "method": run.method, "seed": run.seed,
          "model_dir": run.model_dir, "command": run.command_line(),
          **outcomes[run.model_dir], "carried_from": None} for run in tabulated],
        out=out)
    result = {
        "environment": timing.environment(),
        "settings": {
            "methods": list(dict.fromkeys(run.method for run in runs)),
            "seeds": list(dict.fromkeys(run.seed for run in runs)),
            "train_flags": list(runs[0].train_flags),
            "data_dir": runs[0].data_dir,
            "repeats": repeats,
        },
        "notes": NOTES,
        "published_source": published.SOURCE,
        "rows": rows,
        "runs": records,
    }
    os.makedirs(root, exist_ok=True)
    try:
        model_dir_lib.write_atomically(paths[PLOT_FILE], plot_png(result))
    except ImportError:
        out(f"{paths[PLOT_FILE]} not written: matplotlib is not installed (pip install "
            "matplotlib, or ssc_tf's `dev` extra).")
        paths[PLOT_FILE] = None
    result["outputs"] = paths
    model_dir_lib.write_atomically(paths[MARKDOWN_FILE], format_markdown(result))
    model_dir_lib.write_json(paths[JSON_FILE], result)
    return result


def main(argv):
    try:
        with arguments.as_flags():
            _run(argv)
    except (ValueError, FileNotFoundError) as error:
        # One line on stderr and exit status 1, not a traceback or absl's usage dump.
        raise SystemExit(f"Error: {error}") from None


def _run(argv):
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.configs:
        raise ValueError(f"Flag --configs is required: {_CONFIGS_EXPECTED}.")
    if not FLAGS.root:
        raise ValueError("Flag --root is required: the directory of the runs and the table.")
    try:
        train_flags = shlex.split(FLAGS.train_flags)
    except ValueError as error:
        raise arguments.invalid("train_flags", f"a shell-quoted string of flags ({error})",
                                repr(FLAGS.train_flags)) from None
    runs = plan(FLAGS.configs, methods=FLAGS.methods, seeds=FLAGS.seeds, root=FLAGS.root,
                train_flags=train_flags, data_dir=FLAGS.data_dir)
    if FLAGS.dry_run:
        for run in runs:
            print(run.command_line())
        return
    result = compare(runs, root=FLAGS.root, repeats=FLAGS.repeats,
                     out=lambda line: print(line, flush=True))
    print()
    print(format_markdown(result))
    print("Wrote " + ", ".join(path for path in result["outputs"].values() if path))
    failed = sum(run["status"] == "failed" and not run["carried_from"]
                 for run in result["runs"])
    if failed:
        sys.exit(f"{failed} of {len(runs)} runs failed; {result['outputs'][MARKDOWN_FILE]} "
                 "lists their errors.")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_list(
        "configs", None,
        "Configs to compare, comma-separated: packaged config names, paper table names (a "
        "table stands for its <table>_<n>pct configs; tables: "
        f"{', '.join(tables())}) or flagfile paths. SSC configs only: each table trains its "
        "dense twin once (--methods=dense).")
    flags.DEFINE_list(
        "methods", list(pruning.METHODS),
        f"--sparsity methods to train, comma-separated, each one of {', '.join(pruning.METHODS)}"
        "; the table lists them in that order.")
    flags.DEFINE_list(
        "seeds", [str(s) for s in DEFAULT_SEEDS],
        "Seeds to train every (config, method) with, comma-separated integers in [0, 2**32); "
        "the table gives the mean and standard deviation over them and the root's other "
        "finished seeds of that row, trained with the same flags.")
    flags.DEFINE_string(
        "root", None,
        f"Directory of the runs (<root>/<config>/<method>/seed-<seed>; the dense twin under "
        f"<root>/<table>/dense/) and of the table ({JSON_FILE}, {MARKDOWN_FILE}, {PLOT_FILE}). "
        "A rerun on the same root skips the finished runs and resumes the others, and the "
        "table keeps the rows of earlier commands on it; give smoke runs a root of their "
        "own.")
    flags.DEFINE_string(
        "train_flags", "",
        "Extra flags of every `python -m ssc_tf.train` command, one shell-quoted string; they "
        "come after the config's flagfile, so they override it. E.g. '--epochs=2 "
        "--lr_boundaries= --steps_per_epoch=1' for a smoke run (the paper's schedules decay "
        "at epochs an epochs cap must clear). Not "
        f"{', '.join('--' + f for f in OWN_TRAIN_FLAGS)}: compare sets those.")
    flags.DEFINE_string(
        "data_dir", None,
        "--data_dir of every training run: where the dataset lives (see `python -m "
        "ssc_tf.train --helpfull`); unused for digits.")
    flags.DEFINE_bool(
        "dry_run", False,
        "Print each run's train, evaluate and convert commands as one shell line (`python` for "
        "the interpreter) and run nothing.")
    flags.DEFINE_integer(
        "repeats", DEFAULT_REPEATS,
        "Timed calls of each batch-1 latency (TF, LiteRT); the median is reported.",
        lower_bound=1)


def run():
    """The `python -m ssc_tf.compare` and `ssc-compare` command line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _define_flags()
    # absl's own parser: compare's flags name no experiment flagfile to resolve, and absl
    # reports a flag value that does not parse in one line.
    app.run(main)


if __name__ == "__main__":
    run()
