# Every target runs inside the virtual environment at .venv, created on first use
# and reused after; it is rebuilt when setup.cfg, pyproject.toml or constraints.txt change.
# It holds the exact versions of constraints.txt (the lock; see `make lock`).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Which TensorFlow wheel to install: `cpu` (tensorflow-cpu) or `gpu` (tensorflow[and-cuda]).
TF_EXTRA ?= cpu
# The extras the tests need besides TensorFlow.
EXTRAS := tfds,dev
# The `serving` and `tfmot` extras' requirements, read from setup.cfg: installed with
# --no-deps (setup.cfg says why).
NO_DEPS_REQUIREMENTS = $$($(PYTHON) -c 'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg"); e = c["options.extras_require"]; print(e["serving"], e["tfmot"])')

.PHONY: setup test test-slow benchmark gpu-check quickstart clean lock install-check

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(TF_EXTRA),$(EXTRAS)]"
	$(PY) -m pip install -q -c constraints.txt --no-deps $(NO_DEPS_REQUIREMENTS)
	touch $@

setup: $(VENV)/.installed

# pytest-xdist workers per tier: on 2 cores, 2 workers ran the fast tier in 3.1 minutes against
# 4.1 in one process (docs/testing.md); TensorFlow's own threads do not fill both cores.
# TEST_WORKERS=0 runs the tests in pytest's own process.
TEST_WORKERS ?= 2

# The fast tier: every module's behaviour at the smallest shapes that exercise it (all tests
# but those marked `slow`). The README's test command.
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# The slow tier: the full cross products, every method's whole pipeline, kill -9, multi-worker;
# then tfmot's tests in a process of their own (tfmot needs Keras 2, which TF_USE_LEGACY_KERAS=1
# selects before TensorFlow starts). CI runs both tiers.
test-slow: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m slow
	TF_USE_LEGACY_KERAS=1 $(PY) -m pytest -q tests/tfmot

# Every form of every config layer shape (about 25 minutes on 2 cores), then whole models
# against their dense twins (about 20 minutes). Neither rewrites the plan's table: see
# docs/execution_plan.md for --write_costs.
benchmark: setup
	$(PY) tools/benchmark_layer.py --output=results/benchmark_layer.json
	$(PY) tools/benchmark_models.py --output=results/benchmark_models.json \
	    --markdown=results/benchmark_models.md --plot=results/benchmark_models.png

# On a machine with an NVIDIA GPU: the tests most likely to break there, training steps of SSC
# against dense and every layer form's times, into GPU_CHECK_DIR and GPU_CHECK_DIR.tar.gz, to
# merge (the plan's gpu section) and send (tools/gpu_check.sh; docs/execution_plan.md). A new
# .venv gets the CUDA wheel; one that holds tensorflow-cpu must go first (rm -rf .venv).
GPU_CHECK_DIR ?= results/gpu_check
gpu-check: TF_EXTRA = gpu
gpu-check: setup
	PY=$(PY) tools/gpu_check.sh --output_dir=$(GPU_CHECK_DIR)

# The README's main job: train SSC ResNet-32 on the bundled digits (the quickstart config),
# then evaluate it into $(QUICKSTART_DIR)/eval.json. Rerunning resumes, or skips a finished run.
QUICKSTART_DIR ?= runs/quickstart
quickstart: setup
	$(PY) -m ssc_tf.train --flagfile=quickstart --model_dir=$(QUICKSTART_DIR)
	$(PY) -m ssc_tf.evaluate --model_dir=$(QUICKSTART_DIR)

clean:
	rm -rf $(VENV) results runs build *.egg-info

# The BUILD files under Bazel (Debian's bazel-bootstrap 4.2.3, offline; see .bazelrc and
# WORKSPACE): every target builds, and two py_test targets run, which proves the test
# runner's wiring (runfiles, setup.cfg, the package's deps). The tests themselves run in
# `make test` and `make test-slow`; Bazel does not run them a second time. Bazel's launcher
# runs tools/bazel, which points the tests at this clone's .venv.
BAZEL_TESTS ?= //tests:test_pattern //tests:test_readme
.PHONY: bazel-test
bazel-test: setup
	bazel build //...
	bazel test $(BAZEL_TESTS)

# Rewrites constraints.txt below its "pip freeze" line from a new virtual environment (outside
# the checkout) holding the newest releases that setup.cfg's ranges allow, for the default
# extras; the header and the hand-kept pins above that line stay. Minutes: it downloads
# TensorFlow. Review the diff, then `make setup` installs the new lock.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q -e ".[cpu,$(EXTRAS)]"; \
	"$$tmp/venv/bin/python" -m pip install -q --no-deps $(NO_DEPS_REQUIREMENTS); \
	sed '/^# ---- pip freeze/q' constraints.txt > "$$tmp/constraints.txt"; \
	grep -q '^# ---- pip freeze' "$$tmp/constraints.txt"; \
	"$$tmp/venv/bin/python" -m pip freeze --all --exclude pip --exclude setuptools \
	    --exclude-editable --exclude ssc_tf >> "$$tmp/constraints.txt"; \
	cp "$$tmp/constraints.txt" constraints.txt; \
	echo "constraints.txt rewritten: see git diff constraints.txt"

# What a user of `pip install 'ssc_tf[cpu]'` gets: a regular (not editable) install of the
# checkout's files (those git tracks or would add; so no stale build/ or .venv) into a new
# virtual environment outside the checkout, with the lock. Then, from a directory outside the
# checkout, ssc_tf must import from site-packages (with its data), and each of
# INSTALL_CHECK_COMMANDS must succeed and print a line matching INSTALL_CHECK_EXPECT (an
# extended regex: a kept fraction). The temporary directory goes in the end. About 2 minutes.
INSTALL_CHECK_COMMANDS ?= \
	'python -m ssc_tf.density --flagfile=cifar10_vgg19_10pct' \
	'python -m ssc_tf.search_gp --model=resnet32 --dataset=cifar10 --target=0.1 --top=3' \
	'ssc-density --flagfile=cifar10_vgg19_10pct'
INSTALL_CHECK_EXPECT ?= kept fraction [0-9]
install-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src" "$$tmp/run"; \
	git ls-files -z --cached --others --exclude-standard \
	    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$$tmp/src" -xf -; \
	echo "install-check: pip install -c constraints.txt '<checkout>[cpu]' into $$tmp/venv"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q -c "$(CURDIR)/constraints.txt" "$$tmp/src[cpu]"; \
	cd "$$tmp/run"; \
	PATH="$$tmp/venv/bin:$$PATH" python -c 'import importlib.resources, ssc_tf; \
	    assert "/site-packages/" in ssc_tf.__file__, ssc_tf.__file__; \
	    data = importlib.resources.files("ssc_tf"); \
	    assert (data / "execution_costs.json").is_file(); \
	    assert (data / "configs" / "quickstart.cfg").is_file()'; \
	for command in $(INSTALL_CHECK_COMMANDS); do \
	  echo "install-check: $$command"; \
	  if ! PATH="$$tmp/venv/bin:$$PATH" sh -c "$$command" > "$$tmp/out" 2>&1; then \
	    tail -n 30 "$$tmp/out"; echo "install-check: FAILED: $$command"; exit 1; \
	  fi; \
	  if ! grep -i -E -- "$(INSTALL_CHECK_EXPECT)" "$$tmp/out"; then \
	    tail -n 30 "$$tmp/out"; echo "install-check: FAILED: printed no '$(INSTALL_CHECK_EXPECT)': $$command"; exit 1; \
	  fi; \
	done; \
	echo "install-check: OK"
