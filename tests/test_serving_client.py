"""Tests of ssc_tf.serving_client against a small SavedModel of the serving contract: the
requests it builds, fed to that SavedModel, give what the original images give; answers parse;
the CLI prints requests, and fails with one clear line on bad input or no server."""

import base64
import concurrent.futures
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ssc_tf import serving_client

# Importing defines no flags: the module defines them only when run as a command.

H, W, NUM_CLASSES, K = 8, 8, 10, 3


class _Contract(tf.Module):
    """The serving contract around a fixed computation: softmax of a linear map of the mean
    pixel per channel."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.constant(rng.normal(0.0, 20.0, (3, NUM_CLASSES)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, H, W, 3], tf.uint8)])
    def serve(self, images):
        means = tf.reduce_mean(tf.cast(images, tf.float32) / 255.0, axis=[1, 2])
        probabilities = tf.nn.softmax(means @ self.kernel)
        classes = tf.cast(tf.math.top_k(probabilities, K).indices, tf.int64)
        return {"probabilities": probabilities, "classes": classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_bytes(self, image_bytes):
        def decode(contents):
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
            image = tf.image.resize(image, [H, W], method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

        images = tf.map_fn(decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([H, W, 3], tf.uint8))
        return self.serve(images)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An export with version 1 (both signatures) and version 2 (serving_default only)."""
    root = tmp_path_factory.mktemp("export")
    module = _Contract()
    tf.saved_model.save(module, str(root / "1"), signatures={
        "serving_default": module.serve, "predict_image_bytes": module.serve_bytes})
    tf.saved_model.save(module, str(root / "2"), signatures={"serving_default": module.serve})
    return root


@pytest.fixture(scope="module")
def signatures(export_dir):
    return tf.saved_model.load(str(export_dir / "1")).signatures


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """{name: (path, pixels)}: two 8x8 PNGs, an 8x8 JPEG (pixels: decoded) and a 12x20 PNG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    found = {}
    for name, color, shape in [("red.png", (200, 30, 30), (H, W)),
                               ("blue.png", (20, 40, 220), (H, W)),
                               ("green.jpg", (30, 190, 60), (H, W)),
                               ("wide.png", (120, 120, 20), (12, 20))]:
        pixels = np.clip(np.array(color) + rng.integers(-30, 30, (*shape, 3)), 0, 255)
        pixels = pixels.astype(np.uint8)
        encode = tf.io.encode_jpeg if name.endswith(".jpg") else tf.io.encode_png
        contents = encode(pixels).numpy()
        (root / name).write_bytes(contents)
        found[name] = (str(root / name), tf.io.decode_image(contents, channels=3).numpy())
    (root / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    found["notes.png"] = (str(root / "notes.png"), None)
    return found


def _outputs(signature, **inputs):
    return {name: value.numpy() for name, value in signature(**inputs).items()}


def _assert_outputs_equal(found, expected):
    np.testing.assert_array_equal(found["probabilities"], expected["probabilities"])
    np.testing.assert_array_equal(found["classes"], expected["classes"])


def _closed_port():
    """A local port nothing listens on: reserved, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_importing_defines_no_flags():
    assert "model_name" not in flags.FLAGS and "images" not in flags.FLAGS


def test_parse_image_size():
    assert serving_client.parse_image_size("32x24") == (32, 24)
    assert serving_client.parse_image_size("16") == (16, 16)
    for bad in ("32x", "0x8", "axb", "1x2x3"):
        with pytest.raises(ValueError, match="--image_size"):
            serving_client.parse_image_size(bad)


def test_rest_url_with_and_without_version():
    batch = [b"\x89PNG"]
    url, _ = serving_client.rest_request("ssc", batch, "predict_image_bytes")
    assert url == "http://localhost:8501/v1/models/ssc:predict"
    url, _ = serving_client.rest_request("ssc", batch, "predict_image_bytes",
                                         server="10.0.0.5", port=9001, model_version=3)
    assert url == "http://10.0.0.5:9001/v1/models/ssc/versions/3:predict"
    url, _ = serving_client.rest_request("ssc", batch, "predict_image_bytes", server="::1")
    assert url == "http://[::1]:8501/v1/models/ssc:predict"
    with pytest.raises(ValueError, match="--server"):
        serving_client.rest_request("ssc", batch, "predict_image_bytes", server="host:8501")


