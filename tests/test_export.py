"""SavedModel export for TF-Serving: signatures, versions, models.config, TF's own tools."""

import base64
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from ssc_tf import data
from ssc_tf import execution_plan
from ssc_tf import export
from ssc_tf import layers
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import models
from ssc_tf import serving
from ssc_tf import serving_client
from ssc_tf import serving_plan
from ssc_tf import tuning

import run_testing

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _untrained_run(model_dir, config):
    """A model_dir as training writes it, holding freshly initialized weights."""
    model_dir_lib.write_run(model_dir, config, None)
    keras.utils.set_random_seed(config.seed)
    model = models.build(config.model, **config.model_kwargs())
    epoch = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, epoch=epoch)
    model_dir_lib.checkpoint_manager(
        checkpoint, os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR)).save()
    return model_dir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The shared trained run (conftest.py) exported once, as version 1 of
    serving/digits_ssc."""
    model_dir, _, _ = trained_run
    serving_dir = tmp_path_factory.mktemp("serving")
    result = export.export(model_dir, str(serving_dir / "digits_ssc"), top_k=3, guard=False)
    return serving_dir, result


@pytest.fixture(scope="module")
def test_pixels():
    """16 digits test images as uint8 pixels, and their labels."""
    images, labels = next(iter(data.load("digits", "test", batch_size=16, normalized=False)))
    return images.numpy().astype(np.uint8), labels.numpy()


def _keras_probabilities(model, pixels):
    return tf.nn.softmax(model(data.normalize(pixels, "digits"), training=False)).numpy()


def test_export_writes_a_version_the_model_server_config_and_the_run_info(trained_run,
                                                                          exported):
    from tensorflow_serving.config import model_server_config_pb2

    model_dir, config, _ = trained_run
    serving_dir, result = exported
    assert result["version"] == 1 and result["name"] == "digits_ssc"
    assert result["path"] == str(serving_dir / "digits_ssc" / "1")
    assert os.path.exists(os.path.join(result["path"], "saved_model.pb"))
    assert export.versions(str(serving_dir / "digits_ssc")) == [1]
    assert not [name for name in os.listdir(serving_dir / "digits_ssc") if name.startswith(".")]
    info = export.read_export_info(result["path"])
    assert info["config"] == json.loads(json.dumps(config.__dict__))
    assert info["epoch"] == config.epochs and info["top_k"] == 3
    # Planned, by default, for the runtime of the process that exports.
    assert info["runtime"] == result["runtime"] == layers.current_runtime()
    assert info["model_dir"] == os.path.abspath(model_dir)

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((serving_dir / "models.config").read_text(), config)
    entries = [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]
    assert entries == [("digits_ssc", "/models/digits_ssc", "tensorflow")]


def test_serving_signatures_equal_the_keras_model(trained_run, exported, test_pixels):
    model = trained_run.model
    _, result = exported
    pixels, _ = test_pixels
    expected = _keras_probabilities(model, pixels)
    loaded = tf.saved_model.load(result["path"])
    assert set(loaded.signatures) == {"serving_default", "predict_image_bytes"}

    outputs = loaded.signatures["serving_default"](images=tf.constant(pixels))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(
        outputs["classes"].numpy(), np.argsort(-expected, axis=1, kind="stable")[:, :3])
    assert outputs["classes"].dtype == tf.int64

    pngs = tf.stack([tf.io.encode_png(image) for image in pixels])
    from_bytes = loaded.signatures["predict_image_bytes"](image_bytes=pngs)
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(from_bytes["classes"].numpy(), outputs["classes"].numpy())


def test_bytes_of_another_size_are_resized_to_the_training_size(trained_run, test_pixels):
    model = trained_run.model
    pixels, _ = test_pixels
    large = tf.image.resize(pixels[:2], (48, 40), method="nearest")
    serving_model = serving.ServingModel(model, "digits", top_k=1)
    jpegs = tf.stack([tf.io.encode_jpeg(image, quality=95) for image in large])
    outputs = serving_model.predict_image_bytes(jpegs)
    decoded = tf.stack([tf.io.decode_jpeg(jpeg, channels=3) for jpeg in jpegs])
    resized = tf.image.resize(decoded, (32, 32), antialias=True)
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), _keras_probabilities(model, resized), atol=1e-5)


def test_imagenet_bytes_get_the_evaluation_resize_and_crop():
    inputs = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1000, kernel_initializer="glorot_uniform")(
        keras.layers.Concatenate()([pooled, keras.layers.Flatten()(
            keras.layers.AveragePooling2D(56)(inputs))])))
    serving_model = serving.ServingModel(model, "imagenet2012")
    image = tf.cast(tf.random.stateless_uniform((300, 400, 3), (1, 2), 0, 256, tf.int32),
                    tf.uint8)
    png = tf.io.encode_png(image)[None]
    outputs = serving_model.predict_image_bytes(png)
    expected = tf.nn.softmax(model(data.normalize(
        data.eval_resize(image, "imagenet2012")[None], "imagenet2012")))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected.numpy(), atol=1e-6)
    assert outputs["classes"].shape == (1, 5)


def test_saved_model_cli_lists_the_signatures_and_runs_a_stored_image(
        trained_run, exported, test_pixels, tmp_path):
    model = trained_run.model
    _, result = exported
    pixels, _ = test_pixels
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(cli + ["show", "--dir", result["path"], "--all"], env=_env(),
                           capture_output=True, text=True, check=True).stdout
    for expected in ("signature_def['serving_default']", "signature_def['predict_image_bytes']",
                     "inputs['images']", "dtype: DT_UINT8", "shape: (-1, 32, 32, 3)",
                     "inputs['image_bytes']", "dtype: DT_STRING",
                     "outputs['probabilities']", "outputs['classes']", "shape: (-1, 3)"):
        assert expected in shown

    np.save(tmp_path / "image.npy", pixels[:4])
    subprocess.run(
        cli + ["run", "--dir", result["path"], "--tag_set", "serve",
               "--signature_def", "serving_default",
               "--inputs", f"images={tmp_path / 'image.npy'}", "--outdir", str(tmp_path / "out")],
        env=_env(), capture_output=True, text=True, check=True)
    classes = np.load(tmp_path / "out" / "classes.npy")
    probabilities = np.load(tmp_path / "out" / "probabilities.npy")
    expected = _keras_probabilities(model, pixels[:4])
    np.testing.assert_array_equal(classes[:, 0], expected.argmax(axis=1))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_serving_client_requests_fit_the_exported_signatures(trained_run, exported,
                                                             test_pixels, tmp_path):
    model = trained_run.model
    _, result = exported
    pixels, _ = test_pixels
    expected = _keras_probabilities(model, pixels[:2])
    signatures = tf.saved_model.load(result["path"]).signatures
    paths = []
    for i, image in enumerate(pixels[:2]):
        paths.append(str(tmp_path / f"{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(image))

    for signature, name in (("serving_default", "images"), ("predict_image_bytes",
                                                            "image_bytes")):
        spec = serving_client.signature_input_spec(result["path"], signature)
        size = serving_client.serving_image_size(None, spec) if name == "images" else None
        batch = serving_client.load_images(paths, signature, size)
        request = serving_client.grpc_request("digits_ssc", batch, signature)
        outputs = signatures[signature](**{name: tf.make_ndarray(request.inputs[name])})
        np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    _, body = serving_client.rest_request("digits_ssc", batch, "predict_image_bytes")
    assert [instance["b64"] for instance in body["instances"]] == [
        base64.b64encode(pathlib.Path(path).read_bytes()).decode() for path in paths]

def test_next_version_and_the_same_network_retrained(trained_run, tmp_path):
    model_dir = trained_run.model_dir
    export_dir = str(tmp_path / "serving" / "digits_ssc")
    assert export.export(model_dir, export_dir, guard=False)["version"] == 1
    assert export.export(model_dir, export_dir, version=5, guard=False)["version"] == 5
    assert export.export(model_dir, export_dir, guard=False)["version"] == 6
    assert export.versions(export_dir) == [1, 5, 6]


def test_ssc_savedmodel_is_smaller_than_the_dense_twin_by_the_density(tmp_path):
    ssc = export.export(_untrained_run(str(tmp_path / "ssc"), run_testing.config()),
                        str(tmp_path / "serving" / "ssc"), guard=False)
    dense_config = run_testing.config(sparsity="dense", ticket=None)
    dense = export.export(_untrained_run(str(tmp_path / "dense"), dense_config),
                          str(tmp_path / "serving" / "dense"))
    assert dense["live_params"] == dense["dense_params"] == ssc["dense_params"]
    density = ssc["live_params"] / ssc["dense_params"]
    # Variables: 4 bytes a live weight, plus batch norm (4 x 2,464 channels), logits, stem.
    assert ssc["variables_bytes"] / dense["variables_bytes"] == pytest.approx(density, abs=0.02)
    assert ssc["variables_bytes"] < 4.3 * ssc["live_params"]
    # The whole SavedModel adds the graph: about 0.75 MB for ResNet-32 either way, and as
    # much again where the SSC model holds a small-batch graph of other forms.
    assert ssc["bytes"] < 0.4 * dense["bytes"]


def test_a_different_network_or_a_foreign_savedmodel_is_refused(trained_run, tmp_path):
    model_dir = trained_run.model_dir
    export_dir = tmp_path / "serving" / "digits_ssc"
    export.export(model_dir, str(export_dir), guard=False)
    other = _untrained_run(str(tmp_path / "other"), run_testing.config(p=(2, 4, 8)))
    with pytest.raises(ValueError, match=r"holds a different model.*--p: saved \(2, 4, 4\), "
                                         r"requested \(2, 4, 8\)"):
        export.export(other, str(export_dir))
    assert export.versions(str(export_dir)) == [1]

    foreign = tmp_path / "serving" / "foreign"
    (foreign / "3").mkdir(parents=True)
    with pytest.raises(ValueError, match="version 3, which ssc_tf.export did not write"):
        export.export(model_dir, str(foreign))
    assert sorted(os.listdir(foreign)) == ["3"]


def test_bad_arguments_write_nothing(trained_run, tmp_path):
    model_dir = trained_run.model_dir
    export_dir = tmp_path / "serving" / "digits_ssc"
    with pytest.raises(FileNotFoundError, match="holds no run.json"):
        export.export(str(tmp_path / "nothing"), str(export_dir))
    empty = str(tmp_path / "untrained")
    model_dir_lib.write_run(empty, run_testing.config(), None)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        export.export(empty, str(export_dir))
    with pytest.raises(ValueError, match=r"argument `top_k`: expected an integer in \[1, 10\]"):
        export.export(model_dir, str(export_dir), top_k=11)
    with pytest.raises(ValueError, match="argument `version`: expected an integer >= 1"):
        export.export(model_dir, str(export_dir), version=0)
    with pytest.raises(ValueError, match=r"^Invalid value for argument `runtime`: expected one of "
                                         r"\('cpu_onednn', 'cpu_eigen', 'gpu'\). Received: "
                                         r"runtime='tflite'$"):
        export.export(model_dir, str(export_dir), runtime="tflite")
    with pytest.raises(ValueError, match=r"argument `guard`: expected True or False"):
        export.export(model_dir, str(export_dir), guard="yes")
    assert not export_dir.exists()

    export.export(model_dir, str(export_dir), guard=False)
    before = sorted(p.name for p in (export_dir / "1").iterdir())
    with pytest.raises(ValueError, match=r"digits_ssc/1 exists and is never replaced.*next "
                                         r"free one, 2"):
        export.export(model_dir, str(export_dir), version=1)
    assert sorted(p.name for p in (export_dir / "1").iterdir()) == before


@pytest.mark.parametrize("runtime", execution_plan.TF_RUNTIMES)
def test_runtime_plans_every_ssc_layer_of_the_serving_graph_for_it(
        trained_run, tmp_path, monkeypatch, runtime):
    """Exported for another machine's runtime (a GPU server, a CPU without oneDNN), every SSC
    layer takes that runtime's forms, at a small and a large batch."""
    asked = []
    choose = execution_plan.choose

    def recorded(shape, runtime, regime, *args, **kwargs):
        asked.append((runtime, regime))
        return choose(shape, runtime, regime, *args, **kwargs)

    monkeypatch.setattr(execution_plan, "choose", recorded)
    model_dir, _, model = trained_run
    result = export.export(model_dir, str(tmp_path / "digits_ssc"), runtime=runtime,
                           guard=False)
    assert result["runtime"] == export.read_export_info(result["path"])["runtime"] == runtime
    assert asked and set(asked) == {(runtime, regime) for regime in serving_plan.REGIMES}
    assert execution_plan.runtime_override() is None
    loaded = tf.saved_model.load(result["path"])
    # 2 images run the small-batch graph, 9 the large-batch one.
    for batch in (2, 9):
        pixels = np.random.default_rng(batch).integers(0, 256, (batch, 32, 32, 3), np.uint8)
        np.testing.assert_allclose(
            loaded.signatures[serving.SERVING_DEFAULT](images=tf.constant(pixels))[
                "probabilities"], _keras_probabilities(model, pixels), atol=1e-5)


