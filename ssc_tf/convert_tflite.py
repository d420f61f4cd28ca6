"""Converts a trained run to TensorFlow Lite: `python -m ssc_tf.convert_tflite --model_dir=DIR
--output=FILE.tflite [--quantization=none|float16|dynamic|int8] [--integer_io]`.

Restores the newest checkpoint of DIR (a `--model_dir` of `ssc_tf.train`), writes the
one-output graph of `ssc_tf.serving.ServingModel.save_for_tflite` (float32 pixels in 0..255,
`(batch, H, W, 3)` -> float32 probabilities `(batch, num_classes)`, normalization inside) and
converts it with every variable frozen into a constant. The SSC layers hold only their live
weights, so the float file is about 4 bytes per live weight.

Only TFLite's builtin ops are allowed: the converter fails rather than emit Flex (TensorFlow)
ops, and a file with a custom or Flex op is refused, so the file runs on any LiteRT
interpreter without extra op libraries.

`--quantization`:

- `none`: float32 weights and compute.
- `float16`: float16 weights, dequantized to float32 at load; float32 compute.
- `dynamic`: int8 weights (dynamic range), float32 inputs and outputs; activations are
  quantized on the fly where a kernel supports it.
- `int8`: int8 weights and activations, calibrated on `--num_calibration_images` images of the
  run's training pipeline (seeded, augmented as in training; raw pixels). The inputs and
  outputs stay float32 (a QUANTIZE and a DEQUANTIZE op at the ends) unless `--integer_io`,
  which makes them uint8: the input then takes the raw pixels themselves (scale 1.0, zero
  point 0: the calibrated range 0..255 is exactly uint8's) and the output is the probability
  times 256 (scale 1/256, zero point 0).

Each SSC layer runs the form the execution plan measured fastest in LiteRT for the model as a
whole, within the storage budget `--max_stored`, on the CPU `--litert_cpu` names
(docs/execution_plan.md): by default this machine (`host`), with the package's times of its
kind of CPU, or where the package has none, with times of the model's own layer shapes measured
here first (`--tune`, `ssc_tf.tuning`). A file planned for this machine is then timed against
its dense twin here, and SSC layers move to the dense form until it is not slower (`--guard`,
`plan_and_convert`).

The file is written next to `--output` first and renamed into place, so a failed conversion
leaves no file and never a partial one; an existing `--output` is replaced only with
`--overwrite`.
"""

import dataclasses
import logging as std_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
from ai_edge_litert import interpreter as litert_interpreter
from ai_edge_litert import schema_py_generated as tflite_schema
import numpy as np
import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import data
from ssc_tf import execution_plan
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import quantization as quantization_lib
from ssc_tf import serving
from ssc_tf import timing
from ssc_tf import tuning
from ssc_tf.models import masked

# `litert_cpu`'s value for the machine that converts: planned with its kind's times and guarded.
HOST = "host"
# What `litert_cpu` takes: `HOST`, a LiteRT CPU of the cost table, or an earlier name of one.
LITERT_CPU_CHOICES = ((HOST,) + execution_plan.LITERT_CPUS
                      + tuple(execution_plan.LITERT_CPU_ALIASES))
# Timed invokes of each file the guard measures (the median counts): at ResNet-32's 1-7 ms a
# file, a second or two per measurement.
GUARD_REPEATS = 50
SUFFIX = ".tflite"
# How `op_names` spells a custom op: the prefix, then its custom code (Flex ops: "Flex...").
CUSTOM_PREFIX = "CUSTOM:"

_BUILTIN_NAMES = {
    code: name
    for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}


