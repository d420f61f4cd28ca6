r"""Times whole SSC models against their dense twins, in one process, in turns.

    python tools/benchmark_models.py
    python tools/benchmark_models.py --configs=cifar10_vgg19_10pct,quickstart --repeats=5
    python tools/benchmark_models.py --quick   # a smoke run

For each experiment config (a packaged config's name, or a path to a flagfile), it builds the
config's model and its dense twin (the same config with `dense`: every convolution standard),
untrained (speed does not depend on the weights), and times both, alternating call by call so
that drift hits both alike:

- TF inference (`training=False`) at batch 1 and at `--batch_size`;
- one training step at `--batch_size` with the training recipe (`CoupledL2SGD` on the
  config's schedule, sparse softmax cross-entropy, the metrics `ssc_tf.train` compiles);
- TFLite at batch 1 on one thread in the LiteRT interpreter, for each `--tflite` variant of
  `ssc_tf.convert_tflite` (float32, float16, dynamic range, int8; builtin ops only) on the
  graph it converts (raw pixels in, probabilities out). int8 calibrates on random pixels:
  the point is speed, not accuracy. The files are planned for this CPU and guarded against
  the dense twin's as `ssc_tf.convert_tflite` does by default (`--litert_cpu`, `--tune`,
  `--guard`); the JSON records what the guard measured and moved.

Each measurement is the median of `--repeats` timed calls. Next to every time it reports the
speed-up over the dense twin and the fraction of the ideal one that it reaches (speed-up /
MAC ideal); the MAC ideal (dense MACs / SSC MACs) and the parameter ideal (dense weights /
live weights) come from the models' exact counts (`ssc_tf.models.report.model_stats`). It
also records each TFLite file's size.

Writes every number as JSON (`--output`), the table as Markdown for docs/benchmarks.md
(`--markdown`, also printed), and one plot (`--plot`): speed-up against the kept fraction, one
series per measurement, the ideal as a line.

TensorFlow's CPU kernels are those `TF_ENABLE_ONEDNN_OPTS` selects (unset: oneDNN only on CPUs
with AVX-512 VNNI, BF16 or AMX); the JSON records it.
"""

import dataclasses
import io
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import keras  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ssc_tf import convert_tflite  # noqa: E402
from ssc_tf import execution_plan  # noqa: E402
from ssc_tf import flagfile  # noqa: E402
from ssc_tf import model_dir as model_dir_lib  # noqa: E402
from ssc_tf import models  # noqa: E402
from ssc_tf import optimization  # noqa: E402
from ssc_tf import quantization  # noqa: E402
from ssc_tf import timing  # noqa: E402
from ssc_tf.models import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = (
    "cifar10_vgg19_10pct", "cifar10_vgg19_2pct", "cifar10_resnet32_10pct",
    "cifar10_resnet32_2pct",
)
TFLITE_LABELS = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
# --quick's settings, where --repeats and --batch_size are not given.
QUICK_REPEATS = 2
QUICK_BATCH_SIZE = 8
# Random pixel images that calibrate the int8 activation ranges.
_CALIBRATION_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class _Subject:
    """One model under test, compiled for training, with its TFLite files (quantization ->
    `convert_tflite.Conversion`)."""

    model: keras.Model
    stats: report.ModelStats
    tflite: dict

    def forward(self):
        # One trace per batch size, as Keras' predict traces: the SSC layers run the form of
        # the batch's regime.
        infer = tf.function(lambda x: self.model(x, training=False))
        # .numpy() waits for the result: on a GPU the ops only start asynchronously.
        return lambda x: infer(x).numpy()


def _is_config(name):
    """Whether `--configs` entry `name` is a packaged config's name or a flagfile's path."""
    try:
        return bool(flagfile.resolve(name))
    except FileNotFoundError:
        return False


