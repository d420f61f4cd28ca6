"""TFLite's quantizations as ssc_tf converts with them: the converter of each, and the execution
plan's table each file is planned with.

- `none`: float32 weights and compute.
- `float16`: float16 weights, dequantized to float32 at load; float32 compute.
- `dynamic`: int8 weights (dynamic range), float32 inputs and outputs; activations are
  quantized on the fly where a kernel supports it.
- `int8`: int8 weights and activations, calibrated on representative inputs.

`ssc_tf.convert_tflite` converts whole models with `converter`, and `ssc_tf.tuning` single
layers, so that a layer is timed as it will run in the model's file.
"""

import tensorflow as tf

from ssc_tf import execution_plan

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# The execution plan's table each quantization's file is planned with: LiteRT runs float16
# weights in float32, and dynamic-range and int8 files in kernels of their own.
PLANNED_RUNTIME = {
    "none": execution_plan.TFLITE,
    "float16": execution_plan.TFLITE,
    "dynamic": execution_plan.TFLITE_DYNAMIC,
    "int8": execution_plan.TFLITE_INT8,
}
# The quantization whose files each TFLite runtime's table times: the first that is planned
# with it (float16 files are planned with the float32 table, which "none" measures).
MEASURED = {runtime: quantization for quantization, runtime
            in reversed(PLANNED_RUNTIME.items())}


def converter(saved_model_dir, quantization, integer_io=False, calibration=()):
    """The TFLite converter of a SavedModel in one of `QUANTIZATIONS`, restricted to builtin
    ops.

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