def test_rest_pixel_instances_give_the_outputs_of_the_original_images(images, signatures):
    names = ["red.png", "green.jpg", "blue.png"]
    batch = serving_client.load_images([images[n][0] for n in names], "serving_default", (H, W))
    url, body = serving_client.rest_request("ssc", batch, "serving_default")
    body = json.loads(json.dumps(body))
    assert body["signature_name"] == "serving_default"
    sent = np.array(body["instances"], np.uint8)
    original = np.stack([images[n][1] for n in names])
    np.testing.assert_array_equal(sent, original)
    # The signature takes the instances as sent (equal to the images, so answering as for them).
    served = _outputs(signatures["serving_default"], images=tf.constant(sent))
    assert served["probabilities"].shape == (3, NUM_CLASSES)
    assert served["classes"].shape == (3, K)
    # Three colors, three different answers: the test would notice instances swapped.
    assert len({tuple(row) for row in served["classes"]}) == 3


def test_rest_b64_instances_give_the_outputs_of_the_files(images, signatures):
    names = ["red.png", "green.jpg", "wide.png"]
    batch = serving_client.load_images([images[n][0] for n in names], "predict_image_bytes")
    files = [open(images[n][0], "rb").read() for n in names]
    assert batch == files
    _, body = serving_client.rest_request("ssc", batch, "predict_image_bytes")
    body = json.loads(json.dumps(body))
    assert body["signature_name"] == "predict_image_bytes"
    sent = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
    assert sent == files
    # The signature takes the bytes as sent, the wide image resized.
    served = _outputs(signatures["predict_image_bytes"], image_bytes=tf.constant(sent))
    assert served["classes"].shape == (3, K)


@pytest.mark.parametrize("signature_name", ["serving_default", "predict_image_bytes"])
def test_grpc_request_gives_the_outputs_of_the_original_images(images, signatures,
                                                               signature_name):
    names = ["blue.png", "green.jpg"]
    paths = [images[n][0] for n in names]
    batch = serving_client.load_images(paths, signature_name, (H, W))
    request = serving_client.grpc_request("ssc", batch, signature_name, model_version=7)
    assert request.model_spec.name == "ssc"
    assert request.model_spec.signature_name == signature_name
    assert request.model_spec.HasField("version") and request.model_spec.version.value == 7
    signature = signatures[signature_name]
    (spec,) = signature.structured_input_signature[1].values()
    assert list(request.inputs) == [spec.name]
    sent = tf.make_ndarray(request.inputs[spec.name])
    assert tf.as_dtype(request.inputs[spec.name].dtype) == spec.dtype
    assert spec.shape.is_compatible_with(sent.shape)
    if signature_name == "serving_default":
        original = np.stack([images[n][1] for n in names])
        np.testing.assert_array_equal(sent, original)
    else:
        original = [open(p, "rb").read() for p in paths]
        assert list(sent) == original
    # The signature takes the tensor as sent.
    assert _outputs(signature, **{spec.name: tf.constant(sent)})["classes"].shape == (2, K)
    without_version = serving_client.grpc_request("ssc", batch, signature_name)
    assert not without_version.model_spec.HasField("version")
    with_version_0 = serving_client.grpc_request("ssc", batch, signature_name, model_version=0)
    assert with_version_0.model_spec.HasField("version")


