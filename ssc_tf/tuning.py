"""Times SSC layer forms on this machine: the execution plan's measurements, and a model's own
layer shapes tuned where the model will run.

`measure_tf` and `measure_tflite` time, in turns in one process, the dense `keras.layers.Conv2D`
of a layer shape (the dense twin's layer, `execution_plan.DENSE_TWIN`) and an `SSCConv2D` of it
in every candidate form (`execution_plan.candidates`), all holding the same weights:

- in this process's TensorFlow runtime: `small_batch`, forward at batch 1; `large_batch`,
  forward at a large batch; `train`, forward and backward (input and weight gradients) at it;
- in LiteRT (`small_batch` only): the layer alone converted as `ssc_tf.convert_tflite`
  converts a model for that runtime (`quantization.MEASURED`), batch 1, one thread.

Each time is the minimum over the repeats, the call least disturbed by other work.
`tools/benchmark_layer.py` measures the package's cost table (`execution_costs.json`) with them.

The package's table was measured on two AMD EPYC VMs, and another CPU with the same vector
extensions can run the same kernels several times slower or faster (docs/execution_plan.md).
So where the package has no section measured on this machine's kind of CPU (`fits_host`),
`tune` measures the shapes of the model at hand here and keeps their times in a cost table of
the same format in the user's cache directory (`cache_path`), one file per CPU model and
library versions, which the plan then reads (its LiteRT sections are named for
`execution_plan.TUNED`). Shapes already in that file are not measured again, each shape is
written as soon as it is measured (an interrupted tuning keeps it), and a time budget stops
measuring new shapes: the plan takes the nearest measured shape's times for the rest.
"""

import dataclasses
import os
import re
import sys
import tempfile
import time

import ai_edge_litert
from ai_edge_litert import interpreter as litert_interpreter
import keras
import numpy as np
import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import execution_plan
from ssc_tf import layers as layers_lib
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import quantization as quantization_lib
from ssc_tf import timing

BASELINE = execution_plan.DENSE_TWIN
# What `tune` measures with: fewer calls than the package's table (7, and 35 in LiteRT), as it
# runs before a conversion; the minimum of 5 calls of a layer that runs in under a millisecond
# settles within a few percent on an idle machine.
TUNE_REPEATS = 5
# `tune` measures no new shape after this many seconds: ResNet-32's 7 distinct shapes take
# about 35 s in LiteRT int8 on 2 cores (an Intel Xeon, 2026-12-06), most of it converting.
TUNE_BUDGET_SECONDS = 90
# The large batch of the `large_batch` and `train` regimes, as the package's table measures it.
LARGE_BATCH_SIZE = 128


def layers(shape):
    """{name: built layer}: the dense `Conv2D` of `shape` under `BASELINE`, and an `SSCConv2D`
    of it under each candidate form's name, every SSC layer with the same weights; float32
    whatever Keras' dtype policy (the tables hold float32 times, as the plan reads them)."""
    kwargs = dict(strides=shape.strides, padding="same", dtype="float32")
    built = {BASELINE: keras.layers.Conv2D(shape.filters, shape.kernel_size, **kwargs)}
    for form in execution_plan.candidates(shape):
        built[form] = layers_lib.SSCConv2D(
            shape.filters, shape.kernel_size, g=shape.g, p=shape.p, implementation=form,
            **kwargs,
        )
    input_shape = (None,) + tuple(shape.input_size) + (shape.in_channels,)
    for layer in built.values():
        layer.build(input_shape)
    weights = built[execution_plan.DENSE].get_weights()
    for name, layer in built.items():
        if name != BASELINE:
            layer.set_weights(weights)
    return built


def _forward(layer):
    return tf.function(lambda x: layer(x))


