"""A trained run's SavedModel at each batch size, against its dense twin's, served alike.

    python tools/benchmark_serving.py --model_dir=runs/quickstart \
        --output=results/benchmark_serving.json

For one training run, in one process:

- exports it as `ssc_tf.export` does (a graph per batch regime, tuned and timed on this
  machine: docs/execution_plan.md, "SavedModels"), and writes two more SavedModels of the
  same weights: the package's large-batch plan in one graph (`one_graph`, what an export
  served at every batch before it planned each one), and every SSC layer in the dense form
  (`dense`, the dense twin: the same function as one dense convolution per layer);
- loads the three and calls their `serving_default` in turns on the same random images at
  each of `--batches` (`ssc_tf.timing.interleaved_ms`: each round starts with the next one,
  as the first call of a round runs slower here), the median of `--repeats` calls at up to 8
  images and proportionally fewer beyond (at least 5);
- checks that the three return the same probabilities (the largest absolute difference).

Prints one table (ms, and speed-up over the dense twin) and writes it as JSON with the
export's facts (forms, `small_batch_max`, what was timed) and the machine.
"""

import json
import logging as std_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from ssc_tf import execution_plan  # noqa: E402
from ssc_tf import export  # noqa: E402
from ssc_tf import layers  # noqa: E402
from ssc_tf import model_dir as model_dir_lib  # noqa: E402
from ssc_tf import serving  # noqa: E402
from ssc_tf import timing  # noqa: E402
from ssc_tf import tuning  # noqa: E402
from ssc_tf.data import datasets  # noqa: E402
from ssc_tf.models import masked  # noqa: E402

EXPORTED, ONE_GRAPH, DENSE = "exported", "one_graph", "dense"


def repeats_at(batch, repeats):
    """Timed calls at `batch` images: `repeats` up to 8 images, proportionally fewer beyond
    (at least 5), so that each batch size takes about as long."""
    return max(5, min(repeats, repeats * execution_plan.SMALL_BATCH_MAX // batch))


def savedmodels(model_dir, work_dir, guard=True):
    """({name: path} of the run's three SavedModels (module docstring), the export's result
    (`ssc_tf.export.export`), the (height, width, 3) of the images they serve)."""
    exported = export.export(model_dir, os.path.join(work_dir, "serving", "m"), guard=guard)
    model, config, _, _ = model_dir_lib.load_model(model_dir)
    model = masked.bake(model)
    names, _ = tuning.planned_layers(model)
    paths = {EXPORTED: exported["path"]}
    runtime = layers.current_runtime()
    for name, forms in ((ONE_GRAPH, None),
                        (DENSE, dict.fromkeys(names, execution_plan.parse(
                            execution_plan.DENSE)))):
        paths[name] = os.path.join(work_dir, name)
        with execution_plan.target_runtime(runtime, forms):
            serving.ServingModel(model, config.dataset).save(paths[name])
    return paths, exported, datasets.get(config.dataset).input_shape[:2] + (3,)


def benchmark(paths, image_shape, batches, repeats):
    """Rows of {batch, ms of each SavedModel, max_abs_diff} for `paths` ({name: SavedModel})
    serving uint8 images of `image_shape` at each of `batches`."""
    signatures = {name: tf.saved_model.load(path).signatures[serving.SERVING_DEFAULT]
                  for name, path in paths.items()}
    calls = {name: (lambda images, s=s: s(images=images)) for name, s in signatures.items()}
    rows = []
    for batch in batches:
        images = tf.constant(np.random.default_rng(batch).integers(
            0, 256, (batch,) + tuple(image_shape), np.uint8))
        count = repeats_at(batch, repeats)
        ms = timing.interleaved_ms(calls, count, images)
        probabilities = {name: call(images)[serving.PROBABILITIES].numpy()
                         for name, call in calls.items()}
        rows.append({
            "batch": batch, "repeats": count, **{f"{name}_ms": ms[name] for name in calls},
            "max_abs_diff": float(max(np.abs(p - probabilities[DENSE]).max()
                                      for p in probabilities.values())),
        })
    return rows


def format_table(rows):
    """The rows as a Markdown table: ms of each SavedModel and its speed-up over the dense
    twin's."""
    lines = ["| batch | dense twin ms | exported ms | speed-up | one graph ms | speed-up |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        dense = row[f"{DENSE}_ms"]
        cells = [f"{row[f'{name}_ms']:.2f} | {dense / row[f'{name}_ms']:.2f}x"
                 for name in (EXPORTED, ONE_GRAPH)]
        lines.append(f"| {row['batch']} | {dense:.2f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        sys.exit("Error: flag --model_dir is required: the directory of a training run.")
    with tempfile.TemporaryDirectory() as work_dir:
        try:
            paths, exported, image_shape = savedmodels(FLAGS.model_dir, work_dir, FLAGS.guard)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"Error: {e}")
        print(export.format_guard(exported, FLAGS.guard))
        rows = benchmark(paths, image_shape, [int(b) for b in FLAGS.batches], FLAGS.repeats)
        sizes = {name: export.saved_bytes(path) for name, path in paths.items()}
    print(format_table(rows))
    print("MB: " + ", ".join(f"{name} {size / 1e6:.2f}" for name, size in sizes.items()))
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump({"environment": timing.environment(), "model_dir": FLAGS.model_dir,
                       "rows": rows, "bytes": sizes,
                       **{key: exported[key] for key in ("forms", "small_batch_max", "guard",
                                                         "tuning")}}, f, indent=2)
            f.write("\n")
        print(f"Wrote {FLAGS.output}")


def _define_flags():
    flags.DEFINE_string("model_dir", None, "A training run (ssc_tf.train --model_dir).")
    flags.DEFINE_list("batches", ["1", "8", "16", "128"], "Batch sizes to serve.")
    flags.register_validator(
        "batches", lambda values: bool(values) and all(v.isdigit() and int(v) > 0
                                                       for v in values),
        message="--batches must be comma-separated integers >= 1, e.g. 1,8,128.")
    flags.DEFINE_integer("repeats", 30, "Timed calls of each SavedModel at up to 8 images, "
                         "in each order; proportionally fewer beyond (at least 5).",
                         lower_bound=5)
    flags.DEFINE_bool("guard", True, "Export as ssc_tf.export --guard does (--noguard: the "
                      "plans untimed).")
    flags.DEFINE_string("output", "results/benchmark_serving.json", "JSON results file.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