def convert(model_dir, output, *, quantization="none", integer_io=False,
            num_calibration_images=200, data_dir=None, overwrite=False,
            max_stored=execution_plan.MAX_STORED_AUTO, litert_cpu=HOST, guard=True,
            tune=True, costs=None):
    """Converts the newest checkpoint of `model_dir` to a TFLite file at `output`.

    Every argument is checked, and for int8 the calibration images are read, before the
    conversion starts; on any error nothing is written.

    Args:
        model_dir: str, a directory written by `ssc_tf.train`.
        output: str, the file to write; must end in ".tflite". Its directory is created.
        quantization: str, one of `quantization.QUANTIZATIONS` (see the module docstring).
            Defaults to "none".
        integer_io: bool, uint8 inputs and outputs instead of float32; int8 only. Defaults to
            False.
        num_calibration_images: int >= 1, how many training images calibrate the int8
            activation ranges (fewer if the training split is smaller); int8 only. Defaults
            to 200.
        data_dir: str or None, where the dataset lives for int8 calibration; default: the
            data_dir the run trained with. Unused by the other quantizations.
        overwrite: bool, replace an existing `output`. Defaults to False.
        max_stored: "auto" (the default), or a number >= 1.25: the most weights the file may
            store, as a multiple of the model's live weights (`execution_plan.plan_model`).
            A larger one trades size for speed, and `float("inf")` runs each SSC layer in its
            fastest measured form. "auto" stores 1.25x, or more where the plan's measurements
            say that a file so small would run slower than the dense twin's.
        litert_cpu: the CPU that will run the file, whose measured LiteRT times plan the SSC
            layers' forms: `HOST` (the default), this machine; or one of
            `execution_plan.LITERT_CPUS` (or an alias, `execution_plan.LITERT_CPU_ALIASES`)
            (see `plan_and_convert`).
        guard: bool, for a file planned for this machine, time it against its dense twin
            and move SSC layers to the dense form until it is not slower (see
            `plan_and_convert`). Defaults to True.
        tune: bool, where `litert_cpu` is `HOST` and the package has no LiteRT times of this
            machine's kind of CPU, measure the model's layer shapes here before planning
            (`plan_and_convert`; cached per CPU and library versions). Defaults to True.
        costs: None, or a cost table measured on the CPU that will run the file (see
            `plan_and_convert`): planned with its times, neither tuned nor guarded here.

    Returns:
        A dict of facts about the written file: `path`, `bytes`, `quantization`,
        `integer_io`, `calibration_images` (int8; else 0), `max_stored`, `litert_cpu` (the
        `execution_plan.LITERT_CPUS` entry whose times planned it, or `execution_plan.TUNED`),
        `tuning` (how this machine's times were measured, `Conversion.tuning`), `costs`,
        `host_cpu` (this
        machine's kind, `execution_plan.cpu_kind`, where the file was planned for it, else
        None), `guard` (what the guard measured and moved, `Conversion.guard`; None where it
        did not run), `epoch` (epochs the weights were trained), `input_dtype`,
        `input_shape` (None for the batch), `input_quantization` (`(scale, zero_point)` of an
        integer input, else None), and the same three for the output, and `ops`
        (`op_names` of the file).

    Raises:
        ValueError: an argument is not allowed, `output` is a directory, lies under a
            file or exists without `overwrite`, int8 cannot read its calibration images, or
            the file holds a custom or Flex op. A bad argument's message names it as an
            argument (`output`), or as a flag (--output) inside `arguments.as_flags()`, as
            the command line calls it.
        FileNotFoundError: `model_dir` holds no run or no checkpoint.

    The converter's own `ConverterError` (not public API) propagates where the graph needs
    an op that TFLite's builtins lack; none of ssc_tf's models does.
    """
    _check_arguments(output, quantization, integer_io, num_calibration_images, overwrite,
                     max_stored, litert_cpu, guard, tune, costs)
    model, config, saved_data_dir, epoch = model_dir_lib.load_model(model_dir)
    calibration = []
    if quantization == "int8":
        calibration = _calibration_images(
            config, data_dir or saved_data_dir, num_calibration_images)
    # A pruned run's mask is baked into plain kernels: the file holds no mask.
    conversion = plan_and_convert(masked.bake(model), config.dataset, quantization, integer_io,
                                  calibration, max_stored, litert_cpu, guard, tune, costs)
    flatbuffer = conversion.flatbuffer
    custom = _custom_ops(flatbuffer)
    if custom:
        raise ValueError(
            f"The converted model (--quantization={quantization}) holds ops outside TFLite's "
            f"builtins: {custom}; nothing was written to --output={output!r}."
        )
    facts = _io_facts(flatbuffer)
    parent = os.path.dirname(output)
    if parent:
        tf.io.gfile.makedirs(parent)
    model_dir_lib.write_atomically(output, flatbuffer, overwrite=overwrite)
    return {
        "path": output,
        "bytes": len(flatbuffer),
        "quantization": quantization,
        "integer_io": integer_io,
        "calibration_images": len(calibration),
        "max_stored": max_stored,
        "litert_cpu": conversion.litert_cpu,
        "host_cpu": conversion.host_cpu,
        "tuning": conversion.tuning,
        "costs": costs,
        "guard": conversion.guard,
        "epoch": epoch,
        **facts,
        "ops": op_names(flatbuffer),
    }


