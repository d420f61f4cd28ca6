# Every target runs inside the virtual environment at .venv, created on first use
# and reused after; it is rebuilt when setup.cfg or pyproject.toml change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Which TensorFlow wheel to install: `cpu` (tensorflow-cpu) or `gpu` (tensorflow[and-cuda]).
TF_EXTRA ?= cpu

.PHONY: setup test benchmark quickstart clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(TF_EXTRA),dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

benchmark: setup
	$(PY) tools/benchmark_layer.py --output=results/benchmark_layer.json

# The README's main job. Until training lands, it is the layer benchmark on synthetic data.
quickstart: setup
	$(PY) tools/benchmark_layer.py --quick --output=results/benchmark_layer_quick.json

clean:
	rm -rf $(VENV) results build *.egg-info

# The tests under Bazel (Debian's bazel-bootstrap 4.2.3, offline; see .bazelrc and
# WORKSPACE). Bazel's launcher runs tools/bazel, which points the tests at this
# clone's .venv.
.PHONY: bazel-test
bazel-test: setup
	bazel test //...
