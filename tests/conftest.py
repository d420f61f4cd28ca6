import os

# Quiet TensorFlow's C++ start-up logs in test output; must be set before TF is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tfmot's tests need Keras 2, which TF_USE_LEGACY_KERAS=1 selects before TensorFlow starts:
# they run in a pytest process of their own (`make test`), never in this Keras 3 one.
if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    collect_ignore = ["tfmot"]