def op_names(tflite_bytes):
    """The distinct ops that the operators of a TFLite flatbuffer run.

    Args:
        tflite_bytes: bytes, a TFLite model (`TFLiteConverter.convert()`, or a .tflite file's
            contents).

    Returns:
        A sorted list of str: builtin op names as in TFLite's schema ("CONV_2D",
        "FULLY_CONNECTED", ...); a custom op as `CUSTOM_PREFIX` + its custom code
        ("CUSTOM:FlexConv2D" for a Flex op).

    Example:

    >>> with open("digits.tflite", "rb") as f:  # --quantization=none of the quickstart run
    ...     op_names(f.read())
    ['ADD', 'BATCH_MATMUL', 'CONCATENATION', 'CONV_2D', 'FULLY_CONNECTED', 'MEAN', 'MUL',
     'RESHAPE', 'SOFTMAX', 'STRIDED_SLICE', 'SUB', 'TRANSPOSE']
    """
    model = tflite_schema.Model.GetRootAs(tflite_bytes, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in `builtin_code`; `deprecated_builtin_code` holds at most 127.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite_schema.BuiltinOperator.CUSTOM:
            codes.append(CUSTOM_PREFIX + (code.CustomCode() or b"").decode())
        else:
            codes.append(_BUILTIN_NAMES.get(builtin, f"UNKNOWN_BUILTIN_{builtin}"))
    names = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            names.add(codes[subgraph.Operators(o).OpcodeIndex()])
    return sorted(names)


def _custom_ops(tflite_bytes):
    """The `op_names` of a TFLite flatbuffer that are not builtin: custom and Flex ops."""
    return [name for name in op_names(tflite_bytes) if name.startswith(CUSTOM_PREFIX)]


def _check_arguments(output, quantization, integer_io, num_calibration_images, overwrite,
                     max_stored, litert_cpu, guard, tune, costs):
    spelled = arguments.spelled
    arguments.check_choice("quantization", quantization, quantization_lib.QUANTIZATIONS)
    execution_plan.check_max_stored(max_stored)
    _check_litert_cpu(litert_cpu)
    arguments.check_bool("guard", guard)
    arguments.check_bool("tune", tune)
    if integer_io and quantization != "int8":
        raise ValueError(
            f"{arguments.kind().capitalize()} {spelled('integer_io')} needs "
            f"{spelled('quantization')}=int8 (only a fully integer model can take and return "
            f"uint8). Received: quantization={quantization!r}, integer_io=True"
        )
    arguments.check_int("num_calibration_images", num_calibration_images, minimum=1)
    if not isinstance(output, str) or not output.endswith(SUFFIX):
        raise arguments.invalid("output", f"a file name ending in {SUFFIX!r}", repr(output))
    invalid_output = f"Invalid value for {arguments.kind()} {spelled('output')}"
    if tf.io.gfile.isdir(output):
        raise ValueError(
            f"{invalid_output}: {output!r} is a directory; pass the {SUFFIX} file to write, "
            f"e.g. {os.path.join(output, 'model' + SUFFIX)!r}."
        )
    if not overwrite and tf.io.gfile.exists(output):
        raise ValueError(
            f"{spelled('output')}={output!r} exists; pass {spelled('overwrite')} to replace "
            f"it, or choose another {spelled('output')}."
        )
    # The nearest existing path above `output` must be a directory; those below it are made.
    parent = os.path.dirname(output)
    while parent and not tf.io.gfile.exists(parent):
        parent = "" if os.path.dirname(parent) == parent else os.path.dirname(parent)
    if parent and not tf.io.gfile.isdir(parent):
        raise ValueError(
            f"{invalid_output}: {parent!r} is a file, so {output!r} cannot be created under "
            f"it. Pass an {spelled('output')} whose directories are directories or do not "
            "exist yet."
        )


def _calibration_images(config, data_dir, count):
    """Up to `count` training images, raw pixels `(1, H, W, 3)` each, read before converting.

    Raises:
        ValueError: the dataset cannot be read (no data_dir, missing files); the message
            says that int8 needs them and names --data_dir.
    """
    why = "int8 quantization calibrates on images of the run's training data"
    if data_dir is None and data.needs_data_dir(config.dataset):
        raise ValueError(
            f"{why}, and dataset {config.dataset!r} is read from a --data_dir, which neither "
            "the run nor this conversion gives: pass --data_dir, or use "
            "--quantization=dynamic (no calibration images)."
        )
    try:
        images = data.load(
            config.dataset, "train", batch_size=1, data_dir=data_dir,
            validation_split=config.validation_split, train_examples=config.train_examples,
            seed=config.seed, normalized=False)
        return [pixels.numpy() for pixels, _ in images.take(count)]
    except (ValueError, FileNotFoundError, tf.errors.OpError) as e:
        raise ValueError(
            f"{why}, which could not be read (dataset {config.dataset!r}, "
            f"--data_dir={data_dir!r}): {e} Pass a --data_dir that holds the dataset."
        ) from e


def to_tflite(model, dataset, quantization, integer_io=False, calibration=(),
              max_stored=execution_plan.MAX_STORED_AUTO, litert_cpu=HOST, guard=True,
              tune=True, costs=None):
    """The TFLite flatbuffer of `model`'s `ServingModel.save_for_tflite` graph: the file of
    `plan_and_convert`, whose arguments these are."""
    return plan_and_convert(model, dataset, quantization, integer_io, calibration, max_stored,
                            litert_cpu, guard, tune, costs).flatbuffer


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A TFLite file and how its SSC layers' forms were chosen (`plan_and_convert`).

    Attributes:
        flatbuffer: bytes, the file.
        litert_cpu: the `execution_plan.LITERT_CPUS` entry whose times planned the forms, or
            `execution_plan.TUNED` where they were measured here (`tuning`).
        host_cpu: this machine's kind (`execution_plan.cpu_kind`) where the file was planned
            for it (`litert_cpu=HOST`, or the `LITERT_CPUS` entry of this machine's kind),
            else None.
        forms: {layer name: `execution_plan.Form`} of the SSC layers the file runs as
            planned (and, where the guard moved them, in the dense form).
        guard: None where the guard did not run; else what it measured, with LiteRT on one
            thread at batch 1 on this machine: `ms` and `dense_ms` (the file's and its dense
            twin's median milliseconds; both the twin's where every layer was moved),
            `speedup` (dense_ms / ms), `planned_ms` and `planned_dense_ms` (the planned
            file's, before any move), `moved` (names of the layers moved to the dense form,
            in the order moved), `movable` (how many layers it could move: those not planned
            dense) and `files_measured`.
        tuning: None where the plan read the package's times; else how this machine's were
            measured (`ssc_tf.tuning.Tuning` as a dict: `path`, `measured`, `cached`, `left`,
            `seconds`...).
    """

    flatbuffer: bytes
    litert_cpu: str
    host_cpu: str | None
    forms: dict
    guard: dict | None
    tuning: dict | None = None


def plan_and_convert(model, dataset, quantization, integer_io=False, calibration=(),
                     max_stored=execution_plan.MAX_STORED_AUTO, litert_cpu=HOST, guard=True,
                     tune=True, costs=None, timer=None):
    """Plans `model`'s SSC layers for LiteRT, converts it, and for this machine guards the file
    against its dense twin.

    The SSC layers are traced for LiteRT (`execution_plan.target_runtime`) in the forms the
    execution plan measured fastest there for the model as a whole (`planned_forms`), in the
    table of the quantization's kernels (`quantization.PLANNED_RUNTIME`). `ServingModel` folds
    the batch norm after each SSC layer into it, which the converter does by itself only for a
    Conv2D.

    The guard: the table's times are a prediction from another machine, and two CPUs with
    the same vector extensions run XNNPACK's int8 kernels very differently. So a file planned
    for this machine is timed against its dense twin (the same model, weights, quantization
    and calibration with every planned SSC layer in the `execution_plan.DENSE` form, which
    computes the same function), and where it is slower, layers move to the dense form, those
    the table predicts cost the most over dense first (`execution_plan.guard_order`), until
    it is not (`execution_plan.guard`): a binary search over how many to move, about log2 of
    the layers' count conversions more. The dense twin is the floor.

    Args:
        model: a Keras model of `dataset`'s inputs.
        dataset: str, one of `ssc_tf.config.DATASETS`.
        quantization: str, one of `quantization.QUANTIZATIONS`.
        integer_io: bool, uint8 inputs and outputs (int8 only).
        calibration: float32 pixel batches that calibrate int8's activation ranges.
        max_stored: the file's storage budget: a multiple of the live weights, or
            `execution_plan.MAX_STORED_AUTO` (the default; `planned_forms`).
        litert_cpu: the CPU that will run the file. `HOST` (the default): this machine,
            planned with its kind's times (`tuning.host_litert_cpu`), or where the package
            has none with times of the model's layer shapes measured here (`tune`), and
            guarded. Or an
            `execution_plan.LITERT_CPUS` entry (or alias): planned with its times, and
            guarded only if it is this machine's kind (a file for another CPU cannot be
            timed here).
        guard: bool, run the guard where the file is planned for this machine. Defaults to
            True.
        tune: bool, for `HOST` on a CPU the package has no LiteRT times of: measure the
            model's layer shapes here first (`tuning.tune`: cached in the user's cache
            directory, so a second conversion of the same shapes measures nothing). False
            plans with `execution_plan.DEFAULT_LITERT_CPU`'s times, which the guard then
            checks. Defaults to True.
        costs: None (the default), or the path of a cost table measured on the CPU that will
            run the file, with a section of the quantization's runtime on
            `execution_plan.TUNED` (`"tflite_int8@tuned"`): a phone's
            (`ssc_tf.device_bundle`), or the tuning cache of another machine
            (`tuning.cache_path` there). The file is planned with its times and neither
            tuned nor guarded here, where it will not run; `litert_cpu` must stay `HOST`.
        timer: what the guard times files with: a callable that takes {name: flatbuffer} and
            returns {name: milliseconds}; default `litert_ms`.

    Returns:
        A `Conversion`.
    """
    _check_litert_cpu(litert_cpu)
    runtime = quantization_lib.PLANNED_RUNTIME[quantization]
    _check_costs(costs, runtime, litert_cpu)
    host_cpu = tuning.host_litert_cpu()
    names, shapes = tuning.planned_layers(model)
    table, tuned = costs or execution_plan.COSTS_FILE, None
    if costs:
        litert_cpu, for_host = execution_plan.DEFAULT_LITERT_CPU, False
    elif litert_cpu == HOST:
        litert_cpu = host_cpu or execution_plan.DEFAULT_LITERT_CPU
        for_host = True
        tuned = tuning.for_host(model, runtime) if tune else None
        table = tuned.path if tuned else table
    else:
        litert_cpu = execution_plan.check_litert_cpu(litert_cpu)
        for_host = litert_cpu == host_cpu
    # The times the plan reads: the package's of `litert_cpu`, or this machine's or the
    # target's measured ones.
    plan_cpu = execution_plan.TUNED if tuned or costs else litert_cpu
    planned = execution_plan.plan_model(shapes, runtime, table, max_stored, plan_cpu)
    files = {}

    def file(forms):
        """The flatbuffer of the model with its planned layers in `forms`, converted once."""
        key = tuple(form.name for form in forms)
        if key not in files:
            with tempfile.TemporaryDirectory() as saved_model_dir:
                with execution_plan.target_runtime(runtime, dict(zip(names, forms)),
                                                   litert_cpu):
                    serving.ServingModel(model, dataset).save_for_tflite(saved_model_dir)
                files[key] = quantization_lib.converter(
                    saved_model_dir, quantization, integer_io, calibration).convert()
        return files[key]

    def conversion(forms, guarded=None):
        return Conversion(file(forms), plan_cpu, tuning.host_kind() if for_host else None,
                          dict(zip(names, forms)), guarded,
                          dataclasses.asdict(tuned) if tuned else None)

    order = execution_plan.guard_order(shapes, planned, runtime, table, plan_cpu)
    # A file of ops outside the builtins does not run in a plain interpreter (`convert`
    # refuses it).
    if not (guard and for_host and order) or _custom_ops(file(planned)):
        return conversion(planned)
    dense_twin = file([execution_plan.parse(execution_plan.DENSE)] * len(names))
    time_files = timer or litert_ms

    def measure(forms):
        ms = time_files({"ssc": file(forms), "dense": dense_twin})
        return ms["ssc"], ms["dense"]

    result = execution_plan.guard(planned, order, measure)
    return conversion(result.forms, result.facts(names))


def planned_forms(model, runtime, max_stored=execution_plan.MAX_STORED_AUTO,
                  litert_cpu=execution_plan.DEFAULT_LITERT_CPU):
    """{layer name: `Form`} for the SSC layers of `model` that the plan decides
    (`implementation="auto"`, a square window and stride, a known input size), planned for a
    TFLite file of `runtime` on `litert_cpu` as one model within the storage budget
    `max_stored` (`execution_plan.plan_model`)."""
    names, shapes = tuning.planned_layers(model)
    forms = execution_plan.plan_model(shapes, runtime, max_stored=max_stored,
                                      litert_cpu=litert_cpu)
    return dict(zip(names, forms))


def interpreter(flatbuffer, pixels):
    """A one-thread LiteRT interpreter of `flatbuffer`, its one input resized to and set to
    `pixels` (a numpy array of the input's dtype): ready to `invoke`."""
    runner = litert_interpreter.Interpreter(model_content=flatbuffer, num_threads=1)
    (inputs,) = runner.get_input_details()
    runner.resize_tensor_input(inputs["index"], pixels.shape)
    runner.allocate_tensors()
    runner.set_tensor(inputs["index"], pixels)
    return runner


def litert_ms(flatbuffers, repeats=GUARD_REPEATS):
    """Median milliseconds per invoke of each file of {name: flatbuffer}, in LiteRT on one
    thread at batch 1, the files invoked in turns (`timing.interleaved_ms`) on the same
    random pixels: the guard's timer."""
    first = litert_interpreter.Interpreter(model_content=next(iter(flatbuffers.values())))
    (inputs,) = first.get_input_details()
    pixels = np.random.default_rng(0).uniform(0, 255, [1, *inputs["shape"][1:]]).astype(
        inputs["dtype"])
    invokes = {name: interpreter(flatbuffer, pixels).invoke
               for name, flatbuffer in flatbuffers.items()}
    return timing.interleaved_ms(invokes, repeats)


def _io_facts(flatbuffer):
    """Dtype, shape and quantization of the model's one input and one output."""
    interpreter = litert_interpreter.Interpreter(model_content=flatbuffer)
    facts = {}
    for prefix, (details,) in (("input", interpreter.get_input_details()),
                               ("output", interpreter.get_output_details())):
        scale, zero_point = details["quantization"]
        facts[f"{prefix}_dtype"] = np.dtype(details["dtype"]).name
        facts[f"{prefix}_shape"] = [
            None if size < 0 else int(size) for size in details["shape_signature"]]
        facts[f"{prefix}_quantization"] = (
            (float(scale), int(zero_point)) if scale else None)
    return facts


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    # TensorFlow's INFO lines (saving the graph, freezing it) would bury the summary.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_dir:
        raise app.UsageError("Flag --model_dir is required: the directory of a training run.")
    if not FLAGS.output:
        raise app.UsageError(f"Flag --output is required: the {SUFFIX} file to write.")
    try:
        # Messages name flags (--output), not the library's arguments (`output`).
        with arguments.as_flags():
            result = convert(
                FLAGS.model_dir, FLAGS.output, quantization=FLAGS.quantization,
                integer_io=FLAGS.integer_io,
                num_calibration_images=FLAGS.num_calibration_images, data_dir=FLAGS.data_dir,
                overwrite=FLAGS.overwrite, max_stored=FLAGS.max_stored,
                litert_cpu=FLAGS.litert_cpu, guard=FLAGS.guard, tune=FLAGS.tune,
                costs=FLAGS.costs)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"Error: {e}")
    io = "uint8 in and out" if result["integer_io"] else "float32 in and out"
    print(f"Wrote {result['path']}: {result['bytes'] / 1e6:.3f} MB, quantization "
          f"{result['quantization']} ({io}), epoch {result['epoch']}")
    print(f"  input  {result['input_dtype']} {result['input_shape']}"
          f"{_format_quantization(result['input_quantization'])}")
    print(f"  output {result['output_dtype']} {result['output_shape']}"
          f"{_format_quantization(result['output_quantization'])}")
    print(f"  ops: {', '.join(result['ops'])}")
    print(_format_plan(result, FLAGS.tune))
    print(_format_guard(result, FLAGS.guard))


