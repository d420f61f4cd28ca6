r"""Times every execution form of every distinct SSC layer shape of the configs against dense.

`SSCConv2D(implementation="auto")` runs the form measured fastest for its shape, batch regime
and runtime (`ssc_tf.execution_plan`); this tool makes those measurements. For each distinct
SSC layer shape of the given configs (default: every CIFAR and Tiny-ImageNet config) it times,
in one process and interleaved (`ssc_tf.tuning.measure_tf`, `measure_tflite`), the dense
`keras.layers.Conv2D` of the same shape and every candidate form, in this process's TensorFlow
runtime (the GPU where one is visible, each call timed until the GPU has finished it; else the
CPU's):

- `small_batch`: forward at batch 1;
- `large_batch`: forward at batch 128;
- `train`: forward and backward (input and weight gradients) at batch 128;
- with `--runtime=tflite`, `tflite_dynamic` or `tflite_int8`: the layer converted to TFLite
  (float32; int8 weights with float activations, dynamic range; or int8 weights and
  activations), batch 1, one thread in LiteRT (`small_batch` only).

Each time is the minimum over the repeats (the least disturbed by other work on the machine).
It prints, per shape and regime, the dense time, the form the plan picks from those times
(`execution_plan.fastest`: the fastest; in TFLite the fastest that keeps the file small) and
the speed-up, then how many shapes stay below 0.95x, and writes every time as JSON.
`--write_costs` also writes them into the package's cost table, which the plan reads (or into
`--costs_file`): they replace the runtime's section (for TFLite, the section of this CPU's kind
among `execution_plan.LITERT_CPUS`, of its vendor and int8 instruction set, as XNNPACK's
kernels differ with AVX-512 VNNI and without it and run at another speed on each vendor's;
shapes no config has any more leave it) and keep the other sections. `--only_missing`
measures just the shapes that section lacks (after a config or an architecture rule changed)
and adds them, keeping what it holds; `--shapes` measures the named shapes again (a time a
noisy run got wrong) and replaces just theirs. `--merge_costs` measures nothing: it writes the
sections of a table written elsewhere (`tools/gpu_check.sh`'s GPU times) into the package's.

Usage:
    python tools/benchmark_layer.py --write_costs                          # this CPU runtime
    TF_ENABLE_ONEDNN_OPTS=1 python tools/benchmark_layer.py --write_costs  # the oneDNN one
    python tools/benchmark_layer.py --runtime=tflite --configs=cifar10_resnet32_10pct
    python tools/benchmark_layer.py --only_missing --write_costs           # new shapes only
    python tools/benchmark_layer.py --shapes="32x32 k3 s1 32x32 g16 p8" --write_costs
    python tools/benchmark_layer.py --merge_costs=results/gpu_check/execution_costs_gpu.json
    python tools/benchmark_layer.py --quick                                # a smoke run
"""

import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402

from ssc_tf import execution_plan  # noqa: E402
from ssc_tf import flagfile  # noqa: E402
from ssc_tf import layers as layers_lib  # noqa: E402
from ssc_tf import model_dir as model_dir_lib  # noqa: E402
from ssc_tf import models  # noqa: E402
from ssc_tf import pattern as pattern_lib  # noqa: E402
from ssc_tf import timing  # noqa: E402
from ssc_tf import tuning  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = [n for n in flagfile.names() if n.startswith(("cifar", "tinyimagenet"))]
BASELINE = tuning.BASELINE
FLAGS = flags.FLAGS


def config_layer_shapes(names):
    """The distinct `execution_plan.LayerShape`s of the SSC layers of the named configs."""
    shapes = {}
    for name in names:
        config = flagfile.load(name)
        model = models.build(config.model, **config.model_kwargs())
        for layer in model.layers:
            if isinstance(layer, layers_lib.SSCConv2D):
                shape = layer.plan_shape(layer.input.shape)
                shapes.setdefault(shape.key, shape)
        keras.backend.clear_session()
    return list(shapes.values())


def _best(shape, runtime, forms):
    """The form the plan picks from one regime's times (for TFLite, among those that keep
    the file small)."""
    return execution_plan.fastest(shape, runtime, forms).name


def _shape(record):
    return execution_plan.LayerShape.from_dict(record["shape"])


def _line(shape, runtime, times):
    line = f"{shape.key:<42}"
    for regime, forms in times.items():
        best = _best(shape, runtime, forms)
        line += (f" | {regime} dense {forms[BASELINE]:.2f} ms, {best} {forms[best]:.2f} ms "
                 f"({forms[BASELINE] / forms[best]:.2f}x)")
    return line