def _train_step(layer):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def _min_ms(fns, x, repeats, sync=None, log=print):
    """Minimum milliseconds per call of each function, timed in turns, each call until `sync`
    returns (`timing.interleaved_ms`). A function that fails is reported and left out: the
    plan never picks a form that was not measured."""
    for name, fn in list(fns.items()):
        try:
            fn(x)
            fn(x)
            if sync is not None:
                sync()  # A GPU reports a kernel's failure only when it has run.
        except tf.errors.OpError as error:
            log(f"  {name} failed: {str(error).splitlines()[0]}")
            del fns[name]
    times = timing.interleaved_ms(fns, repeats, x, warmup=0, statistic=min, sync=sync)
    return {name: round(ms, 4) for name, ms in times.items()}


def measure_tf(shape, runtime, batch_size=LARGE_BATCH_SIZE, repeats=7,
               regimes=execution_plan.REGIMES, log=print):
    """{regime: {form: ms}} of `shape` in this process's TensorFlow runtime `runtime`, for each
    of `regimes`: only the forms that run there (`execution_plan.runs_in`). On a GPU, whose
    calls return once their kernels are queued, each call is timed until the GPU has run
    them."""
    sync = tf.test.experimental.sync_devices if runtime == execution_plan.GPU else None
    built = layers(shape)
    rng = np.random.default_rng(0)
    size = tuple(shape.input_size) + (shape.in_channels,)
    batches = {execution_plan.SMALL_BATCH: 1, execution_plan.LARGE_BATCH: batch_size,
               execution_plan.TRAIN: batch_size}
    inputs = {}
    result = {}
    for regime in regimes:
        batch = batches[regime]
        if batch not in inputs:
            inputs[batch] = tf.constant(rng.standard_normal((batch,) + size), tf.float32)
        make = _train_step if regime == execution_plan.TRAIN else _forward
        fns = {name: make(layer) for name, layer in built.items()
               if execution_plan.runs_in(shape, name, runtime, regime)}
        result[regime] = _min_ms(fns, inputs[batch], repeats, sync, log)
    return result


def tflite_file(layer, shape, runtime):
    """The flatbuffer of `layer` alone at batch 1, traced for the TFLite runtime `runtime` and
    converted as `ssc_tf.convert_tflite` converts a model for it (`quantization.MEASURED`),
    int8 calibrated on random inputs."""
    size = tuple(shape.input_size) + (shape.in_channels,)
    inputs = keras.Input(size, batch_size=1)
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1,) + size).astype(np.float32) for _ in range(8)]
    with execution_plan.target_runtime(runtime):
        model = keras.Model(inputs, layer(inputs))
        with tempfile.TemporaryDirectory() as saved_model_dir:
            model.export(saved_model_dir, verbose=False)
            return quantization_lib.converter(
                saved_model_dir, quantization_lib.MEASURED[runtime],
                calibration=calibration).convert()


