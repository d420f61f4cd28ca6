#!/usr/bin/env bash
# What a user with an NVIDIA GPU runs once, so that ssc_tf gets checked and timed on a GPU
# (`make gpu-check`; under 10 minutes by estimate: no GPU has run it yet). Into --output_dir:
#
#   tests.log                  the tests most likely to break on a GPU (every execution form
#                              against the dense oracle, forward and gradients; the planned
#                              forms; mixed float16; the optimizer), TensorFloat-32 off
#                              (tests/conftest.py), fast tier
#   train_<config>_<prec>.json a training step of SSC ResNet-32 10 % and ResNet-50 40 % against
#                              their dense twins, float32 and mixed float16
#                              (tools/benchmark_train.py)
#   benchmark_layer.json       every execution form of every SSC layer shape of those two
#   execution_costs_gpu.json   configs, each call timed until the GPU has run it, and the
#                              plan's `gpu` section of those times (tools/benchmark_layer.py),
#                              which `tools/benchmark_layer.py --merge_costs=FILE` merges
#   nvidia-smi.txt             the GPU, driver and CUDA version
#
# and all of it packed as <output_dir>.tar.gz, to send to the maintainers. It exits 1 if a
# test failed (after writing everything), and at once, in one line, if TensorFlow sees no GPU.
#
# --cpu runs on this machine's CPU what can run there, at tiny sizes, to check the script
# itself: it collects the tests without running them, times one float32 step of each model
# at batch 1 (float16 kernels take seconds a step on a CPU) and every form of one layer shape,
# and writes execution_costs_cpu.json: CPU times of tiny runs, never to be merged.
#
# Usage: tools/gpu_check.sh [--cpu] [--output_dir=DIR]    (PY: the Python, default .venv's)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
OUTPUT_DIR=results/gpu_check
CPU=0
for arg in "$@"; do
  case "$arg" in
    --cpu) CPU=1 ;;
    --output_dir=?*) OUTPUT_DIR="${arg#--output_dir=}" ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: invalid argument '$arg': expected --cpu, --output_dir=DIR or --help" >&2
       exit 2 ;;
  esac
done

# The tests a GPU is most likely to break: cuDNN's grouped and depthwise convolutions,
# cuBLAS's batched products, float16, the loss scale across replicas, the optimizer's update.
TESTS=(
  tests/test_layers.py::test_every_form_matches_dense_forward_and_gradients
  tests/test_layers.py::test_every_form_matches_dense_under_each_pointwise_layout
  tests/test_layers.py::test_unknown_spatial_size_matches_static_call
  tests/test_layers.py::test_mixed_precision_runs_in_float16
  tests/test_execution_plan.py::test_planned_form_matches_dense_at_every_config_shape
  tests/test_execution_plan.py::test_auto_layer_runs_the_planned_form_of_its_regime
  tests/test_distribute_precision.py
  tests/test_optimization.py
)
# The configs whose training steps and layer shapes are timed, each "config batch": ResNet-50
# at 64 images a step, which fits a 16 GB GPU in float32 with both models.
TRAIN_RUNS=("cifar10_resnet32_10pct 128" "imagenet_resnet50_40pct 64")
LAYER_CONFIGS=cifar10_resnet32_10pct,imagenet_resnet50_40pct

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Each process takes GPU memory as it needs it (tests/conftest.py sets the same).
export TF_FORCE_GPU_ALLOW_GROWTH=true
if [ "$CPU" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""
  TEST_FLAGS=(--collect-only)
  PRECISIONS=(none)
  TRAIN_FLAGS=(--batch_size=1 --steps=1 --warmup=1)
  LAYER_FLAGS=("--shapes=64x128 k1 s2 16x16 gNone p4" --repeats=1 --batch_size=2)
  COSTS="$OUTPUT_DIR/execution_costs_cpu.json"
else
  TEST_FLAGS=()
  PRECISIONS=(none float16)
  TRAIN_FLAGS=()
  LAYER_FLAGS=()
  COSTS="$OUTPUT_DIR/execution_costs_gpu.json"
fi

COUNT_GPUS='import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))'
if ! gpus=$("$PY" -c "$COUNT_GPUS" 2>/dev/null); then
  echo "gpu_check: $PY cannot import TensorFlow: make gpu-check sets up .venv with CUDA's" >&2
  exit 1
fi
if [ "$CPU" = 0 ] && [ "$gpus" = 0 ]; then
  echo "gpu_check: TensorFlow sees no GPU (a CPU-only TensorFlow? rm -rf .venv; make" \
       "gpu-check installs CUDA's); tools/gpu_check.sh --cpu runs the CPU-runnable parts" >&2
  exit 1
fi

mkdir -p "$OUTPUT_DIR"
if [ "$CPU" = 0 ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi > "$OUTPUT_DIR/nvidia-smi.txt"
fi

step() {
  echo
  echo "gpu_check: $1 ($((SECONDS - stage_start)) s)"
  stage_start=$SECONDS
}
stage_start=$SECONDS

tests_failed=0
if ! "$PY" -m pytest -q -p no:cacheprovider -m "not slow" "${TEST_FLAGS[@]}" "${TESTS[@]}" \
    2>&1 | tee "$OUTPUT_DIR/tests.log"; then
  tests_failed=1
fi
step "tests done"

for run in "${TRAIN_RUNS[@]}"; do
  read -r config batch <<< "$run"
  for precision in "${PRECISIONS[@]}"; do
    "$PY" tools/benchmark_train.py --config="$config" --batch_size="$batch" \
        --mixed_precision="$precision" --output="$OUTPUT_DIR/train_${config}_${precision}.json" \
        "${TRAIN_FLAGS[@]}"
  done
done
step "training steps timed"

"$PY" tools/benchmark_layer.py --configs="$LAYER_CONFIGS" --write_costs --costs_file="$COSTS" \
    --output="$OUTPUT_DIR/benchmark_layer.json" "${LAYER_FLAGS[@]}"
step "layer forms timed"

echo
if [ "$CPU" = 1 ]; then
  echo "gpu_check --cpu: done in $SECONDS s, results in $OUTPUT_DIR: CPU times of tiny runs," \
       "which check the tools; do not merge or send them."
else
  tar -czf "$OUTPUT_DIR.tar.gz" -C "$(dirname "$OUTPUT_DIR")" "$(basename "$OUTPUT_DIR")"
  echo "gpu_check: done in $SECONDS s, results in $OUTPUT_DIR and $OUTPUT_DIR.tar.gz."
  echo "To plan with these GPU times in this checkout (replaces the gpu section of" \
       "ssc_tf/execution_costs.json):"
  echo "    $PY tools/benchmark_layer.py --merge_costs=$COSTS"
  echo "Please send $OUTPUT_DIR.tar.gz to the ssc_tf maintainers: attach it to an issue titled" \
       "'gpu_check: <your GPU>' in the repository you got ssc_tf from."
fi
if [ "$tests_failed" = 1 ]; then
  echo "gpu_check: tests failed: see $OUTPUT_DIR/tests.log" >&2
  exit 1
fi
