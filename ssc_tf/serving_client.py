r"""Client for an exported model served by TF-Serving, over REST or gRPC.

    python -m ssc_tf.serving_client --model_name=ssc --images=cat.png,dog.jpg --image_size=32x32
    ssc-serving-client --model_name=ssc --images=cat.png --protocol=grpc \
        --signature=predict_image_bytes
    ssc-serving-client --model_name=ssc --images=cat.png --saved_model=exports/ssc/1 --dry_run

The served SavedModel has two signatures (see README.md for the docker line that serves it):

- `serving_default` takes `images`, uint8 [batch, H, W, 3] at the training size. This client
  decodes each file and brings it to H x W when its size differs: a file of a dataset's
  stored size (Fashion-MNIST's 28x28 for a 32x32 model) is padded as training padded it,
  any other is resized (antialiased bilinear), stretched if the aspect ratio differs. For ImageNet models prefer
  `predict_image_bytes`: the server then applies the evaluation resize and center crop.
- `predict_image_bytes` takes `image_bytes`, string [batch]: each element a whole JPEG or PNG
  (or GIF, BMP) file, sent as is; the server decodes and resizes.

Both answer `probabilities`, float32 [batch, num_classes], and `classes`, int64 [batch, k] (the
top k classes, best first). The client prints, per image, each top class and its probability.

H and W come from `--image_size`, or from the signature of `--saved_model` (a version
directory of the export), which is then also checked against the signature asked for.
`--dry_run` prints the request instead of sending it: for REST the URL and the complete JSON
body (pipe it to curl), for gRPC the PredictRequest in text format with long tensor contents cut.
"""

import base64
import ipaddress
import json
import os
import sys
import typing
import urllib.error
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from google.protobuf import text_format  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

from ssc_tf.data import augment, datasets  # noqa: E402

# Signature name -> (its one input's name, that input's dtype).
SIGNATURES = {
    "serving_default": ("images", tf.uint8),
    "predict_image_bytes": ("image_bytes", tf.string),
}
OUTPUTS = ("probabilities", "classes")
PROTOCOLS = ("rest", "grpc")

# The gRPC dry run cuts tensor contents longer than this (bytes) to their first this many.
_DRY_RUN_BYTES = 48
_SERVER_HINT = ("A TF-Serving model server must be running there; README.md has the docker "
                "line that starts one.")


class Predictions(typing.NamedTuple):
    """What the server answered for a batch.

    Attributes:
        classes: np.int64 array [batch, k], the top k class indices per image, best first.
        probabilities: np.float32 array [batch, num_classes].
    """

    classes: np.ndarray
    probabilities: np.ndarray


def parse_image_size(text):
    """Parses `--image_size`: "HxW" (e.g. "32x24"), or "N" for N x N.

    Args:
        text: str.

    Returns:
        (H, W), two positive ints.

    Raises:
        ValueError: `text` is neither form.
    """
    parts = text.lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"Invalid value for flag --image_size: expected HxW with positive "
                         f"integers (e.g. 32x32), or N for NxN. Received: image_size={text}")
    return size


