"""Tests of ssc_tf.data: splits, batches, augmentation, normalization and errors per source.

TFDS datasets run under `tfds.testing.mock_data` with metadata written to a temporary
directory (split sizes) and a reader that honors split slices, so the validation hold-out
is checked example by example. Example i of a mock TFDS split is a constant image of pixel
value i (plus `_TEST_OFFSET` outside "train") and label i % num_classes, so an image tells
which example it came from even after the crop (whose center keeps the original pixels).
Tiny-ImageNet runs on a miniature folder of real JPEG files; digits on the real bundle.
"""

import dataclasses
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ssc_tf import config as config_lib
from ssc_tf import data
from ssc_tf.data import augment, datasets, pipeline

# Split sizes of the mock TFDS datasets ("validation" is ImageNet's evaluation set).
_TFDS_SIZES = {
    "cifar10": {"train": 50, "test": 20},
    "cifar100": {"train": 50, "test": 20},
    "imagenet2012": {"train": 30, "validation": 10},
}
# Record files of a mock split (1 where not listed): ImageNet's training set in 3.
_SHARDS = {("imagenet2012", "train"): 3}
# Pixel value offset of the examples outside a mock "train" split.
_TEST_OFFSET = 100


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Stands in for TFDS' record reader (`FileReaderBuilder._as_dataset`) under mock_data.

    Reads the split slice (e.g. `train[40:50]`) of the sizes in the metadata, encodes each
    example as TFDS stores it (PNG for CIFAR; JPEG of varying size for ImageNet) and decodes
    it with TFDS' own features, so `SkipDecoding` behaves as with real data.
    """
    del read_config, shuffle_files
    [instruction] = tfds.core.ReadInstruction.from_spec(split).to_absolute(self.info.splits)
    offset = 0 if instruction.splitname == "train" else _TEST_OFFSET
    features = self.info.features

    def example(index):
        value = tf.cast(index + offset, tf.uint8)
        if self.name == "imagenet2012":
            shape = tf.stack([40 + 8 * (index % 3), 64 - 8 * (index % 2), 3])
            encoded = tf.io.encode_jpeg(tf.fill(shape, value), quality=100)
        else:
            encoded = tf.io.encode_png(tf.fill([32, 32, 3], value))
        record = {}
        for key, feature in features.items():
            if key == "image":
                record[key] = encoded
            elif isinstance(feature, tfds.features.ClassLabel):
                record[key] = index % feature.num_classes
            else:
                record[key] = tf.strings.as_string(index)
        return features.decode_example(record, decoders=decoders)

    # None stands for the split's first or last example.
    start = instruction.from_ or 0
    stop = instruction.to or self.info.splits[instruction.splitname].num_examples
    return tf.data.Dataset.range(start, stop).map(example)


@pytest.fixture(scope="module")
def tfds_metadata_dir(tmp_path_factory):
    """A TFDS data directory holding only the metadata (split sizes and shards) of
    `_TFDS_SIZES` and `_SHARDS`."""
    root = tmp_path_factory.mktemp("tfds")
    for name, sizes in _TFDS_SIZES.items():
        builder = tfds.builder(name, data_dir=str(root))
        builder.info.set_splits(
            tfds.core.SplitDict(
                [
                    tfds.core.SplitInfo(
                        name=split, num_bytes=0,
                        shard_lengths=[count // _SHARDS.get((name, split), 1)]
                        * _SHARDS.get((name, split), 1))
                    for split, count in sizes.items()
                ]
            )
        )
        builder.data_path.mkdir(parents=True)
        builder.info.write_to_directory(builder.data_path)
    return root


@pytest.fixture
def mock_tfds(tfds_metadata_dir):
    with tfds.testing.mock_data(data_dir=str(tfds_metadata_dir), as_dataset_fn=_fake_as_dataset):
        yield


def _denormalize(images, dataset):
    """The 0..255 pixels that `normalize` mapped to `images`."""
    mean = np.array(datasets.get(dataset).mean_rgb) * 255
    stddev = np.array(datasets.get(dataset).stddev_rgb) * 255
    return np.asarray(images, np.float64) * stddev + mean


def _center_values(images, dataset):
    """The original pixel value at the center of each image (kept by pad-and-crop)."""
    center = _denormalize(images[:, 16, 16, 0:1], dataset)[:, 0]
    return np.round(center).astype(int)


def _epoch(dataset):
    images, labels = zip(*dataset.as_numpy_iterator())
    return images, labels


# --- TFDS: CIFAR-10, CIFAR-100, ImageNet ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_TFDS_SIZES))
def test_tfds_train_yields_full_batches_with_known_cardinality(mock_tfds, tmp_path, name):
    data_dir = str(tmp_path) if data.needs_data_dir(name) else None
    train = data.load(name, "train", batch_size=8, data_dir=data_dir)
    height, width, _ = datasets.get(name).input_shape
    steps = _TFDS_SIZES[name]["train"] // 8
    assert int(train.cardinality()) == steps
    assert train.element_spec[0].shape == (8, height, width, 3)
    images, labels = _epoch(train)
    assert len(images) == steps
    for batch_images, batch_labels in zip(images, labels):
        assert batch_images.shape == (8, height, width, 3)
        assert batch_images.dtype == np.float32
        assert batch_labels.shape == (8,) and batch_labels.dtype == np.int32
        assert 0 <= batch_labels.min() and batch_labels.max() < datasets.get(name).num_classes
    assert np.isfinite(np.concatenate(images)).all()


def test_validation_split_partitions_the_training_set(mock_tfds):
    kwargs = {"validation_split": 0.2}
    assert data.num_examples("cifar10", "train", **kwargs) == 40
    assert data.num_examples("cifar10", "validation", **kwargs) == 10
    train_images, train_labels = _epoch(data.load("cifar10", "train", batch_size=8, **kwargs))
    valid = data.load("cifar10", "validation", batch_size=8, **kwargs)
    assert int(valid.cardinality()) == 2
    valid_images, valid_labels = _epoch(valid)
    assert [len(batch) for batch in valid_labels] == [8, 2]
    train_index = _center_values(np.concatenate(train_images), "cifar10")
    valid_index = _center_values(np.concatenate(valid_images), "cifar10")
    # The last 10 of the 50 stored examples are held out, in order; the first 40 are trained on.
    np.testing.assert_array_equal(valid_index, np.arange(40, 50))
    np.testing.assert_array_equal(np.sort(train_index), np.arange(40))
    np.testing.assert_array_equal(np.concatenate(train_labels), train_index % 10)
    np.testing.assert_array_equal(np.concatenate(valid_labels), valid_index % 10)


def test_train_examples_keeps_the_first_of_the_training_set(mock_tfds):
    kwargs = {"validation_split": 0.2, "train_examples": 24}
    assert data.num_examples("cifar10", "train", **kwargs) == 24
    assert data.num_examples("cifar10", "validation", **kwargs) == 10
    train = data.load("cifar10", "train", batch_size=8, **kwargs)
    assert int(train.cardinality()) == 3
    train_images, _ = _epoch(train)
    np.testing.assert_array_equal(
        np.sort(_center_values(np.concatenate(train_images), "cifar10")), np.arange(24))
    valid_images, _ = _epoch(data.load("cifar10", "validation", batch_size=8, **kwargs))
    np.testing.assert_array_equal(
        _center_values(np.concatenate(valid_images), "cifar10"), np.arange(40, 50))
    with pytest.raises(ValueError, match=r"`train_examples`: expected at most the 40 training "
                                         r"examples of 'cifar10' \(validation_split=0.2\)\. "
                                         r"Received: train_examples=41"):
        data.load("cifar10", "train", batch_size=8, validation_split=0.2, train_examples=41)
    with pytest.raises(ValueError, match=r"`train_examples`: expected an integer >= 1"):
        data.num_examples("cifar10", "train", train_examples=0)


def test_test_split_is_ordered_unaugmented_and_keeps_the_last_batch(mock_tfds):
    test = data.load("cifar100", "test", batch_size=8)
    assert int(test.cardinality()) == 3
    first, second = _epoch(test), _epoch(test)
    assert [len(batch) for batch in first[1]] == [8, 8, 4]
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)
    index = np.arange(20)
    expected = data.normalize(np.full((20, 32, 32, 3), _TEST_OFFSET + index[:, None, None, None]),
                              "cifar100")
    np.testing.assert_array_equal(np.concatenate(first[0]), expected)
    np.testing.assert_array_equal(np.concatenate(first[1]), index)


def test_unnormalized_images_are_the_pixels(mock_tfds):
    test = data.load("cifar100", "test", batch_size=8, normalized=False)
    images = np.concatenate(_epoch(test)[0])
    assert images.dtype == np.float32
    index = np.arange(20)
    np.testing.assert_array_equal(
        images, np.full((20, 32, 32, 3), _TEST_OFFSET + index[:, None, None, None]))
    train = data.load("cifar100", "train", batch_size=8, normalized=False)
    assert train.element_spec[0].dtype == tf.float32

@pytest.mark.parametrize("split", ["train", "test"])
def test_device_normalization_leaves_the_host_pixels_to_normalize(mock_tfds, split):
    host = _epoch(data.load("cifar10", split, batch_size=8, seed=3))
    device = _epoch(data.load("cifar10", split, batch_size=8, seed=3, normalize_on="device"))
    assert {batch.dtype.name for batch in device[0]} == {"uint8"}
    for on_host, on_device in zip(host[0], device[0]):
        np.testing.assert_array_equal(data.normalize(on_device, "cifar10"), on_host)
    np.testing.assert_array_equal(np.concatenate(device[1]), np.concatenate(host[1]))


def test_imagenet_travels_as_uint8_but_its_evaluation_resize_as_float(mock_tfds, tmp_path):
    kwargs = {"batch_size": 4, "data_dir": str(tmp_path), "normalize_on": "device"}
    assert data.load("imagenet2012", "train", **kwargs).element_spec[0].dtype == tf.uint8
    assert data.load("imagenet2012", "test", **kwargs).element_spec[0].dtype == tf.float32


def test_device_normalization_needs_normalized_images():
    with pytest.raises(ValueError, match=r"`normalize_on`: expected 'host' with "
                                         r"`normalized=False`.*Received: normalize_on='device'"):
        data.load("digits", "test", batch_size=8, normalized=False, normalize_on="device")


def test_only_streamed_training_sets_are_read_out_of_order(mock_tfds, tmp_path):
    options = {name: data.load(name, "train", batch_size=8, data_dir=str(tmp_path)).options()
               for name in ("cifar10", "imagenet2012")}
    assert options["cifar10"].deterministic is True
    assert options["imagenet2012"].deterministic is False
    in_order = data.load("imagenet2012", "train", batch_size=8, data_dir=str(tmp_path),
                         deterministic=True)
    assert in_order.options().deterministic is True


def test_auto_shard_policy_shards_by_file_only_with_a_file_per_worker():
    policy = tf.data.experimental.AutoShardPolicy
    assert pipeline.auto_shard_policy(1024, 8) == policy.FILE
    assert pipeline.auto_shard_policy(8, 8) == policy.FILE
    assert pipeline.auto_shard_policy(3, 4) == policy.DATA
    assert pipeline.auto_shard_policy(1, 2) == policy.DATA
    assert pipeline.auto_shard_policy(0, 2) == policy.DATA  # Arrays, or a list of paths.


def _experiment(dataset, **overrides):
    values = dict(dataset=dataset, model="resnet50" if dataset == "imagenet2012" else "resnet32",
                  epochs=1, sparsity="dense", batch_size=4, seed=0)
    return config_lib.ExperimentConfig(**{**values, **overrides})


@pytest.mark.parametrize("workers, train_policy, in_order", [
    (2, "FILE", False),  # 3 training files for 2 workers; 1 evaluation file.
    (4, "DATA", True),  # Every worker reads everything, so in the same order.
])
def test_workers_share_imagenet_by_file_where_it_has_a_file_each(
        mock_tfds, tmp_path, workers, train_policy, in_order):
    train, test = data.experiment_batches(
        _experiment("imagenet2012"), data_dir=str(tmp_path), num_workers=workers)
    policy = tf.data.experimental.AutoShardPolicy
    assert train.options().experimental_distribute.auto_shard_policy == policy[train_policy]
    assert train.options().deterministic is in_order
    assert test.options().experimental_distribute.auto_shard_policy == policy.DATA


def test_cached_datasets_are_shared_by_data_and_one_machine_sets_no_policy():
    config = _experiment("digits")
    train, test = data.experiment_batches(config, num_workers=2)
    for batches in (train, test):
        assert (batches.options().experimental_distribute.auto_shard_policy
                == tf.data.experimental.AutoShardPolicy.DATA)
    assert train.options().deterministic is True
    train, _ = data.experiment_batches(config)
    assert (train.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.AUTO)


def test_train_reshuffles_and_reaugments_each_epoch_reproducibly(mock_tfds):
    train = data.load("cifar10", "train", batch_size=10, seed=3)
    epoch_1, epoch_2 = _epoch(train), _epoch(train)
    again = _epoch(data.load("cifar10", "train", batch_size=10, seed=3))
    other_seed = _epoch(data.load("cifar10", "train", batch_size=10, seed=4))
    images_1 = np.concatenate(epoch_1[0])
    np.testing.assert_array_equal(images_1, np.concatenate(again[0]))
    np.testing.assert_array_equal(np.concatenate(epoch_1[1]), np.concatenate(again[1]))
    assert not np.array_equal(images_1, np.concatenate(epoch_2[0]))
    assert not np.array_equal(images_1, np.concatenate(other_seed[0]))
    # Each epoch is a permutation of all 50 examples, in a new order.
    order_1, order_2 = _center_values(images_1, "cifar10"), _center_values(
        np.concatenate(epoch_2[0]), "cifar10"
    )
    np.testing.assert_array_equal(np.sort(order_1), np.arange(50))
    np.testing.assert_array_equal(np.sort(order_2), np.arange(50))
    assert not np.array_equal(order_1, order_2)
    # The random crop moved most images: their borders hold the zero padding.
    zero = data.normalize(np.zeros(3, np.uint8), "cifar10").numpy()
    padded = [
        np.isclose(image, zero).all(axis=-1).any()
        for image, value in zip(images_1, order_1)
        if value != 0
    ]
    assert sum(padded) >= 40


def test_imagenet_test_is_tfds_validation_resized_and_center_cropped(mock_tfds, tmp_path):
    assert data.num_examples("imagenet2012", "test", data_dir=str(tmp_path)) == 10
    test = data.load("imagenet2012", "test", batch_size=4, data_dir=str(tmp_path))
    images, labels = _epoch(test)
    assert [batch.shape for batch in images] == [(4, 224, 224, 3)] * 2 + [(2, 224, 224, 3)]
    np.testing.assert_array_equal(np.concatenate(labels), np.arange(10))
    # Constant images stay constant through the JPEG, the resize and the crop.
    pixels = _denormalize(np.concatenate(images), "imagenet2012")
    expected = _TEST_OFFSET + np.arange(10)[:, None, None, None]
    np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=1.0)


def test_imagenet_validation_split(mock_tfds, tmp_path):
    kwargs = {"data_dir": str(tmp_path), "validation_split": 0.1}
    assert data.num_examples("imagenet2012", "train", **kwargs) == 27
    valid = data.load("imagenet2012", "validation", batch_size=2, **kwargs)
    images, labels = _epoch(valid)
    np.testing.assert_array_equal(np.concatenate(labels), [27, 28, 29])
    assert images[0].shape == (2, 224, 224, 3)


# --- augment: train augmentation, eval resize, normalize --------------------------------------


def test_train_augment_pads_crops_and_flips_a_window():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    windows = {
        (flip, top, left): (padded[top:top + 32, left:left + 32][:, ::-1] if flip
                            else padded[top:top + 32, left:left + 32])
        for flip in (False, True) for top in range(9) for left in range(9)
    }
    seen = set()
    for seed in range(40):
        out = augment.train_augment(image, tf.constant([seed, 7]), "cifar10").numpy()
        match = [key for key, window in windows.items() if np.array_equal(out, window)]
        assert len(match) == 1
        seen.add(match[0])
    assert {flip for flip, _, _ in seen} == {False, True}
    assert len({(top, left) for _, top, left in seen}) > 10
    # The same seed gives the same image.
    np.testing.assert_array_equal(
        augment.train_augment(image, tf.constant([5, 7]), "cifar10"),
        augment.train_augment(image, tf.constant([5, 7]), "cifar10"),
    )


def test_digits_are_cropped_but_never_flipped():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    for seed in range(20):
        out = augment.train_augment(image, tf.constant([seed, 0]), "digits").numpy()
        assert any(
            np.array_equal(out, padded[top:top + 32, left:left + 32])
            for top in range(9) for left in range(9)
        )


def test_imagenet_train_augment_crops_the_jpeg_to_224_uint8():
    rng = np.random.default_rng(2)
    encoded = tf.io.encode_jpeg(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    outs = [augment.train_augment(encoded, tf.constant([s, 1]), "imagenet2012") for s in range(3)]
    for out in outs:
        assert out.shape == (224, 224, 3) and out.dtype == tf.uint8
    assert not np.array_equal(outs[0], outs[1])
    # The resize keeps the pixels' scale: a constant image stays that constant.
    flat = tf.io.encode_jpeg(np.full((120, 90, 3), 77, np.uint8), quality=100)
    np.testing.assert_array_equal(
        augment.train_augment(flat, tf.constant([3, 1]), "imagenet2012"),
        np.full((224, 224, 3), 77))


def test_normalize_exact_values():
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(
        data.normalize(pixels, "imagenet2012"),
        [[[-123.675 / 58.395, 11.72 / 57.12, 151.47 / 57.375]]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        data.normalize(pixels, "cifar10"),
        [[[(0 - 0.4914) / 0.2470, (128 / 255 - 0.4822) / 0.2435, (1 - 0.4465) / 0.2616]]],
        rtol=1e-5,
    )
    batch = np.full((2, 4, 4, 3), 128.0, np.float32)
    out = data.normalize(batch, "digits")
    assert out.shape == (2, 4, 4, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out, (128 / 255 - 0.3054) / 0.3237, rtol=1e-5)


def test_eval_resize_imagenet_shorter_side_256_center_224():
    # 300 x 450 is resized to 256 x 384 and the center 224 x 224 kept (columns 80..303). A
    # horizontal ramp stays mirror-symmetric only if the crop is centered.
    ramp = np.abs(np.arange(450) - 224.5)
    image = np.broadcast_to(ramp[None, :, None], (300, 450, 3)).astype(np.float32)
    out = data.eval_resize(image, "imagenet2012")
    assert out.shape == (224, 224, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out, out.numpy()[:, ::-1], atol=1e-3)
    # Column 80 of 384 samples the original at (80 + 0.5) * 450 / 384 - 0.5 = 93.8.
    np.testing.assert_allclose(out[:, 0], 224.5 - 93.84, atol=0.1)
    batch = data.eval_resize(np.zeros((2, 256, 300, 3), np.uint8), "imagenet2012")
    assert batch.shape == (2, 224, 224, 3)


def test_eval_resize_is_identity_below_imagenet():
    images = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
    out = data.eval_resize(images, "cifar10")
    assert out.dtype == tf.uint8
    np.testing.assert_array_equal(out, images)


# --- Tiny-ImageNet ------------------------------------------------------------------------------

# Class colors; n03's images are gray, one of them stored as a 1-channel JPEG.
_TINY_COLORS = {"n01": (200, 40, 40), "n02": (40, 200, 40), "n03": (120, 120, 120)}
# val/ images in annotation order: (file name, wnid).
_TINY_VAL = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01"),
             ("val_3.JPEG", "n01"), ("val_4.JPEG", "n03"), ("val_5.JPEG", "n02")]


def _write_jpeg(path, wnid, grayscale=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    color = _TINY_COLORS[wnid]
    pixels = np.full((64, 64, 1 if grayscale else 3), color[:1] if grayscale else color, np.uint8)
    tf.io.write_file(path, tf.io.encode_jpeg(pixels, quality=100))


@pytest.fixture
def tiny_dir(tmp_path):
    """A miniature tiny-imagenet-200/: 3 classes x 4 training images, 6 val images."""
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    # Unsorted on purpose: labels follow the sorted wnids.
    (root / "wnids.txt").write_text("n02\nn03\nn01\n")
    for wnid in _TINY_COLORS:
        for i in range(4):
            path = root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            _write_jpeg(str(path), wnid, grayscale=(wnid == "n03" and i == 0))
    lines = []
    for name, wnid in _TINY_VAL:
        _write_jpeg(str(root / "val" / "images" / name), wnid, grayscale=(name == "val_1.JPEG"))
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def _label_of_color(images):
    """The label whose class color is nearest to each image's center pixel."""
    colors = np.array([_TINY_COLORS[wnid] for wnid in sorted(_TINY_COLORS)])
    center = _denormalize(images[:, 32, 32], "tinyimagenet")
    return np.argmin(np.abs(center[:, None, :] - colors[None]).sum(-1), axis=1)


