"""The input pipeline: a split of any registered dataset as batched, normalized images.

Each reader module (`ssc_tf.data.datasets` names it per dataset) reads examples in a fixed
order. This module holds what they share: the split policy and the one pipeline (`batches`:
cache, shuffle, augment, batch, normalize, prefetch); `augment` holds the per-image transforms.
A reader of record files also says how many files a slice reads (`num_files`), which decides
how a multi-worker job shares the split (`auto_shard_policy`).

Splits:

- "train" and "validation" partition the source's training set: its last
  `round(validation_split * size)` examples, in the source's fixed order, are the
  "validation" hold-out (the paper chose g and p on 10 %: docs/training.md) and the rest
  is "train". The fixed order is TFDS' stored order (shuffled when TFDS prepared it),
  Tiny-ImageNet's sorted files under a fixed permutation, and the shuffled order of the
  digits split; so the hold-out is the same in every run, whatever `seed`. With
  `train_examples`, "train" is only the first that many of the rest, in the same order: a
  smaller training set, the same in every run, for studies of how the methods fare with
  less data (the order is shuffled, so the classes stay about balanced).
- "test" is the evaluation set: CIFAR's `test`; ImageNet's TFDS `validation` (the 50,000
  ILSVRC 2012 validation images); Tiny-ImageNet's `val/` (its `test/` has no labels); a
  fixed stratified 20 % of digits (see `digits`).

"train" is shuffled (seeded, reshuffled each epoch), augmented (`augment.train_augment`),
batched with `drop_remainder=True` so every epoch has the same known number of full
batches, and finite: one epoch per iteration. "validation" and "test" are read in order,
resized for evaluation (`eval_resize`; ImageNet only) and batched keeping the last, smaller
batch. CIFAR, Tiny-ImageNet and digits are cached in memory as decoded uint8 images (CIFAR
150 MB, Tiny-ImageNet 1.2 GB); ImageNet is streamed.

Normalization (`normalize`) runs in tf.data on the host, or with `normalize_on="device"` where
the consumer's step runs: the batches then carry the pixels as the pipeline holds them, uint8
(float32 only for ImageNet's evaluation images, which the resize interpolates: rounding them
would set validation apart from `ssc_tf.evaluate` and the serving graph), a quarter of
float32's bytes to copy to an accelerator, and the consumer normalizes them with `normalize`
(`ssc_tf.train` does, in its training and evaluation steps).

Order. "train"'s augmentation runs in parallel, and its images come out in the order of the
seeded shuffle, whichever finishes first: the same seed gives the same batches, which the
tests, the seeds of the reported digits results and a multi-worker job sharing the data by
`AutoShardPolicy.DATA` (every worker must produce the same batches) rely on. The streamed
ImageNet alone hands on whichever image is ready (`deterministic=False`): its JPEGs take
unequal times to decode, and in order one slow image holds up the many decoded behind it on
a GPU host's many cores (`tools/benchmark_input.py` measures it; on 2 cores the difference
was within the noise). Its runs are not reproducible bit for bit, as on a GPU they are not
anyway; `deterministic=True` reads it in order. Evaluation is always in order.

Prefetch. Each pipeline ends in one `prefetch` on the host, which keeps batches ready while a
step runs. Keras' `fit` and `ssc_tf.train`'s multi-worker loop hand the dataset to
`Strategy.experimental_distribute_dataset`, which copies the batches to the replicas' devices
ahead of the step itself, so the pipeline adds no `prefetch_to_device` of its own.

Example:

>>> train = load("digits", "train", batch_size=64, validation_split=0.1)
>>> int(train.cardinality()), num_examples("digits", "train", validation_split=0.1)
(20, 1293)
>>> images, labels = next(iter(train))
>>> images.shape, images.dtype, labels.dtype
(TensorShape([64, 32, 32, 3]), tf.float32, tf.int32)
"""

import importlib

import tensorflow as tf

from ssc_tf import arguments
from ssc_tf.data import augment, datasets

SPLITS = ("train", "validation", "test")
# Where `load` normalizes: in tf.data on the host, or on the consumer's device (the batches
# then carry pixels; see the module docstring).
HOST, DEVICE = "host", "device"
NORMALIZE_ON = (HOST, DEVICE)

# Shuffle buffer of a streamed training set (ImageNet's JPEG strings: about 1 GB), whose
# shard order TFDS shuffles as well; cached training sets are shuffled whole.
_STREAM_SHUFFLE_BUFFER = 10_000


