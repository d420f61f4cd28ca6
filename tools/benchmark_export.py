"""Exported sizes, TFLite fidelity and latency of trained runs, dense and SSC side by side.

    python tools/benchmark_export.py \
        --model_dirs=runs/dense,runs/quickstart,runs/ssc2 --output=results/benchmark_export.json

For each run (a `--model_dir` that `ssc_tf.train` wrote), in one process:

- exports the TF-Serving SavedModel (`ssc_tf.export`) and measures it on disk (all of it,
  and its variables);
- converts every TFLite variant (`ssc_tf.convert_tflite`: none, float16, dynamic, int8),
  planned for this CPU's kind unless `--litert_cpu` names another, and runs each in LiteRT
  (`ai_edge_litert`, 1 thread, batch 1) on the first `--num_images` test images, against
  the Keras model on the same images: top-1 agreement, the largest absolute
  difference of any class probability, the test top-1 itself, the file size, and the median
  latency of one image.

Prints one table and writes it as JSON.
"""

import json
import logging as std_logging
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ai_edge_litert.interpreter import Interpreter  # noqa: E402
import tensorflow as tf  # noqa: E402

from ssc_tf import convert_tflite  # noqa: E402
from ssc_tf import data  # noqa: E402
from ssc_tf import export  # noqa: E402
from ssc_tf import model_dir as model_dir_lib  # noqa: E402
from ssc_tf import quantization as quantization_lib  # noqa: E402
from ssc_tf.models import report  # noqa: E402

# Latency: invocations of one image that are not timed first.
_WARMUP = 5


def _tflite_predictions(path, pixels):
    """Runs `path` on each image of `pixels` alone: (probabilities, seconds per image)."""
    interpreter = Interpreter(model_path=path, num_threads=1)
    (inputs,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inputs["index"], (1,) + pixels.shape[1:])
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    probabilities, seconds = [], []
    for i, image in enumerate(pixels):
        interpreter.set_tensor(inputs["index"], image[None].astype(inputs["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        probabilities.append(interpreter.get_tensor(outputs["index"])[0])
        if i >= _WARMUP:
            seconds.append(elapsed)
    return np.stack(probabilities), seconds


def benchmark(model_dir, work_dir, num_images, litert_cpu):
    """The rows of one run: its SavedModel, then one per TFLite variant, planned for
    `litert_cpu` (`convert_tflite.convert`)."""
    model, config, _, _ = model_dir_lib.load_model(model_dir)
    stats = report.model_stats(model)
    name = os.path.basename(os.path.normpath(model_dir))
    images, labels = next(iter(data.load(
        config.dataset, "test", batch_size=num_images, normalized=False)))
    pixels, labels = images.numpy(), labels.numpy()
    expected = tf.nn.softmax(model(data.normalize(pixels, config.dataset))).numpy()
    common = {
        "model": name,
        "live_params": stats.live_params,
        "kept_fraction": stats.kept_fraction,
        "keras_top1": float(np.mean(expected.argmax(1) == labels)),
    }
    saved = export.export(
        model_dir, os.path.join(work_dir, "serving", name), serving_base_path="/models")
    rows = [{**common, "format": "savedmodel", "bytes": saved["bytes"],
             "variables_bytes": saved["variables_bytes"]}]
    for quantization in quantization_lib.QUANTIZATIONS:
        path = os.path.join(work_dir, f"{name}_{quantization}.tflite")
        convert_tflite.convert(model_dir, path, quantization=quantization,
                               litert_cpu=litert_cpu)
        probabilities, seconds = _tflite_predictions(path, pixels)
        rows.append({
            **common,
            "format": f"tflite_{quantization}",
            "bytes": os.path.getsize(path),
            "top1_agreement": float(np.mean(probabilities.argmax(1) == expected.argmax(1))),
            "max_abs_diff": float(np.abs(probabilities - expected).max()),
            "top1": float(np.mean(probabilities.argmax(1) == labels)),
            "latency_ms": 1000 * statistics.median(seconds),
        })
    return rows


def format_table(rows):
    """The rows as a Markdown table."""
    header = ("| model | kept | format | MB | top-1 agreement | max abs diff | top-1 | "
              "latency ms (1 thread) |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for row in rows:
        size = f"{row['bytes'] / 1e6:.2f}"
        if "variables_bytes" in row:
            size += f" ({row['variables_bytes'] / 1e6:.2f} variables)"
        measured = (
            f"{row['top1_agreement']:.3f} | {row['max_abs_diff']:.2e} | {row['top1']:.3f} | "
            f"{row['latency_ms']:.2f}" if "latency_ms" in row
            else f"- | - | {row['keras_top1']:.3f} (Keras) | -")
        lines.append(f"| {row['model']} | {100 * row['kept_fraction']:.1f} % | {row['format']} "
                     f"| {size} | {measured} |")
    return header + "\n".join(lines)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    # Exporting and converting log every saving step at INFO.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dirs:
        sys.exit("Error: flag --model_dirs is required: comma-separated training runs.")
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        for model_dir in FLAGS.model_dirs:
            try:
                rows += benchmark(model_dir, work_dir, FLAGS.num_images, FLAGS.litert_cpu)
            except (ValueError, FileNotFoundError) as e:
                sys.exit(f"Error: {e}")
    print(format_table(rows))
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump({"num_images": FLAGS.num_images, "rows": rows}, f, indent=2)
            f.write("\n")
        print(f"Wrote {FLAGS.output}")


def _define_flags():
    flags.DEFINE_list("model_dirs", [], "Training runs to measure (ssc_tf.train --model_dir).")
    flags.DEFINE_integer("num_images", 200, "Test images each variant runs, one at a time.",
                         lower_bound=_WARMUP + 1)
    flags.DEFINE_string("output", "results/benchmark_export.json", "JSON results file.")
    # The files run here: planned, unless told otherwise, with this CPU's LiteRT times.
    convert_tflite.define_litert_cpu_flag()


if __name__ == "__main__":
    _define_flags()
    app.run(main)
