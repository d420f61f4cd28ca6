"""tfmot's magnitude pruning is tested in a pytest process of its own, under tf_keras.

TensorFlow makes `tf.keras` tf_keras only if TF_USE_LEGACY_KERAS=1 is set before it is
imported, so this file sets it before any test module imports TensorFlow. Run

    TF_USE_LEGACY_KERAS=1 .venv/bin/python -m pytest -q tests/tfmot

(the main suite, on Keras 3, leaves this directory out). Every test here is skipped, with the
reason, where tf-keras or tensorflow-model-optimization is missing (setup.cfg's `tfmot` extra),
or where TensorFlow was imported before this file in the same process (too late for the
switch).
"""

import os
import pathlib
import sys

import pytest

_TOO_LATE = "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if _TOO_LATE:
    _SKIP = ("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set: run tests/tfmot "
             "in a pytest process of its own (TF_USE_LEGACY_KERAS=1 python -m pytest "
             "tests/tfmot).")
else:
    try:
        import tensorflow_model_optimization  # noqa: F401
        import tf_keras  # noqa: F401
    except ImportError as e:
        _SKIP = (f"tf-keras and tensorflow-model-optimization are needed ({e}): "
                 "pip install --no-deps -c constraints.txt tf-keras "
                 "tensorflow-model-optimization (setup.cfg's `tfmot` extra)")
    else:
        _SKIP = None

_HERE = pathlib.Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if _SKIP is None:
        return
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=_SKIP))
