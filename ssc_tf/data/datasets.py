"""The dataset registry: one record per dataset, read by the pipeline, config, serving and export.

Each `Dataset` holds every fact about one dataset that code outside its reader needs: classes,
image shape, normalization statistics, training augmentation, evaluation resize, which reader
module under `ssc_tf.data` reads it, and whether the user must provide a `data_dir` (and what it
holds). Adding a dataset means adding its record here and, for a new source, its reader: a
module with `size(dataset, part, data_dir)` and
`read(dataset, part, start, stop, *, data_dir, training, seed)` taking the record.

No TensorFlow here: the config and the command-line tools read the registry without starting it.
"""

import dataclasses

from ssc_tf import arguments

# Training augmentation: pad the image with 4 zero pixels and take a random crop of its size,
# or take an Inception-style random resized crop of the JPEG (see `ssc_tf.data.augment`).
PAD_CROP = "pad_crop"
RESIZED_CROP = "resized_crop"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What ssc_tf knows about one dataset.

    Attributes:
        name: the name of `--dataset`.
        num_classes: classes of its labels.
        input_shape: (height, width, channels) of the model's inputs.
        mean_rgb: per-channel mean of the training images, on the 0..1 scale.
        stddev_rgb: per-channel standard deviation, on the 0..1 scale.
        crop: `PAD_CROP` or `RESIZED_CROP`, the training crop.
        flip: whether training images are also flipped left-right.
        eval_shorter_side: for evaluation, resize the shorter side to this and crop the
            center `input_shape`; None evaluates images at their stored size.
        reader: the module of `ssc_tf.data` that reads it.
        source_splits: for a TFDS dataset, its split names of the training set ("train")
            and of the evaluation set ("test"); None for the other readers.
        data_dir: what a `data_dir` must hold, when the user has to provide one; None when
            the reader finds the data itself (bundled, or downloaded on first use).
        download_url: where a downloadable dataset comes from (checked before downloading,
            so that an offline machine fails at once); None otherwise.
        manual_downloads: the archives a TFDS dataset that cannot be downloaded for the
            user is prepared from, in `<data_dir>/downloads/manual/`.
        streamed: read from disk every epoch instead of cached in memory.
        stored_size: (height, width) of images stored smaller than `input_shape` and grey,
            which the reader (and the serving signature's decoder) pads with zeros to it
            (`ssc_tf.data.augment.pad_stored`); None when stored at `input_shape`.
    """

    name: str
    num_classes: int
    input_shape: tuple
    mean_rgb: tuple
    stddev_rgb: tuple
    crop: str
    flip: bool
    reader: str
    source_splits: dict | None = None
    eval_shorter_side: int | None = None
    data_dir: str | None = None
    download_url: str | None = None
    manual_downloads: tuple = ()
    streamed: bool = False
    stored_size: tuple | None = None


_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TFDS_SPLITS = {"train": "train", "test": "test"}
_IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

# Normalization statistics: CIFAR and digits over every pixel of the training set (digits: the
# 1,437 training images after the resize; gray, so the channels agree). CIFAR-10's pixel std is
# 0.2470, not the often-copied 0.2023/0.1994/0.2010; either is a constant scale that the first
# batch norm absorbs. Tiny-ImageNet: the per-pixel values usually quoted for its training set.
# ImageNet: the torchvision / Model Garden constants. Digits are not flipped: a mirrored digit
# is not the same digit, or no digit at all. Fashion-MNIST: every pixel of the 60,000 training
# images padded to 32x32 (0.2860 and 0.3530 over the 28x28 images alone); flipped, since a
# mirrored shirt or shoe is the same kind of clothing.
_RECORDS = (
    Dataset(
        name="cifar10", num_classes=10, input_shape=(32, 32, 3),
        mean_rgb=(0.4914, 0.4822, 0.4465), stddev_rgb=(0.2470, 0.2435, 0.2616),
        crop=PAD_CROP, flip=True, reader="tfds_datasets", source_splits=_TFDS_SPLITS,
        download_url="https://www.cs.toronto.edu/~kriz/",
    ),
    Dataset(
        name="cifar100", num_classes=100, input_shape=(32, 32, 3),
        mean_rgb=(0.5071, 0.4865, 0.4409), stddev_rgb=(0.2673, 0.2564, 0.2762),
        crop=PAD_CROP, flip=True, reader="tfds_datasets", source_splits=_TFDS_SPLITS,
        download_url="https://www.cs.toronto.edu/~kriz/",
    ),
    Dataset(
        name="tinyimagenet", num_classes=200, input_shape=(64, 64, 3),
        mean_rgb=(0.4802, 0.4481, 0.3975), stddev_rgb=(0.2770, 0.2691, 0.2821),
        crop=PAD_CROP, flip=True, reader="tiny_imagenet",
        data_dir=(
            f"the unpacked tiny-imagenet-200/ folder (from {_TINY_IMAGENET_URL}, or its "
            "parent) holding wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
            "val/val_annotations.txt"
        ),
    ),
    Dataset(
        name="imagenet2012", num_classes=1000, input_shape=(224, 224, 3),
        mean_rgb=(0.485, 0.456, 0.406), stddev_rgb=(0.229, 0.224, 0.225),
        crop=RESIZED_CROP, flip=True, reader="tfds_datasets", eval_shorter_side=256,
        # ILSVRC 2012's test labels are not public: its validation images are the test set.
        source_splits={"train": "train", "test": "validation"},
        data_dir=(
            "a TFDS data directory holding either a prepared imagenet2012/5.1.0/ or, to "
            f"prepare it on first use, {' and '.join(_IMAGENET_ARCHIVES)} (from "
            "https://image-net.org) in <data_dir>/downloads/manual/"
        ),
        manual_downloads=_IMAGENET_ARCHIVES,
        streamed=True,
    ),
    Dataset(
        name="digits", num_classes=10, input_shape=(32, 32, 3),
        mean_rgb=(0.3054,) * 3, stddev_rgb=(0.3237,) * 3,
        crop=PAD_CROP, flip=False, reader="digits",
    ),
    Dataset(
        name="fashion_mnist", num_classes=10, input_shape=(32, 32, 3),
        mean_rgb=(0.2190,) * 3, stddev_rgb=(0.3318,) * 3,
        crop=PAD_CROP, flip=True, reader="idx_files", source_splits=_TFDS_SPLITS,
        download_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        stored_size=(28, 28),
    ),
)

DATASETS = {record.name: record for record in _RECORDS}
NAMES = tuple(DATASETS)


def stored_at(stored_size, input_size):
    """The name of the dataset stored at `stored_size` and padded to `input_size`, or None.

    A client holding a file of a dataset's stored size (a 28x28 Fashion-MNIST image for a
    model that takes 32x32) pads it as that dataset's reader does instead of stretching it.

    Args:
        stored_size: (height, width) of an image file.
        input_size: (height, width) the model takes.
    """
    for record in _RECORDS:
        if (record.stored_size == tuple(stored_size)
                and record.input_shape[:2] == tuple(input_size)):
            return record.name
    return None


def get(name):
    """The record of dataset `name`.

    Raises:
        ValueError: `name` is not one of `NAMES`; the message lists them.
    """
    return DATASETS[arguments.check_choice("dataset", name, tuple(DATASETS))]
