"""Images per second of the training input pipeline on this CPU, its variants side by side.

    python tools/benchmark_input.py
    python tools/benchmark_input.py --inputs=imagenet --imagenet_examples=2000

Runs `ssc_tf.data.pipeline.batches`, the pipeline every dataset trains through, on synthetic
examples of two shapes:

- `cifar`: 32 x 32 uint8 images from in-memory arrays, as CIFAR's TFDS reader yields them
  (decoded once, then cached), with CIFAR-10's augmentation: pad, random crop, flip;
- `imagenet`: JPEG files written to a temporary folder, of ImageNet's sizes (shorter side
  200-500 pixels, smooth content that compresses as photographs do), each read as bytes, as
  the TFDS reader of ImageNet's training split yields them, and decoded and random-resized-
  cropped to 224 x 224 as ImageNet's augmentation does.

Each input runs in every combination of `--deterministic` (whether the images come out in the
order of the seeded shuffle) and `--normalize_on` (host: tf.data normalizes, as the pipeline
did before normalization moved to the device; device: the batches carry uint8 pixels, and the
consumer normalizes them). The consumer of every batch is one small function, the same for all
variants: it normalizes the batch when `normalize_on` is device and sums it, so a variant's
time includes the normalization wherever it runs. The variants take their timed epochs in
turns (after one untimed epoch each, which also fills the cache), and each reports its fastest
epoch, the one least disturbed by other work on the machine. Prints a table of images per second
and bytes per batch, and writes JSON with the machine it ran on.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssc_tf import model_dir as model_dir_lib  # noqa: E402
from ssc_tf import timing  # noqa: E402
from ssc_tf.data import augment  # noqa: E402
from ssc_tf.data import pipeline  # noqa: E402

# The dataset whose record (augmentation, normalization, caching) each input takes.
INPUTS = {"cifar": "cifar10", "imagenet": "imagenet2012"}
BOOLS = {"true": True, "false": False}
# ImageNet-like image sizes: the shorter side in this range, the longer up to 4/3 of it.
_SHORTER_SIDE = (200, 500)


def cifar_examples(count, seed):
    """`count` random 32 x 32 uint8 images and labels, as CIFAR's reader yields them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, count).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def write_jpegs(directory, count, seed):
    """Writes `count` JPEG files of ImageNet's sizes into `directory`; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        shorter = int(rng.integers(*_SHORTER_SIDE))
        longer = int(shorter * rng.uniform(1.0, 4 / 3))
        height, width = (shorter, longer) if i % 2 else (longer, shorter)
        # Smooth content (an upsampled 8 x 8 image plus a little noise) compresses and
        # decodes like a photograph; uniform noise would be several times larger.
        coarse = tf.constant(rng.uniform(0, 255, (8, 8, 3)), tf.float32)
        image = tf.image.resize(coarse, (height, width)) + rng.normal(0, 8, (height, width, 3))
        path = os.path.join(directory, f"{i:06d}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255),
                                                         tf.uint8), quality=90))
        paths.append(path)
    return paths


def jpeg_examples(paths, seed):
    """The JPEG files' bytes with random labels, as ImageNet's training reader yields them."""
    labels = np.random.default_rng(seed).integers(0, 1000, len(paths)).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: (tf.io.read_file(path), label),
        num_parallel_calls=tf.data.AUTOTUNE)


def consumer(dataset, normalize_on):
    """The step's part of the input: normalizes the batch on the device when the pipeline
    left that to it, then sums it (so that every value is computed)."""
    @tf.function
    def consume(images):
        if normalize_on == pipeline.DEVICE:
            images = augment.normalize(images, dataset)
        return tf.reduce_sum(images)

    return consume


def epoch_function(batches, consume):
    """A callable that runs one epoch of `batches` through `consume`."""
    def epoch():
        for images, _ in batches:
            consume(images)

    return epoch


def benchmark(name, examples, count, *, batch_size, epochs, orders, normalize_ons, seed):
    """The rows of one input: each variant's fastest epoch in images per second."""
    dataset = INPUTS[name]
    variants = {}
    for in_order in orders:
        for normalize_on in normalize_ons:
            batches = pipeline.batches(
                examples, dataset, training=True, batch_size=batch_size, seed=seed,
                normalize_on=normalize_on, deterministic=in_order)
            variants[(in_order, normalize_on)] = (batches, consumer(dataset, normalize_on))
    epoch_ms = timing.interleaved_ms(
        {variant: epoch_function(*subjects) for variant, subjects in variants.items()},
        epochs, warmup=1, statistic=min)
    rows = []
    for (in_order, normalize_on), (batches, _) in variants.items():
        spec = batches.element_spec[0]
        steps = count // batch_size
        rows.append({
            "input": name, "dataset": dataset, "examples": count,
            "deterministic": in_order, "normalize_on": normalize_on,
            "images_per_s": 1e3 * steps * batch_size / epoch_ms[(in_order, normalize_on)],
            "batch_dtype": spec.dtype.name,
            "batch_bytes": batch_size * int(np.prod(spec.shape[1:])) * spec.dtype.size,
        })
    return rows


