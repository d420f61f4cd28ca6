"""CIFAR-10, CIFAR-100 and ImageNet (ILSVRC 2012) read through TensorFlow Datasets.

TFDS stores each split as record shards in a fixed order (shuffled once, when it was
prepared), so a contiguous slice `train[start:stop]` is a fixed, reproducible subset: the
validation hold-out of `ssc_tf.data` is one. `tensorflow_datasets` is imported inside the
functions, so importing `ssc_tf.data` does not pay for it.

Preparation. CIFAR: `data_dir` may be None (TFDS' default, `~/tensorflow_datasets`); a
missing dataset is downloaded and prepared on first use (a few minutes, needs internet). Before
downloading, a short connection to the download host (or the proxy in `https_proxy`) tells
whether it can be reached; if not, the error comes at once instead of after minutes of TFDS'
retries. A failed download leaves none of TFDS' temporary files behind.
ImageNet cannot be downloaded by TFDS: `data_dir` must hold either an already prepared
`imagenet2012/<version>/` or the two archives of image-net.org in
`<data_dir>/downloads/manual/`, from which the first use prepares it (hours, about 150 GB).
"""

import os
import socket
import threading
import urllib.parse
import urllib.request

import tensorflow as tf

from ssc_tf.data import datasets

# Seconds the download host (with its name lookup) has to accept a connection: a host that
# answers at all does so well within this, and offline the error then comes at once.
_PROBE_TIMEOUT = 3


def size(dataset, part, data_dir):
    """The number of examples of a whole part.

    Args:
        dataset: the `ssc_tf.data.datasets.Dataset` record of a TFDS dataset.
        part: `"train"` (the training set) or `"test"` (the evaluation set).
        data_dir: str or None, the TFDS data directory (None: TFDS' default).

    Returns:
        The example count TFDS recorded when it prepared the split.
    """
    builder = _prepared_builder(dataset, data_dir)
    return builder.info.splits[dataset.source_splits[part]].num_examples


def num_files(dataset, part, start, stop, data_dir):
    """The record files (TFDS' shards) that the examples `[start, stop)` of a part are read
    from: what tf.data can share among the workers of a multi-worker job by file.

    Args:
        dataset: the record, as in `size`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: str or None, the TFDS data directory.

    Returns:
        An int >= 1.
    """
    builder = _prepared_builder(dataset, data_dir)
    return builder.info.splits[f"{dataset.source_splits[part]}[{start}:{stop}]"].num_shards


def read(dataset, part, start, stop, *, data_dir, training, seed):
    """The examples `[start, stop)` of a part, in TFDS' stored order.

    Args:
        dataset: the record, as in `size`.
        part: `"train"` or `"test"`, as in `size`.
        start: int, the first example.
        stop: int, one past the last example.
        data_dir: str or None, the TFDS data directory.
        training: bool. For the training set of a dataset with a random resized crop
            (ImageNet) the shards are read in a shuffled order (seeded) and the images are
            left JPEG-encoded, for `augment.train_augment` to decode only the crop.
        seed: int, the shard shuffling seed (that case only).

    Returns:
        A `tf.data.Dataset` of `(image, label)`: image a uint8 `(H, W, 3)` tensor (a JPEG
        string for ImageNet training), label an int32 scalar; its cardinality is known.
    """
    tfds = _import_tfds()

    builder = _prepared_builder(dataset, data_dir)
    encoded = training and dataset.crop == datasets.RESIZED_CROP
    examples = builder.as_dataset(
        split=f"{dataset.source_splits[part]}[{start}:{stop}]",
        as_supervised=True,
        shuffle_files=encoded,
        decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    return examples.map(
        lambda image, label: (image, tf.cast(label, tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _prepared_builder(dataset, data_dir):
    """The TFDS builder of `dataset` in `data_dir`, preparing the data first if needed."""
    tfds = _import_tfds()

    if data_dir is not None and not tf.io.gfile.isdir(data_dir):
        raise ValueError(
            f"Invalid value for argument `data_dir`: {data_dir!r} is not a directory. "
            f"Pass an existing TFDS data directory for {dataset.name!r}"
            + (" or None for TFDS' default." if dataset.data_dir is None else ".")
        )
    builder = tfds.builder(dataset.name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if dataset.manual_downloads:
        manual_dir = os.path.join(data_dir, "downloads", "manual")
        missing = [
            os.path.join(manual_dir, archive)
            for archive in dataset.manual_downloads
            if not tf.io.gfile.exists(os.path.join(manual_dir, archive))
        ]
        if missing:
            raise ValueError(
                f"Invalid value for argument `data_dir`: {data_dir!r} holds neither a "
                f"prepared TFDS {builder.info.full_name!r} nor the archives to "
                f"prepare it from. Missing: {', '.join(missing)}. Download "
                f"{' and '.join(dataset.manual_downloads)} from https://image-net.org "
                f"into {manual_dir}/ (TFDS' manual download directory)."
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
        return builder
    unreachable = _unreachable(dataset.download_url, _PROBE_TIMEOUT)
    if unreachable:
        raise _not_prepared_error(builder, data_dir, unreachable)
    # TFDS' temporary files from before this call (another process may be downloading).
    earlier = set(_temporary_files(builder))
    try:
        builder.download_and_prepare()
    except Exception as error:
        for path in set(_temporary_files(builder)) - earlier:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        raise _not_prepared_error(builder, data_dir, error) from error
    return builder


def _not_prepared_error(builder, data_dir, reason):
    return ValueError(
        f"TFDS dataset {builder.info.full_name!r} is not prepared in "
        f"data_dir={data_dir!r} (TFDS directory {builder.data_dir_root}) and could not "
        f"be downloaded: {reason}. Pass `data_dir` (--data_dir) pointing at a TFDS data "
        f"directory that holds a prepared {builder.info.full_name}/ folder, e.g. one "
        "made by `tfds build` on a machine with internet."
    )


def _temporary_files(builder):
    """TFDS' partial downloads, extractions and datasets under the builder's directory."""
    root = str(builder.data_dir_root)
    patterns = (
        os.path.join(root, "downloads", builder.name, "*.tmp.*"),
        os.path.join(root, "downloads", "extracted", "incomplete.*"),
        os.path.join(root, builder.name, "incomplete.*"),
    )
    return [path for pattern in patterns for path in tf.io.gfile.glob(pattern)]


def _unreachable(url, timeout):
    """Why `url`'s host takes no connection within `timeout` seconds, or None if it does.

    Connects where the download would: to the proxy of `https_proxy` (`http_proxy` for an
    http URL) unless `no_proxy` exempts the host. The name lookup and connection run in a
    daemon thread, so a lookup that hangs (no DNS server) is given up after `timeout` too.
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as error:
            outcome["error"] = f"cannot connect to {host}:{port} ({error})"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome.get("error", f"{host}:{port} did not answer within {timeout} s")


def _import_tfds():
    """The `tensorflow_datasets` module (the `tfds` extra), imported on first use."""
    try:
        import tensorflow_datasets
    except ModuleNotFoundError as error:
        if error.name != "tensorflow_datasets":
            raise  # TFDS is there, but not one of its own dependencies: say which.
        raise ModuleNotFoundError(
            "CIFAR and ImageNet are read through TensorFlow Datasets, which is not "
            "installed: pip install 'ssc_tf[tfds]'",
            name="tensorflow_datasets",
        ) from None
    return tensorflow_datasets
