"""Training-step throughput, dense twin against SSC, measured side by side in one process.

    python tools/benchmark_train.py --config=cifar10_resnet32_10pct
    python tools/benchmark_train.py --config=imagenet_resnet50_40pct --mixed_precision=float16

Builds the config's model and its dense twin with the training recipe's optimizer and loss,
in float32 or a mixed precision as `ssc_tf.train` trains, then times full training steps
(forward, backward, CoupledL2SGD update) on one fixed random batch, alternating dense and SSC
steps so that both see the same machine load. Each step ends when the device has run it, on a
GPU too: Keras' `train_on_batch` returns the loss as a Python number. Prints a table of median
step time and images per second, and writes JSON with the machine it ran on.

With `--tune`, a third model, `ssc_tuned`, trains in the forms this machine's own times choose
(`ssc_tf.train --tune`, `ssc_tf.tuning`), beside the packaged plan's `ssc` and the dense twin.
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssc_tf import execution_plan  # noqa: E402
from ssc_tf import flagfile  # noqa: E402
from ssc_tf import layers  # noqa: E402
from ssc_tf import timing  # noqa: E402
from ssc_tf import train  # noqa: E402
from ssc_tf import tuning  # noqa: E402
from ssc_tf.models import report  # noqa: E402

flags.DEFINE_string("config", "cifar10_resnet32_10pct",
                    "Experiment config (a packaged config's name or a flagfile) whose model "
                    "and dense twin to time.")
flags.DEFINE_integer("batch_size", 128, "Images per training step.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps per model (after warm-up).", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per model first (tracing).", lower_bound=1)
flags.DEFINE_enum("mixed_precision", "none", list(train.MIXED_PRECISION),
                  "The precision both models train in, as ssc_tf.train's flag of that name: "
                  "none (float32), float16 or bfloat16 (mixed, float32 variables).")
flags.DEFINE_bool("tune", False,
                  "Also time the SSC model planned with this machine's own times (measured "
                  "first, or read from ~/.cache/ssc_tf, as ssc_tf.train --tune does), even "
                  "where the package has times of this kind of CPU.")
flags.DEFINE_string("output", "results/benchmark_train.json", "Where to write the JSON.")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    ssc = flagfile.load(FLAGS.config)
    dense = dataclasses.replace(ssc, sparsity="dense", ticket=None)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(FLAGS.batch_size, *ssc.input_shape)).astype(np.float32)
    labels = rng.integers(0, ssc.num_classes, FLAGS.batch_size).astype(np.int32)
    keras.config.set_dtype_policy(train.MIXED_PRECISION[FLAGS.mixed_precision])
    # The model as ssc_tf.train compiles it: its optimizer, loss scaling, loss and metrics.
    runs = {name: train.compiled_model(config, steps=1)
            for name, config in (("dense", dense), ("ssc", ssc))}
    tables = {}
    if FLAGS.tune:
        runs["ssc_tuned"] = train.compiled_model(ssc, steps=1)
        _, shapes = tuning.planned_layers(runs["ssc_tuned"])
        tables["ssc_tuned"] = tuning.tune(
            shapes, layers.current_runtime(),
            (execution_plan.TRAIN, execution_plan.LARGE_BATCH)).path

    def step(name, model):
        """`model.train_on_batch`, traced (at its first call) with `name`'s cost table."""
        def call(*batch):
            with execution_plan.cost_table(tables.get(name)):
                return model.train_on_batch(*batch)
        return call

    step_ms = timing.interleaved_ms(
        {name: step(name, model) for name, model in runs.items()}, FLAGS.steps, images,
        labels, warmup=FLAGS.warmup)
    rows = []
    for name, model in runs.items():
        stats = report.model_stats(model)
        rows.append({
            "model": name, "live_params": stats.live_params, "macs": stats.macs,
            "step_ms": step_ms[name], "images_per_s": 1e3 * FLAGS.batch_size / step_ms[name],
        })
    print(f"{ssc.model} on {ssc.dataset} shapes, batch {FLAGS.batch_size}, "
          f"{train.MIXED_PRECISION[FLAGS.mixed_precision]}, median of {FLAGS.steps} steps "
          f"({FLAGS.config})")
    print(f"{'model':9} {'live params':>12} {'MACs/image':>14} {'step ms':>9} {'images/s':>9} "
          f"{'speed-up':>8}")
    for r in rows:
        print(f"{r['model']:9} {r['live_params']:>12,} {r['macs']:>14,} "
              f"{r['step_ms']:>9.1f} {r['images_per_s']:>9.1f} "
              f"{rows[0]['step_ms'] / r['step_ms']:>7.2f}x")
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump({**timing.environment(), "config": FLAGS.config, "batch_size": FLAGS.batch_size,
                   "mixed_precision": FLAGS.mixed_precision, "steps": FLAGS.steps,
                   "rows": rows}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