def signature_input_spec(saved_model_dir, signature):
    """Reads the input of `signature` from a SavedModel and checks it against the contract.

    Reads the MetaGraph (tag "serve") that TF-Serving serves, without loading the model.

    Args:
        saved_model_dir: str, a version directory of the export (holding saved_model.pb).
        signature: str, one of `SIGNATURES`.

    Returns:
        A `tf.TensorSpec` of the signature's one input, named after it; its shape has None for
        sizes the SavedModel leaves open.

    Raises:
        FileNotFoundError: no saved_model.pb in `saved_model_dir`.
        ValueError: the SavedModel has no "serve" graph, no such signature, or the signature's
            input or outputs differ from the contract; the message names the flag.
    """
    path = os.path.join(saved_model_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        hint = ""
        if tf.io.gfile.isdir(saved_model_dir):
            versions = sorted((name.rstrip("/") for name in tf.io.gfile.listdir(saved_model_dir)
                               if name.rstrip("/").isdigit()), key=int)
            if versions:
                hint = (f" It holds the versions {', '.join(versions)}: pass one, e.g. "
                        f"--saved_model={os.path.join(saved_model_dir, versions[-1])}")
        raise FileNotFoundError(
            f"Flag --saved_model must name a SavedModel version directory: no saved_model.pb in "
            f"{saved_model_dir}.{hint}")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"Flag --saved_model: {saved_model_dir} has no MetaGraph tagged "
                         f"'serve', the one TF-Serving serves.")
    signature_defs = graphs[0].signature_def
    if signature not in signature_defs:
        found = sorted(name for name in signature_defs if not name.startswith("__"))
        raise ValueError(f"Invalid value for flag --signature: the SavedModel at "
                         f"{saved_model_dir} has no signature {signature!r}; it has "
                         f"{', '.join(found) or 'none'}. Received: signature={signature}")
    signature_def = signature_defs[signature]
    name, dtype = SIGNATURES[signature]
    inputs = {key: info for key, info in signature_def.inputs.items()}
    where = f"Signature {signature!r} of --saved_model={saved_model_dir}"
    if list(inputs) != [name]:
        raise ValueError(f"{where} takes the inputs {sorted(inputs)}; this client sends one "
                         f"input named {name!r}.")
    found_dtype = tf.dtypes.as_dtype(inputs[name].dtype)
    if found_dtype != dtype:
        raise ValueError(f"{where} takes {name!r} as {found_dtype.name}; this client sends "
                         f"{dtype.name}.")
    missing = [output for output in OUTPUTS if output not in signature_def.outputs]
    if missing:
        raise ValueError(f"{where} lacks the outputs {missing}; it has "
                         f"{sorted(signature_def.outputs)}.")
    tensor_shape = inputs[name].tensor_shape
    shape = None if tensor_shape.unknown_rank else [
        dim.size if dim.size >= 0 else None for dim in tensor_shape.dim]
    spec = tf.TensorSpec(shape, dtype, name=name)
    expected = [None, None, None, 3] if dtype == tf.uint8 else [None]
    if not spec.shape.is_compatible_with(expected):
        raise ValueError(f"{where} takes {name!r} of shape {spec.shape}; this client sends "
                         f"{tf.TensorShape(expected)}.")
    return spec


def serving_image_size(image_size=None, input_spec=None):
    """The H x W the serving_default signature takes, from the flag or the SavedModel.

    Args:
        image_size: (H, W) or None, from `--image_size`.
        input_spec: `tf.TensorSpec` or None, from `signature_input_spec` (`--saved_model`).

    Returns:
        (H, W).

    Raises:
        ValueError: neither gives the size, or the two disagree.
    """
    from_model = None
    if input_spec is not None and input_spec.shape.rank == 4:
        height, width = input_spec.shape[1], input_spec.shape[2]
        if height is not None and width is not None:
            from_model = (height, width)
    if image_size is not None and from_model is not None and tuple(image_size) != from_model:
        raise ValueError(f"Flag --image_size={image_size[0]}x{image_size[1]} differs from "
                         f"the {from_model[0]}x{from_model[1]} images that --saved_model takes; "
                         f"drop --image_size.")
    size = from_model or image_size
    if size is None:
        raise ValueError("The serving_default signature takes images of one fixed size: pass "
                         "it with --image_size=HxW, or pass --saved_model=DIR (a version "
                         "directory of the export) to read it from there.")
    return tuple(size)