@pytest.mark.parametrize("fits, tune, runtime", [
    (False, True, None), (True, True, None), (False, False, None),
    (False, True, "other")], ids=["no_table", "table_fits", "notune", "other_runtime"])
def test_a_host_without_packaged_times_is_tuned_at_both_batches(
        trained_run, tmp_path, monkeypatch, fits, tune, runtime):
    here = layers.current_runtime()
    runtime = here if runtime is None else next(
        r for r in execution_plan.TF_RUNTIMES if r != here)
    model_dir, _, model = trained_run
    _, shapes = tuning.planned_layers(model)
    table = str(tmp_path / "tuned.json")
    # This machine's times, as `tuning.tune` would have measured them: the whole-layer
    # dense form fastest, which the package's table plans for none of these layers.
    model_dir_lib.write_json(table, {
        "shapes": {shape.key: shape.as_dict() for shape in shapes},
        here: {execution_plan.LARGE_BATCH: {
            shape.key: {"conv2d": 2.0, execution_plan.DENSE: 1.0} for shape in shapes}}})
    tuned, paths = [], []

    def fake_tune(shapes, runtime, regimes=None):
        tuned.append((runtime, regimes))
        return tuning.Tuning(table, runtime, [s.key for s in shapes], [], [], 2.0)

    choose = execution_plan.choose

    def recorded(shape, runtime, regime, path=execution_plan.COSTS_FILE, **kwargs):
        paths.append(path)
        return choose(shape, runtime, regime, path, **kwargs)

    monkeypatch.setattr(tuning, "fits_host", lambda runtime, path=None: fits)
    monkeypatch.setattr(tuning, "tune", fake_tune)
    monkeypatch.setattr(execution_plan, "choose", recorded)
    result = export.export(model_dir, str(tmp_path / "digits_ssc"), runtime=runtime,
                           tune=tune, guard=False)
    expected = not fits and tune and runtime == here
    assert tuned == ([(here, serving_plan.REGIMES)] if expected else [])
    # Both plans are made where it was tuned; without the guard to time them, the tuned one
    # (dense, by this machine's times) is served.
    assert paths and set(paths) == ({table, execution_plan.COSTS_FILE} if expected
                                    else {execution_plan.COSTS_FILE})
    large = set(result["forms"][execution_plan.LARGE_BATCH].values())
    assert (large == {execution_plan.DENSE}) is expected
    assert export.read_export_info(result["path"])["tuned"] is expected
    assert (result["tuning"] is not None) is expected
    assert execution_plan.costs_path() == execution_plan.COSTS_FILE


