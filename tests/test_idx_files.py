"""Tests of Fashion-MNIST's reader (ssc_tf.data.idx_files): IDX files in the real format.

The fixtures write the four files as zalandoresearch and Debian ship them (big-endian IDX
headers, the training pair gzipped, the test pair plain): image i of a part is the constant
`i + 1` (plus `_TEST_OFFSET` in the test part) with a 1-pixel frame of 255 at its border,
label `i % 10`, so every output image tells which example it is and where its stored pixels
landed. The end-to-end test reads Debian's real files (`.ci/run` installs them).
"""

import dataclasses
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ssc_tf import data, serving
from ssc_tf.data import datasets, idx_files

_SIZES = {"train": 30, "test": 10}
_TEST_OFFSET = 100
_SIDE = 28


def _images(part):
    count = _SIZES[part]
    offset = _TEST_OFFSET if part == "test" else 0
    images = np.ones((count, _SIDE, _SIDE), np.uint8) * (np.arange(count, dtype=np.uint8)
                                                          + 1 + offset)[:, None, None]
    images[:, [0, -1], :] = 255
    images[:, :, [0, -1]] = 255
    return images


def _idx_bytes(array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(folder, name, contents, gzipped):
    path = os.path.join(folder, name + (".gz" if gzipped else ""))
    with open(path, "wb") as file:
        file.write(gzip.compress(contents) if gzipped else contents)
    return path


@pytest.fixture
def idx_dir(tmp_path):
    """The four files: training pair gzipped, test pair plain."""
    for part, (images_name, labels_name) in idx_files.FILES.items():
        images = _images(part)
        labels = np.arange(len(images)) % 10
        _write(str(tmp_path), images_name, _idx_bytes(images), gzipped=part == "train")
        _write(str(tmp_path), labels_name, _idx_bytes(labels), gzipped=part == "train")
    return str(tmp_path)


def _stored_values(images):
    """The constant of each (32, 32, 3) image's stored interior."""
    return images[:, 16, 16, 0].astype(int)


def test_parts_are_padded_grey_images_in_file_order(idx_dir):
    assert data.num_examples("fashion_mnist", "train", data_dir=idx_dir) == 30
    assert data.num_examples("fashion_mnist", "test", data_dir=idx_dir) == 10
    [(images, labels)] = data.load("fashion_mnist", "test", batch_size=10, data_dir=idx_dir,
                                   normalized=False)
    images = images.numpy()
    assert images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(_stored_values(images), np.arange(10) + 1 + _TEST_OFFSET)
    np.testing.assert_array_equal(labels, np.arange(10) % 10)
    # 2 black pixels on each side, then the stored frame of 255, in every channel alike.
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    assert (images[:, 2, 2:30] == 255).all() and (images[:, 29, 2:30] == 255).all()
    assert (images[:, 2:30, 2] == 255).all() and (images[:, 2:30, 29] == 255).all()
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_validation_and_train_examples_slice_the_training_files(idx_dir):
    kwargs = {"data_dir": idx_dir, "validation_split": 0.2, "normalized": False}
    [(held_out, _)] = data.load("fashion_mnist", "validation", batch_size=30, **kwargs)
    np.testing.assert_array_equal(_stored_values(held_out.numpy()), np.arange(24, 30) + 1)
    train = data.load("fashion_mnist", "train", batch_size=10, train_examples=10, **kwargs)
    values = np.concatenate([_stored_values(images.numpy()) for images, _ in train])
    # Shuffled and cropped, but the first 10 examples only (the crop keeps the center).
    assert sorted(values) == list(range(1, 11))


@pytest.mark.parametrize("fault, message", [
    ("truncated", r"t10k-images-idx3-ubyte holds 7855 bytes; its header \(10, 28, 28\) needs "
                  r"7856: the file is truncated"),
    ("truncated_gzip", r"train-images-idx3-ubyte.gz is not a whole gzip file"),
    ("magic", r"t10k-labels-idx1-ubyte is not an IDX file of unsigned bytes with 1 dimensions"),
    ("label", r"t10k-labels-idx1-ubyte: label 10 of example 3 is not a class \(0..9\)"),
    ("count", r"t10k-labels-idx1-ubyte holds 9 labels for the 10 images"),
    ("missing", r"holds only some of the IDX files of 'fashion_mnist'; missing: "
                r"t10k-labels-idx1-ubyte"),
])
def test_a_faulty_file_is_named_before_anything_is_read(idx_dir, fault, message):
    test_images = os.path.join(idx_dir, "t10k-images-idx3-ubyte")
    test_labels = os.path.join(idx_dir, "t10k-labels-idx1-ubyte")
    labels = np.arange(10) % 10
    if fault == "truncated":
        contents = open(test_images, "rb").read()
        _write(idx_dir, "t10k-images-idx3-ubyte", contents[:-1], gzipped=False)
    elif fault == "truncated_gzip":
        path = test_images.replace("t10k", "train") + ".gz"
        contents = open(path, "rb").read()
        with open(path, "wb") as file:
            file.write(contents[: len(contents) // 2])
    elif fault == "magic":
        _write(idx_dir, "t10k-labels-idx1-ubyte", b"\x00\x00\x0d\x01" + _idx_bytes(labels)[4:],
               gzipped=False)
    elif fault == "label":
        labels[3] = 10
        _write(idx_dir, "t10k-labels-idx1-ubyte", _idx_bytes(labels), gzipped=False)
    elif fault == "count":
        _write(idx_dir, "t10k-labels-idx1-ubyte", _idx_bytes(labels[:9]), gzipped=False)
    else:
        os.remove(test_labels)
    with pytest.raises(ValueError, match=message):
        data.load("fashion_mnist", "test" if "gzip" not in fault else "train", batch_size=4,
                  data_dir=idx_dir)


def test_no_files_and_no_tfds_asks_for_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_files.tfds_datasets, "_unreachable", lambda url, timeout: "offline")
    with pytest.raises(ValueError) as error:
        data.num_examples("fashion_mnist", "train", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert f"no IDX files in {str(tmp_path)!r}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data_dir" in message
    assert "could not be downloaded: offline" in message


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """TFDS' reader under mock_data: example i of a split is the 28x28x1 constant i + 1."""
    del read_config, shuffle_files
    [instruction] = tfds.core.ReadInstruction.from_spec(split).to_absolute(self.info.splits)

    def example(index):
        image = tf.fill([_SIDE, _SIDE, 1], tf.cast(index + 1, tf.uint8))
        record = {"image": tf.io.encode_png(image), "label": index % 10}
        return self.info.features.decode_example(record, decoders=decoders)

    start = instruction.from_ or 0
    stop = instruction.to or self.info.splits[instruction.splitname].num_examples
    return tf.data.Dataset.range(start, stop).map(example)


def test_tfds_fashion_mnist_is_read_and_padded_like_the_files(tmp_path):
    builder = tfds.builder("fashion_mnist", data_dir=str(tmp_path))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=0)
        for split, count in _SIZES.items()]))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=_fake_as_dataset):
        assert data.num_examples("fashion_mnist", "train", data_dir=str(tmp_path)) == 30
        [(images, labels)] = data.load("fashion_mnist", "validation", batch_size=8,
                                       data_dir=str(tmp_path), validation_split=0.2,
                                       normalized=False)
    images = images.numpy()
    assert images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(_stored_values(images), np.arange(24, 30) + 1)
    np.testing.assert_array_equal(labels, np.arange(24, 30) % 10)
    assert not images[:, :2].any() and not images[:, :, 30:].any()


