import os
import shutil

import pytest

# Quiet TensorFlow's C++ start-up logs in test output; must be set before TF is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On a GPU host, for this process and the TensorFlow subprocesses the tests start (which
# inherit os.environ): each takes GPU memory as it needs it, rather than all of every GPU, so
# that two of them can run at once; and float32 products and convolutions keep float32's
# precision, which the tests' tolerances assume, rather than TensorFloat-32's 10-bit mantissa
# (on by default on Ampere and later): NVIDIA's cuBLAS and cuDNN read NVIDIA_TF32_OVERRIDE,
# TensorFlow's own kernels the setting below.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import tensorflow as tf  # noqa: E402  (after the environment it reads)

tf.config.experimental.enable_tensor_float_32_execution(False)

# tfmot's tests need Keras 2, which TF_USE_LEGACY_KERAS=1 selects before TensorFlow starts:
# they run in a pytest process of their own (`make test-slow`), never in this Keras 3 one.
if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    collect_ignore = ["tfmot"]


@pytest.fixture(scope="session", autouse=True)
def _tuning_cache(tmp_path_factory):
    """Times that `ssc_tf.tuning.tune` measures go to a cache of the test session's
    ($XDG_CACHE_HOME, which the CLIs the tests start inherit), never the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The run every test that reads a trained model shares (run_testing.py holds its settings):
    `run_testing.TrainedRun(model_dir, config, model)`, `model` the Keras model it ended with.
    Read it only; a test that writes into a run directory takes `run_copy`."""
    import run_testing
    from ssc_tf import train

    model_dir = str(tmp_path_factory.mktemp("trained_run") / "run")
    config = run_testing.config()
    model = train.train(config, model_dir=model_dir,
                        steps_per_epoch=run_testing.STEPS_PER_EPOCH, verbose=0)
    return run_testing.TrainedRun(model_dir, config, model)


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of `trained_run`'s directory (a pathlib.Path) for a test to change."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run.model_dir, copy)
    return copy