def tflite_interpreter(layer, shape, runtime):
    """A one-thread LiteRT interpreter of `tflite_file`, its input set to ones."""
    interpreter = litert_interpreter.Interpreter(
        model_content=tflite_file(layer, shape, runtime), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
    return interpreter


def measure_tflite(shape, runtime, repeats=7, log=print):
    """{small_batch: {form: ms}} of `shape` converted to TFLite for `runtime`, each form
    invoked `repeats * 5` times (a layer runs in well under a millisecond there)."""
    interpreters = {}
    for name, layer in layers(shape).items():
        try:
            interpreters[name] = tflite_interpreter(layer, shape, runtime)
        except RuntimeError as error:
            # LiteRT refuses some converted graphs (an int8 CONV_2D whose filter the converter
            # did not fold into a constant gets a nonzero zero point): that form is not run.
            log(f"  {shape.key} {name}: {str(error).splitlines()[0]}")
    fns = {name: (lambda _, it=it: it.invoke()) for name, it in interpreters.items()}
    return {execution_plan.SMALL_BATCH: _min_ms(fns, None, repeats * 5, log=log)}


def host_litert_cpu():
    """This machine's `execution_plan.LITERT_CPUS` entry: the packaged section measured on a
    CPU of its vendor and int8 instruction set (`execution_plan.litert_cpu`); None where the
    package has none (an Intel or ARM CPU, another OS)."""
    cpu = timing.cpu()
    return None if cpu is None else execution_plan.litert_cpu(cpu.vendor, cpu.features)


def host_kind():
    """This machine's kind in full (`execution_plan.cpu_kind`), or "unknown" off Linux."""
    cpu = timing.cpu()
    return "unknown" if cpu is None else execution_plan.cpu_kind(
        cpu.vendor, cpu.family, cpu.features)


def fits_host(runtime, path=execution_plan.COSTS_FILE):
    """Whether the cost table at `path` has times of `runtime` measured on this machine's kind
    of CPU: for LiteRT, a section of its vendor and int8 instruction set (`host_litert_cpu`;
    the package's table only); for TensorFlow, a section whose measurement record names the
    same vendor and int8 instruction set. A GPU's section fits any GPU."""
    if runtime in execution_plan.TFLITE_RUNTIMES:
        return host_litert_cpu() is not None
    record = execution_plan.load_costs(path).get("measured_on", {}).get(runtime)
    if record is None:
        return False
    if runtime == execution_plan.GPU:
        return True
    cpu = timing.cpu()
    return cpu is not None and (record.get("cpu_vendor"), execution_plan.int8_isa(
        record.get("cpu_features") or ())) == (cpu.vendor, execution_plan.int8_isa(cpu.features))


def cache_path(cache_dir=None):
    """The cost table `tune` keeps this machine's times in: `<cache_dir>/ssc_tf/<CPU kind>-<CPU
    model>-tf<version>-litert<version>.json`, where `cache_dir` defaults to `$XDG_CACHE_HOME`,
    else `~/.cache`. Another CPU model, TensorFlow or LiteRT gets another file: their kernels,
    and so the times, differ."""
    base = cache_dir or os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    cpu = timing.cpu()
    model = re.sub(r"[^a-z0-9]+", "_", (cpu.model_name if cpu else "").lower()).strip("_")
    name = (f"{host_kind()}-{model or 'unnamed'}-tf{tf.__version__}"
            f"-litert{ai_edge_litert.__version__}.json")
    return os.path.join(base, "ssc_tf", name)


def planned_layers(model):
    """(names, `execution_plan.LayerShape`s) of the SSC layers of `model` that the plan decides:
    `implementation="auto"`, a square window and stride, a known input size."""
    names, shapes = [], []
    for layer in model.layers:
        if (not isinstance(layer, layers_lib.SSCConv2D)
                or layer.implementation != execution_plan.AUTO):
            continue
        shape = layer.plan_shape(layer.input.shape)
        if shape is not None:
            names.append(layer.name)
            shapes.append(shape)
    return names, shapes


def for_host(model, runtime, regimes=None):
    """Tunes `model`'s layer shapes in the CPU runtime `runtime` on this machine (`tune`, into
    `cache_path()`) where the package has no times of it measured on this kind of CPU
    (`fits_host`) and the model has layers to plan: the `Tuning`, else None (plan with the
    package's times). A GPU is not tuned here: `tools/gpu_check.sh` measures it, and until
    then it runs `execution_plan.UNMEASURED_FORM`."""
    _, shapes = planned_layers(model)
    if not shapes or runtime == execution_plan.GPU or fits_host(runtime):
        return None
    return tune(shapes, runtime, regimes)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What `tune` did.

    Attributes:
        path: the cost table holding the times (`cache_path` by default).
        section: its section of the runtime (`execution_plan.section(runtime, TUNED)`).
        measured: keys of the shapes measured now.
        cached: keys of the shapes whose times the table held already.
        left: keys of the shapes the budget left unmeasured, or in which no form ran (planned
            with the nearest measured shape's times).
        seconds: how long the measuring took.
    """

    path: str
    section: str
    measured: list
    cached: list
    left: list
    seconds: float


def tune(shapes, runtime, regimes=None, *, path=None, budget_seconds=TUNE_BUDGET_SECONDS,
         repeats=TUNE_REPEATS, measure=None, log=None):
    """Measures `shapes` in `runtime` on this machine, into the cost table at `path`.

    Args:
        shapes: `execution_plan.LayerShape`s (repeats are measured once).
        runtime: one of `execution_plan.TFLITE_RUNTIMES`, or this process's TensorFlow runtime
            (`ssc_tf.layers.current_runtime`): times of another cannot be taken here.
        regimes: the `execution_plan.REGIMES` to measure; TFLite has `small_batch` only.
            Default: every regime of the runtime.
        path: the cost table to read and extend; default `cache_path()`.
        budget_seconds: no new shape is measured after this many seconds; at least one is.
        repeats: timed calls per form (`measure_tf`, `measure_tflite`).
        measure: a callable `(shape, regimes) -> {regime: {form: ms}}`; default `measure_tf`
            or `measure_tflite` for `runtime`. Tests pass a fake.
        log: a callable taking one line of progress; default: print to stderr.

    Returns:
        A `Tuning`; the plan reads its times with `path=tuning.path` and, in LiteRT,
        `litert_cpu=execution_plan.TUNED`.
    """
    tflite = runtime in execution_plan.TFLITE_RUNTIMES
    if not tflite and runtime != layers_lib.current_runtime():
        raise arguments.invalid(
            "runtime", f"a TFLite runtime or this process's, {layers_lib.current_runtime()!r}",
            repr(runtime))
    regimes = tuple(regimes or ((execution_plan.SMALL_BATCH,) if tflite
                                else execution_plan.REGIMES))
    path = path or cache_path()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if measure is None:
        def measure(shape, regimes):
            if tflite:
                return measure_tflite(shape, runtime, repeats, log)
            return measure_tf(shape, runtime, repeats=repeats, regimes=regimes, log=log)
    section = execution_plan.section(runtime, execution_plan.TUNED)
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise ValueError(
            f"The tuning cache {directory!r} cannot be written ({error.strerror}): set "
            "$XDG_CACHE_HOME to a writable directory, or plan without tuning "
            f"({arguments.spelled('tune')}=False).") from error
    table = _read(path)
    unique = list({shape.key: shape for shape in shapes}.values())

    def known(shape):
        return all(shape.key in table.get(section, {}).get(regime, {}) for regime in regimes)

    cached = [shape.key for shape in unique if known(shape)]
    missing = [shape for shape in unique if not known(shape)]
    measured = []
    start = time.perf_counter()
    for i, shape in enumerate(missing):
        elapsed = time.perf_counter() - start
        if measured and elapsed > budget_seconds:
            log(f"Tuning {section}: the {budget_seconds:g} s budget is spent; "
                f"{len(missing) - i} shapes take the nearest measured shape's times")
            break
        log(f"Tuning {section} on this CPU: [{i + 1}/{len(missing)}] {shape.key} "
            f"({elapsed:.0f} s)")
        times = {regime: forms for regime, forms in measure(shape, regimes).items() if forms}
        if set(times) != set(regimes):
            log(f"  {shape.key}: no form ran in {sorted(set(regimes) - set(times))}; not kept")
            continue
        # Read again: another process tuning into the same cache may have added shapes.
        model_dir_lib.write_json(
            path, _with_times(_read(path), section, shape, times, runtime, repeats))
        measured.append(shape.key)
    left = [shape.key for shape in missing if shape.key not in measured]
    return Tuning(path, section, measured, cached, left, time.perf_counter() - start)


def _read(path):
    """The cost table at `path`, or an empty one where there is none yet."""
    return execution_plan.load_costs(path) if os.path.exists(path) else {}


def _with_times(table, section, shape, times, runtime, repeats):
    """`table` with `times` ({regime: {form: ms}}) of `shape` in `section`, the shape's record
    and the section's measurement record (this machine and software, now)."""
    table = {"shapes": {}, "measured_on": {}, **table}
    regimes = {regime: dict(forms) for regime, forms in table.get(section, {}).items()}
    for regime, forms in times.items():
        regimes.setdefault(regime, {})[shape.key] = forms
    return {
        **table,
        section: regimes,
        "shapes": {**table["shapes"], shape.key: shape.as_dict()},
        "measured_on": {**table["measured_on"], section: {
            **timing.environment(), "runtime": runtime, "section": section,
            "repeats": repeats, "tuned": True}},
    }
