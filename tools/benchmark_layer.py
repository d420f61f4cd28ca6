r"""Times SSCConv2D against the dense Conv2D of the same shape, in one process.

For representative layers of the paper's networks with the supplement's (g, p) for the 10 % and
2 % tickets (CIFAR-10 rows), it times the dense `keras.layers.Conv2D`, SSC `reference` (dense
kernel times mask, the test oracle) and SSC `structured` (the product path):

- TF forward at batch 1 and at the large batch (128), and forward+backward at the large batch;
- TFLite forward at batch 1 with one thread in the LiteRT interpreter (dense and structured).

It prints a table of milliseconds with each SSC time's speed-up over dense next to the ideal one
(dense MACs / SSC MACs), and writes every number as JSON.

Usage:
    python tools/benchmark_layer.py --output=results/benchmark_layer.json
    python tools/benchmark_layer.py --quick   # fewer repeats, for a smoke run
"""

import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ssc_tf import SSCConv2D  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/benchmark_layer.json", "Where to write the JSON results.")
flags.DEFINE_bool("quick", False, "Fewer repeats and layers: a smoke run of a minute or two.")
flags.DEFINE_integer("batch_size", 128, "The large batch size (forward and forward+backward).")
flags.DEFINE_integer("repeats", 30, "Timed calls per measurement (the median is reported).")
flags.DEFINE_bool("tflite", True, "Also time the layers in TFLite (LiteRT, 1 thread, batch 1).")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ticket: str
    channels: int
    size: int
    g: int
    p: int


# The supplement's CIFAR-10 (g, p) for each width (SPEC section 3).
CASES = [
    Case("vgg19 512ch 4x4", "10%", 512, 4, 16, 2),
    Case("vgg19 512ch 4x4", "2%", 512, 4, 64, 25),
    Case("vgg19 512ch 2x2", "10%", 512, 2, 16, 2),
    Case("vgg19 512ch 2x2", "2%", 512, 2, 64, 25),
    Case("vgg19 256ch 8x8", "10%", 256, 8, 4, 2),
    Case("vgg19 256ch 8x8", "2%", 256, 8, 8, 8),
    Case("resnet32 128ch 8x8", "10%", 128, 8, 15, 4),
    Case("resnet32 128ch 8x8", "2%", 128, 8, 64, 64),
]
QUICK_CASES = [CASES[0], CASES[1], CASES[6]]
VARIANTS = ("dense", "reference", "structured")


def _to_tflite(layer, input_shape):
    """Converts `layer` at a fixed input shape, its variables frozen into constants."""
    inputs = keras.Input(input_shape[1:], batch_size=input_shape[0])
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as saved_model_dir:
        model.export(saved_model_dir, verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir).convert()


def _make_layer(variant, case):
    if variant == "dense":
        return keras.layers.Conv2D(case.channels, 3, padding="same")
    return SSCConv2D(
        case.channels, 3, g=case.g, p=case.p, padding="same", implementation=variant
    )


def _interleaved_median_ms(fns, x, repeats):
    """Median milliseconds of each function, timed in turns so that drift hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn(x)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _forward(layer):
    return tf.function(lambda x: layer(x))


def _forward_backward(layer):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def _tflite_interpreter(layer, case, x):
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = _to_tflite(layer, x.shape)
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    error = float(np.abs(output - layer(x).numpy()).max())
    return interpreter, {"tflite_bytes": len(flatbuffer), "tflite_max_abs_err": error}


def run_case(case, batch_size, repeats, tflite):
    """All timings of one case; the dense twin runs in this process next to SSC."""
    rng = np.random.default_rng(0)
    shape = (case.size, case.size, case.channels)
    x_one = rng.standard_normal((1,) + shape).astype("float32")
    x_big = tf.constant(rng.standard_normal((batch_size,) + shape).astype("float32"))
    record = dataclasses.asdict(case)
    layers = {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(0)
        layers[variant] = _make_layer(variant, case)
        layers[variant].build((None,) + shape)
        record[variant] = {"params": int(layers[variant].count_params())}
    ssc = layers["structured"]
    record["density"] = ssc.live_params / ssc.dense_params
    record["ideal_speedup"] = ssc.dense_macs(shape) / ssc.macs(shape)

    forwards = {v: _forward(layer) for v, layer in layers.items()}
    modes = {
        "forward_b1_ms": (forwards, tf.constant(x_one)),
        f"forward_b{batch_size}_ms": (forwards, x_big),
        f"train_b{batch_size}_ms": (
            {v: _forward_backward(layer) for v, layer in layers.items()}, x_big
        ),
    }
    for mode, (fns, x) in modes.items():
        for variant, ms in _interleaved_median_ms(fns, x, repeats).items():
            record[variant][mode] = ms
    if tflite:
        # The reference path is a test oracle: it has no place on a device.
        invokes = {}
        for variant in ("dense", "structured"):
            interpreter, info = _tflite_interpreter(layers[variant], case, x_one)
            record[variant].update(info)
            invokes[variant] = lambda _, it=interpreter: it.invoke()
        for variant, ms in _interleaved_median_ms(invokes, None, repeats * 5).items():
            record[variant]["tflite_b1_ms"] = ms
    return record


def _table(records, batch_size, tflite):
    modes = ["forward_b1_ms", f"forward_b{batch_size}_ms", f"train_b{batch_size}_ms"]
    if tflite:
        modes.append("tflite_b1_ms")
    lines = []
    header = f"{'layer':<20} {'ticket':>6} {'g':>3} {'p':>3} {'density':>8} {'ideal':>6}"
    for mode in modes:
        label = mode[:-3]
        header += f" | {label + ' dense':>18} {'ref':>13} {'structured':>15}"
    lines.append(header)
    lines.append("-" * len(header))
    for r in records:
        line = (
            f"{r['name']:<20} {r['ticket']:>6} {r['g']:>3} {r['p']:>3} "
            f"{100 * r['density']:>7.2f}% {r['ideal_speedup']:>5.1f}x"
        )
        for mode in modes:
            dense = r["dense"][mode]
            line += f" | {dense:>15.2f} ms"
            for variant, width in (("reference", 13), ("structured", 15)):
                if mode not in r[variant]:
                    line += f" {'-':>{width}}"
                    continue
                ms = r[variant][mode]
                line += f" {f'{ms:.2f} ({dense / ms:.1f}x)':>{width}}"
        lines.append(line)
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    cases = QUICK_CASES if FLAGS.quick else CASES
    repeats = max(3, FLAGS.repeats // 3) if FLAGS.quick else FLAGS.repeats
    records = []
    for i, case in enumerate(cases):
        print(f"[{i + 1}/{len(cases)}] {case.name} ({case.ticket} ticket)...", flush=True)
        records.append(run_case(case, FLAGS.batch_size, repeats, FLAGS.tflite))
    print()
    print(
        "Median milliseconds per call; (Nx) = speed-up over dense Conv2D measured in this run; "
        "ideal = dense MACs / SSC MACs."
    )
    print(_table(records, FLAGS.batch_size, FLAGS.tflite))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "batch_size": FLAGS.batch_size,
        "repeats": repeats,
        "records": records,
    }
    output_dir = os.path.dirname(FLAGS.output)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=output_dir or ".", suffix=".json", delete=False
    ) as f:
        json.dump(result, f, indent=2)
    os.replace(f.name, FLAGS.output)
    print(f"\nWrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
