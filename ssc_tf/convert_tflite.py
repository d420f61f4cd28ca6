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
(docs/execution_plan.md).

The file is written next to `--output` first and renamed into place, so a failed conversion
leaves no file and never a partial one; an existing `--output` is replaced only with
`--overwrite`.
"""

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
from ssc_tf import serving
from ssc_tf import timing
from ssc_tf.layers import SSCConv2D
from ssc_tf.models import masked

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# The execution plan's table each quantization's file is planned with: LiteRT runs float16
# weights in float32, and dynamic-range and int8 files in kernels of their own.
PLANNED_RUNTIME = {
    "none": execution_plan.TFLITE,
    "float16": execution_plan.TFLITE,
    "dynamic": execution_plan.TFLITE_DYNAMIC,
    "int8": execution_plan.TFLITE_INT8,
}
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
            max_stored=execution_plan.MAX_STORED_AUTO,
            litert_cpu=execution_plan.DEFAULT_LITERT_CPU):
    """Converts the newest checkpoint of `model_dir` to a TFLite file at `output`.

    Every argument is checked, and for int8 the calibration images are read, before the
    conversion starts; on any error nothing is written.

    Args:
        model_dir: str, a directory written by `ssc_tf.train`.
        output: str, the file to write; must end in ".tflite". Its directory is created.
        quantization: str, one of `QUANTIZATIONS` (see the module docstring). Defaults to
            "none".
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
        litert_cpu: one of `execution_plan.LITERT_CPUS`, the CPU whose measured LiteRT
            times plan the SSC layers' forms: the CPU that will run the file. Defaults to
            `execution_plan.DEFAULT_LITERT_CPU`.

    Returns:
        A dict of facts about the written file: `path`, `bytes`, `quantization`,
        `integer_io`, `calibration_images` (int8; else 0), `max_stored`, `litert_cpu`,
        `epoch` (epochs the weights were trained), `input_dtype`, `input_shape` (None for
        the batch), `input_quantization` (`(scale, zero_point)` of an integer input, else
        None), and the same three for the output, and `ops` (`op_names` of the file).

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
                     max_stored, litert_cpu)
    model, config, saved_data_dir, epoch = model_dir_lib.load_model(model_dir)
    calibration = []
    if quantization == "int8":
        calibration = _calibration_images(
            config, data_dir or saved_data_dir, num_calibration_images)
    # A pruned run's mask is baked into plain kernels: the file holds no mask.
    flatbuffer = to_tflite(masked.bake(model), config.dataset, quantization, integer_io,
                           calibration, max_stored, litert_cpu)
    ops = op_names(flatbuffer)
    custom = [name for name in ops if name.startswith(CUSTOM_PREFIX)]
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
        "litert_cpu": litert_cpu,
        "epoch": epoch,
        **facts,
        "ops": ops,
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


def _check_arguments(output, quantization, integer_io, num_calibration_images, overwrite,
                     max_stored, litert_cpu):
    spelled = arguments.spelled
    arguments.check_choice("quantization", quantization, QUANTIZATIONS)
    execution_plan.check_max_stored(max_stored)
    arguments.check_choice("litert_cpu", litert_cpu, execution_plan.LITERT_CPUS)
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
              max_stored=execution_plan.MAX_STORED_AUTO,
              litert_cpu=execution_plan.DEFAULT_LITERT_CPU):
    """The TFLite flatbuffer of `model`'s `ServingModel.save_for_tflite` graph.

    The SSC layers are traced for LiteRT (`execution_plan.target_runtime`) in the forms the
    execution plan measured fastest there for the model as a whole (`planned_forms`), in the
    table of the quantization's kernels (`PLANNED_RUNTIME`). `ServingModel` folds the batch
    norm after each SSC layer into it, which the converter does by itself only for a Conv2D.

    Args:
        model: a Keras model of `dataset`'s inputs.
        dataset: str, one of `ssc_tf.config.DATASETS`.
        quantization: str, one of `QUANTIZATIONS`.
        integer_io: bool, uint8 inputs and outputs (int8 only).
        calibration: float32 pixel batches that calibrate int8's activation ranges.
        max_stored: the file's storage budget: a multiple of the live weights, or
            `execution_plan.MAX_STORED_AUTO` (the default; `planned_forms`).
        litert_cpu: the `execution_plan.LITERT_CPUS` entry whose times plan the forms.
    """
    runtime = PLANNED_RUNTIME[quantization]
    with tempfile.TemporaryDirectory() as saved_model_dir:
        forms = planned_forms(model, runtime, max_stored, litert_cpu)
        with execution_plan.target_runtime(runtime, forms, litert_cpu):
            serving.ServingModel(model, dataset).save_for_tflite(saved_model_dir)
        return converter(saved_model_dir, quantization, integer_io, calibration).convert()