def load_images(paths, signature, image_size=None):
    """Reads image files into the batch that `signature` takes.

    For serving_default each file is decoded (3 channels; an animation's first frame) and,
    when its size differs from `image_size`, padded with black as its dataset's reader pads
    it if the size is a dataset's stored size for that input size
    (`ssc_tf.data.datasets.stored_at`), else resized with antialiased bilinear interpolation
    and rounded to uint8; each pad or resize is reported on stderr. For predict_image_bytes the
    files are sent as they are, after checking here that they decode, so that a bad file is
    named before anything is sent.

    Args:
        paths: list of str, image files: JPEG, PNG, GIF or BMP.
        signature: str, one of `SIGNATURES`.
        image_size: (H, W), required for serving_default.

    Returns:
        serving_default: np.uint8 array [len(paths), H, W, 3]. predict_image_bytes: a list of
        bytes, each a whole file.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: no paths, an unknown signature, no `image_size` for serving_default, or
            a file that does not decode.
    """
    if signature not in SIGNATURES:
        raise ValueError(f"Invalid value for flag --signature: expected one of "
                         f"{', '.join(SIGNATURES)}. Received: signature={signature}")
    if not paths:
        raise ValueError("Flag --images is required: a comma-separated list of image files.")
    if signature == "serving_default" and image_size is None:
        raise ValueError("The serving_default signature needs the image size: pass "
                         "--image_size=HxW or --saved_model=DIR.")
    batch = []
    for path in paths:
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise FileNotFoundError(f"Flag --images names a file that does not exist: {path}")
        with tf.io.gfile.GFile(path, "rb") as f:
            contents = f.read()
        try:
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        except tf.errors.OpError:
            raise ValueError(f"Flag --images: {path} is not an image file TensorFlow can "
                             f"decode (JPEG, PNG, GIF or BMP).") from None
        if signature == "predict_image_bytes":
            batch.append(contents)
        else:
            batch.append(_sized(image, image_size, path))
    return np.stack(batch) if signature == "serving_default" else batch


def _sized(image, image_size, path):
    """`image` (uint8 [h, w, 3]) at `image_size`, padded or resized, as np.uint8."""
    height, width = image.shape[0], image.shape[1]
    if (height, width) == tuple(image_size):
        return image.numpy()
    dataset = datasets.stored_at((height, width), image_size)
    if dataset is not None:
        print(f"{path}: padded from {height}x{width} to {image_size[0]}x{image_size[1]}, as "
              f"the {dataset} pipeline pads its stored images.", file=sys.stderr)
        return augment.pad_stored(image, dataset).numpy()
    print(f"{path}: resized from {height}x{width} to {image_size[0]}x{image_size[1]}, the size "
          f"the serving_default signature takes.", file=sys.stderr)
    resized = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _host(server):
    """`server` as it goes in a URL or gRPC target: IPv6 addresses in brackets."""
    if not server or "/" in server:
        raise ValueError(f"Invalid value for flag --server: expected a host name or address, "
                         f"without scheme or path. Received: server={server}")
    if ":" in server and not server.startswith("["):
        try:
            ipaddress.IPv6Address(server)
        except ValueError:
            raise ValueError(f"Invalid value for flag --server: expected a host name or "
                             f"address without a port (set --rest_port or --grpc_port). "
                             f"Received: server={server}") from None
        return f"[{server}]"
    return server


def rest_request(model_name, batch, signature, *, server="localhost", port=8501,
                 model_version=None):
    """The REST predict request for `batch`: TF-Serving's row ("instances") format.

    Args:
        model_name: str, the model's name on the server.
        batch: what `load_images` returned for `signature`.
        signature: str, one of `SIGNATURES`.
        server: str, host name or address of the model server.
        port: int, its REST port.
        model_version: int or None (the newest version).

    Returns:
        (url, body): the URL to POST to and the JSON body as a dict. serving_default
        instances are H x W x 3 nested lists of ints; predict_image_bytes instances are
        `{"b64": <base64 of the file>}`, TF-Serving's convention for binary strings.
    """
    path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
    if model_version is not None:
        path += f"/versions/{model_version}"
    url = f"http://{_host(server)}:{port}{path}:predict"
    if signature == "predict_image_bytes":
        instances = [{"b64": base64.b64encode(contents).decode("ascii")} for contents in batch]
    else:
        instances = np.asarray(batch, np.uint8).tolist()
    return url, {"signature_name": signature, "instances": instances}