def test_a_models_config_written_by_hand_is_left_alone(trained_run, tmp_path):
    model_dir = trained_run.model_dir
    config = tmp_path / "serving" / "models.config"
    config.parent.mkdir()
    config.write_text("model_config_list {}\n")
    assert export.export(model_dir, str(tmp_path / "serving" / "a"),
                         guard=False)["models_config"] is None
    assert config.read_text() == "model_config_list {}\n"


@pytest.mark.slow
def test_cli_exports_and_reports_errors(trained_run, tmp_path):
    model_dir = trained_run.model_dir
    command = [sys.executable, "-m", "ssc_tf.export", f"--model_dir={model_dir}"]
    done = subprocess.run(command + [f"--export_dir={tmp_path / 'serving' / 'm'}", "--top_k=2"],
                          env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Wrote" in done.stdout and export.versions(str(tmp_path / "serving" / "m")) == [1]
    assert "ssc_tf_export" not in done.stderr  # no INFO logging of every saving step
    # Guarded by default, with this machine's timer: one line per batch it measured.
    guard = export.read_export_info(str(tmp_path / "serving" / "m" / "1"))["guard"]
    assert set(guard) == {*serving_plan.REGIMES, "switch"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("Guard at batch")]
    assert [line.split(":")[0] for line in lines] == ["Guard at batch 1", "Guard at batch 128"]
    for line, regime in zip(lines, serving_plan.REGIMES):
        assert ("dense twin" if "planned_ms" in (guard[regime] or {}) else
                "every SSC layer is planned dense") in line

    failed = subprocess.run(command + [f"--export_dir={tmp_path / 'serving' / 'm'}",
                                       "--version=1"],
                            env=_env(), capture_output=True, text=True)
    assert failed.returncode != 0
    assert "Error: Invalid value for flag --version" in failed.stderr
    assert "Traceback" not in failed.stderr