def test_parse_rest_response():
    response = {"predictions": [
        {"probabilities": [0.1, 0.7, 0.2], "classes": [1, 2]},
        {"probabilities": [0.5, 0.25, 0.25], "classes": [0, 1]},
    ]}
    predictions = serving_client.parse_rest_response(response, batch_size=2)
    np.testing.assert_array_equal(predictions.classes, [[1, 2], [0, 1]])
    assert predictions.classes.dtype == np.int64
    np.testing.assert_allclose(predictions.probabilities, [[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    assert serving_client.format_predictions(["a.png", "b.jpg"], predictions) == (
        "a.png: 1 (0.7000), 2 (0.2000)\nb.jpg: 0 (0.5000), 1 (0.2500)")
    with pytest.raises(ValueError, match="3 images"):
        serving_client.parse_rest_response(response, batch_size=3)
    with pytest.raises(ValueError, match="Servable not found"):
        serving_client.parse_rest_response({"error": "Servable not found"})
    with pytest.raises(ValueError, match="predictions"):
        serving_client.parse_rest_response({"outputs": {}})


def test_parse_grpc_response():
    from tensorflow_serving.apis import predict_pb2

    probabilities = np.array([[0.05, 0.15, 0.8], [0.6, 0.3, 0.1]], np.float32)
    classes = np.array([[2, 1], [0, 1]], np.int64)
    response = predict_pb2.PredictResponse()
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
    response.outputs["classes"].CopyFrom(tf.make_tensor_proto(classes))
    predictions = serving_client.parse_grpc_response(response, batch_size=2)
    np.testing.assert_array_equal(predictions.classes, classes)
    np.testing.assert_array_equal(predictions.probabilities, probabilities)
    assert serving_client.format_predictions(["a.png", "b.png"], predictions) == (
        "a.png: 2 (0.8000), 1 (0.1500)\nb.png: 0 (0.6000), 1 (0.3000)")
    del response.outputs["classes"]
    with pytest.raises(ValueError, match="classes"):
        serving_client.parse_grpc_response(response)


def test_serving_default_resizes_other_sizes(images, capsys):
    path, pixels = images["wide.png"]
    batch = serving_client.load_images([path, images["red.png"][0]], "serving_default", (H, W))
    assert batch.shape == (2, H, W, 3) and batch.dtype == np.uint8
    expected = tf.image.resize(pixels, [H, W], method="bilinear", antialias=True).numpy()
    np.testing.assert_array_equal(batch[0], np.clip(np.round(expected), 0, 255))
    np.testing.assert_array_equal(batch[1], images["red.png"][1])
    stderr = capsys.readouterr().err
    assert f"{path}: resized from 12x20 to 8x8" in stderr
    assert "red.png" not in stderr


def test_serving_default_pads_a_datasets_stored_size(tmp_path, capsys):
    # A 28x28 grey file for a 32x32 model is a Fashion-MNIST image as stored: padded with
    # black on every side, as its reader padded it in training, never stretched.
    pixels = np.random.default_rng(2).integers(1, 256, (28, 28, 1)).astype(np.uint8)
    path = tmp_path / "shirt.png"
    path.write_bytes(tf.io.encode_png(pixels).numpy())
    batch = serving_client.load_images([str(path)], "serving_default", (32, 32))
    assert batch.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(batch[0, 2:30, 2:30], np.repeat(pixels, 3, axis=-1))
    assert batch.sum() == 3 * pixels.astype(np.int64).sum()
    assert (f"{path}: padded from 28x28 to 32x32, as the fashion_mnist pipeline pads"
            in capsys.readouterr().err)
    # The same file for another input size is resized.
    assert serving_client.load_images([str(path)], "serving_default", (8, 8)).shape == (1, 8, 8, 3)
    assert "resized from 28x28 to 8x8" in capsys.readouterr().err


def test_load_images_errors(images, tmp_path):
    with pytest.raises(FileNotFoundError, match="--images.*missing.png"):
        serving_client.load_images([str(tmp_path / "missing.png")], "serving_default", (H, W))
    with pytest.raises(ValueError, match="--images.*notes.png.*decode"):
        serving_client.load_images([images["notes.png"][0]], "serving_default", (H, W))
    with pytest.raises(ValueError, match="--images.*notes.png.*decode"):
        serving_client.load_images([images["notes.png"][0]], "predict_image_bytes")
    with pytest.raises(ValueError, match="--image_size"):
        serving_client.load_images([images["red.png"][0]], "serving_default")
    with pytest.raises(ValueError, match="--images is required"):
        serving_client.load_images([], "serving_default", (H, W))


def test_signature_input_spec_reads_the_saved_model(export_dir):
    spec = serving_client.signature_input_spec(str(export_dir / "1"), "serving_default")
    assert spec == tf.TensorSpec([None, H, W, 3], tf.uint8, name="images")
    assert serving_client.serving_image_size(None, spec) == (H, W)
    assert serving_client.serving_image_size((H, W), spec) == (H, W)
    with pytest.raises(ValueError, match="--image_size=4x4 differs"):
        serving_client.serving_image_size((4, 4), spec)
    with pytest.raises(ValueError, match="--image_size.*--saved_model"):
        serving_client.serving_image_size(None, None)
    spec = serving_client.signature_input_spec(str(export_dir / "1"), "predict_image_bytes")
    assert spec == tf.TensorSpec([None], tf.string, name="image_bytes")
    with pytest.raises(ValueError, match="--signature.*predict_image_bytes.*serving_default"):
        serving_client.signature_input_spec(str(export_dir / "2"), "predict_image_bytes")
    with pytest.raises(FileNotFoundError, match=r"--saved_model.*versions 1, 2.*/2"):
        serving_client.signature_input_spec(str(export_dir), "serving_default")


class _FakeRestServer(http.server.ThreadingHTTPServer):
    """Answers TF-Serving's REST predict by running the SavedModel's signature."""

    def __init__(self, signatures):
        self.signatures = signatures
        self.requests = []
        super().__init__(("127.0.0.1", 0), _FakeRestHandler)


class _FakeRestHandler(http.server.BaseHTTPRequestHandler):

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if not re.fullmatch(r"/v1/models/ssc(/versions/\d+)?:predict", self.path):
            return self._answer(404, {"error": "Servable not found for request"})
        signature = self.server.signatures[body["signature_name"]]
        instances = body["instances"]
        if body["signature_name"] == "predict_image_bytes":
            inputs = {"image_bytes": tf.constant([base64.b64decode(i["b64"]) for i in instances])}
        else:
            inputs = {"images": tf.constant(np.array(instances, np.uint8))}
        outputs = _outputs(signature, **inputs)
        rows = [{name: value[i].tolist() for name, value in outputs.items()}
                for i in range(len(instances))]
        self._answer(200, {"predictions": rows})

    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def rest_server(signatures):
    server = _FakeRestServer(signatures)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("signature_name", ["serving_default", "predict_image_bytes"])
def test_run_over_rest_prints_what_the_model_answers(images, signatures, rest_server,
                                                     signature_name, capsys):
    paths = [images["red.png"][0], images["wide.png"][0]]
    predictions = serving_client.predict(
        "ssc", paths, signature=signature_name, server="127.0.0.1",
        rest_port=rest_server.server_port, model_version=1, image_size=(H, W))
    assert rest_server.requests[0][0] == "/v1/models/ssc/versions/1:predict"
    files = [open(p, "rb").read() for p in paths]
    expected = _outputs(signatures["predict_image_bytes"], image_bytes=tf.constant(files))
    np.testing.assert_allclose(predictions.probabilities, expected["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(predictions.classes, expected["classes"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == paths
    top = [int(c) for c in re.findall(r" (\d+) \(", lines[1])]
    assert top == expected["classes"][1].tolist()


def test_run_over_rest_reports_the_servers_error(images, rest_server):
    with pytest.raises(ValueError, match="HTTP 404: Servable not found"):
        serving_client.predict("other", [images["red.png"][0]], server="127.0.0.1",
                           rest_port=rest_server.server_port, image_size=(H, W))


def test_run_over_grpc_prints_what_the_model_answers(images, signatures, capsys):
    import grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):

        def Predict(self, request, context):
            signature = signatures[request.model_spec.signature_name]
            inputs = {name: tf.constant(tf.make_ndarray(tensor))
                      for name, tensor in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for name, value in _outputs(signature, **inputs).items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        paths = [images["blue.png"][0], images["green.jpg"][0]]
        predictions = serving_client.predict("ssc", paths, protocol="grpc",
                                         signature="predict_image_bytes", server="127.0.0.1",
                                         grpc_port=port)
    finally:
        server.stop(None)
    files = [open(p, "rb").read() for p in paths]
    expected = _outputs(signatures["predict_image_bytes"], image_bytes=tf.constant(files))
    _assert_outputs_equal(predictions._asdict(), expected)
    assert capsys.readouterr().out.startswith(f"{paths[0]}: {expected['classes'][0][0]} (")


def test_send_grpc_to_a_closed_port_raises_connection_error(images):
    request = serving_client.grpc_request("ssc", [b"\x89PNG"], "predict_image_bytes")
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionError, match=f"{address}.*model server must be running"):
        serving_client.send_grpc(address, request, timeout=2.0)


@pytest.fixture(scope="module")
def cli(export_dir, images):
    """{case: CompletedProcess} of the CLI runs, started together: each imports TensorFlow."""
    version_1 = str(export_dir / "1")
    red, blue = images["red.png"][0], images["blue.png"][0]
    cases = {
        "rest_dry_run": ["--model_name=ssc", f"--images={red},{blue}", f"--saved_model={version_1}",
                         "--model_version=1", "--dry_run"],
        "grpc_dry_run": ["--model_name=ssc", f"--images={red}", "--protocol=grpc",
                         "--signature=predict_image_bytes", f"--saved_model={version_1}",
                         "--dry_run"],
        "missing_image": ["--model_name=ssc", f"--images={red},{red}.missing", "--image_size=8x8",
                          "--dry_run"],
        "no_image_size": ["--model_name=ssc", f"--images={red}", "--dry_run"],
        "missing_signature": ["--model_name=ssc", f"--images={red}",
                              "--signature=predict_image_bytes",
                              f"--saved_model={export_dir / '2'}", "--dry_run"],
        "closed_port": ["--model_name=ssc", f"--images={red}", "--image_size=8x8",
                        "--server=127.0.0.1", f"--rest_port={_closed_port()}", "--timeout=2"],
    }
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "ssc_tf.serving_client"]
    processes = {case: subprocess.Popen([*command, *args], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
                 for case, args in cases.items()}
    results = {}
    for case, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[case] = subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                    stderr)
    return results


def test_cli_rest_dry_run_prints_the_url_and_a_complete_body(cli, images, signatures):
    result = cli["rest_dry_run"]
    assert result.returncode == 0, result.stderr
    url_line, body_line = result.stdout.splitlines()
    assert url_line == "POST http://localhost:8501/v1/models/ssc/versions/1:predict"
    body = json.loads(body_line)
    assert body["signature_name"] == "serving_default"
    sent = np.array(body["instances"], np.uint8)
    np.testing.assert_array_equal(sent, np.stack([images["red.png"][1], images["blue.png"][1]]))


def test_cli_grpc_dry_run_prints_a_parsable_request(cli):
    from google.protobuf import text_format
    from tensorflow_serving.apis import predict_pb2

    result = cli["grpc_dry_run"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# PredictionService.Predict at localhost:8500")
    request = text_format.Parse(result.stdout, predict_pb2.PredictRequest())
    assert request.model_spec.name == "ssc"
    assert request.model_spec.signature_name == "predict_image_bytes"
    assert not request.model_spec.HasField("version")
    tensor = request.inputs["image_bytes"]
    assert tf.as_dtype(tensor.dtype) == tf.string
    assert [d.size for d in tensor.tensor_shape.dim] == [1]
    assert tensor.string_val[0].startswith(b"\x89PNG")


@pytest.mark.parametrize("case, message", [
    ("missing_image",
     r"^Error: Flag --images names a file that does not exist: .*red.png.missing$"),
    ("no_image_size", r"^Error: .*--image_size=HxW.*--saved_model=DIR"),
    ("missing_signature", r"^Error: Invalid value for flag --signature: .*has no signature "
                          r"'predict_image_bytes'; it has serving_default"),
    ("closed_port", r"^Error: Could not reach http://127.0.0.1:\d+/v1/models/ssc:predict .*"
                    r"model server must be running there; README.md has the docker line"),
])
def test_cli_errors_are_one_line_naming_the_flag(cli, case, message):
    result = cli[case]
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(message, last), result.stderr
