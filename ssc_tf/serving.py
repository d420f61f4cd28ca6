"""The inference graph that `ssc_tf.export` and `ssc_tf.convert_tflite` write.

`ServingModel` wraps a trained model with its preprocessing (`ssc_tf.data.normalize`, and
`eval_resize` for encoded images), so clients send raw pixels or image files:

- `serving_default`: `images`, uint8 `(batch, H, W, 3)` at the training size (ImageNet: the
  224 x 224 evaluation crop) -> `probabilities` float32 `(batch, num_classes)` (softmax) and
  `classes` int64 `(batch, top_k)` (most probable first).
- `predict_image_bytes`: `image_bytes`, string `(batch,)` of encoded JPEG, PNG, GIF or BMP
  files of any size -> the same outputs. Each image is decoded to RGB and brought to the
  training size as evaluation does: ImageNet by `eval_resize` (shorter side 256, center
  crop); a dataset stored smaller (Fashion-MNIST's 28 x 28) padded as its reader pads it
  when it has the stored size (`augment.pad_stored`); otherwise an antialiased bilinear
  resize when its size differs.
- `probabilities`: float32 pixels in 0..255 `(batch, H, W, 3)` -> the probabilities alone:
  the one-output graph that TFLite converts.

Both serving signatures check the shape of what arrives before the model runs: another rank
(one image without its batch axis), size or channel count fails with an
`InvalidArgumentError` that names the expected shape ("Shape of tensor images [32,32,3] is not
compatible with expected shape [?,32,32,3]"). An empty batch gets empty outputs.

A SavedModel holds the signatures and the variables they read (as `tf.Variable`s, each
once), nothing else: no Keras model object (whose variables the TF object graph would reach
twice) and no extra traced functions, so it stores each live weight once and the model's
graph once (twice where `batch_forms` gives small batches other forms than large ones), and the
TFLite converter can freeze every variable into a constant.

Example:

>>> from ssc_tf import models
>>> model = models.build("resnet32", num_classes=10, input_shape=(32, 32, 3),
...                      g=(2, 4, 15), p=(2, 4, 4))
>>> serving_model = ServingModel(model, "cifar10", top_k=3)
>>> outputs = serving_model.serving_default(tf.zeros((2, 32, 32, 3), tf.uint8))
>>> outputs["probabilities"].shape, outputs["classes"].shape
(TensorShape([2, 10]), TensorShape([2, 3]))
"""

import tensorflow as tf

from ssc_tf import arguments
from ssc_tf import execution_plan
from ssc_tf.data import augment, datasets
from ssc_tf.models import folding

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGE_BYTES = "predict_image_bytes"
IMAGES = "images"
IMAGE_BYTES = "image_bytes"
PROBABILITIES = "probabilities"
CLASSES = "classes"