def _format_quantization(quantization):
    if quantization is None:
        return ""
    scale, zero_point = quantization
    return f", scale {scale:g}, zero point {zero_point}"


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_string(
        "model_dir", None, "Directory of a training run (ssc_tf.train --model_dir).")
    flags.DEFINE_string("output", None, f"The TFLite file to write; must end in {SUFFIX}.")
    flags.DEFINE_enum(
        "quantization", "none", list(quantization_lib.QUANTIZATIONS),
        "none (float32), float16 (float16 weights), dynamic (int8 weights, float compute) or "
        "int8 (int8 weights and activations, calibrated on training images).")
    flags.DEFINE_bool(
        "integer_io", False,
        "With --quantization=int8: uint8 input (raw pixels, scale 1, zero point 0) and "
        "uint8 output (probability x 256) instead of float32.")
    flags.DEFINE_integer(
        "num_calibration_images", 200,
        "With --quantization=int8: how many training images calibrate the activation ranges.",
        lower_bound=1)
    flags.DEFINE_string(
        "data_dir", None,
        "Where the dataset lives, for int8 calibration; default: the --data_dir the run "
        "trained with.")
    flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
    define_max_stored_flag("The most weights the file may store")
    define_litert_cpu_flag()
    define_guard_flag()
    define_tune_flag()
    flags.DEFINE_string(
        "costs", None,
        "A cost table measured on the CPU that will run the file: a phone's "
        "(python -m ssc_tf.device_bundle --results=... --costs=FILE), or another machine's "
        "tuning cache (~/.cache/ssc_tf/*.json there). The file is planned with its times and "
        "neither tuned nor guarded here.")