def needs_data_dir(dataset):
    """Whether `dataset` can only be read from a `data_dir` the user provides.

    Args:
        dataset: str, one of `DATASETS`.

    Returns:
        True for `tinyimagenet` and `imagenet2012`, whose files the user must download;
        False for CIFAR (TFDS downloads it into its default directory) and digits (bundled).
    """
    return datasets.get(dataset).data_dir is not None


def num_examples(dataset, split, *, data_dir=None, validation_split=0.0, train_examples=None):
    """The number of examples of a split, before batching.

    Args:
        dataset: str, one of `DATASETS`.
        split: str, one of `SPLITS`.
        data_dir: str or None, where the dataset's files are; required where
            `needs_data_dir(dataset)`. Defaults to None.
        validation_split: float in [0, 1), the fraction of the training set held out as
            "validation". Defaults to 0.0.
        train_examples: int >= 1 or None, "train" holds only the first that many examples
            of the training set left after the hold-out; None: all of them. Defaults to None.

    Returns:
        An int. "train" and "validation" add up to the whole training set (without
        `train_examples`). With
        `drop_remainder`, a "train" epoch yields `num_examples // batch_size` batches.

    Raises:
        ValueError: an argument is not allowed or `data_dir` lacks the dataset's files; the
            message names the argument or the missing file.
    """
    record = _check_arguments(dataset, split, data_dir, validation_split, train_examples)
    _, start, stop = _slice(record, split, data_dir, validation_split, train_examples)
    return stop - start


def load(dataset, split, *, batch_size, data_dir=None, validation_split=0.0,
         train_examples=None, seed=0, normalized=True, normalize_on=HOST, deterministic=None):
    """Builds the input pipeline of one split (see the module docstring for its steps).

    Args:
        dataset: str, one of `DATASETS`.
        split: str, one of `SPLITS`: "train" (augmented, shuffled, full batches only),
            "validation" (the `validation_split` held out of the training set) or "test"
            (the evaluation set).
        batch_size: int >= 1, the global batch size. "train" needs at least that many
            examples.
        data_dir: str or None, where the dataset's files are: for `tinyimagenet` the
            unpacked `tiny-imagenet-200/` folder (or its parent), for `imagenet2012` a TFDS
            data directory, for CIFAR an optional TFDS data directory (None: TFDS'
            default); ignored for `digits`. Defaults to None.
        validation_split: float in [0, 1), the fraction of the training set held out as
            "validation" and left out of "train". Defaults to 0.0.
        train_examples: int >= 1 or None, "train" reads only the first that many examples
            of the training set left after the hold-out (see the module docstring); None:
            all of them. Ignored by "validation" and "test". Defaults to None.
        seed: int >= 0, seeds the shuffling and the augmentation of "train": the same seed
            gives the same epochs (in the same order, unless `deterministic` is False).
            Defaults to 0.
        normalized: bool, whether images are normalized by `normalize`, or left as pixels
            in 0..255 (what an exported model takes). Defaults to True.
        normalize_on: one of `NORMALIZE_ON`, where `normalized` images are normalized:
            "host" (in tf.data) or "device": the batches carry the pixels as the pipeline
            holds them, for the consumer to normalize with `normalize` on its device (see
            the module docstring). Defaults to "host".
        deterministic: bool or None, whether "train" yields its images in the order of its
            seeded shuffle even when the parallel augmentation finishes them out of order
            (see the module docstring); None: in order, except for a streamed dataset.
            Ignored by "validation" and "test", which are always in order. Defaults to None.

    Returns:
        A finite `tf.data.Dataset` of `(images, labels)`: images `(batch, height, width, 3)`
        with the height and width of the dataset's `input_shape` (`ssc_tf.data.datasets`),
        float32 normalized by `normalize`, or float32 pixels with `normalized=False`, or
        with `normalize_on="device"` the pixels uint8 (float32 for ImageNet's "validation"
        and "test", which the evaluation resize interpolates); labels int32 `(batch,)` in
        `[0, NUM_CLASSES[dataset])`. Its `cardinality()` is known.

    Raises:
        ValueError: an argument is not allowed or `data_dir` lacks the dataset's files; the
            message names the argument or the missing file.
    """
    record = _check_arguments(dataset, split, data_dir, validation_split, train_examples)
    arguments.check_int("batch_size", batch_size, minimum=1)
    arguments.check_int("seed", seed, minimum=0)
    _check_normalization(normalized, normalize_on)
    part, start, stop = _slice(record, split, data_dir, validation_split, train_examples)
    training = split == "train"
    if training and stop - start < batch_size:
        raise ValueError(
            f"Invalid value for argument `batch_size`: {dataset!r} has {stop - start} "
            f"training examples (validation_split={validation_split}, train_examples="
            f"{train_examples}), fewer than one full batch. Received: batch_size={batch_size}"
        )
    examples = _reader(record).read(
        record, part, start, stop, data_dir=data_dir, training=training, seed=seed
    )
    return batches(examples, dataset, training=training, batch_size=batch_size, seed=seed,
                   normalized=normalized, normalize_on=normalize_on,
                   deterministic=deterministic)