def summary(records, runtime):
    """Per regime, of the forms the plan picks: shapes measured, how many below 0.95x dense,
    median and worst speed-up."""
    speedups = {}
    for record in records:
        for regime, forms in record["times"].items():
            best = _best(_shape(record), runtime, forms)
            speedups.setdefault(regime, []).append(forms[BASELINE] / forms[best])
    return {
        regime: {
            "shapes": len(values),
            "below_0.95x": sum(v < 0.95 for v in values),
            "median_speedup": statistics.median(values),
            "worst_speedup": min(values),
        }
        for regime, values in speedups.items()
    }


def updated_costs(table, result, partial):
    """The cost table `table` with `result`'s times in its section (`execution_plan.section`:
    the runtime's; for TFLite, on the CPU that measured them). A full run replaces that
    section, so shapes no config has any more leave it; a `partial` one (`--only_missing`,
    `--shapes`) replaces just the shapes it measured. Shape records no section uses leave
    the table."""
    name = result["section"]
    table = {"measured_on": {}, **table, "shapes": dict(table.get("shapes", {}))}
    measured_on = {k: v for k, v in result.items() if k not in ("records", "summary")}
    previous = table["measured_on"].get(name)
    if partial and previous:
        # The section keeps its measurement record; these shapes were measured later.
        configs = sorted(set(previous["configs"]) | set(measured_on["configs"]))
        added = [*previous.get("added", []),
                 {**measured_on, "shapes": len(result["records"])}]
        measured_on = {**previous, "configs": configs, "added": added}
    section = ({regime: dict(times) for regime, times in table.get(name, {}).items()}
               if partial else {})
    table = {**table, "measured_on": {**table["measured_on"], name: measured_on},
             name: section}
    for record in result["records"]:
        key = _shape(record).key
        table["shapes"][key] = record["shape"]
        for regime, forms in record["times"].items():
            section.setdefault(regime, {})[key] = forms
    return _without_unused_shapes(table)


def merged_costs(table, other):
    """The cost table `table` with every section of the cost table `other` (one a run wrote
    with `--costs_file`, such as `tools/gpu_check.sh`'s) in place of its own, with their
    shape records and `measured_on`; its other sections stay. Shape records no section uses
    leave the table."""
    names = [name for name in execution_plan.SECTIONS if name in other]
    table = {
        **table,
        **{name: other[name] for name in names},
        "measured_on": {**table.get("measured_on", {}),
                        **{name: other["measured_on"][name] for name in names}},
        "shapes": {**table.get("shapes", {}), **other["shapes"]},
    }
    return _without_unused_shapes(table)


def _without_unused_shapes(table):
    used = {key for name in execution_plan.SECTIONS for times in table.get(name, {}).values()
            for key in times}
    return {**table,
            "shapes": {key: fields for key, fields in table["shapes"].items() if key in used}}


def _read_costs(path):
    """The cost table at `path`, or an empty one where no file is."""
    return execution_plan.load_costs(path) if os.path.exists(path) else {}


def _merge(path, costs_file):
    """Writes the sections of the cost table at `path` into `costs_file`."""
    other = _read_costs(path)
    names = [name for name in execution_plan.SECTIONS if name in other]
    if not names:
        sys.exit(f"--merge_costs: {path!r} is no cost table with a section of "
                 f"{execution_plan.SECTIONS} (a file that --write_costs --costs_file wrote)")
    model_dir_lib.write_json(costs_file, merged_costs(_read_costs(costs_file), other))
    print(f"Wrote the sections {', '.join(names)} of {path} into {costs_file}")