class _MaxStoredParser(flags.ArgumentParser):
    """--max_stored's values: "auto", or a number (inf too) >= 1.25."""

    def parse(self, argument):
        value = argument
        if isinstance(argument, str) and argument != execution_plan.MAX_STORED_AUTO:
            try:
                value = float(argument)
            except ValueError:
                pass
        with arguments.as_flags():
            return execution_plan.check_max_stored(value)

    def flag_type(self):
        return "string"


def define_max_stored_flag(what, flag_values=flags.FLAGS):
    """Defines --max_stored (this CLI's, and tools/benchmark_models.py's for its files), the
    TFLite storage budget; `what` begins its help ("The most weights the file may store")."""
    flags.DEFINE(
        _MaxStoredParser(), "max_stored", execution_plan.MAX_STORED_AUTO,
        f"{what}, as a multiple of the model's live weights: a number >= "
        f"{execution_plan.TFLITE_MAX_STORED}, where a larger one trades size for speed and inf "
        "runs each SSC layer in its fastest measured form, zeros included; or auto (the "
        f"default): {execution_plan.TFLITE_MAX_STORED}, or more where the execution plan's "
        "measurements say that a file so small would run slower than the dense twin's.",
        flag_values=flag_values)


def _check_costs(costs, runtime, litert_cpu):
    """Raises a one-line `ValueError` where `costs` is given with another `litert_cpu` than
    `HOST`, or is no cost table with times of `runtime` on `execution_plan.TUNED`."""
    if costs is None:
        return
    spelled = arguments.spelled
    if litert_cpu != HOST:
        raise ValueError(f"Pass one of {spelled('costs')} and {spelled('litert_cpu')}: both "
                         f"name the CPU whose times plan the file. Received: "
                         f"costs={costs!r}, litert_cpu={litert_cpu!r}")
    section = execution_plan.section(runtime, execution_plan.TUNED)
    expected = "a cost table (JSON) that ssc_tf.device_bundle or a tuning wrote"
    try:
        table = execution_plan.load_costs(costs)
    except (OSError, ValueError) as error:
        raise arguments.invalid("costs", expected, f"{costs!r} ({error})") from error
    if not isinstance(table, dict) or not isinstance(table.get("shapes"), dict):
        raise arguments.invalid("costs", expected, f"{costs!r}, which has no shape records")
    if not table.get(section):
        raise arguments.invalid("costs", f"a cost table with {section} times, for this "
                                "quantization", f"{costs!r}, which has none")