def grpc_request(model_name, batch, signature, *, model_version=None):
    """The gRPC `PredictRequest` for `batch`.

    Args:
        model_name: str, the model's name on the server.
        batch: what `load_images` returned for `signature`.
        signature: str, one of `SIGNATURES`.
        model_version: int or None (the newest version).

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest` whose one input is uint8
        [batch, H, W, 3] (serving_default) or string [batch] (predict_image_bytes).
    """
    from tensorflow_serving.apis import predict_pb2

    name, dtype = SIGNATURES[signature]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if model_version is not None:
        # SetInParent first: version 0 is a valid version, and the default value.
        request.model_spec.version.SetInParent()
        request.model_spec.version.value = model_version
    if dtype == tf.string:
        tensor = tf.make_tensor_proto(list(batch), dtype=tf.string, shape=[len(batch)])
    else:
        tensor = tf.make_tensor_proto(np.asarray(batch, np.uint8), dtype=tf.uint8)
    request.inputs[name].CopyFrom(tensor)
    return request


def send_rest(url, body, timeout=10.0):
    """POSTs `body` as JSON to `url` and returns the decoded JSON answer.

    Args:
        url: str, from `rest_request`.
        body: dict, from `rest_request`.
        timeout: float, seconds to wait for the server.

    Raises:
        ConnectionError: nothing answered at `url` in time.
        ValueError: the server answered with an error, or not with JSON.
    """
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        raise ValueError(f"The model server at {url} answered HTTP {e.code}: "
                         f"{detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(f"Could not reach {url} ({reason}). {_SERVER_HINT}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"The answer from {url} is not JSON: {text[:200]!r}") from None