def batches(examples, dataset, *, training, batch_size, seed=0, normalized=True,
            normalize_on=HOST, deterministic=None):
    """The one pipeline, from a reader's examples to batches (the module docstring's steps).

    `load` runs it on a split of a dataset; `tools/benchmark_input.py` on synthetic examples.

    Args:
        examples: `tf.data.Dataset` of `(image, label)` as a reader yields them: image uint8
            `(H, W, 3)` at the dataset's stored size, or for ImageNet's training split the
            JPEG string; label int32. Its cardinality must be known.
        dataset: str, one of `DATASETS`, whose record says how to cache, augment, resize and
            normalize.
        training: bool, the "train" pipeline (cached unless streamed, shuffled, augmented,
            full batches only) or the evaluation one ("validation", "test").
        batch_size: int >= 1, the global batch size.
        seed: int >= 0, as in `load`. Defaults to 0.
        normalized: bool, as in `load`. Defaults to True.
        normalize_on: one of `NORMALIZE_ON`, as in `load`. Defaults to "host".
        deterministic: bool or None, as in `load`. Defaults to None.

    Returns:
        The `tf.data.Dataset` of batches that `load` describes.
    """
    _check_normalization(normalized, normalize_on)
    record = datasets.get(dataset)
    if not record.streamed:
        examples = examples.cache()
    if training:
        buffer = _STREAM_SHUFFLE_BUFFER if record.streamed else int(examples.cardinality())
        examples = examples.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        # One stateless seed per image, drawn anew each epoch and reproducible from `seed`;
        # zipped before the map, so an image's augmentation does not depend on the order.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        examples = tf.data.Dataset.zip(examples, seeds).map(
            lambda example, image_seed: (
                augment.train_augment(example[0], image_seed, dataset),
                example[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        examples = examples.map(
            lambda image, label: (augment.eval_resize(image, dataset), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    batched = examples.batch(
        batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE
    )
    if normalize_on == HOST:
        scale = augment.normalize if normalized else lambda images, _: tf.cast(images, tf.float32)
        batched = batched.map(
            lambda images, labels: (scale(images, dataset), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if training:
        # An option of the whole dataset, which its parallel map and batch follow.
        options = tf.data.Options()
        options.deterministic = not record.streamed if deterministic is None else deterministic
        batched = batched.with_options(options)
    return batched.prefetch(tf.data.AUTOTUNE)


def auto_shard_policy(num_files, num_workers):
    """How tf.data shares a split among the workers of a multi-worker job.

    `AutoShardPolicy.FILE` where the split is read from at least as many files as there are
    workers: each worker reads and decodes only its own files. Otherwise `DATA`: every worker
    reads and decodes the whole split and keeps its share of each global batch, which takes
    `num_workers` times the decoding, but FILE would leave some workers without a file
    (fewer files than workers) or fail (a split read from arrays or from a list of image
    paths, whose files tf.data does not see: `num_files` 0). Under DATA the workers must
    produce the same batches in the same order, so `experiment_batches` then reads in order.

    Args:
        num_files: int >= 0, the files the split is read from, as tf.data can shard them.
        num_workers: int >= 1, the workers (input pipelines) of the job.

    Returns:
        `tf.data.experimental.AutoShardPolicy.FILE` or `.DATA`.
    """
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if num_files >= num_workers else policy.DATA


def experiment_batches(config, *, data_dir=None, steps_per_epoch=None, normalize_on=HOST,
                       num_workers=1):
    """The training and validation batches of one experiment, as every trainer reads them.

    Validation is the held-out `validation_split` of the training data, or the test split when
    it is 0 (the paper's runs). Training reads the config's `train_examples` (all, by default).

    With more than one worker, each dataset carries the `auto_shard_policy` of its split for
    `tf.distribute` to apply. Under FILE the workers' shares may differ by a batch at the end
    of an epoch; `MultiWorkerMirroredStrategy` then hands the workers that ran out empty
    batches until all have, so every worker takes the same number of steps.

    Args:
        config: the `ssc_tf.config.ExperimentConfig` (its dataset, batch size, validation
            split, training examples and seed).
        data_dir: where the dataset lives (see `load`).
        steps_per_epoch: int or None, cap on training batches per epoch.
        normalize_on: one of `NORMALIZE_ON` (see `load`). Defaults to "host".
        num_workers: int >= 1, the workers of a multi-worker job that share the batches
            (`auto_shard_policy`); 1 (the default) on one machine.

    Returns:
        `(train_data, eval_data)`, one epoch each.

    Raises:
        ValueError: the training split holds less than one batch, or the data is missing.
    """
    eval_split = "validation" if config.validation_split else "test"
    common = dict(batch_size=config.batch_size, data_dir=data_dir,
                  validation_split=config.validation_split, seed=config.seed,
                  normalize_on=normalize_on)
    policies = {}
    if num_workers > 1:
        policies = {
            split: auto_shard_policy(
                _num_files(config.dataset, split, data_dir, config.validation_split,
                           config.train_examples),
                num_workers)
            for split in ("train", eval_split)
        }
    # Workers that share the data by DATA must all make the same batches.
    in_order = policies.get("train") == tf.data.experimental.AutoShardPolicy.DATA
    train_data = load(config.dataset, "train", train_examples=config.train_examples,
                      deterministic=True if in_order else None, **common)
    if steps_per_epoch is not None:
        train_data = train_data.take(steps_per_epoch)
    if int(train_data.cardinality()) < 1:
        raise ValueError(
            f"The training split of {config.dataset!r} holds fewer than --batch_size="
            f"{config.batch_size} examples, so an epoch has no step; lower --batch_size."
        )
    eval_data = load(config.dataset, eval_split, **common)
    if policies:
        train_data = train_data.with_options(_shard_options(policies["train"]))
        eval_data = eval_data.with_options(_shard_options(policies[eval_split]))
    return train_data, eval_data


def _shard_options(policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return options


def _num_files(dataset, split, data_dir, validation_split, train_examples):
    """The files a split is read from, as tf.data can shard them: the TFDS record shards of
    its slice; 0 for a reader of arrays or of a list of image paths (one without
    `num_files`)."""
    record = _check_arguments(dataset, split, data_dir, validation_split, train_examples)
    reader = _reader(record)
    if not hasattr(reader, "num_files"):
        return 0
    part, start, stop = _slice(record, split, data_dir, validation_split, train_examples)
    return reader.num_files(record, part, start, stop, data_dir)


def _check_normalization(normalized, normalize_on):
    arguments.check_choice("normalize_on", normalize_on, NORMALIZE_ON)
    if normalize_on == DEVICE and not normalized:
        raise arguments.invalid(
            "normalize_on",
            f"{HOST!r} with `normalized=False`, whose images are normalized nowhere",
            repr(normalize_on))


def _reader(record):
    """The module of `ssc_tf.data` that reads `record`'s examples."""
    return importlib.import_module(f"ssc_tf.data.{record.reader}")


def _slice(record, split, data_dir, validation_split, train_examples):
    """(part, start, stop): the split as a range of the source's "train" or "test" part."""
    reader = _reader(record)
    if split == "test":
        return "test", 0, reader.size(record, "test", data_dir)
    total = reader.size(record, "train", data_dir)
    held_out = round(total * validation_split)
    if validation_split and not 0 < held_out < total:
        raise ValueError(
            f"Invalid value for argument `validation_split`: holding out "
            f"{validation_split} of the {total} training examples of {record.name!r} leaves "
            f"{held_out} for validation and {total - held_out} for training; both need at "
            f"least one. Received: validation_split={validation_split}"
        )
    if split != "train":
        return "train", total - held_out, total
    if train_examples is not None and train_examples > total - held_out:
        raise arguments.invalid(
            "train_examples",
            f"at most the {total - held_out} training examples of {record.name!r} "
            f"(validation_split={validation_split})",
            train_examples,
        )
    return "train", 0, total - held_out if train_examples is None else train_examples


def _check_arguments(dataset, split, data_dir, validation_split, train_examples):
    """Checks the arguments every split takes; returns the dataset's record."""
    record = datasets.get(dataset)
    arguments.check_choice("split", split, SPLITS)
    arguments.check_range("validation_split", validation_split, 0, 1, high_open=True)
    if train_examples is not None:
        arguments.check_int("train_examples", train_examples, minimum=1)
    if split == "validation" and not validation_split:
        raise ValueError(
            "Invalid value for argument `validation_split`: split 'validation' is the "
            "fraction `validation_split` held out of the training set, so it needs a "
            f"number in (0, 1). Received: validation_split={validation_split!r}"
        )
    if data_dir is None and record.data_dir is not None:
        raise ValueError(
            f"Missing argument `data_dir`: dataset {dataset!r} is read from "
            f"{record.data_dir}. Received: data_dir=None"
        )
    return record