def _prepare(config, quantizations, max_stored, litert_cpu, guard, tune):
    """Builds and compiles `config`'s model as `ssc_tf.train` does, and converts it to TFLite."""
    keras.utils.set_random_seed(config.seed)
    model = models.build(config.model, **config.model_kwargs())
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if config.num_classes > 10:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
    # One step per epoch: the schedule's boundaries only change the rate, not the step's work.
    model.compile(
        optimizer=optimization.build_optimizer(config, steps_per_epoch=1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
        jit_compile=False,
    )
    rng = np.random.default_rng(config.seed)
    calibration = [
        rng.uniform(0, 255, (1, *config.input_shape)).astype(np.float32)
        for _ in range(_CALIBRATION_IMAGES)
    ]
    tflite = {
        q: convert_tflite.plan_and_convert(model, config.dataset, q, calibration=calibration,
                                           max_stored=max_stored, litert_cpu=litert_cpu,
                                           guard=guard, tune=tune)
        for q in quantizations
    }
    return _Subject(model, report.model_stats(model), tflite)


def _counts(stats):
    return {
        "live_params": stats.live_params, "dense_params": stats.dense_params,
        "macs": stats.macs, "dense_macs": stats.dense_macs,
    }


def modes(batch_size, quantizations):
    """(key, label) of every measurement, in the table's order."""
    return [
        ("tf_b1", "TF b1"),
        (f"tf_b{batch_size}", f"TF b{batch_size}"),
        (f"train_b{batch_size}", f"train b{batch_size}"),
    ] + [(f"tflite_{q}_b1", f"LiteRT {TFLITE_LABELS[q]} b1") for q in quantizations]


def benchmark(name, config, subjects, batch_size, repeats, quantizations):
    """The record of one config: counts, ideals, every timing and the TFLite file sizes.

    Args:
        name: the `--configs` entry.
        config: its `ExperimentConfig`.
        subjects: {"dense": _Subject, "ssc": _Subject}.
        batch_size, repeats, quantizations: as the flags.
    """
    stats = subjects["ssc"].stats
    mac_ideal = stats.dense_macs / stats.macs
    rng = np.random.default_rng(config.seed)
    shape = config.input_shape
    one = tf.constant(rng.standard_normal((1, *shape)), tf.float32)
    batch = tf.constant(rng.standard_normal((batch_size, *shape)), tf.float32)
    labels = tf.constant(rng.integers(0, config.num_classes, batch_size), tf.int32)
    pixels = rng.uniform(0, 255, (1, *shape)).astype(np.float32)
    forwards = {twin: subject.forward() for twin, subject in subjects.items()}
    runs = {
        "tf_b1": (forwards, (one,)),
        f"tf_b{batch_size}": (forwards, (batch,)),
        f"train_b{batch_size}": (
            {twin: subject.model.train_on_batch for twin, subject in subjects.items()},
            (batch, labels),
        ),
    }
    for q in quantizations:
        invokes = {
            twin: convert_tflite.interpreter(subject.tflite[q].flatbuffer, pixels).invoke
            for twin, subject in subjects.items()
        }
        runs[f"tflite_{q}_b1"] = (invokes, ())
    timings = {}
    for mode, (fns, args) in runs.items():
        ms = timing.interleaved_ms(fns, repeats, *args)
        speedup = ms["dense"] / ms["ssc"]
        timings[mode] = {
            "dense_ms": ms["dense"], "ssc_ms": ms["ssc"], "speedup": speedup,
            "fraction_of_ideal": speedup / mac_ideal,
        }
    return {
        "config": name,
        "model": config.model,
        "dataset": config.dataset,
        "ticket": config.ticket,
        "kept_fraction": stats.kept_fraction,
        "mac_ideal": mac_ideal,
        "param_ideal": stats.dense_params / stats.live_params,
        "counts": {twin: _counts(subject.stats) for twin, subject in subjects.items()},
        "timings": timings,
        "tflite_bytes": {
            q: {twin: len(subject.tflite[q].flatbuffer) for twin, subject in subjects.items()}
            for q in quantizations
        },
        # What the guard measured and moved in the SSC files (`Conversion.guard`; None where
        # it did not run), and the LiteRT times that planned them.
        "tflite_guard": {q: subjects["ssc"].tflite[q].guard for q in quantizations},
        "tflite_planned_with": {q: subjects["ssc"].tflite[q].litert_cpu for q in quantizations},
        # How this machine's times were measured where they planned the files (`tune`).
        "tflite_tuning": {q: subjects["ssc"].tflite[q].tuning for q in quantizations},
    }


def format_markdown(result):
    """The records of `result` as a Markdown table, one row per config, with a caption."""
    columns = modes(result["batch_size"], result["tflite"])
    sizes = [f"{TFLITE_LABELS[q]} MB" for q in result["tflite"]]
    header = (["config", "kept", "MAC ideal", "param ideal"] + [label for _, label in columns]
              + sizes)
    lines = [
        f"Dense twin -> SSC, median ms of {result['repeats']} calls measured in turns in one "
        f"run ({result['cpu_count']} CPUs, {timing.machine(result)}, TF {result['tensorflow']}, "
        f"{result['date'][:10]}): (**speed-up**, fraction of the MAC ideal). LiteRT: 1 thread; "
        f"MB: the TFLite file, dense -> SSC ({_budget(result['max_stored'])}), planned for "
        f"--litert_cpu={result['litert_cpu']}{_guarded(result)}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in result["records"]:
        cells = [r["config"], f"{100 * r['kept_fraction']:.2f} %", f"{r['mac_ideal']:.1f}x",
                 f"{r['param_ideal']:.1f}x"]
        for mode, _ in columns:
            t = r["timings"][mode]
            cells.append(f"{t['dense_ms']:.2f} -> {t['ssc_ms']:.2f} ms "
                         f"(**{t['speedup']:.2f}x**, {t['fraction_of_ideal']:.2f})")
        for q in result["tflite"]:
            size = r["tflite_bytes"][q]
            cells.append(f"{size['dense'] / 1e6:.2f} -> {size['ssc'] / 1e6:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _guarded(result):
    """Whether the SSC files were guarded against their dense twins (`--guard`), in words."""
    if not result.get("guard"):
        return ""
    return ", timed against the dense twin's file and moved to dense where slower (--guard)"


def _budget(max_stored):
    """The SSC files' storage budget (convert_tflite --max_stored; None: inf) in words."""
    if max_stored is None:
        return "no storage budget: --max_stored=inf"
    if max_stored == execution_plan.MAX_STORED_AUTO:
        return (f"storing {execution_plan.TFLITE_MAX_STORED:g}x the live weights, or more "
                "where the plan's layer times say that would be slower than dense: "
                "--max_stored=auto")
    return f"storing at most {max_stored:g}x the live weights: --max_stored={max_stored:g}"


def plot_png(result):
    """Speed-up against kept fraction, one series per measurement, the ideals drawn: PNG bytes."""
    records = result["records"]
    kept = np.array([r["kept_fraction"] for r in records])
    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    line = np.geomspace(kept.min() / 1.5, 1.0)
    axes.plot(line, 1 / line, "k-", label="ideal (parameters): 1 / kept fraction")
    axes.scatter(kept, [r["mac_ideal"] for r in records], marker="_", s=300, c="k",
                 label="ideal (MACs) of each config")
    for marker, (mode, label) in zip("osD^vP*X", modes(result["batch_size"], result["tflite"])):
        axes.scatter(kept, [r["timings"][mode]["speedup"] for r in records], marker=marker,
                     label=label)
    for r in records:
        axes.annotate(r["config"], (r["kept_fraction"], r["mac_ideal"]), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    axes.axhline(1, color="grey", linewidth=0.5)
    axes.set(xscale="log", yscale="log", xlabel="kept fraction of the dense weights",
             ylabel="speed-up over the dense twin",
             title="SSC models against their dense twins")
    axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    repeats, batch_size = FLAGS.repeats, FLAGS.batch_size
    if FLAGS.quick:
        repeats = repeats if FLAGS["repeats"].present else QUICK_REPEATS
        batch_size = batch_size if FLAGS["batch_size"].present else QUICK_BATCH_SIZE
    configs = {}
    for name in FLAGS.configs:
        try:
            configs[name] = flagfile.load(name)
        except ValueError as e:
            sys.exit(f"Error: invalid value for flag --configs: {e}")
        if configs[name].dense:
            sys.exit(f"Error: invalid value for flag --configs: {name} is a dense config; list "
                     "SSC configs, each is timed against its dense twin.")
    quantizations = list(dict.fromkeys(FLAGS.tflite))
    records, dense_twins = [], {}
    for i, (name, config) in enumerate(configs.items()):
        print(f"[{i + 1}/{len(configs)}] {name}: building and converting...", flush=True)
        dense = dataclasses.replace(config, sparsity="dense", ticket=None)
        # Configs of one network share a dense twin: built and converted once.
        key = (dense.model, tuple(dense.model_kwargs().items()))
        if key not in dense_twins:
            dense_twins[key] = _prepare(dense, quantizations, FLAGS.max_stored,
                                        FLAGS.litert_cpu, FLAGS.guard, FLAGS.tune)
        subjects = {"dense": dense_twins[key],
                    "ssc": _prepare(config, quantizations, FLAGS.max_stored, FLAGS.litert_cpu,
                                    FLAGS.guard, FLAGS.tune)}
        print(f"[{i + 1}/{len(configs)}] {name}: timing...", flush=True)
        records.append(benchmark(name, config, subjects, batch_size, repeats, quantizations))
    result = {
        **timing.environment(),
        "batch_size": batch_size,
        "repeats": repeats,
        "tflite": quantizations,
        # None for inf, which strict JSON cannot spell.
        "max_stored": None if FLAGS.max_stored == math.inf else FLAGS.max_stored,
        "litert_cpu": FLAGS.litert_cpu,
        "guard": FLAGS.guard,
        "tune": FLAGS.tune,
        "records": records,
    }
    markdown = format_markdown(result)
    print()
    print(markdown)
    for path in (FLAGS.output, FLAGS.markdown, FLAGS.plot):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    model_dir_lib.write_json(FLAGS.output, result)
    model_dir_lib.write_atomically(FLAGS.markdown, markdown)
    model_dir_lib.write_atomically(FLAGS.plot, plot_png(result))
    print(f"Wrote {FLAGS.output}, {FLAGS.markdown}, {FLAGS.plot}")


def _define_flags():
    """The tool's flags, defined only when it runs, so importing it defines none."""
    flags.DEFINE_list(
        "configs", list(DEFAULT_CONFIGS),
        "SSC experiment configs to time against their dense twins: names of the packaged "
        "configs or paths to flagfiles, comma-separated.")
    flags.register_validator(
        "configs",
        lambda names: bool(names) and all(_is_config(n) for n in names),
        message="expected one or more configs, each the name of a packaged config "
                f"({', '.join(flagfile.names())}) or the path of a flagfile that exists")
    flags.DEFINE_integer(
        "repeats", 10, "Timed calls per measurement and model; the median is reported.",
        lower_bound=1)
    flags.DEFINE_integer(
        "batch_size", 128, "The large batch of TF inference and of the training step.",
        lower_bound=1)
    flags.DEFINE_list(
        "tflite", list(quantization.QUANTIZATIONS),
        "TFLite variants to convert, size and time, comma-separated, each one of "
        f"{', '.join(quantization.QUANTIZATIONS)} (as convert_tflite's --quantization; "
        "none is float32); empty for no TFLite.")
    flags.register_validator(
        "tflite", lambda values: set(values) <= set(quantization.QUANTIZATIONS),
        message=f"expected a comma-separated list of {', '.join(quantization.QUANTIZATIONS)}")
    convert_tflite.define_max_stored_flag(
        "As convert_tflite's --max_stored: the most weights the SSC files may store")
    # The files run here: planned, unless told otherwise, for this CPU, and guarded.
    convert_tflite.define_litert_cpu_flag()
    convert_tflite.define_guard_flag()
    convert_tflite.define_tune_flag()
    flags.DEFINE_bool(
        "quick", False,
        f"A smoke run: {QUICK_REPEATS} repeats and batch size {QUICK_BATCH_SIZE}, where "
        "--repeats and --batch_size are not given.")
    flags.DEFINE_string("output", "results/benchmark_models.json", "The JSON results file.")
    flags.DEFINE_string(
        "markdown", "results/benchmark_models.md",
        "The Markdown table file (for docs/benchmarks.md).")
    flags.DEFINE_string(
        "plot", "results/benchmark_models.png",
        "The PNG plot file: speed-up against kept fraction, the ideal as a line.")
    for name, suffix in (("output", ".json"), ("markdown", ".md"), ("plot", ".png")):
        flags.register_validator(
            name, lambda path, suffix=suffix: path.endswith(suffix),
            message=f"expected a file name ending in {suffix}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
