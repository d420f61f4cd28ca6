"""Input pipelines: every dataset of the paper as batched, normalized `tf.data.Dataset`s.

- `datasets`: the registry, one record per dataset (no TensorFlow).
- `pipeline`: `load`, `experiment_batches` and `num_examples`, the split policy and the one
  pipeline.
- `augment`: the per-image transforms (`normalize`, `eval_resize`, training augmentation).
- the readers, one per source: `tfds_datasets`, `tiny_imagenet`, `digits`,
  `idx_files` (Fashion-MNIST).

`from ssc_tf import data` starts no TensorFlow; the names below load the pipeline on first use.
"""

from ssc_tf.data.datasets import NAMES as DATASETS

__all__ = ["DATASETS", "SPLITS", "eval_resize", "experiment_batches", "load", "needs_data_dir",
           "normalize", "num_examples"]

_PIPELINE = ("SPLITS", "experiment_batches", "load", "needs_data_dir", "num_examples")
_AUGMENT = ("eval_resize", "normalize")


def __getattr__(name):
    # The pipeline imports TensorFlow; the registry and the config stay free of it.
    if name in _PIPELINE:
        from ssc_tf.data import pipeline

        return getattr(pipeline, name)
    if name in _AUGMENT:
        from ssc_tf.data import augment

        return getattr(augment, name)
    raise AttributeError(f"module 'ssc_tf.data' has no attribute {name!r}")
