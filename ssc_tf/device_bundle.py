r"""Times the SSC layer forms on a phone, or on any machine that runs LiteRT but not ssc_tf: a
bundle of one-layer TFLite files for LiteRT's `benchmark_model` tool, and its results read back
as a cost table that `convert_tflite --costs` plans with.

    # 1. Where ssc_tf runs: one file per distinct SSC layer shape of the run's model and form
    python -m ssc_tf.device_bundle --model_dir=runs/quickstart --quantization=int8 \
        --bundle_dir=bundle
    # 2. On the device (Android, through adb), with LiteRT's benchmark_model for its ABI
    adb push bundle /data/local/tmp/ssc_bundle
    adb push benchmark_model /data/local/tmp/
    adb shell sh /data/local/tmp/ssc_bundle/run.sh /data/local/tmp/benchmark_model > results.txt
    # 3. Back here: the times as a cost table, and a file planned with them
    python -m ssc_tf.device_bundle --bundle_dir=bundle --results=results.txt \
        --costs=phone_costs.json
    python -m ssc_tf.convert_tflite --model_dir=runs/quickstart --quantization=int8 \
        --costs=phone_costs.json --output=phone.tflite

Each file is one layer shape in one form, or the dense Conv2D of that shape (the dense twin's
layer), converted alone in the file's quantization as `ssc_tf.tuning` times layers here
(`tuning.tflite_file`), so the device's times mean what this machine's tuned times mean.
`run.sh` runs `benchmark_model` on each file on one thread (XNNPACK, 100 runs after 10 warm-up
runs) and prints each file's name before the tool's output; `read_results` takes the tool's
"Inference (avg)" of each file. `manifest.json` says which shape and form each file holds.
"""

import json
import os
import re
import shutil
import sys
import tempfile

from absl import app
from absl import flags

from ssc_tf import arguments
from ssc_tf import execution_plan
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import quantization as quantization_lib
from ssc_tf import tuning
from ssc_tf.models import masked

MANIFEST = "manifest.json"
SCRIPT = "run.sh"
# What `run.sh` prints before each file's benchmark_model output.
FILE_MARKER = "ssc_tf file: "
# benchmark_model's summary line (BenchmarkLoggingListener::OnBenchmarkEnd), in microseconds.
_AVERAGE = re.compile(r"Inference timings in us:.*Inference \(avg\): ([0-9.eE+-]+)")

_RUN_SH = f"""#!/bin/sh
# Times every .tflite file of this folder with LiteRT's benchmark_model on one thread.
# Usage: sh run.sh [path to benchmark_model] > results.txt
# Then, where ssc_tf runs: python -m ssc_tf.device_bundle --bundle_dir=<this folder's copy> \\
#     --results=results.txt --costs=costs.json
BENCHMARK_MODEL="${{1:-./benchmark_model}}"
case "$BENCHMARK_MODEL" in /*) ;; *) BENCHMARK_MODEL="$PWD/$BENCHMARK_MODEL" ;; esac
cd "$(dirname "$0")" || exit 1
for file in *.tflite; do
  echo "{FILE_MARKER}$file"
  "$BENCHMARK_MODEL" --graph="$file" --num_threads=1 --use_xnnpack=true \\
      --warmup_runs=10 --num_runs=100 2>&1
done
"""


def _file_name(index, form):
    return f"{index:03d}_{form.replace('+', '-')}.tflite"