def test_tiny_imagenet_test_split_labels_follow_sorted_wnids(tiny_dir):
    assert data.num_examples("tinyimagenet", "test", data_dir=str(tiny_dir)) == 6
    images, labels = _epoch(data.load("tinyimagenet", "test", batch_size=4,
                                      data_dir=str(tiny_dir)))
    assert [batch.shape for batch in images] == [(4, 64, 64, 3), (2, 64, 64, 3)]
    images, labels = np.concatenate(images), np.concatenate(labels)
    np.testing.assert_array_equal(labels, [1, 2, 0, 0, 2, 1])
    np.testing.assert_array_equal(_label_of_color(images), labels)
    # Every image, the 1-channel JPEG included, decodes to its 3-channel class color.
    pixels = _denormalize(images, "tinyimagenet")
    expected = np.array([_TINY_COLORS[wnid] for _, wnid in _TINY_VAL])[:, None, None, :]
    np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=3)


def test_tiny_imagenet_train_and_validation_split_every_training_image(tiny_dir):
    # data_dir may also be the folder holding tiny-imagenet-200/.
    kwargs = {"data_dir": str(tiny_dir.parent), "validation_split": 0.25}
    assert data.num_examples("tinyimagenet", "train", **kwargs) == 9
    assert data.num_examples("tinyimagenet", "validation", **kwargs) == 3
    train = data.load("tinyimagenet", "train", batch_size=3, **kwargs)
    assert int(train.cardinality()) == 3
    train_images, train_labels = map(np.concatenate, _epoch(train))
    valid_images, valid_labels = map(np.concatenate, _epoch(
        data.load("tinyimagenet", "validation", batch_size=3, **kwargs)))
    assert train_images.shape == (9, 64, 64, 3) and valid_images.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(_label_of_color(train_images), train_labels)
    np.testing.assert_array_equal(_label_of_color(valid_images), valid_labels)
    counts = np.bincount(np.concatenate([train_labels, valid_labels]), minlength=3)
    np.testing.assert_array_equal(counts, [4, 4, 4])