def format_table(rows):
    """The rows as a text table."""
    lines = [f"{'input':9} {'deterministic':>13} {'normalize_on':>12} {'images/s':>10} "
             f"{'batch':>8} {'MB/batch':>9}"]
    for r in rows:
        lines.append(f"{r['input']:9} {str(r['deterministic']):>13} {r['normalize_on']:>12} "
                     f"{r['images_per_s']:>10.1f} {r['batch_dtype']:>8} "
                     f"{r['batch_bytes'] / 1e6:>9.2f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    # Each variant's consumer is a function of its own: TensorFlow warns of the tracings.
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    orders = [BOOLS[value] for value in dict.fromkeys(FLAGS.deterministic)]
    normalize_ons = list(dict.fromkeys(FLAGS.normalize_on))
    common = dict(batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, orders=orders,
                  normalize_ons=normalize_ons, seed=FLAGS.seed)
    rows = []
    for name in dict.fromkeys(FLAGS.inputs):
        count = FLAGS[f"{name}_examples"].value
        print(f"{name}: {count} examples, batch {FLAGS.batch_size}...", flush=True)
        with tempfile.TemporaryDirectory() as directory:
            if name == "cifar":
                examples = cifar_examples(count, FLAGS.seed)
            else:
                examples = jpeg_examples(write_jpegs(directory, count, FLAGS.seed), FLAGS.seed)
            rows += benchmark(name, examples, count, **common)
    print(format_table(rows))
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    model_dir_lib.write_json(FLAGS.output, {
        **timing.environment(), "batch_size": FLAGS.batch_size, "epochs": FLAGS.epochs,
        "statistic": "fastest epoch", "rows": rows})
    print(f"Wrote {FLAGS.output}")


def _define_flags():
    """The tool's flags, defined only when it runs, so importing it defines none."""
    flags.DEFINE_list("inputs", list(INPUTS),
                      f"Inputs to time, comma-separated, each one of {', '.join(INPUTS)}.")
    flags.register_validator(
        "inputs", lambda values: bool(values) and set(values) <= set(INPUTS),
        message=f"expected a comma-separated list of {', '.join(INPUTS)}")
    flags.DEFINE_integer("cifar_examples", 10_000, "Examples of the cifar input (an epoch).",
                         lower_bound=1)
    flags.DEFINE_integer("imagenet_examples", 500,
                         "JPEG files of the imagenet input (an epoch).", lower_bound=1)
    flags.DEFINE_integer("batch_size", 128,
                         "Images per batch; at most --cifar_examples and --imagenet_examples.",
                         lower_bound=1)
    flags.DEFINE_integer("epochs", 3, "Timed epochs per variant (after one untimed).",
                         lower_bound=1)
    flags.DEFINE_list(
        "deterministic", list(BOOLS),
        "Orders to time, comma-separated: true (the images in the order of the seeded "
        "shuffle, as every cached dataset trains) and/or false (whichever image is ready "
        "first, as ImageNet trains).")
    flags.register_validator(
        "deterministic", lambda values: bool(values) and set(values) <= set(BOOLS),
        message="expected a comma-separated list of true, false")
    flags.DEFINE_list(
        "normalize_on", list(pipeline.NORMALIZE_ON),
        "Where the batches are normalized, comma-separated: host (in tf.data, float32 "
        "batches) and/or device (by the consumer, uint8 batches).")
    flags.register_validator(
        "normalize_on",
        lambda values: bool(values) and set(values) <= set(pipeline.NORMALIZE_ON),
        message=f"expected a comma-separated list of {', '.join(pipeline.NORMALIZE_ON)}")
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic images, labels and shuffle.",
                         lower_bound=0)
    flags.DEFINE_string("output", "results/benchmark_input.json", "The JSON results file.")
    flags.register_validator("output", lambda path: path.endswith(".json"),
                             message="expected a file name ending in .json")
    flags.register_multi_flags_validator(
        ["batch_size", "cifar_examples", "imagenet_examples", "inputs"],
        lambda values: all(values["batch_size"] <= values[f"{name}_examples"]
                           for name in values["inputs"] if name in INPUTS),
        message="expected --batch_size at most the examples of each of --inputs "
                "(--cifar_examples, --imagenet_examples): a training epoch keeps full batches "
                "only")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
