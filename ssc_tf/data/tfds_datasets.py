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
# Where TFDS' cifar10 and cifar100 builders download their archives from.
_CIFAR_DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/"
# Seconds the download host (with its name lookup) has to accept a connection: a host that
# answers at all does so well within this, and offline the error then comes at once.
_PROBE_TIMEOUT = 3
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
    unreachable = _unreachable(_CIFAR_DOWNLOAD_URL, _PROBE_TIMEOUT)
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
