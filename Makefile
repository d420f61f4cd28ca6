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
	$(PY) -m pip install -q --no-deps $$($(PY) -c 'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg"); print(c["options.extras_require"]["serving"])')
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

# Every form of every config layer shape (about 25 minutes on 2 cores), then whole models
# against their dense twins (about 20 minutes). Neither rewrites the plan's table: see
# docs/execution_plan.md for --write_costs.
benchmark: setup
	$(PY) tools/benchmark_layer.py --output=results/benchmark_layer.json
	$(PY) tools/benchmark_models.py --output=results/benchmark_models.json \
	    --markdown=results/benchmark_models.md --plot=results/benchmark_models.png

# The README's main job: train SSC ResNet-32 on the bundled digits (configs/quickstart.cfg),
# then evaluate it into $(QUICKSTART_DIR)/eval.json. Rerunning resumes, or skips a finished run.
QUICKSTART_DIR ?= runs/quickstart
quickstart: setup
	$(PY) -m ssc_tf.train --flagfile=configs/quickstart.cfg --model_dir=$(QUICKSTART_DIR)
	$(PY) -m ssc_tf.evaluate --model_dir=$(QUICKSTART_DIR)

clean:
	rm -rf $(VENV) results runs build *.egg-info

# The tests under Bazel (Debian's bazel-bootstrap 4.2.3, offline; see .bazelrc and
# WORKSPACE). Bazel's launcher runs tools/bazel, which points the tests at this
# clone's .venv.
.PHONY: bazel-test
bazel-test: setup
	bazel test //...