def planned_forms(model, runtime, max_stored=execution_plan.MAX_STORED_AUTO,
                  litert_cpu=execution_plan.DEFAULT_LITERT_CPU):
    """{layer name: `Form`} for the SSC layers of `model` that the plan decides
    (`implementation="auto"`, a square window and stride, a known input size), planned for a
    TFLite file of `runtime` on `litert_cpu` as one model within the storage budget
    `max_stored` (`execution_plan.plan_model`)."""
    layers, shapes = [], []
    for layer in model.layers:
        if not isinstance(layer, SSCConv2D) or layer.implementation != execution_plan.AUTO:
            continue
        shape = layer.plan_shape(layer.input.shape)
        if shape is not None:
            layers.append(layer.name)
            shapes.append(shape)
    forms = execution_plan.plan_model(shapes, runtime, max_stored=max_stored,
                                      litert_cpu=litert_cpu)
    return dict(zip(layers, forms))


def converter(saved_model_dir, quantization, integer_io=False, calibration=()):
    """The TFLite converter of a SavedModel in one of `QUANTIZATIONS`, restricted to builtin
    ops: what `to_tflite` and `tools/benchmark_layer.py` convert with.

    Args:
        saved_model_dir: str, the SavedModel to convert.
        quantization: str, one of `QUANTIZATIONS`.
        integer_io: bool, uint8 inputs and outputs (int8 only).
        calibration: float32 input batches that calibrate int8's activation ranges.
    """
    tflite_converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    tflite_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "none":
        return tflite_converter
    tflite_converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        tflite_converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        tflite_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        tflite_converter.representative_dataset = lambda: ([pixels] for pixels in calibration)
        if integer_io:
            tflite_converter.inference_input_type = tf.uint8
            tflite_converter.inference_output_type = tf.uint8
    return tflite_converter


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
                litert_cpu=FLAGS.litert_cpu)
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
        "quantization", "none", list(QUANTIZATIONS),
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
    define_litert_cpu_flag(execution_plan.DEFAULT_LITERT_CPU)


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


def host_litert_cpu():
    """This machine's `execution_plan.LITERT_CPUS` entry (the default one for a CPU of no
    measured kind): what the benchmarks, which run their files where they convert them, plan
    for."""
    return (execution_plan.litert_cpu(timing.cpu_features() or ())
            or execution_plan.DEFAULT_LITERT_CPU)


def define_litert_cpu_flag(default, flag_values=flags.FLAGS):
    """Defines --litert_cpu (this CLI's, and the benchmarks', whose default is
    `host_litert_cpu`), the CPU whose measured LiteRT times plan the SSC layers' forms."""
    flags.DEFINE_enum(
        "litert_cpu", default, list(execution_plan.LITERT_CPUS),
        "The CPU that will run the file, whose measured LiteRT times choose each SSC layer's "
        "form: x86_avx512_vnni (AVX-512 with VNNI, where dense int8 convolutions are fast) or "
        "x86_avx2 (AVX2 without VNNI). ARM phones have not been measured; their int8 "
        "dot-product instructions make dense int8 fast, as on x86_avx512_vnni.",
        flag_values=flag_values)


def run():
    """The `python -m ssc_tf.convert_tflite` and `ssc-convert-tflite` command line."""
    _define_flags()
    flagfile.run_app(main)


if __name__ == "__main__":
    run()