def send_grpc(address, request, timeout=10.0):
    """Sends `request` to the PredictionService at `address` and returns its answer.

    Args:
        address: str, "host:port" of the model server's gRPC port.
        request: a `PredictRequest`, from `grpc_request`.
        timeout: float, seconds to wait for the answer.

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictResponse`.

    Raises:
        ConnectionError: nothing answered at `address` in time.
        ValueError: the server refused the request (unknown model, bad input, ...).
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.Predict(request, timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(f"Could not reach the gRPC server at {address} "
                                      f"({e.code().name}: {e.details()}). "
                                      f"{_SERVER_HINT}") from None
            raise ValueError(f"The model server at {address} refused the request: "
                             f"{e.code().name}: {e.details()}") from None


def parse_rest_response(response, batch_size=None):
    """The predictions of a REST answer in the row format (`{"predictions": [...]}`).

    Args:
        response: dict, the decoded JSON answer.
        batch_size: int or None; when given, the number of rows the answer must have.

    Returns:
        `Predictions`.

    Raises:
        ValueError: the answer is an error or lacks the contract's outputs.
    """
    if "error" in response:
        raise ValueError(f"The model server answered an error: {response['error']}")
    rows = response.get("predictions")
    if not isinstance(rows, list) or not all(
            isinstance(row, dict) and all(output in row for output in OUTPUTS) for row in rows):
        raise ValueError(f"The answer lacks 'predictions' rows with the outputs {OUTPUTS}: "
                         f"{json.dumps(response)[:200]}")
    predictions = Predictions(
        classes=np.array([row["classes"] for row in rows], np.int64),
        probabilities=np.array([row["probabilities"] for row in rows], np.float32))
    return _checked(predictions, batch_size)


def parse_grpc_response(response, batch_size=None):
    """The predictions of a gRPC `PredictResponse`.

    Args:
        response: a `PredictResponse`.
        batch_size: int or None; when given, the batch size the answer must have.

    Returns:
        `Predictions`.

    Raises:
        ValueError: the answer lacks the contract's outputs.
    """
    missing = [output for output in OUTPUTS if output not in response.outputs]
    if missing:
        raise ValueError(f"The answer lacks the outputs {missing}; it has "
                         f"{sorted(response.outputs)}.")
    predictions = Predictions(
        classes=tf.make_ndarray(response.outputs["classes"]).astype(np.int64),
        probabilities=tf.make_ndarray(response.outputs["probabilities"]).astype(np.float32))
    return _checked(predictions, batch_size)


def _checked(predictions, batch_size):
    classes, probabilities = predictions
    if classes.ndim != 2 or probabilities.ndim != 2 or len(classes) != len(probabilities):
        raise ValueError(f"The answer's classes {classes.shape} and probabilities "
                         f"{probabilities.shape} are not [batch, k] and [batch, num_classes].")
    if batch_size is not None and len(classes) != batch_size:
        raise ValueError(f"The answer has {len(classes)} rows for {batch_size} images.")
    if classes.size and not 0 <= classes.min() <= classes.max() < probabilities.shape[1]:
        raise ValueError(f"The answer's classes fall outside [0, {probabilities.shape[1]}), "
                         f"the range of its probabilities.")
    return predictions


def format_predictions(paths, predictions):
    """One line per image: its path, then each top class with its probability, best first.

    Args:
        paths: list of str, the images in batch order.
        predictions: `Predictions`.

    Returns:
        str, e.g. "cat.png: 3 (0.8123), 5 (0.1002), 2 (0.0311)".
    """
    lines = []
    for path, classes, probabilities in zip(paths, *predictions):
        tops = ", ".join(f"{c} ({probabilities[c]:.4f})" for c in classes)
        lines.append(f"{path}: {tops}")
    return "\n".join(lines)


def format_grpc_request(request, address):
    """`request` in protobuf text format, tensor contents longer than 48 bytes cut.

    Args:
        request: a `PredictRequest`.
        address: str, where it would go.

    Returns:
        str, parsable by `google.protobuf.text_format.Parse` (shapes stay the real ones).
    """
    shown = type(request)()
    shown.CopyFrom(request)
    for tensor in shown.inputs.values():
        tensor.tensor_content = tensor.tensor_content[:_DRY_RUN_BYTES]
        for i, value in enumerate(tensor.string_val):
            tensor.string_val[i] = value[:_DRY_RUN_BYTES]
    return (f"# PredictionService.Predict at {address}; tensor contents cut to their first "
            f"{_DRY_RUN_BYTES} bytes.\n" + text_format.MessageToString(shown))


def predict(model_name, paths, *, protocol="rest", signature="serving_default", server="localhost",
        rest_port=8501, grpc_port=8500, model_version=None, image_size=None, saved_model=None,
        timeout=10.0, dry_run=False):
    """Reads the images, builds the request, and sends it or (dry run) prints it.

    Args:
        model_name: str, the model's name on the server.
        paths: list of str, image files.
        protocol: "rest" or "grpc".
        signature: one of `SIGNATURES`.
        server: str, host name or address of the model server.
        rest_port: int, its REST port.
        grpc_port: int, its gRPC port.
        model_version: int or None (the newest version).
        image_size: (H, W) or None; serving_default needs it or `saved_model`.
        saved_model: str or None, a version directory of the export: gives H and W and is
            checked against `signature`.
        timeout: float, seconds to wait for the server.
        dry_run: bool, print the request instead of sending it.

    Returns:
        `Predictions` (also printed, one line per image), or None for a dry run.

    Raises:
        ValueError, FileNotFoundError, ConnectionError: the message says what to fix.
    """
    if not model_name:
        raise ValueError("Flag --model_name is required: the name the model server serves "
                         "the model under (its --model_name).")
    if protocol not in PROTOCOLS:
        raise ValueError(f"Invalid value for flag --protocol: expected one of "
                         f"{', '.join(PROTOCOLS)}. Received: protocol={protocol}")
    if signature not in SIGNATURES:
        raise ValueError(f"Invalid value for flag --signature: expected one of "
                         f"{', '.join(SIGNATURES)}. Received: signature={signature}")
    if not timeout > 0:
        raise ValueError(f"Invalid value for flag --timeout: expected seconds > 0. "
                         f"Received: timeout={timeout}")
    if not paths:
        raise ValueError("Flag --images is required: a comma-separated list of image files.")
    input_spec = signature_input_spec(saved_model, signature) if saved_model else None
    if signature == "serving_default":
        image_size = serving_image_size(image_size, input_spec)
    batch = load_images(paths, signature, image_size)

    if protocol == "rest":
        url, body = rest_request(model_name, batch, signature, server=server, port=rest_port,
                                 model_version=model_version)
        if dry_run:
            print(f"POST {url}")
            print(json.dumps(body))
            return None
        predictions = parse_rest_response(send_rest(url, body, timeout), len(paths))
    else:
        address = f"{_host(server)}:{grpc_port}"
        request = grpc_request(model_name, batch, signature, model_version=model_version)
        if dry_run:
            print(format_grpc_request(request, address), end="")
            return None
        predictions = parse_grpc_response(send_grpc(address, request, timeout), len(paths))
    print(format_predictions(paths, predictions))
    return predictions


def main(argv):
    if len(argv) > 1:
        sys.exit(f"Error: unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    try:
        predict(FLAGS.model_name, FLAGS.images, protocol=FLAGS.protocol, signature=FLAGS.signature,
            server=FLAGS.server, rest_port=FLAGS.rest_port, grpc_port=FLAGS.grpc_port,
            model_version=FLAGS.model_version,
            image_size=parse_image_size(FLAGS.image_size) if FLAGS.image_size else None,
            saved_model=FLAGS.saved_model, timeout=FLAGS.timeout, dry_run=FLAGS.dry_run)
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        sys.exit(f"Error: {e}")


def _define_flags():
    """The CLI's flags, defined only when it runs, so importing this module defines none."""
    flags.DEFINE_string("model_name", None,
                        "Name the model server serves the model under (its --model_name).")
    flags.DEFINE_list("images", [],
                      "Comma-separated image files, sent as one batch: JPEG, PNG, GIF or "
                      "BMP.")
    flags.DEFINE_enum("protocol", "rest", list(PROTOCOLS),
                      "rest: JSON over HTTP to --rest_port; grpc: PredictionService.Predict "
                      "on --grpc_port (needs tensorflow-serving-api).")
    flags.DEFINE_enum("signature", "serving_default", list(SIGNATURES),
                      "serving_default: decode and resize here, send uint8 pixels; "
                      "predict_image_bytes: send the files as they are (the server "
                      "decodes and resizes).")
    flags.DEFINE_string("server", "localhost",
                        "Host name or address of the model server, without scheme or port.")
    flags.DEFINE_integer("rest_port", 8501, "The server's REST port (--protocol=rest).",
                         lower_bound=1, upper_bound=65535)
    flags.DEFINE_integer("grpc_port", 8500, "The server's gRPC port (--protocol=grpc).",
                         lower_bound=1, upper_bound=65535)
    flags.DEFINE_integer("model_version", None,
                         "Version to ask for; default: the newest the server has loaded.",
                         lower_bound=0)
    flags.DEFINE_string("image_size", None,
                        "HxW (or N for NxN) the serving_default signature takes, e.g. 32x32; "
                        "default: read from --saved_model.")
    flags.DEFINE_string("saved_model", None,
                        "A version directory of the export (holding saved_model.pb): gives the "
                        "image size and is checked to have --signature with the input this "
                        "client sends.")
    flags.DEFINE_float("timeout", 10.0, "Seconds to wait for the server's answer.")
    flags.DEFINE_bool("dry_run", False,
                      "Print the request instead of sending it: REST, the URL and the whole "
                      "JSON body; gRPC, the PredictRequest in text format, long tensor "
                      "contents cut.")


def run():
    """The `python -m ssc_tf.serving_client` and `ssc-serving-client` command line."""
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
