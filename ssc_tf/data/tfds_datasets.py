"""CIFAR-10, CIFAR-100 and ImageNet (ILSVRC 2012) read through TensorFlow Datasets.

TFDS stores each split as record shards in a fixed order (shuffled once, when it was
prepared), so a contiguous slice `train[start:stop]` is a fixed, reproducible subset: the
validation hold-out of `ssc_tf.data` is one. `tensorflow_datasets` is imported inside the
functions, so importing `ssc_tf.data` does not pay for it.

Preparation. CIFAR: `data_dir` may be None (TFDS' default, `~/tensorflow_datasets`); a
missing dataset is downloaded and prepared on first use (a few minutes, needs internet).
ImageNet cannot be downloaded by TFDS: `data_dir` must hold either an already prepared
`imagenet2012/<version>/` or the two archives of image-net.org in
`<data_dir>/downloads/manual/`, from which the first use prepares it (hours, about 150 GB).
"""

import os

import tensorflow as tf

NAMES = ("cifar10", "cifar100", "imagenet2012")

# The TFDS split behind each part: "train" is the training set, "test" the evaluation set
# (for ImageNet the 50,000 ILSVRC 2012 validation images, since its test labels are not
# public).
_TFDS_SPLITS = {
    "cifar10": {"train": "train", "test": "test"},
    "cifar100": {"train": "train", "test": "test"},
    "imagenet2012": {"train": "train", "test": "validation"},
}
# The archives TFDS' imagenet2012 builder reads from its manual download directory.
_IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# What an ImageNet `data_dir` must hold, for error messages.
IMAGENET_LAYOUT = (
    "a TFDS data directory holding either a prepared imagenet2012/5.1.0/ or, to prepare it "
    f"on first use, {' and '.join(_IMAGENET_ARCHIVES)} (from https://image-net.org) in "
    "<data_dir>/downloads/manual/"
)


def size(name, part, data_dir):
    """The number of examples of a whole part.

    Args:
        name: str, one of `NAMES`.
        part: `"train"` (the training set) or `"test"` (the evaluation set).
        data_dir: str or None, the TFDS data directory (None: TFDS' default).

    Returns:
        The example count TFDS recorded when it prepared the split.
    """
    builder = _prepared_builder(name, data_dir)
    return builder.info.splits[_TFDS_SPLITS[name][part]].num_examples


def read(name, part, start, stop, *, data_dir, training, seed):
    """The examples `[start, stop)` of a part, in TFDS' stored order.

    Args:
        name: str, one of `NAMES`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: str or None, the TFDS data directory.
        training: bool. For ImageNet training the shards are read in a shuffled order
            (seeded) and the images are left JPEG-encoded, for
            `augment.train_augment` to decode only the crop.
        seed: int, the shard shuffling seed (ImageNet training only).

    Returns:
        A `tf.data.Dataset` of `(image, label)`: image a uint8 `(H, W, 3)` tensor (a JPEG
        string for ImageNet training), label an int32 scalar; its cardinality is known.
    """
    import tensorflow_datasets as tfds

    builder = _prepared_builder(name, data_dir)
    encoded = training and name == "imagenet2012"
    examples = builder.as_dataset(
        split=f"{_TFDS_SPLITS[name][part]}[{start}:{stop}]",
        as_supervised=True,
        shuffle_files=encoded,
        decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    return examples.map(
        lambda image, label: (image, tf.cast(label, tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _prepared_builder(name, data_dir):
    """The TFDS builder of `name` in `data_dir`, preparing the data first if needed."""
    import tensorflow_datasets as tfds

    if data_dir is not None and not tf.io.gfile.isdir(data_dir):
        raise ValueError(
            f"Invalid value for argument `data_dir`: {data_dir!r} is not a directory. "
            f"Pass an existing TFDS data directory for {name!r}"
            + (" or None for TFDS' default." if name != "imagenet2012" else ".")
        )
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if name == "imagenet2012":
        manual_dir = os.path.join(data_dir, "downloads", "manual")
        missing = [
            os.path.join(manual_dir, archive)
            for archive in _IMAGENET_ARCHIVES
            if not tf.io.gfile.exists(os.path.join(manual_dir, archive))
        ]
        if missing:
            raise ValueError(
                f"Invalid value for argument `data_dir`: {data_dir!r} holds neither a "
                f"prepared TFDS {builder.info.full_name!r} nor the ImageNet archives to "
                f"prepare it from. Missing: {', '.join(missing)}. Download "
                f"{' and '.join(_IMAGENET_ARCHIVES)} from https://image-net.org into "
                f"{manual_dir}/ (TFDS' manual download directory)."
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
        return builder
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise ValueError(
            f"TFDS dataset {builder.info.full_name!r} is not prepared in "
            f"data_dir={data_dir!r} (TFDS directory {builder.data_dir_root}) and could not "
            f"be downloaded: {error}. Pass `data_dir` (--data_dir) pointing at a TFDS data "
            f"directory that holds a prepared {builder.info.full_name}/ folder, e.g. one "
            "made by `tfds build` on a machine with internet."
        ) from error
    return builder