def _check_litert_cpu(litert_cpu):
    """Raises the one-line `ValueError` of a `litert_cpu` outside `LITERT_CPU_CHOICES`."""
    if litert_cpu not in LITERT_CPU_CHOICES:
        raise arguments.invalid("litert_cpu", f"one of {LITERT_CPU_CHOICES}", repr(litert_cpu))


def define_litert_cpu_flag(default=HOST, flag_values=flags.FLAGS):
    """Defines --litert_cpu (this CLI's, and the benchmarks'), the CPU whose measured LiteRT
    times plan the SSC layers' forms; `default` None (what `tuning.host_litert_cpu` returns for
    a CPU the table has no times of) means `HOST`."""
    flags.DEFINE_enum(
        "litert_cpu", default or HOST, list(LITERT_CPU_CHOICES),
        f"The CPU that will run the file, whose measured LiteRT times choose each SSC layer's "
        f"form: {HOST} (this machine: its kind's times, or where the package has none times "
        "measured here, see --tune, and the file is timed against its dense twin here, see "
        "--guard), amd_avx512_vnni (an AMD CPU with AVX-512 VNNI, where dense int8 "
        "convolutions are fast) or amd_avx2 (an AMD CPU with AVX2 and no AVX-512); "
        f"{' and '.join(execution_plan.LITERT_CPU_ALIASES)} are their earlier names. ARM "
        "phones have not been measured; their int8 dot-product instructions make dense int8 "
        "fast, as on amd_avx512_vnni.",
        flag_values=flag_values)


