"""Digits: scikit-learn's bundled 8x8 handwritten digits, shaped like CIFAR (32x32x3).

The 1,797 images ship inside scikit-learn (`sklearn.datasets.load_digits`): no download and
no `data_dir`, so a whole train / evaluate / export run works offline in seconds. Each 8x8
image (values 0..16) is scaled to 0..255, resized bilinearly to 32x32, rounded to uint8 and
repeated over 3 channels, once per process; the CIFAR models then run on it unchanged.

Split: a fixed stratified 20 % (360 images, `train_test_split(test_size=0.2,
stratify=labels, random_state=0)`) is the evaluation set ("test"); the other 1,437, in the
shuffled order that call returns, are the training set, whose tail is the validation
hold-out.
"""

import functools

import numpy as np
import tensorflow as tf

_TEST_FRACTION = 0.2
_SPLIT_SEED = 0
# load_digits' pixel values run 0..16.
_MAX_VALUE = 16


def size(dataset, part, data_dir):
    """The number of examples of a whole part.

    Args:
        dataset: the `ssc_tf.data.datasets.Dataset` record of digits.
        part: `"train"` (1,437 images) or `"test"` (360 images).
        data_dir: ignored: the images are bundled.

    Returns:
        The number of images of the part.
    """
    del data_dir
    _, labels = _parts(dataset.input_shape[:2])[part]
    return len(labels)


def read(dataset, part, start, stop, *, data_dir, training, seed):
    """The examples `[start, stop)` of a part, in its fixed order.

    Args:
        dataset: the record, as in `size`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: ignored: the images are bundled.
        training: bool, unused: every part is read the same way.
        seed: int, unused: the order is fixed.

    Returns:
        A `tf.data.Dataset` of `(image, label)`: image uint8 `(32, 32, 3)`, label an int32
        scalar; its cardinality is known.
    """
    del data_dir, training, seed
    images, labels = _parts(dataset.input_shape[:2])[part]
    return tf.data.Dataset.from_tensor_slices((images[start:stop], labels[start:stop]))


@functools.lru_cache(maxsize=1)
def _parts(size):
    """{"train": (images, labels), "test": (images, labels)} at `size`, resized once."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    scaled = digits.images[..., np.newaxis].astype(np.float32) * (255.0 / _MAX_VALUE)
    resized = tf.image.resize(scaled, size, method="bilinear").numpy()
    images = np.repeat(np.clip(np.round(resized), 0, 255).astype(np.uint8), 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=_TEST_FRACTION, stratify=labels, random_state=_SPLIT_SEED
    )
    return {"train": (train_images, train_labels), "test": (test_images, test_labels)}