def write(model, quantization, bundle_dir):
    """Writes the bundle of `model`'s SSC layer shapes for `quantization` into `bundle_dir`.

    Args:
        model: a Keras model; its SSC layers that the plan decides are timed
            (`tuning.planned_layers`), each distinct shape once.
        quantization: one of `quantization.QUANTIZATIONS`; float16 files are timed as
            float32 ones, which LiteRT runs them as.
        bundle_dir: a directory that does not exist yet: written whole or not at all.

    Returns:
        The manifest: {"runtime", "quantization", "files": {file name: {"shape": LayerShape
        fields, "form": form name}}}.

    Raises:
        ValueError: a bad `quantization`, an existing `bundle_dir`, or a model without SSC
            layers to time.
    """
    arguments.check_choice("quantization", quantization, quantization_lib.QUANTIZATIONS)
    if os.path.exists(bundle_dir):
        raise arguments.invalid("bundle_dir", "a directory that does not exist yet",
                                repr(bundle_dir))
    _, shapes = tuning.planned_layers(model)
    if not shapes:
        raise ValueError("The model has no SSC layers whose form the plan decides: nothing to "
                         "time on the device.")
    runtime = quantization_lib.PLANNED_RUNTIME[quantization]
    files = {}
    parent = os.path.dirname(os.path.abspath(bundle_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ssc_bundle-", dir=parent)
    try:
        index = 0
        for shape in {shape.key: shape for shape in shapes}.values():
            for form, layer in tuning.layers(shape).items():
                name = _file_name(index, form)
                index += 1
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(tuning.tflite_file(layer, shape, runtime))
                files[name] = {"shape": shape.as_dict(), "form": form}
                print(f"[{index}] {name}: {shape.key} {form}", file=sys.stderr, flush=True)
        manifest = {"runtime": runtime, "quantization": quantization, "files": files}
        model_dir_lib.write_json(os.path.join(tmp, MANIFEST), manifest)
        with open(os.path.join(tmp, SCRIPT), "w", encoding="utf-8") as f:
            f.write(_RUN_SH)
        os.chmod(os.path.join(tmp, SCRIPT), 0o755)
        os.rename(tmp, bundle_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_results(bundle_dir, results):
    """The cost table of a bundle's times on the device.

    Args:
        bundle_dir: the bundle `write` wrote (its manifest).
        results: str, what `run.sh` printed on the device.

    Returns:
        A cost table: the manifest's shapes, and {section: {"small_batch": {shape key: {form:
        ms}}}} in the section of its runtime on `execution_plan.TUNED`, which
        `convert_tflite --costs` plans with. A file without a time (benchmark_model failed
        on it) leaves its form out: the plan never picks a form that was not measured.

    Raises:
        ValueError: no manifest in `bundle_dir`, a result of a file the manifest lacks, or no
            time of any file.
    """
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.exists(path):
        raise arguments.invalid("bundle_dir", f"a bundle that device_bundle wrote (with its "
                                f"{MANIFEST})", repr(bundle_dir))
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    times, current = {}, None
    for line in results.splitlines():
        if line.startswith(FILE_MARKER):
            current = line[len(FILE_MARKER):].strip()
            if current not in manifest["files"]:
                raise ValueError(f"--results names {current!r}, which the bundle's {MANIFEST} "
                                 "does not list: the results of another bundle?")
        elif (match := _AVERAGE.search(line)) and current is not None:
            times[current] = float(match.group(1)) / 1e3
    if not times:
        raise ValueError(
            f"--results holds no time of any file (lines '{FILE_MARKER}<file>' followed by "
            "benchmark_model's 'Inference timings in us: ...'): pass what run.sh printed.")
    section = execution_plan.section(manifest["runtime"], execution_plan.TUNED)
    table = {"shapes": {}, section: {execution_plan.SMALL_BATCH: {}}, "measured_on": {
        section: {"device": "benchmark_model", "bundle": os.path.abspath(bundle_dir),
                  "quantization": manifest["quantization"], "files": len(times)}}}
    for name, ms in times.items():
        entry = manifest["files"][name]
        shape = execution_plan.LayerShape.from_dict(entry["shape"])
        table["shapes"][shape.key] = entry["shape"]
        table[section][execution_plan.SMALL_BATCH].setdefault(shape.key, {})[
            entry["form"]] = round(ms, 4)
    return table


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS.bundle_dir:
        raise app.UsageError("Flag --bundle_dir is required: the bundle to write or to read.")
    try:
        with arguments.as_flags():
            if FLAGS.results:
                if not FLAGS.costs:
                    raise app.UsageError("Flag --costs is required with --results: the cost "
                                         "table to write.")
                with open(FLAGS.results, encoding="utf-8", errors="replace") as f:
                    table = read_results(FLAGS.bundle_dir, f.read())
                model_dir_lib.write_json(FLAGS.costs, table)
                (section,) = [name for name in table if "@" in name]
                count = len(table[section][execution_plan.SMALL_BATCH])
                print(f"Wrote {FLAGS.costs}: {section}, {count} layer shapes. Plan a file "
                      f"with them: python -m ssc_tf.convert_tflite --costs={FLAGS.costs} ...")
                return
            if not FLAGS.model_dir:
                raise app.UsageError("Flag --model_dir is required to write a bundle (or "
                                     "pass --results to read one back).")
            model, _, _, _ = model_dir_lib.load_model(FLAGS.model_dir)
            manifest = write(masked.bake(model), FLAGS.quantization, FLAGS.bundle_dir)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"Error: {e}")
    print(f"Wrote {FLAGS.bundle_dir}: {len(manifest['files'])} files for "
          f"{manifest['runtime']}, {SCRIPT}, {MANIFEST}. Run {SCRIPT} on the device "
          "(see python -m ssc_tf.device_bundle --help).")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_string("bundle_dir", None,
                        "The bundle: a new directory to write, or one written before to read "
                        "back with --results.")
    flags.DEFINE_string("model_dir", None,
                        "To write a bundle: the training run whose model's SSC layer shapes "
                        "to time.")
    flags.DEFINE_enum("quantization", "none", list(quantization_lib.QUANTIZATIONS),
                      "To write a bundle: the quantization of the files to plan (as "
                      "convert_tflite's flag); float16 files are timed as float32.")
    flags.DEFINE_string("results", None,
                        "To read a bundle back: the text run.sh printed on the device.")
    flags.DEFINE_string("costs", None,
                        "With --results: the cost table (JSON) to write, for convert_tflite "
                        "--costs.")


def run():
    """The `python -m ssc_tf.device_bundle` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