def define_guard_flag(flag_values=flags.FLAGS):
    """Defines --guard (this CLI's, and tools/benchmark_models.py's), `plan_and_convert`'s
    `guard`."""
    flags.DEFINE_bool(
        "guard", True,
        "For a file planned for this machine (--litert_cpu=host, or this CPU's kind): time "
        "it against its dense twin (every SSC layer dense, same weights and quantization) in "
        "LiteRT on one thread and, where it is slower, move SSC layers to the dense form until "
        "it is not. --noguard ships the plan as it is.",
        flag_values=flag_values)


def define_tune_flag(flag_values=flags.FLAGS):
    """Defines --tune (this CLI's, and tools/benchmark_models.py's), `plan_and_convert`'s
    `tune`."""
    flags.DEFINE_bool(
        "tune", True,
        f"With --litert_cpu={HOST} on a CPU the package has no LiteRT times of (Intel, ARM): "
        "first time the model's own SSC layer shapes in each form here, in LiteRT on one "
        "thread (ResNet-32's 7 shapes took 22-40 s on 2 cores; no new shape is timed after "
        f"{tuning.TUNE_BUDGET_SECONDS} s), cached in ~/.cache/ssc_tf ($XDG_CACHE_HOME) per "
        "CPU model and TensorFlow and LiteRT versions, and plan with those times. --notune "
        f"plans with {execution_plan.DEFAULT_LITERT_CPU}'s times.",
        flag_values=flag_values)