class ServingModel:
    """A trained classifier with its preprocessing, as signatures for serving.

    Args:
        model: the Keras model, built for `dataset`'s input shape; its outputs are logits.
            The signatures run a copy with each batch norm that follows a convolution folded
            into it (`ssc_tf.models.folding`); `model` itself is not changed.
        dataset: str, one of `ssc_tf.data.datasets.NAMES`: the preprocessing and input size.
        top_k: int in [1, num_classes], how many classes `classes` lists. Defaults to 5.
        batch_forms: None (the default: each SSC layer plans its own form, the large-batch
            one for a signature's unknown batch), or the forms of the SSC layers for each
            batch regime, {`execution_plan.SMALL_BATCH`: {layer name: `Form`},
            `execution_plan.LARGE_BATCH`: {...}} (`ssc_tf.serving_plan`): batches of at most
            `small_batch_max` images run the first, larger ones the second, behind one
            `tf.cond` on the batch size where the two differ. Both compute the same function.
        small_batch_max: int >= 0, with `batch_forms`: the largest batch that runs the
            small-batch forms (0: none). Defaults to `execution_plan.SMALL_BATCH_MAX`.

    Attributes:
        serving_default, predict_image_bytes, probabilities: the `tf.function`s described
            in the module docstring, each with its input signature.
    """

    def __init__(self, model, dataset, top_k=5, batch_forms=None,
                 small_batch_max=execution_plan.SMALL_BATCH_MAX):
        record = datasets.get(dataset)
        num_classes = record.num_classes
        regimes = (execution_plan.SMALL_BATCH, execution_plan.LARGE_BATCH)
        if batch_forms is not None and (not isinstance(batch_forms, dict)
                                        or sorted(batch_forms) != sorted(regimes)):
            raise arguments.invalid("batch_forms", f"None or a dict of {regimes} to forms",
                                    repr(batch_forms))
        arguments.check_int("small_batch_max", small_batch_max, minimum=0)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 < top_k <= num_classes:
            raise ValueError(
                f"Invalid value for argument `top_k`: expected an integer in [1, {num_classes}] "
                f"(the number of classes of {dataset!r}). Received: top_k={top_k!r}"
            )
        # Inference only: each batch norm is folded into the convolution before it, which
        # saves two passes over each activation in TF and int8 TFLite a requantized sum.
        model = folding.fold_batch_norm(model)
        height, width = record.input_shape[:2]
        images_spec = (height, width, 3)

        def logits(pixels, forms=None):
            inputs = augment.normalize(pixels, dataset)
            if forms is None:
                return model(inputs, training=False)
            with execution_plan.layer_forms(forms):
                return model(inputs, training=False)

        @tf.function(input_signature=[tf.TensorSpec((None,) + images_spec, tf.float32)])
        def probabilities(pixels):
            if batch_forms is None:
                outputs = logits(pixels)
            else:
                small = batch_forms[execution_plan.SMALL_BATCH]
                large = batch_forms[execution_plan.LARGE_BATCH]
                outputs = logits(pixels, large) if small == large else tf.cond(
                    tf.shape(pixels)[0] <= small_batch_max,
                    lambda: logits(pixels, small), lambda: logits(pixels, large))
            return tf.nn.softmax(tf.cast(outputs, tf.float32))

        # One concrete function that both signatures call, so a SavedModel holds the
        # model's graph once.
        probabilities_graph = probabilities.get_concrete_function()

        def outputs(pixels):
            def predict():
                probs = probabilities_graph(pixels)
                classes = tf.math.top_k(probs, k=top_k).indices
                return {PROBABILITIES: probs, CLASSES: tf.cast(classes, tf.int64)}

            def empty():
                return {PROBABILITIES: tf.zeros((0, num_classes)),
                        CLASSES: tf.zeros((0, top_k), tf.int64)}

            # Batch norm fails on an empty batch (on GPU): the model never sees one.
            return tf.cond(tf.shape(pixels)[0] > 0, predict, empty)

        # The TensorSpecs declare the shapes, but a loaded SavedModel or a model server runs
        # a signature on whatever arrives: `ensure_shape` checks at run time, where static
        # checks (`tf.debugging.assert_rank`, even `tf.rank`) see only the spec.
        @tf.function(input_signature=[tf.TensorSpec((None,) + images_spec, tf.uint8, IMAGES)])
        def serving_default(images):
            images = tf.ensure_shape(images, (None,) + images_spec)
            return outputs(tf.cast(images, tf.float32))

        def decode(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            if record.eval_shorter_side is not None:
                image = augment.eval_resize(image, dataset)
            else:
                if record.stored_size is not None:
                    image = tf.cond(
                        tf.reduce_all(tf.shape(image)[:2] == record.stored_size),
                        lambda: augment.pad_stored(image, dataset),
                        lambda: image,
                    )
                image = tf.cond(
                    tf.reduce_all(tf.shape(image)[:2] == (height, width)),
                    lambda: tf.cast(image, tf.float32),
                    lambda: tf.image.resize(image, (height, width), antialias=True),
                )
            return tf.ensure_shape(tf.cast(image, tf.float32), images_spec)

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, IMAGE_BYTES)])
        def predict_image_bytes(image_bytes):
            image_bytes = tf.ensure_shape(image_bytes, (None,))
            pixels = tf.map_fn(
                decode, image_bytes, fn_output_signature=tf.TensorSpec(images_spec, tf.float32)
            )
            return outputs(pixels)

        self.probabilities = probabilities
        self.serving_default = serving_default
        self.predict_image_bytes = predict_image_bytes

    def save(self, path):
        """Writes the SavedModel for TF-Serving (`serving_default`, `predict_image_bytes`)."""
        _save(path, {
            SERVING_DEFAULT: self.serving_default.get_concrete_function(),
            PREDICT_IMAGE_BYTES: self.predict_image_bytes.get_concrete_function(),
        })

    def save_for_tflite(self, path):
        """Writes a SavedModel whose `serving_default` is `probabilities` (float pixels in,
        probabilities out), the graph `ssc_tf.convert_tflite` converts."""
        _save(path, {SERVING_DEFAULT: self.probabilities.get_concrete_function()})


def _save(path, signatures):
    """Saves `signatures` with a root that holds only the variables they capture."""
    root = tf.Module()
    captured = {}
    for function in signatures.values():
        for variable in function.variables:
            captured.setdefault(id(variable), variable)
    root.model_variables = list(captured.values())
    tf.saved_model.save(root, path, signatures=signatures)
