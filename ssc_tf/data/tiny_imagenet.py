"""Tiny-ImageNet (200 classes, 64x64) read from its unpacked folder.

TFDS has no Tiny-ImageNet, so the images are read from `tiny-imagenet-200/` as unpacked from
http://cs231n.stanford.edu/tiny-imagenet-200.zip (docs/training.md):

    wnids.txt                      the 200 class ids (WordNet ids), one per line
    train/<wnid>/images/*.JPEG     500 training images per class
    val/images/*.JPEG              10,000 labeled images: the evaluation set ("test")
    val/val_annotations.txt        tab-separated: file name, wnid, x0, y0, x1, y1

`test/` is not used: its labels are not public. A label is the index of its wnid in the
SORTED wnids of `wnids.txt` (the order of torchvision's `ImageFolder` on `train/`), not the
file's order. Some images are grayscale JPEGs; all are decoded to 3 channels.

The training set's fixed order is the sorted file paths under a fixed permutation (seed
`_ORDER_SEED`), so that the validation hold-out, its tail, draws from every class.
`data_dir` may be the `tiny-imagenet-200/` folder itself or the folder that contains it.
"""

import os

import numpy as np
import tensorflow as tf

_FOLDER = "tiny-imagenet-200"
# Seeds the fixed order of the training set; changing it changes the validation hold-out.
_ORDER_SEED = 0


def size(dataset, part, data_dir):
    """The number of examples of a whole part.

    Args:
        dataset: the `ssc_tf.data.datasets.Dataset` record of Tiny-ImageNet.
        part: `"train"` (`train/`) or `"test"` (`val/`).
        data_dir: str, the `tiny-imagenet-200/` folder or its parent.

    Returns:
        The number of images listed for the part.
    """
    paths, _ = _examples(dataset, part, data_dir)
    return len(paths)


def read(dataset, part, start, stop, *, data_dir, training, seed):
    """The examples `[start, stop)` of a part, decoded, in the part's fixed order.

    Args:
        dataset: the record, as in `size`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: str, the `tiny-imagenet-200/` folder or its parent.
        training: bool, unused: every part is read the same way.
        seed: int, unused: the order is fixed.

    Returns:
        A `tf.data.Dataset` of `(image, label)`: image uint8 `(64, 64, 3)`, label an int32
        scalar; its cardinality is known.
    """
    del training, seed
    paths, labels = _examples(dataset, part, data_dir)
    examples = tf.data.Dataset.from_tensor_slices((paths[start:stop], labels[start:stop]))

    def decode(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.ensure_shape(image, dataset.input_shape), label

    return examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _examples(dataset, part, data_dir):
    """(paths, int32 labels) of a part in its fixed order, after checking the layout."""
    root = _root(dataset, data_dir)
    wnids = _read_wnids(root)
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    if part == "train":
        return _train_examples(root, wnids, label_of)
    return _val_examples(root, label_of)


def _root(dataset, data_dir):
    """The `tiny-imagenet-200/` folder: `data_dir` itself or its child of that name."""
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(
            f"Invalid value for argument `data_dir`: {data_dir!r} is not a directory. "
            f"Tiny-ImageNet needs {dataset.data_dir}."
        )
    for root in (data_dir, os.path.join(data_dir, _FOLDER)):
        if tf.io.gfile.exists(os.path.join(root, "wnids.txt")):
            return root
    raise ValueError(
        f"Invalid value for argument `data_dir`: no wnids.txt in {data_dir!r} nor in "
        f"{os.path.join(data_dir, _FOLDER)!r}. Tiny-ImageNet needs {dataset.data_dir}."
    )


def _read_wnids(root):
    with tf.io.gfile.GFile(os.path.join(root, "wnids.txt")) as file:
        wnids = sorted({line.strip() for line in file if line.strip()})
    if not wnids:
        raise ValueError(f"{os.path.join(root, 'wnids.txt')} lists no class (wnid).")
    return wnids


def _train_examples(root, wnids, label_of):
    paths = sorted(tf.io.gfile.glob(os.path.join(root, "train", "*", "images", "*.JPEG")))
    counts = dict.fromkeys(wnids, 0)
    labels = []
    for path in paths:
        wnid = os.path.basename(os.path.dirname(os.path.dirname(path)))
        if wnid not in label_of:
            raise ValueError(
                f"{path} is in a class folder {wnid!r} that "
                f"{os.path.join(root, 'wnids.txt')} does not list."
            )
        counts[wnid] += 1
        labels.append(label_of[wnid])
    empty = [wnid for wnid, count in counts.items() if not count]
    if empty:
        missing = ", ".join(
            os.path.join(root, "train", wnid, "images", "*.JPEG") for wnid in empty[:3]
        )
        raise ValueError(
            f"Tiny-ImageNet in {root!r} lacks training images of {len(empty)} of the "
            f"{len(wnids)} classes of wnids.txt: no {missing}"
            + (", ..." if len(empty) > 3 else "")
        )
    order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
    return np.asarray(paths)[order], np.asarray(labels, np.int32)[order]


def _val_examples(root, label_of):
    annotations = os.path.join(root, "val", "val_annotations.txt")
    if not tf.io.gfile.exists(annotations):
        raise ValueError(
            f"Tiny-ImageNet in {root!r} lacks {annotations} (the labels of val/images)."
        )
    with tf.io.gfile.GFile(annotations) as file:
        rows = [line.rstrip("\n").split("\t") for line in file if line.strip()]
    if not rows:
        raise ValueError(f"{annotations} lists no image.")
    images = os.path.join(root, "val", "images")
    present = set(tf.io.gfile.glob(os.path.join(images, "*.JPEG")))
    paths, labels = [], []
    for row in rows:
        path = os.path.join(images, row[0])
        if len(row) < 2 or row[1] not in label_of:
            raise ValueError(
                f"{annotations}: the line for {row[0]!r} names no class of wnids.txt "
                f"(expected: file name, wnid, x0, y0, x1, y1, tab-separated)."
            )
        paths.append(path)
        labels.append(label_of[row[1]])
    missing = [path for path in paths if path not in present]
    if missing:
        raise ValueError(
            f"Tiny-ImageNet in {root!r} lacks {len(missing)} of the {len(paths)} images "
            f"that {annotations} lists: {', '.join(missing[:3])}"
            + (", ..." if len(missing) > 3 else "")
        )
    return np.asarray(paths), np.asarray(labels, np.int32)