def _format_plan(result, tune_flag):
    """Which CPU's times planned `convert`'s `result`, in one line for the CLI's summary of
    `convert`'s `result` with --tune=`tune_flag`."""
    if result["costs"]:
        return f"  planned with the times of {result['costs']}, measured where the file will run"
    if result["host_cpu"] is None:
        return (f"  planned for another CPU than this one, with the {result['litert_cpu']} "
                "LiteRT times")
    tuned = result["tuning"]
    if tuned:
        counts = [f"{len(tuned['measured'])} measured now in {tuned['seconds']:.0f} s"
                  if tuned["measured"] else "",
                  f"{len(tuned['cached'])} read from the cache" if tuned["cached"] else "",
                  f"{len(tuned['left'])} left to the nearest measured (the budget was spent)"
                  if tuned["left"] else ""]
        return (f"  planned for this CPU, {result['host_cpu']}, with times measured on it "
                f"({tuned['path']}): layer shapes {', '.join(c for c in counts if c)}")
    table = ("" if tuning.host_litert_cpu() else
             ": the package has no LiteRT times of this CPU's kind"
             + ("" if tune_flag else " (--notune)"))
    return (f"  planned for this CPU, {result['host_cpu']}, with the {result['litert_cpu']} "
            f"LiteRT times{table}")


def _format_guard(result, guard_flag):
    """What the guard did, in one line, for the CLI's summary of `convert`'s `result` with
    --guard=`guard_flag`."""
    guard = result["guard"]
    if guard is None:
        why = ("off (--noguard)" if not guard_flag and result["host_cpu"] else
               "not run: planned for another CPU than this one "
               f"({'--costs' if result['costs'] else '--litert_cpu'})"
               if result["host_cpu"] is None else "not run: every SSC layer is planned dense")
        return f"  guard: {why}"
    return f"  guard: {execution_plan.describe_guard(guard)}"


def run():
    """The `python -m ssc_tf.convert_tflite` and `ssc-convert-tflite` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
