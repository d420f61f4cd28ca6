"""Fashion-MNIST (10 classes, 28x28 grey) from its four IDX files, or through TFDS.

The files are the ones zalandoresearch/fashion-mnist publishes and TFDS' `fashion_mnist`
downloads, named as for MNIST, each gzipped or not:

    train-images-idx3-ubyte[.gz]   60,000 training images
    train-labels-idx1-ubyte[.gz]   their labels, 0..9
    t10k-images-idx3-ubyte[.gz]    10,000 test images: the evaluation set ("test")
    t10k-labels-idx1-ubyte[.gz]    their labels

An IDX file is a big-endian header (two zero bytes, the element type 0x08 = unsigned byte,
the number of dimensions, then each dimension as a 4-byte count) and the elements in C
order. Every file is checked before any example is used: its header, its length against
the header, that images and labels agree in count and that every label is a class; a
truncated or mislabelled file is refused with one line naming it.

Where the files are read from:
- `data_dir` holding the four files;
- no `data_dir`: Debian's copy, `apt-get install dataset-fashion-mnist`, in `DEBIAN_FOLDER`;
- otherwise TFDS' `fashion_mnist` (its data directory: `data_dir`, or TFDS' default), which
  TFDS downloads on first use where it can reach the internet (`ssc_tf.data.tfds_datasets`).

Each image is stored as 28x28 grey; the reader pads it with 2 black pixels on each side (the
images' own background) and repeats it over 3 channels (`augment.pad_stored`), so the
paper's CIFAR networks, and the execution plan measured at their shapes, run it unchanged.
The training set's fixed order is the files' order (shuffled by its publishers, every
class in every stretch), so the validation hold-out and `train_examples` are the same in
every run.
"""

import functools
import gzip
import os

import numpy as np
import tensorflow as tf

from ssc_tf.data import augment, tfds_datasets

# Where `apt-get install dataset-fashion-mnist` puts the files.
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
INSTALL_COMMAND = "apt-get install dataset-fashion-mnist"
# The file names of each part, without the optional ".gz".
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UNSIGNED_BYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def size(dataset, part, data_dir):
    """The number of examples of a whole part.

    Args:
        dataset: the `ssc_tf.data.datasets.Dataset` record of Fashion-MNIST.
        part: `"train"` (60,000 images) or `"test"` (10,000 images).
        data_dir: str or None, the folder of the IDX files or a TFDS data directory
            (None: `DEBIAN_FOLDER`, else TFDS' default).

    Returns:
        The number of images of the part.

    Raises:
        ValueError: a file is faulty, or there are no files and TFDS cannot provide the
            dataset; the message names the file, or `--data_dir` and the `apt-get` command.
    """
    folder = _idx_folder(dataset, data_dir)
    if folder is not None:
        return len(_read_part(folder, part, dataset.num_classes)[1])
    try:
        return tfds_datasets.size(dataset, part, data_dir)
    except (ValueError, ModuleNotFoundError) as error:
        folder = DEBIAN_FOLDER if data_dir is None else data_dir
        raise ValueError(
            f"{dataset.name!r} has no IDX files in {folder!r} "
            f"({', '.join(FILES['train'])}, ...), and TFDS could not provide it "
            f"({str(error).rstrip('.')}). Install Debian's copy with `{INSTALL_COMMAND}` (into "
            f"{DEBIAN_FOLDER}, the default) or pass --data_dir (`data_dir`) naming a folder "
            "with the four IDX files."
        ) from None


def read(dataset, part, start, stop, *, data_dir, training, seed):
    """The examples `[start, stop)` of a part, in its fixed order.

    Args:
        dataset: the record, as in `size`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: str or None, as in `size`.
        training: bool, passed to TFDS' reader; the files are read the same way for
            every part.
        seed: int, passed to TFDS' reader; the order is fixed.

    Returns:
        A `tf.data.Dataset` of `(image, label)`: image uint8 `(32, 32, 3)` (the record's
        `input_shape`), label an int32 scalar; its cardinality is known.
    """
    folder = _idx_folder(dataset, data_dir)
    if folder is None:
        examples = tfds_datasets.read(dataset, part, start, stop, data_dir=data_dir,
                                      training=training, seed=seed)
    else:
        images, labels = _read_part(folder, part, dataset.num_classes)
        examples = tf.data.Dataset.from_tensor_slices(
            (images[start:stop, ..., np.newaxis], labels[start:stop]))
    return examples.map(
        lambda image, label: (augment.pad_stored(image, dataset.name), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _idx_folder(dataset, data_dir):
    """The folder to read the IDX files from, or None to read through TFDS.

    Raises:
        ValueError: `data_dir` holds some of the four files but not all.
    """
    folder = DEBIAN_FOLDER if data_dir is None else data_dir
    found = {name: _path(folder, name) for names in FILES.values() for name in names}
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return folder
    if len(missing) < len(found):
        raise ValueError(
            f"Invalid value for argument `data_dir`: {folder!r} holds only some of the IDX "
            f"files of {dataset.name!r}; missing: {', '.join(missing)} (each may end in .gz)."
        )
    return None


def _path(folder, name):
    """The path of file `name` (plain or gzipped) in `folder`, or None."""
    for path in (os.path.join(folder, name), os.path.join(folder, f"{name}.gz")):
        if tf.io.gfile.exists(path):
            return path
    return None


@functools.lru_cache(maxsize=4)
def _read_part(folder, part, num_classes):
    """(images uint8 (n, 28, 28), labels int32 (n,)) of a part, checked."""
    images_path, labels_path = (_path(folder, name) for name in FILES[part])
    images = _read_idx(images_path, dimensions=3)
    labels = _read_idx(labels_path, dimensions=1).astype(np.int32)
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path} holds {len(labels)} labels for the {len(images)} images of "
            f"{images_path}; they must agree."
        )
    wrong = np.flatnonzero(labels >= num_classes)
    if wrong.size:
        raise ValueError(
            f"{labels_path}: label {labels[wrong[0]]} of example {wrong[0]} is not a class "
            f"(0..{num_classes - 1}); {wrong.size} labels are out of range."
        )
    return images, labels


def _read_idx(path, dimensions):
    """The array of an IDX file of unsigned bytes with `dimensions` dimensions."""
    with tf.io.gfile.GFile(path, "rb") as file:
        contents = file.read()
    if contents[:2] == _GZIP_MAGIC:
        try:
            contents = gzip.decompress(contents)
        except (EOFError, OSError) as error:
            raise ValueError(f"{path} is not a whole gzip file: {error}.") from None
    header = 4 + 4 * dimensions
    magic = bytes((0, 0, _UNSIGNED_BYTE, dimensions))
    if len(contents) < header or contents[:4] != magic:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes with {dimensions} dimensions: it "
            f"starts with {contents[:4].hex()}, expected {magic.hex()}."
        )
    shape = tuple(int(n) for n in np.frombuffer(contents, ">u4", dimensions, offset=4))
    expected = header + int(np.prod(shape))
    if len(contents) != expected:
        raise ValueError(
            f"{path} holds {len(contents)} bytes; its header {shape} needs {expected}: the "
            "file is truncated or corrupt."
        )
    return np.frombuffer(contents, np.uint8, offset=header).reshape(shape)