def test_serving_pads_a_stored_size_file_as_training_does():
    inputs = tf.keras.Input((32, 32, 3))
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(inputs))
    model = tf.keras.Model(inputs, outputs)
    serving_model = serving.ServingModel(model, "fashion_mnist", top_k=1)
    image = np.random.default_rng(0).integers(0, 256, (_SIDE, _SIDE, 1), dtype=np.uint8)
    png = tf.io.encode_png(image)
    from_file = serving_model.predict_image_bytes(tf.stack([png]))["probabilities"]
    padded = np.repeat(np.pad(image, ((2, 2), (2, 2), (0, 0))), 3, axis=-1)
    from_pixels = serving_model.serving_default(padded[np.newaxis])["probabilities"]
    np.testing.assert_allclose(from_file, from_pixels, rtol=1e-6)
    # Another size is still resized, not padded.
    other = tf.io.encode_png(np.zeros((40, 40, 3), np.uint8))
    assert serving_model.predict_image_bytes(tf.stack([other]))["probabilities"].shape == (1, 10)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(idx_files.DEBIAN_FOLDER),
                    reason=f"needs `{idx_files.INSTALL_COMMAND}`")
def test_debian_files_are_the_whole_dataset():
    assert data.num_examples("fashion_mnist", "train") == 60_000
    [(images, labels)] = data.load("fashion_mnist", "test", batch_size=10_000, normalized=False)
    assert images.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(labels.numpy()), [1000] * 10)
    # The published first test labels: ankle boot, pullover, trouser, trouser, shirt.
    np.testing.assert_array_equal(labels[:5], [9, 2, 1, 1, 6])
    record = datasets.get("fashion_mnist")
    pixels = images.numpy()[..., 0] / 255.0
    # The test set's statistics are close to the record's (of the training set).
    assert abs(pixels.mean() - record.mean_rgb[0]) < 0.01
    assert abs(pixels.std() - record.stddev_rgb[0]) < 0.01


@pytest.mark.slow
def test_a_run_trains_resumes_evaluates_and_exports_from_the_files(idx_dir, tmp_path):
    from ssc_tf import evaluate, export, flagfile, train

    config = dataclasses.replace(
        flagfile.load("fashion_mnist_resnet32_10pct"), epochs=1, lr_boundaries=(),
        batch_size=8, train_examples=16, validation_split=0.2)
    model_dir = str(tmp_path / "run")
    train.train(config, model_dir=model_dir, data_dir=idx_dir, verbose=0)
    train.train(dataclasses.replace(config, epochs=2), model_dir=model_dir, data_dir=idx_dir,
                verbose=0)  # resumes for a second epoch
    result = evaluate.evaluate(model_dir)
    assert (result["dataset"], result["examples"], result["epoch"]) == ("fashion_mnist", 10, 2)
    exported = export.export(model_dir, str(tmp_path / "serving" / "fashion"),
                             guard=False)
    signature = tf.saved_model.load(exported["path"]).signatures["serving_default"]
    [images] = signature.structured_input_signature[1].values()
    assert images.shape.as_list() == [None, 32, 32, 3] and images.dtype == tf.uint8
