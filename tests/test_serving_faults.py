"""Bad requests to the exported signatures: each fails with an `InvalidArgumentError` that
states the expected shape, in a process that lives on; an empty batch gets empty outputs.

The SavedModel holds a small untrained network: the checks are the signatures', whatever the
model. The bad requests go one after the other to a client process of their own, as a model
server would serve them, since unchecked one of them ended the process (a failed CHECK in
TensorFlow's kernels): each must come back as an error, and the process must exit normally.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import data
from ssc_tf import serving

# Bad requests as (signature, input, dtype, shape), and the message each must fail with.
_BAD_REQUESTS = {
    "no_batch_axis": (("serving_default", "images", "uint8", [32, 32, 3]),
                      "Shape of tensor images [32,32,3] is not compatible with expected "
                      "shape [?,32,32,3]."),
    "one_channel": (("serving_default", "images", "uint8", [2, 32, 32, 1]),
                    "Shape of tensor images [2,32,32,1] is not compatible with expected "
                    "shape [?,32,32,3]."),
    "rank_5": (("serving_default", "images", "uint8", [1, 1, 32, 32, 3]),
               "Shape of tensor images [1,1,32,32,3] is not compatible with expected "
               "shape [?,32,32,3]."),
    "other_size": (("serving_default", "images", "uint8", [2, 28, 28, 3]),
                   "Shape of tensor images [2,28,28,3] is not compatible with expected "
                   "shape [?,32,32,3]."),
    "bytes_scalar": (("predict_image_bytes", "image_bytes", "string", []),
                     "Shape of tensor image_bytes [] is not compatible with expected shape "
                     "[?]."),
    "bytes_rank_2": (("predict_image_bytes", "image_bytes", "string", [2, 1]),
                     "Shape of tensor image_bytes [2,1] is not compatible with expected shape "
                     "[?]."),
}
# Loads the SavedModel and sends the requests of argv[2] (JSON) one after the other, each
# of zeros: prints one JSON line per request, the message of its error (or "accepted").
_CLIENT = """
import json
import sys
import tensorflow as tf
signatures = tf.saved_model.load(sys.argv[1]).signatures
for case, (signature, name, dtype, shape) in json.loads(sys.argv[2]).items():
    try:
        signatures[signature](**{name: tf.zeros(shape, dtype)})
        outcome = "accepted"
    except tf.errors.InvalidArgumentError as error:
        outcome = "InvalidArgumentError: " + error.message
    print(json.dumps({case: outcome}), flush=True)
"""


class _FailsOnAnEmptyBatch(keras.layers.Layer):
    """Fails on an empty batch, as batch norm does on GPU: on CPU too, a test sees if it ran."""

    def call(self, inputs):
        tf.debugging.assert_positive(tf.shape(inputs)[0], message="the model ran on no images")
        return inputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(Keras model, SavedModel path): a small CIFAR-10 classifier saved by `ServingModel`."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = _FailsOnAnEmptyBatch()(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    # Flatten, as ResNet's SSC layers reshape: an image of another size fails in a reshape.
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = str(tmp_path_factory.mktemp("serving") / "1")
    serving.ServingModel(model, "cifar10", top_k=3).save(path)
    return model, path


@pytest.fixture(scope="module")
def signatures(exported):
    _, path = exported
    return tf.saved_model.load(path).signatures


@pytest.fixture(scope="module")
def bad_request_outcomes(exported):
    """(exit status, {case: outcome}) of a client process that sends every bad request."""
    _, path = exported
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, path,
         json.dumps({case: request for case, (request, _) in _BAD_REQUESTS.items()})],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=300)
    outcomes = {}
    for line in done.stdout.splitlines():
        outcomes.update(json.loads(line))
    return done.returncode, outcomes, done.stderr


@pytest.mark.parametrize("case", _BAD_REQUESTS)
def test_a_bad_request_fails_naming_the_expected_shape_and_the_process_lives_on(
        bad_request_outcomes, case):
    returncode, outcomes, stderr = bad_request_outcomes
    assert case in outcomes, f"the client ended (status {returncode}) before: {stderr[-3000:]}"
    assert outcomes[case].startswith("InvalidArgumentError: "), outcomes[case]
    assert _BAD_REQUESTS[case][1] in outcomes[case]
    assert returncode == 0, stderr[-3000:]


def test_an_empty_batch_returns_empty_outputs_without_running_the_model(signatures):
    for signature, inputs in (
            ("serving_default", {"images": tf.zeros((0, 32, 32, 3), tf.uint8)}),
            ("predict_image_bytes", {"image_bytes": tf.zeros((0,), tf.string)})):
        outputs = signatures[signature](**inputs)
        assert outputs["probabilities"].shape == (0, 10)
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["classes"].shape == (0, 3)
        assert outputs["classes"].dtype == tf.int64


def test_good_requests_still_compute_the_keras_model(exported, signatures):
    model, _ = exported
    pixels = tf.cast(
        tf.random.stateless_uniform((2, 32, 32, 3), (3, 4), 0, 256, tf.int32), tf.uint8)
    expected = tf.nn.softmax(
        model(data.normalize(tf.cast(pixels, tf.float32), "cifar10"), training=False)).numpy()
    from_pixels = signatures["serving_default"](images=pixels)
    pngs = tf.stack([tf.io.encode_png(image) for image in pixels])
    from_bytes = signatures["predict_image_bytes"](image_bytes=pngs)
    for outputs in (from_pixels, from_bytes):
        np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(
            outputs["classes"].numpy(), np.argsort(-expected, axis=1, kind="stable")[:, :3])