def main(argv):
    del argv
    if FLAGS.merge_costs:
        _merge(FLAGS.merge_costs, FLAGS.costs_file)
        return
    keras.utils.set_random_seed(0)
    runtime = FLAGS.runtime or layers_lib.current_runtime()
    configs = ["quickstart"] if FLAGS.quick else FLAGS.configs
    repeats, batch_size = (2, 8) if FLAGS.quick else (FLAGS.repeats, FLAGS.batch_size)
    shapes = config_layer_shapes(configs)
    if FLAGS.shapes:
        unknown = sorted(set(FLAGS.shapes) - {shape.key for shape in shapes})
        if unknown:
            sys.exit(f"--shapes: {unknown[0]!r} is not an SSC layer shape of --configs "
                     f"(a key as this tool prints it, such as {shapes[0].key!r})")
        shapes = [shape for shape in shapes if shape.key in FLAGS.shapes]
    environment = timing.environment()
    litert_cpu = execution_plan.litert_cpu(environment["cpu_vendor"],
                                           environment["cpu_features"] or ())
    tflite = runtime in execution_plan.TFLITE_RUNTIMES
    if tflite and litert_cpu is None and (FLAGS.write_costs or FLAGS.only_missing):
        sys.exit(f"--runtime={runtime}: the cost table has LiteRT times only of the CPUs "
                 f"{execution_plan.LITERT_CPUS}, and this one is none of them; measure without "
                 "--write_costs and --only_missing")
    section = None if tflite and litert_cpu is None else execution_plan.section(
        runtime, litert_cpu)
    if FLAGS.only_missing:
        known = _read_costs(FLAGS.costs_file).get(section, {}).get(execution_plan.SMALL_BATCH, {})
        shapes = [shape for shape in shapes if shape.key not in known]
    partial = FLAGS.only_missing or bool(FLAGS.shapes)
    print(f"{len(shapes)} distinct SSC layer shapes of {len(configs)} configs; runtime "
          f"{section or runtime}; minimum milliseconds of {repeats} calls.", flush=True)
    # The layout of the 1 x 1 parts timed: sections measured before the joined layout say
    # "aligned" (its forms read the inputs without the rotation).
    result = {**environment, "runtime": runtime, "section": section, "configs": configs,
              "batch_size": batch_size, "repeats": repeats,
              "pointwise_layout": pattern_lib.JOINED, "records": []}
    for i, shape in enumerate(shapes):
        if runtime in execution_plan.TFLITE_RUNTIMES:
            times = tuning.measure_tflite(shape, runtime, repeats)
        else:
            times = tuning.measure_tf(shape, runtime, batch_size, repeats)
        result["records"].append({"shape": shape.as_dict(), "times": times})
        result["summary"] = summary(result["records"], runtime)
        # Written after every shape: an interrupted run keeps what it measured.
        model_dir_lib.write_json(FLAGS.output, result)
        print(f"[{i + 1}/{len(shapes)}] {_line(shape, runtime, times)}", flush=True)
        keras.backend.clear_session()
    print("\nThe planned form against the dense Conv2D of the same shape, per regime:")
    for regime, facts in result["summary"].items():
        print(f"  {regime}: {facts['below_0.95x']} of {facts['shapes']} shapes below 0.95x; "
              f"median {facts['median_speedup']:.2f}x, worst {facts['worst_speedup']:.2f}x")
    print(f"Wrote {FLAGS.output}")
    if FLAGS.write_costs:
        model_dir_lib.write_json(FLAGS.costs_file,
                                 updated_costs(_read_costs(FLAGS.costs_file), result, partial))
        print(f"Wrote {FLAGS.costs_file}")


def _define_flags():
    """The tool's flags, defined only when it runs, so importing it defines none."""
    flags.DEFINE_list("configs", DEFAULT_CONFIGS,
                      "Names of packaged configs whose layers to measure.")
    flags.DEFINE_enum("runtime", None, list(execution_plan.TFLITE_RUNTIMES),
                      "Measure TFLite (float32; int8 weights, dynamic range; or int8 weights "
                      "and activations) instead of this process's TensorFlow runtime (the GPU "
                      "where one is visible, else the CPU's, which TF_ENABLE_ONEDNN_OPTS "
                      "selects).")
    flags.DEFINE_integer("repeats", 7, "Timed calls per form (the minimum is kept).",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", 128, "The large batch.", lower_bound=2)
    flags.DEFINE_string("output", "results/benchmark_layer.json",
                        "Where to write the JSON results.")
    flags.DEFINE_bool("write_costs", False,
                      "Also write the times into the cost table --costs_file.")
    flags.DEFINE_string("costs_file", execution_plan.COSTS_FILE,
                        "The cost table that --write_costs and --merge_costs write and "
                        "--only_missing reads (created if missing); default: the package's "
                        f"({os.path.relpath(execution_plan.COSTS_FILE, ROOT)}), which the plan "
                        "reads.")
    flags.DEFINE_string("merge_costs", None,
                        "Measure nothing: write the sections of this cost table (one that "
                        "--write_costs wrote to another --costs_file, such as "
                        "tools/gpu_check.sh's GPU times) into --costs_file, replacing those "
                        "sections there.")
    flags.DEFINE_bool("only_missing", False, "Measure only the shapes the cost table "
                      "--costs_file lacks for this runtime; with --write_costs, add them to "
                      "what it holds.")
    flags.DEFINE_list("shapes", [], "Measure only these layer shapes of --configs, "
                      "comma-separated keys as this tool prints them ('32x32 k3 s1 32x32 g16 "
                      "p8'); with --write_costs, replace just their times.")
    flags.DEFINE_bool("quick", False, "A smoke run: the quickstart config's shapes, 2 repeats, "
                      "batch 8.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
