"""Evaluates a trained run: `python -m ssc_tf.evaluate --model_dir=DIR`.

Reads the model and data settings that `ssc_tf.train` saved in DIR (run.json) and its newest
checkpoint, measures top-1 (and top-5 for more than 10 classes) on the test split, counts the
live and dense parameters and MACs, prints them and writes them to `DIR/eval.json`.
"""

import json
import os
import sys

from absl import app
from absl import flags
import keras
import tensorflow as tf

from ssc_tf import data
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf.models import report

def evaluate(model_dir, *, data_dir=None, split="test", batch_size=None):
    """Evaluates the newest checkpoint of `model_dir` and writes `<model_dir>/eval.json`.

    Args:
        model_dir: str, a directory written by `ssc_tf.train`.
        data_dir: str or None, overrides the run's data_dir.
        split: "test" or "validation".
        batch_size: int or None, overrides the run's batch size.

    Returns:
        A dict: `top1` (and `top5` for more than 10 classes), `loss`, `examples`,
        `live_params`, `dense_params`, `kept_fraction`, `macs`, `dense_macs` (convolutions
        and classifier, per image), `epoch` (epochs trained), `dataset`, `model`, `split`.

    Raises:
        FileNotFoundError: `model_dir` holds no run or no checkpoint.
    """
    model, config, saved_data_dir, epoch = model_dir_lib.load_model(model_dir)
    dataset = data.load(
        config.dataset, split, batch_size=batch_size or config.batch_size,
        data_dir=data_dir or saved_data_dir, validation_split=config.validation_split,
        seed=config.seed)
    scores = _score(model, dataset, top5=config.num_classes > 10)
    stats = report.model_stats(model)
    result = {
        **scores,
        "examples": data.num_examples(
            config.dataset, split, data_dir=data_dir or saved_data_dir,
            validation_split=config.validation_split),
        "live_params": stats.live_params,
        "dense_params": stats.dense_params,
        "kept_fraction": stats.kept_fraction,
        "macs": stats.macs,
        "dense_macs": stats.dense_macs,
        "epoch": epoch,
        "dataset": config.dataset,
        "model": config.model,
        "split": split,
    }
    model_dir_lib.write_json(os.path.join(model_dir, model_dir_lib.EVAL_FILE), result)
    return result


def _score(model, dataset, top5):
    """Mean loss and accuracies of `model` over `dataset`.

    A plain loop rather than `compile` + `evaluate`: compiling would give the model a fresh
    optimizer, into which the checkpoint's deferred optimizer slots would be restored.
    """
    metrics = {
        "loss": keras.metrics.SparseCategoricalCrossentropy(from_logits=True),
        "top1": keras.metrics.SparseCategoricalAccuracy(),
    }
    if top5:
        metrics["top5"] = keras.metrics.SparseTopKCategoricalAccuracy(5)

    @tf.function
    def update(images, labels):
        logits = model(images, training=False)
        for metric in metrics.values():
            metric.update_state(labels, logits)

    for images, labels in dataset:
        update(images, labels)
    return {name: float(metric.result()) for name, metric in metrics.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS.model_dir:
        raise app.UsageError("Flag --model_dir is required: the directory of a training run.")
    try:
        result = evaluate(
            FLAGS.model_dir, data_dir=FLAGS.data_dir, split=FLAGS.split,
            batch_size=FLAGS.batch_size)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"Error: {e}")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"Wrote {os.path.join(FLAGS.model_dir, model_dir_lib.EVAL_FILE)}")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_string("model_dir", None, "Directory of a training run (ssc_tf.train --model_dir).")
    flags.DEFINE_string(
        "data_dir", None, "Where the dataset lives; default: the --data_dir the run trained with.")
    flags.DEFINE_enum(
        "split", "test", ["test", "validation"],
        "Split to evaluate: test, or validation (the run's held-out validation_split).")
    flags.DEFINE_integer(
        "batch_size", None, "Evaluation batch size; default: the run's --batch_size.", lower_bound=1)


def run():
    """The `python -m ssc_tf.evaluate` and `ssc-evaluate` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