# --- digits -------------------------------------------------------------------------------------


def test_digits_counts_shapes_labels_and_normalization():
    assert data.num_examples("digits", "train") == 1437
    assert data.num_examples("digits", "test") == 360
    kwargs = {"validation_split": 0.1}
    assert (data.num_examples("digits", "train", **kwargs)
            + data.num_examples("digits", "validation", **kwargs)
            + data.num_examples("digits", "test")) == 1797
    test = data.load("digits", "test", batch_size=128)
    images, labels = map(np.concatenate, _epoch(test))
    assert images.shape == (360, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    np.testing.assert_array_equal(np.bincount(labels), [36, 36, 35, 37, 36, 37, 36, 36, 35, 36])
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05
    train = data.load("digits", "train", batch_size=128, **kwargs)
    assert int(train.cardinality()) == 1293 // 128
    assert train.element_spec[0].shape == (128, 32, 32, 3)


def test_a_registry_entry_is_all_a_dataset_needs(monkeypatch):
    # A new dataset from an existing reader: one record, nothing else.
    small = dataclasses.replace(datasets.get("digits"), name="digits16", input_shape=(16, 16, 3))
    monkeypatch.setitem(datasets.DATASETS, "digits16", small)
    images, labels = next(iter(data.load("digits16", "test", batch_size=4)))
    assert images.shape == (4, 16, 16, 3) and labels.shape == (4,)
    assert data.num_examples("digits16", "test") == 360
    assert not data.needs_data_dir("digits16")


def test_needs_data_dir():
    assert data.DATASETS == ("cifar10", "cifar100", "tinyimagenet", "imagenet2012", "digits",
                             "fashion_mnist")
    assert [data.needs_data_dir(name) for name in data.DATASETS] == [
        False, False, True, True, False, False
    ]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"dataset": "mnist"}, "`dataset`.*Received: dataset='mnist'"),
        ({"split": "val"}, r"`split`: expected one of \('train', 'validation', 'test'\)"),
        ({"batch_size": 0}, "`batch_size`.*Received: batch_size=0"),
        ({"batch_size": 2000}, "`batch_size`.*1437 training examples.*batch_size=2000"),
        ({"validation_split": 1.0}, r"`validation_split`.*\[0, 1\).*validation_split=1.0"),
        ({"validation_split": -0.1}, "validation_split=-0.1"),
        ({"split": "validation"}, "`validation_split`.*split 'validation'"),
        ({"validation_split": 1e-4}, "`validation_split`.*leaves 0 for validation"),
        ({"seed": -1}, "`seed`.*Received: seed=-1"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, pattern):
    arguments = {"dataset": "digits", "split": "train", "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        data.load(**arguments)


def test_unknown_dataset_raises_everywhere():
    with pytest.raises(ValueError, match="dataset='foo'"):
        data.needs_data_dir("foo")
    with pytest.raises(ValueError, match="dataset='foo'"):
        data.normalize(np.zeros((1, 1, 3)), "foo")
    with pytest.raises(ValueError, match="dataset='foo'"):
        data.num_examples("foo", "test")


@pytest.mark.parametrize(
    "dataset, needed",
    [
        ("tinyimagenet", ["tiny-imagenet-200/", "train/<wnid>/images/", "val/images/",
                          "val/val_annotations.txt", "wnids.txt"]),
        ("imagenet2012", ["<data_dir>/downloads/manual/", "ILSVRC2012_img_train.tar",
                          "ILSVRC2012_img_val.tar"]),
    ],
)
def test_missing_data_dir_says_where_the_files_go(dataset, needed):
    for call in (lambda: data.load(dataset, "test", batch_size=8),
                 lambda: data.num_examples(dataset, "train")):
        with pytest.raises(ValueError, match="`data_dir`") as info:
            call()
        for text in needed:
            assert text in str(info.value)


def test_imagenet_without_archives_names_the_missing_ones(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="`data_dir`") as info:
        data.load("imagenet2012", "train", batch_size=8, data_dir=str(tmp_path))
    assert str(manual / "ILSVRC2012_img_train.tar") in str(info.value)
    assert "ILSVRC2012_img_val.tar," not in str(info.value)


def test_cifar_data_dir_must_exist(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match=f"`data_dir`: '{re.escape(missing)}' is not a dir"):
        data.load("cifar10", "test", batch_size=8, data_dir=missing)


def _unknown_name(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def no_proxy(monkeypatch):
    """No proxy variables, so the download host is connected to directly."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("offline", ["no_dns", "no_route", "dns_hangs"])
def test_cifar_offline_fails_at_once_and_leaves_no_files(tmp_path, monkeypatch, no_proxy,
                                                         offline):
    released = threading.Event()

    def hanging_lookup(*args, **kwargs):
        released.wait(60)
        _unknown_name()

    def test_net(host, port, *args, **kwargs):
        # TEST-NET-1 (RFC 5737), routed nowhere: a connection times out or is refused.
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("192.0.2.1", port))]

    lookups = {"no_dns": _unknown_name, "no_route": test_net, "dns_hangs": hanging_lookup}
    monkeypatch.setattr(socket, "getaddrinfo", lookups[offline])
    downloads = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *args, **kwargs: downloads.append(self.name))
    start = time.monotonic()
    try:
        with pytest.raises(ValueError, match=r"'cifar10/3.0.2' is not prepared .* could not be "
                                             r"downloaded: .*www\.cs\.toronto\.edu:443") as info:
            data.load("cifar10", "test", batch_size=8, data_dir=str(tmp_path))
    finally:
        released.set()
    assert time.monotonic() - start < 10
    assert "--data_dir" in str(info.value)
    if offline == "dns_hangs":
        assert "did not answer within 3 s" in str(info.value)
    assert downloads == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("route", ["direct", "proxy"])
def test_cifar_download_failure_asks_for_a_prepared_data_dir_and_removes_its_files(
        tmp_path, monkeypatch, no_proxy, route):
    real_lookup = socket.getaddrinfo
    server = socket.create_server(("127.0.0.1", 0))  # accepts the probe's connection
    port = server.getsockname()[1]

    def lookup(host, port_asked, *args, **kwargs):
        if route == "direct":  # the download host, at the server's address
            return real_lookup("127.0.0.1", port, *args, **kwargs)
        if host == "127.0.0.1":  # the proxy
            return real_lookup(host, port_asked, *args, **kwargs)
        return _unknown_name()

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    if route == "proxy":
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
    downloads = tmp_path / "downloads"
    # Another download's partial file, there before this one started: kept.
    (downloads / "cifar10").mkdir(parents=True)
    (downloads / "cifar10" / "other.tar.gz.tmp.0123").write_bytes(b"partial")

    def fail(self, *args, **kwargs):
        partial = downloads / "cifar10" / "cifar.tar.gz.tmp.89ab"
        partial.mkdir()
        (partial / "cifar.tar.gz").write_bytes(b"partial")
        (downloads / "extracted" / "incomplete.4567_cifar.tar.gz").mkdir(parents=True)
        raise OSError("connection reset")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with server, pytest.raises(ValueError, match="'cifar10/3.0.2' is not prepared") as info:
        data.load("cifar10", "test", batch_size=8, data_dir=str(tmp_path))
    assert "connection reset" in str(info.value) and "`data_dir`" in str(info.value)
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "downloads", "downloads/cifar10", "downloads/cifar10/other.tar.gz.tmp.0123",
        "downloads/extracted"]


def test_tiny_imagenet_data_dir_problems_are_named(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        data.num_examples("tinyimagenet", "test", data_dir=str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no wnids.txt in"):
        data.num_examples("tinyimagenet", "test", data_dir=str(empty))
    os.remove(tiny_dir / "val" / "images" / "val_4.JPEG")
    with pytest.raises(ValueError, match=re.escape(str(tiny_dir / "val/images/val_4.JPEG"))):
        data.load("tinyimagenet", "test", batch_size=2, data_dir=str(tiny_dir))
    os.remove(tiny_dir / "val" / "val_annotations.txt")
    with pytest.raises(ValueError, match="lacks .*val_annotations.txt"):
        data.num_examples("tinyimagenet", "test", data_dir=str(tiny_dir))
    for path in (tiny_dir / "train" / "n02" / "images").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=re.escape(str(tiny_dir / "train/n02/images/*.JPEG"))):
        data.num_examples("tinyimagenet", "train", data_dir=str(tiny_dir))
